// SPDX-License-Identifier: GPL-2.0

//! Accounting of pinned memory against `RLIMIT_MEMLOCK`.
//!
//! Memory that a driver pins for a process is charged in the ways of `mm/mlock.c` and of the
//! users of long-term pins (io_uring, VFIO, iommufd):
//!
//! - [`User::try_charge_locked_vm`] charges pages to the `locked_vm` of the process's
//!   [`User`], against the `RLIMIT_MEMLOCK` of the current process: the accounting io_uring
//!   and iommufd use by default. All processes of a user share the charge.
//! - [`Mm::account_locked_vm`] charges them to the `locked_vm` of an address space, the
//!   accounting of VFIO's type1 IOMMU driver and of `mlock()`.
//! - [`Mm::add_pinned_vm`] counts them in the `pinned_vm` of an address space, which
//!   `/proc/<pid>/status` shows as `VmPin`. It is a statistic and enforces no limit.
//!
//! A process with `CAP_IPC_LOCK` may exceed `RLIMIT_MEMLOCK`; callers decide whether to charge
//! such a process at all, see [`crate::capability`].
//!
//! C headers: [`include/linux/sched/user.h`](srctree/include/linux/sched/user.h),
//! [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{
    bindings,
    error::{
        code::*,
        to_result,
        Result, //
    },
    mm::Mm,
    page::PAGE_SHIFT,
    sync::{
        aref::{
            ARef,
            AlwaysRefCounted, //
        },
        atomic::{
            Atomic,
            Relaxed, //
        },
    },
    types::Opaque,
};
use core::ptr::NonNull;

/// Returns the current process's `RLIMIT_MEMLOCK` soft limit, in pages.
///
/// `RLIM_INFINITY` gives a limit no page count reaches.
pub fn memlock_limit_pages() -> usize {
    // SAFETY: `current` is a valid task, and `task_rlimit()` only reads its `signal`, which lives
    // as long as the task.
    let limit = unsafe { bindings::task_rlimit(bindings::get_current(), bindings::RLIMIT_MEMLOCK) };
    // CAST: `unsigned long` and `usize` have the same width.
    (limit as usize) >> PAGE_SHIFT
}

/// A user, `struct user_struct`: the per-user resource counters of the kernel.
///
/// # Invariants
///
/// Instances of this type are always refcounted, with `get_uid()` and `free_uid()`.
#[repr(transparent)]
pub struct User(Opaque<bindings::user_struct>);

// SAFETY: `struct user_struct` may be used and released (`free_uid()`) from any thread.
unsafe impl Send for User {}

// SAFETY: The methods of `User` are safe to call concurrently: the counters are atomic.
unsafe impl Sync for User {}

// SAFETY: By the type invariants, `User` is refcounted with `get_uid()` and `free_uid()`.
unsafe impl AlwaysRefCounted for User {
    fn inc_ref(&self) {
        // SAFETY: The existence of `&self` means its refcount is non-zero.
        unsafe { bindings::get_uid(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which `free_uid()` releases. `User` is
        // `repr(transparent)` over `struct user_struct`.
        unsafe { bindings::free_uid(obj.cast().as_ptr()) };
    }
}

impl User {
    /// Returns the user of the current process: `current_user()`, the user of its real uid,
    /// which is the one iommufd and io_uring charge pinned memory to.
    pub fn current() -> ARef<User> {
        // SAFETY: The credentials of `current` are valid and hold a reference to their user, so
        // the pointer is valid for the duration of this call.
        let user = unsafe { bindings::current_user() };
        // SAFETY: `user` is valid, see above. `User` is `repr(transparent)` over
        // `struct user_struct`, and `ARef::from` takes a reference of its own.
        ARef::from(unsafe { &*user.cast::<User>() })
    }
}

// `user_struct::locked_vm` exists only when one of its users is built (`sched/user.h`).
#[cfg(any(
    CONFIG_NET,
    CONFIG_IO_URING,
    CONFIG_VFIO_PCI_ZDEV_KVM,
    CONFIG_IOMMUFD,
    CONFIG_SECRETMEM,
    CONFIG_IOASID
))]
impl User {
    /// Returns the `locked_vm` counter of the user.
    fn locked_vm_counter(&self) -> &Atomic<isize> {
        // SAFETY: `self` is a valid user, so the field is in bounds.
        let counter = unsafe { &raw mut (*self.0.get()).locked_vm.counter };
        // CAST: `atomic_long_t` wraps a `long`, which has the size and alignment of `isize`.
        // SAFETY: `counter` is valid as long as `self`, and the kernel only accesses it with
        // atomic operations, so there are no data races.
        unsafe { Atomic::from_ptr(counter.cast::<isize>()) }
    }

    /// Returns the number of pages charged to the user's `locked_vm`.
    pub fn locked_vm(&self) -> usize {
        // CAST: The counter never goes negative: pages are uncharged only after being charged.
        self.locked_vm_counter().load(Relaxed) as usize
    }

