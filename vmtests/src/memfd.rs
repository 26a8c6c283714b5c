//! memfds: the files `IOMMU_IOAS_MAP_FILE` maps, and shared mappings of them.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// `memfd_create(name, MFD_CLOEXEC)` sized to `len` bytes.
pub fn create(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the flags are valid.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd size"))?;
    // SAFETY: `fd` is an open memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A `MAP_SHARED` read-write mapping of a file, populated, unmapped on drop. Never accessed
/// through Rust references: a device may write it.
pub struct SharedMapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl SharedMapping {
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a new shared mapping of `fd` without an address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in new().
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_mapping_sees_the_file() -> io::Result<()> {
        let fd = create(c"ioasid-test", 8192)?;
        let m = SharedMapping::new(std::os::fd::AsFd::as_fd(&fd), 8192)?;
        // SAFETY: the mapping is 8192 bytes long and nothing else accesses it.
        unsafe { std::ptr::write_volatile((m.addr() + 4096) as *mut u8, 0x5a) };
        let mut b = [0u8; 1];
        // SAFETY: reading one byte at offset 4096 of an open file into a 1-byte buffer.
        let n = unsafe { libc::pread(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1, 4096) };
        assert_eq!(n, 1);
        assert_eq!(b[0], 0x5a);
        Ok(())
    }

    #[test]
    fn create_sizes_the_file() -> io::Result<()> {
        let fd = create(c"ioasid-test", 3 * 4096)?;
        // SAFETY: fstat of an open fd into a zeroed stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        assert_eq!(st.st_size, 3 * 4096);
        Ok(())
    }
}
