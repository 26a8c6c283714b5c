// SPDX-License-Identifier: GPL-2.0

//! POSIX capabilities.
//!
//! C header: [`include/linux/capability.h`](srctree/include/linux/capability.h)

use crate::bindings;

/// A POSIX capability, one of the `CAP_*` of `include/uapi/linux/capability.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability(u32);

impl Capability {
    /// `CAP_IPC_LOCK`: lock memory (`mlock()`) and pin memory beyond `RLIMIT_MEMLOCK`.
    pub const IPC_LOCK: Self = Self(bindings::CAP_IPC_LOCK);

    /// `CAP_SYS_RESOURCE`: override resource limits.
    pub const SYS_RESOURCE: Self = Self(bindings::CAP_SYS_RESOURCE);

    /// `CAP_SYS_ADMIN`: a catch-all for system administration.
    pub const SYS_ADMIN: Self = Self(bindings::CAP_SYS_ADMIN);
}

/// Returns whether the current task has `cap` in its effective set for the initial user
/// namespace, like `capable()`.
///
/// As `capable()`, this sets `PF_SUPERPRIV` on success, so the capability is recorded as
/// used: ask only when the answer decides what the task may do.
pub fn capable(cap: Capability) -> bool {
    // CAST: Capability numbers are small.
    // SAFETY: `capable()` may be called from any task context with any capability number.
    unsafe { bindings::capable(cap.0 as i32) }
}
