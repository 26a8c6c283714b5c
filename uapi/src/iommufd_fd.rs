//! Thin safe wrapper around an iommufd file descriptor.
//!
//! [`Iommufd::open`] takes any path: `/dev/iommu` (mainline iommufd) and
//! `/dev/ioasid` (this project's Rust component) are driven by the very same
//! code, which is the point: every method returns `std::io::Result` with the
//! kernel's errno preserved (`err.raw_os_error()`), so tests can compare
//! the two devices errno for errno.

use crate::ioctl::ioctl_ptr;
use crate::iommufd::*;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Mainline iommufd character device.
pub const DEV_IOMMU: &str = "/dev/iommu";
/// This project's device.
pub const DEV_IOASID: &str = "/dev/ioasid";

/// An open iommufd (or ioasid) context.
#[derive(Debug)]
pub struct Iommufd {
    fd: OwnedFd,
    path: Option<PathBuf>,
}

/// Result of [`Iommufd::ioas_iova_ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovaRanges {
    pub ranges: Vec<IommuIovaRange>,
    pub out_iova_alignment: u64,
}

impl Iommufd {
    /// Open `path` read-write (close-on-exec).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self {
            fd: file.into(),
            path: Some(path.to_path_buf()),
        })
    }

    /// Wrap an already open iommufd.
    pub fn from_owned_fd(fd: OwnedFd) -> Self {
        Self { fd, path: None }
    }

    /// The path this context was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Issue `nr` with a command structure from [`crate::iommufd`].
    ///
    /// Safe because iommufd command structures are sized by their `size`
    /// field which `T::new()` sets to `size_of::<T>()`; callers that embed a
    /// user pointer must go through a method that owns the pointee.
    fn cmd<T: IommufdCmd>(&self, nr: u32, arg: &mut T) -> io::Result<libc::c_int> {
        debug_assert!(
            // SAFETY: every IommufdCmd starts with `u32 size`.
            unsafe { *(arg as *mut T as *const u32) } as usize <= core::mem::size_of::<T>()
        );
        // SAFETY: `arg` is a live, exclusively borrowed `T` whose `size`
        // field does not exceed `size_of::<T>()`. Structures carrying user
        // pointers are only built by methods below that point them at
        // buffers they own for the duration of the call.
        unsafe { ioctl_ptr(self.fd.as_fd(), nr, arg as *mut T) }
    }

    /// `IOMMU_IOAS_ALLOC`: returns the new IOAS id.
    pub fn ioas_alloc(&self) -> io::Result<u32> {
        let mut cmd = IommuIoasAlloc::new();
        self.cmd(IOMMU_IOAS_ALLOC, &mut cmd)?;
        Ok(cmd.out_ioas_id)
    }

    /// `IOMMU_DESTROY` of any object id.
    pub fn destroy(&self, id: u32) -> io::Result<()> {
        let mut cmd = IommuDestroy::new();
        cmd.id = id;
        self.cmd(IOMMU_DESTROY, &mut cmd).map(drop)
    }

    /// `IOMMU_IOAS_MAP` of `length` bytes at user address `user_va`.
    ///
    /// `iova: Some(x)` maps at the fixed IOVA `x` (sets
    /// `IOMMU_IOAS_MAP_FIXED_IOVA`); `None` lets the kernel choose. `flags`
    /// is OR-ed in as given (normally `IOMMU_IOAS_MAP_READABLE |
    /// IOMMU_IOAS_MAP_WRITEABLE`; anything else is passed through so that
    /// tests can probe unknown bits). Returns the IOVA used.
    ///
    /// Note: once a device is attached, DMA may write the mapped memory at
    /// any time; only map memory that Rust code does not hold references to.
    pub fn ioas_map(
        &self,
        ioas_id: u32,
        user_va: u64,
        length: u64,
        iova: Option<u64>,
        flags: u32,
    ) -> io::Result<u64> {
        let mut cmd = IommuIoasMap::new();
        cmd.ioas_id = ioas_id;
        cmd.user_va = user_va;
        cmd.length = length;
        cmd.flags = flags;
        if let Some(iova) = iova {
            cmd.flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
            cmd.iova = iova;
        }
        self.ioas_map_raw(&mut cmd)?;
        Ok(cmd.iova)
    }

    /// `IOMMU_IOAS_MAP` with a caller-built structure (the kernel only pins
    /// `user_va`, it never writes through it).
    pub fn ioas_map_raw(&self, cmd: &mut IommuIoasMap) -> io::Result<()> {
        self.cmd(IOMMU_IOAS_MAP, cmd).map(drop)
    }

    /// `IOMMU_IOAS_MAP_FILE`: map `length` bytes of memfd `fd` from `start`.
    pub fn ioas_map_file(
        &self,
        ioas_id: u32,
        fd: BorrowedFd<'_>,
        start: u64,
        length: u64,
        iova: Option<u64>,
        flags: u32,
    ) -> io::Result<u64> {
        let mut cmd = IommuIoasMapFile::new();
        cmd.ioas_id = ioas_id;
        cmd.fd = fd.as_raw_fd();
        cmd.start = start;
        cmd.length = length;
        cmd.flags = flags;
        if let Some(iova) = iova {
            cmd.flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
            cmd.iova = iova;
        }
        self.cmd(IOMMU_IOAS_MAP_FILE, &mut cmd)?;
        Ok(cmd.iova)
    }

    /// `IOMMU_IOAS_UNMAP`: returns the number of bytes unmapped.
    pub fn ioas_unmap(&self, ioas_id: u32, iova: u64, length: u64) -> io::Result<u64> {
        let mut cmd = IommuIoasUnmap::new();
        cmd.ioas_id = ioas_id;
        cmd.iova = iova;
        cmd.length = length;
        self.cmd(IOMMU_IOAS_UNMAP, &mut cmd)?;
        Ok(cmd.length)
    }

    /// `IOMMU_IOAS_UNMAP` of everything (iova 0, length `u64::MAX`).
    pub fn ioas_unmap_all(&self, ioas_id: u32) -> io::Result<u64> {
        self.ioas_unmap(ioas_id, 0, u64::MAX)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`, growing the output array on `EMSGSIZE`.
    pub fn ioas_iova_ranges(&self, ioas_id: u32) -> io::Result<IovaRanges> {
        let mut ranges = vec![IommuIovaRange::default(); 8];
        // The set can change between calls; retry a bounded number of times.
        for _ in 0..8 {
            let mut cmd = IommuIoasIovaRanges::new();
            cmd.ioas_id = ioas_id;
            cmd.num_iovas = u32::try_from(ranges.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
            cmd.allowed_iovas = ranges.as_mut_ptr() as u64;
            // `ranges` outlives the call and holds `num_iovas` elements.
            match self.cmd(IOMMU_IOAS_IOVA_RANGES, &mut cmd) {
                Ok(_) => {
                    ranges.truncate(cmd.num_iovas as usize);
                    return Ok(IovaRanges {
                        ranges,
                        out_iova_alignment: cmd.out_iova_alignment,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let want = (cmd.num_iovas as usize).max(ranges.len() + 1);
                    ranges.resize(want, IommuIovaRange::default());
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EMSGSIZE))
    }

    /// `IOMMU_IOAS_ALLOW_IOVAS`: replace the allowed list with `ranges`.
    pub fn ioas_allow_iovas(&self, ioas_id: u32, ranges: &[IommuIovaRange]) -> io::Result<()> {
        let mut cmd = IommuIoasAllowIovas::new();
        cmd.ioas_id = ioas_id;
        cmd.num_iovas = u32::try_from(ranges.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // The kernel only reads this array.
        cmd.allowed_iovas = ranges.as_ptr() as u64;
        self.cmd(IOMMU_IOAS_ALLOW_IOVAS, &mut cmd).map(drop)
    }

    /// `IOMMU_IOAS_COPY`: copy the mapping at `src_iova`/`length` of
    /// `src_ioas_id` into `dst_ioas_id` (at `dst_iova` if given). Returns the
    /// destination IOVA.
    pub fn ioas_copy(
        &self,
        dst_ioas_id: u32,
        src_ioas_id: u32,
        src_iova: u64,
        length: u64,
        dst_iova: Option<u64>,
        flags: u32,
    ) -> io::Result<u64> {
        let mut cmd = IommuIoasCopy::new();
        cmd.dst_ioas_id = dst_ioas_id;
        cmd.src_ioas_id = src_ioas_id;
        cmd.src_iova = src_iova;
        cmd.length = length;
        cmd.flags = flags;
        if let Some(iova) = dst_iova {
            cmd.flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
            cmd.dst_iova = iova;
        }
        self.cmd(IOMMU_IOAS_COPY, &mut cmd)?;
        Ok(cmd.dst_iova)
    }

    /// `IOMMU_OPTION` with a caller-built structure (`val64` is updated on GET).
    pub fn option(&self, cmd: &mut IommuOption) -> io::Result<()> {
        self.cmd(IOMMU_OPTION, cmd).map(drop)
    }

    /// `IOMMU_OPTION` / `IOMMU_OPTION_OP_GET`.
    pub fn option_get(&self, option_id: u32, object_id: u32) -> io::Result<u64> {
        let mut cmd = IommuOption::new();
        cmd.option_id = option_id;
        cmd.op = IOMMU_OPTION_OP_GET;
        cmd.object_id = object_id;
        self.option(&mut cmd)?;
        Ok(cmd.val64)
    }

    /// `IOMMU_OPTION` / `IOMMU_OPTION_OP_SET`.
    pub fn option_set(&self, option_id: u32, object_id: u32, val: u64) -> io::Result<()> {
        let mut cmd = IommuOption::new();
        cmd.option_id = option_id;
        cmd.op = IOMMU_OPTION_OP_SET;
        cmd.object_id = object_id;
        cmd.val64 = val;
        self.option(&mut cmd)
    }

    /// `IOMMU_VFIO_IOAS` (`op` is one of `IOMMU_VFIO_IOAS_*`); returns `ioas_id`.
    pub fn vfio_ioas(&self, op: u16, ioas_id: u32) -> io::Result<u32> {
        let mut cmd = IommuVfioIoas::new();
        cmd.op = op;
        cmd.ioas_id = ioas_id;
        self.cmd(IOMMU_VFIO_IOAS, &mut cmd)?;
        Ok(cmd.ioas_id)
    }

    /// `IOMMU_HWPT_ALLOC` of a kernel-managed HWPT (`IOMMU_HWPT_DATA_NONE`).
    pub fn hwpt_alloc(&self, dev_id: u32, pt_id: u32, flags: u32) -> io::Result<u32> {
        let mut cmd = IommuHwptAlloc::new();
        cmd.dev_id = dev_id;
        cmd.pt_id = pt_id;
        cmd.flags = flags;
        cmd.data_type = IOMMU_HWPT_DATA_NONE;
        self.cmd(IOMMU_HWPT_ALLOC, &mut cmd)?;
        Ok(cmd.out_hwpt_id)
    }

    /// `IOMMU_HWPT_ALLOC` with every field of `cmd` as given (for bad-input checks); `size` is
    /// set here. Returns `out_hwpt_id`. `data_uptr` must be 0 or point to `data_len` readable
    /// bytes.
    pub fn hwpt_alloc_with(&self, cmd: &mut IommuHwptAlloc) -> io::Result<u32> {
        cmd.size = core::mem::size_of::<IommuHwptAlloc>() as u32;
        self.cmd(IOMMU_HWPT_ALLOC, cmd)?;
        Ok(cmd.out_hwpt_id)
    }

    /// `IOMMU_GET_HW_INFO` for `dev_id`; the type specific data (e.g.
    /// [`IommuHwInfoVtd`]) is written into `data` (at most `data.len()` bytes).
    pub fn get_hw_info(&self, dev_id: u32, data: &mut [u8]) -> io::Result<IommuHwInfo> {
        let mut cmd = IommuHwInfo::new();
        cmd.dev_id = dev_id;
        cmd.data_len =
            u32::try_from(data.len()).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // The kernel writes at most data_len bytes into `data`.
        cmd.data_uptr = data.as_mut_ptr() as u64;
        self.cmd(IOMMU_GET_HW_INFO, &mut cmd)?;
        Ok(cmd)
    }

    /// `IOMMU_GET_HW_INFO` decoded as Intel VT-d info.
    pub fn get_hw_info_vtd(&self, dev_id: u32) -> io::Result<(IommuHwInfo, IommuHwInfoVtd)> {
        let mut buf = [0u8; core::mem::size_of::<IommuHwInfoVtd>()];
        let info = self.get_hw_info(dev_id, &mut buf)?;
        // SAFETY: IommuHwInfoVtd is plain-old-data of exactly buf.len() bytes.
        let vtd = unsafe { core::ptr::read_unaligned(buf.as_ptr() as *const IommuHwInfoVtd) };
        Ok((info, vtd))
    }

    /// Raw escape hatch for bad-input tests: `ioctl(fd, nr, buf.as_mut_ptr())`.
    ///
    /// `buf` holds the command structure as bytes (native endian), typically
    /// with a deliberately short or oversized `size` field. For memory safety
    /// the first `u32` (the iommufd `size` / VFIO `argsz` field) must not
    /// exceed `buf.len()`; otherwise this returns an `InvalidInput` error
    /// *without* issuing the ioctl (that error has no `raw_os_error()`).
    ///
    /// # Safety
    /// Any user pointer embedded in `buf` (e.g. `allowed_iovas`, `data_uptr`)
    /// must be valid for whatever the kernel does with it for `nr`; with
    /// pointer-free commands (`IOMMU_IOAS_ALLOC`, `IOMMU_DESTROY`, ...) or
    /// zeroed pointer fields this is trivially satisfied.
    pub unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> io::Result<libc::c_int> {
        let size = buf
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match size {
            Some(size) if size <= buf.len() => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "ioctl_raw: buffer shorter than 4 bytes or than its own size field",
                ));
            }
        }
        // SAFETY: the kernel reads/writes at most `size` <= buf.len() bytes of
        // the structure; embedded pointers are the caller's responsibility.
        unsafe { ioctl_ptr(self.fd.as_fd(), nr, buf.as_mut_ptr()) }
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Iommufd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Iommufd> for OwnedFd {
    fn from(f: Iommufd) -> OwnedFd {
        f.fd
    }
}

/// View any `repr(C)` command structure as bytes, e.g. to build an
/// oversized buffer for [`Iommufd::ioctl_raw`].
pub fn struct_bytes<T: IommufdCmd + Copy>(v: &T) -> Vec<u8> {
    let len = core::mem::size_of::<T>();
    let mut out = vec![0u8; len];
    // SAFETY: T is a padding-free repr(C) POD (all layouts here are explicitly
    // padded, asserted at compile time), so every byte is initialized.
    unsafe { core::ptr::copy_nonoverlapping(v as *const T as *const u8, out.as_mut_ptr(), len) };
    out
}
