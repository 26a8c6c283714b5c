//! Anonymous, page-aligned memory that devices DMA into.
//!
//! The memory is only ever touched through volatile accesses on a raw
//! pointer (never through Rust references), because a device may write it
//! behind the compiler's back once it is mapped into an IOMMU domain.

use anyhow::{Result, bail, ensure};
use std::io;
use std::ptr::NonNull;

pub struct DmaBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl DmaBuffer {
    /// `mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)` of `len` bytes,
    /// every page touched (written with `fill`) so it is populated.
    pub fn new(len: usize, fill: u8) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: anonymous mapping request with no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let buf = Self { ptr, len };
        buf.fill(0, len, fill)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf)
    }

    /// `len` bytes (rounded up to 2 MiB) at a 2 MiB-aligned address, with `MADV_HUGEPAGE`
    /// asked for *before* the pages are populated (`MAP_POPULATE` would fault them in as small
    /// pages first), then populated with `MADV_POPULATE_WRITE` (touching each page where that
    /// is refused). The contents are zero and never touched byte by byte: a benchmark buffer
    /// of 1 GiB would take minutes to fill under TCG. Returns the buffer and the outcome of
    /// `MADV_HUGEPAGE` (a kernel without `CONFIG_ADVISE_SYSCALLS` answers `ENOSYS`; whether THP
    /// really backs the buffer is for the caller to read from /proc/self/smaps).
    pub fn new_huge_aligned(len: usize) -> io::Result<(Self, io::Result<()>)> {
        const HUGE: usize = 2 << 20;
        let len = len
            .checked_next_multiple_of(HUGE)
            .filter(|l| *l > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let reserve = len
            .checked_add(HUGE)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: anonymous mapping request with no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE);
        let head = aligned - start;
        let tail = reserve - head - len;
        // SAFETY: both ranges lie inside the mapping just made and outside the part kept.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        let ptr = NonNull::new(aligned as *mut u8)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // From here on Drop unmaps exactly the kept part.
        let buf = Self { ptr, len };
        // SAFETY: advice on our own mapping; neither call invalidates it.
        let huge = match unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        };
        // SAFETY: as above.
        let populated =
            unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_POPULATE_WRITE) } == 0;
        if !populated {
            // Kernels before 5.14: one write per small page faults everything in.
            for off in (0..len).step_by(4096) {
                // SAFETY: in bounds of our live mapping.
                unsafe { ptr.as_ptr().add(off).write_volatile(0) };
            }
        }
        Ok((buf, huge))
    }

    /// User virtual address (what IOMMU_IOAS_MAP / VFIO_IOMMU_MAP_DMA take).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => bail!(
                "range {offset:#x}+{len:#x} outside DMA buffer of {:#x} bytes",
                self.len
            ),
        }
    }

    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check(offset, len)?;
        for i in 0..len {
            // SAFETY: in bounds of our live mapping (checked above).
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(byte) };
        }
        Ok(())
    }

    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds of our live mapping (checked above).
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(*b) };
        }
        Ok(())
    }

    pub fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        self.check(offset, len)?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok((0..len)
            // SAFETY: in bounds of our live mapping (checked above).
            .map(|i| unsafe { self.ptr.as_ptr().add(offset + i).read_volatile() })
            .collect())
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mmap returned.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Deterministic, non-repeating-looking test pattern (xorshift32).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Index of the first differing byte, if any.
pub fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Ensure `a == b`, with a useful message otherwise.
pub fn ensure_same(what: &str, got: &[u8], want: &[u8]) -> Result<()> {
    if let Some(i) = first_mismatch(got, want) {
        ensure!(
            false,
            "{what}: first mismatch at byte {i:#x}: got {:#04x?} want {:#04x?}",
            got.get(i),
            want.get(i)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_rw_and_bounds() {
        let b = DmaBuffer::new(8192, 0x5a).unwrap();
        assert_eq!(b.addr() % 4096, 0);
        assert_eq!(b.read(8190, 2).unwrap(), vec![0x5a, 0x5a]);
        b.write(4096, &[1, 2, 3]).unwrap();
        assert_eq!(b.read(4095, 5).unwrap(), vec![0x5a, 1, 2, 3, 0x5a]);
        assert!(b.write(8191, &[1, 2]).is_err());
        assert!(b.read(usize::MAX, 2).is_err());
        assert!(DmaBuffer::new(0, 0).is_err());
    }

    #[test]
    fn huge_aligned_buffer_is_aligned_rounded_and_zero() {
        let (b, _huge) = DmaBuffer::new_huge_aligned(4096).unwrap();
        assert_eq!(b.addr() % (2 << 20), 0);
        assert_eq!(b.len(), 2 << 20);
        assert_eq!(b.read((2 << 20) - 2, 2).unwrap(), vec![0, 0]);
        assert!(DmaBuffer::new_huge_aligned(0).is_err());
        assert!(DmaBuffer::new_huge_aligned(usize::MAX).is_err());
    }

    #[test]
    fn pattern_is_varied_and_deterministic() {
        let p = pattern(4096, 0x1234);
        assert_eq!(p, pattern(4096, 0x1234));
        assert_ne!(p, pattern(4096, 0x4321));
        let distinct: std::collections::HashSet<_> = p.iter().collect();
        assert!(distinct.len() > 200);
    }

    #[test]
    fn mismatch() {
        assert_eq!(first_mismatch(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_mismatch(&[1, 9, 3], &[1, 2, 3]), Some(1));
        assert_eq!(first_mismatch(&[1, 2], &[1, 2, 3]), Some(2));
        assert!(ensure_same("x", &[1, 2], &[1, 2]).is_ok());
        let e = ensure_same("dst", &[1, 7], &[1, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("byte 0x1"), "{e}");
    }
}
