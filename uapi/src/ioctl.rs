//! ioctl request-number encoding (`include/uapi/asm-generic/ioctl.h`) and
//! the raw `ioctl(2)` entry points every other module goes through.
//!
//! The encoding is `dir << DIRSHIFT | size << SIZESHIFT | type << TYPESHIFT | nr`.
//! x86, arm64, riscv, s390, loongarch use the asm-generic layout (2 direction
//! bits, 14 size bits, `_IOC_NONE == 0`, `_IOC_WRITE == 1`, `_IOC_READ == 2`);
//! powerpc, mips and sparc override it (3 direction bits, 13 size bits,
//! `_IOC_NONE == 1`, `_IOC_READ == 2`, `_IOC_WRITE == 4`).
#![allow(non_snake_case)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const _IOC_NRBITS: u32 = 8;
pub const _IOC_TYPEBITS: u32 = 8;

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod arch {
    pub const _IOC_SIZEBITS: u32 = 13;
    pub const _IOC_DIRBITS: u32 = 3;
    pub const _IOC_NONE: u32 = 1;
    pub const _IOC_READ: u32 = 2;
    pub const _IOC_WRITE: u32 = 4;
}

#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod arch {
    pub const _IOC_SIZEBITS: u32 = 14;
    pub const _IOC_DIRBITS: u32 = 2;
    pub const _IOC_NONE: u32 = 0;
    pub const _IOC_WRITE: u32 = 1;
    pub const _IOC_READ: u32 = 2;
}

pub use arch::{_IOC_DIRBITS, _IOC_NONE, _IOC_READ, _IOC_SIZEBITS, _IOC_WRITE};

pub const _IOC_NRMASK: u32 = (1 << _IOC_NRBITS) - 1;
pub const _IOC_TYPEMASK: u32 = (1 << _IOC_TYPEBITS) - 1;
pub const _IOC_SIZEMASK: u32 = (1 << _IOC_SIZEBITS) - 1;
pub const _IOC_DIRMASK: u32 = (1 << _IOC_DIRBITS) - 1;

pub const _IOC_NRSHIFT: u32 = 0;
pub const _IOC_TYPESHIFT: u32 = _IOC_NRSHIFT + _IOC_NRBITS;
pub const _IOC_SIZESHIFT: u32 = _IOC_TYPESHIFT + _IOC_TYPEBITS;
pub const _IOC_DIRSHIFT: u32 = _IOC_SIZESHIFT + _IOC_SIZEBITS;

/// `_IOC(dir, type, nr, size)`. Panics (at compile time when used in a
/// `const`) if `size` does not fit the size field, like the kernel's
/// `_IOC_TYPECHECK`.
pub const fn _IOC(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(
        size <= _IOC_SIZEMASK as usize,
        "ioctl argument too large for _IOC size field"
    );
    (dir << _IOC_DIRSHIFT)
        | ((ty as u32) << _IOC_TYPESHIFT)
        | ((nr as u32) << _IOC_NRSHIFT)
        | ((size as u32) << _IOC_SIZESHIFT)
}

/// `_IO(type, nr)`: no argument size encoded (iommufd and VFIO use this for
/// everything; the structure size travels in the structure itself).
pub const fn _IO(ty: u8, nr: u8) -> u32 {
    _IOC(_IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)`
pub const fn _IOR<T>(ty: u8, nr: u8) -> u32 {
    _IOC(_IOC_READ, ty, nr, core::mem::size_of::<T>())
}

/// `_IOW(type, nr, T)`
pub const fn _IOW<T>(ty: u8, nr: u8) -> u32 {
    _IOC(_IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}

/// `_IOWR(type, nr, T)`
pub const fn _IOWR<T>(ty: u8, nr: u8) -> u32 {
    _IOC(_IOC_READ | _IOC_WRITE, ty, nr, core::mem::size_of::<T>())
}

/// `_IOC_DIR(nr)`
pub const fn _IOC_DIR(nr: u32) -> u32 {
    (nr >> _IOC_DIRSHIFT) & _IOC_DIRMASK
}
/// `_IOC_TYPE(nr)`
pub const fn _IOC_TYPE(nr: u32) -> u32 {
    (nr >> _IOC_TYPESHIFT) & _IOC_TYPEMASK
}
/// `_IOC_NR(nr)`
pub const fn _IOC_NR(nr: u32) -> u32 {
    (nr >> _IOC_NRSHIFT) & _IOC_NRMASK
}
/// `_IOC_SIZE(nr)`
pub const fn _IOC_SIZE(nr: u32) -> u32 {
    (nr >> _IOC_SIZESHIFT) & _IOC_SIZEMASK
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        // Preserves the raw errno: callers compare `raw_os_error()`.
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `ioctl(fd, nr, arg)` with a pointer argument. Returns the (non-negative)
/// ioctl return value, or the errno as an `io::Error` whose `raw_os_error()`
/// is exactly what the kernel returned.
///
/// # Safety
/// `arg` must point to memory valid for reads and writes of whatever the
/// kernel will access for `nr`: the structure itself (its size as the kernel
/// interprets it, e.g. the leading `size`/`argsz` field) and any user
/// pointers embedded in it.
pub unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, nr: u32, arg: *mut T) -> io::Result<libc::c_int> {
    // SAFETY: forwarded to the caller.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), nr as _, arg) })
}

/// `ioctl(fd, nr, arg)` with an integer argument (e.g. `VFIO_CHECK_EXTENSION`,
/// `VFIO_SET_IOMMU`, `KVM_CREATE_VM`).
///
/// # Safety
/// The kernel must not interpret `arg` as a pointer for this `nr` (or, if it
/// does, `arg` must be a valid pointer as for [`ioctl_ptr`]).
pub unsafe fn ioctl_val(
    fd: BorrowedFd<'_>,
    nr: u32,
    arg: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: forwarded to the caller.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), nr as _, arg) })
}