    /// Charges `npages` pages to the user's `locked_vm` if that keeps it within `limit` pages.
    ///
    /// `limit` is normally [`memlock_limit_pages`]. Fails with [`ENOMEM`], charging nothing, if
    /// the charge would exceed it, like `incr_user_locked_vm()` of iommufd and
    /// `__io_account_mem()` of io_uring.
    pub fn try_charge_locked_vm(&self, npages: usize, limit: usize) -> Result {
        let counter = self.locked_vm_counter();
        let mut cur = counter.load(Relaxed);
        loop {
            // CAST: See `locked_vm()`.
            let new = (cur as usize)
                .checked_add(npages)
                .filter(|&new| new <= limit)
                .ok_or(ENOMEM)?;
            // CAST: `new` is at most `limit`, a page count, far below `isize::MAX`.
            match counter.cmpxchg(cur, new as isize, Relaxed) {
                Ok(_) => return Ok(()),
                Err(old) => cur = old,
            }
        }
    }

    /// Uncharges `npages` pages from the user's `locked_vm`.
    ///
    /// The pages must have been charged with [`User::try_charge_locked_vm`]. Uncharging more
    /// than is charged warns and leaves the counter as it is, like `decr_user_locked_vm()`.
    pub fn uncharge_locked_vm(&self, npages: usize) {
        if crate::warn_on!(self.locked_vm() < npages) {
            return;
        }
        // CAST: `npages` is at most the counter, so it fits in an `isize`.
        self.locked_vm_counter().add(-(npages as isize), Relaxed);
    }
}

impl Mm {
    /// Returns the address space of the current process, `current->mm`, with a reference of its
    /// own (`mmgrab()`): the one [`Mm::add_pinned_vm`] and [`Mm::account_locked_vm`] charge for
    /// memory the process pins. Returns `None` in a kernel thread, which has none.
    ///
    /// This reads `current->mm` in C rather than through the Rust binding of
    /// `struct task_struct`: bindgen drops the `____cacheline_aligned` of an empty
    /// `struct sched_statistics` (`CONFIG_SCHEDSTATS=n`), which shifts the fields of its
    /// `task_struct` that follow `stats`, `mm` among them.
    pub fn current() -> Option<ARef<Mm>> {
        // SAFETY: `current` is a valid task. Its `mm` is changed only by the task itself (on
        // exec and exit, and by `kthread_use_mm()` in kernel threads), so reading it here is
        // not a data race.
        let mm = unsafe { bindings::current_mm() };
        if mm.is_null() {
            return None;
        }
        // SAFETY: A non-null `current->mm` is a valid mm with users, which stays valid for the
        // duration of this call. `ARef::from` takes a reference of its own with `mmgrab()`.
        Some(ARef::from(unsafe { Mm::from_raw(mm) }))
    }

    /// Returns the `pinned_vm` counter of the address space.
    fn pinned_vm_counter(&self) -> &Atomic<i64> {
        // SAFETY: `self` is a valid mm, so the field is in bounds. (bindgen names the anonymous
        // struct that holds the fields of `struct mm_struct` `__bindgen_anon_1`.)
        let counter = unsafe { &raw mut (*self.as_raw()).__bindgen_anon_1.pinned_vm.counter };
        // SAFETY: `counter` is valid as long as `self`, and the kernel only accesses it with
        // atomic operations, so there are no data races.
        unsafe { Atomic::from_ptr(counter) }
    }

    /// Returns the number of pages counted in the `pinned_vm` of the address space.
    pub fn pinned_vm(&self) -> usize {
        // CAST: The counter does not go negative when callers balance their updates.
        self.pinned_vm_counter().load(Relaxed) as usize
    }

    /// Counts `npages` pinned pages in the `pinned_vm` of the address space (`VmPin`).
    pub fn add_pinned_vm(&self, npages: usize) {
        // CAST: A page count is far below `i64::MAX`.
        self.pinned_vm_counter().add(npages as i64, Relaxed);
    }

    /// Removes `npages` pages counted with [`Mm::add_pinned_vm`] from `pinned_vm`.
    pub fn sub_pinned_vm(&self, npages: usize) {
        // CAST: See `add_pinned_vm()`.
        self.pinned_vm_counter().add(-(npages as i64), Relaxed);
    }

    /// Charges (`inc`) or uncharges `npages` pages to the `locked_vm` of the address space, like
    /// `account_locked_vm()`: the VFIO type1 accounting.
    ///
    /// A charge is checked against the current process's `RLIMIT_MEMLOCK` unless it has
    /// `CAP_IPC_LOCK`, and fails with [`ENOMEM`] if it would exceed it. Does nothing if the
    /// address space has no users left.
    pub fn account_locked_vm(&self, npages: usize, inc: bool) -> Result {
        let Some(mm) = self.mmget_not_zero() else {
            return Ok(());
        };
        // SAFETY: `mm` holds a user of the address space, so it is valid and not torn down.
        // `account_locked_vm()` takes the mmap lock itself.
        to_result(unsafe { bindings::account_locked_vm(mm.as_raw(), npages, inc) })
    }
}
