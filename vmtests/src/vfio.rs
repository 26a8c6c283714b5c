//! Small VFIO wrappers (device cdev, group, type1 container) over the
//! numbers and structures of `ioasid_uapi::vfio` — nothing is redefined here.

use crate::edu::Mmio;
use anyhow::{Context, Result, ensure};
use ioasid_uapi::ioctl::{ioctl_ptr, ioctl_val};
use ioasid_uapi::vfio::*;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A VFIO device fd (from the cdev `/dev/vfio/devices/vfioN` or from
/// `VFIO_GROUP_GET_DEVICE_FD`).
pub struct VfioDevice {
    file: File,
}

impl VfioDevice {
    pub fn open_cdev(path: &Path) -> Result<Self> {
        Ok(Self {
            file: open_rw(path)?,
        })
    }

    pub fn from_owned_fd(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
        }
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD`: returns the iommufd device id.
    pub fn bind_iommufd(&self, iommufd: BorrowedFd<'_>) -> io::Result<u32> {
        self.bind_iommufd_raw(iommufd.as_raw_fd())
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD` with any fd number, for the checks of bad fds.
    pub fn bind_iommufd_raw(&self, fd: i32) -> io::Result<u32> {
        let mut arg = VfioDeviceBindIommufd::new();
        arg.iommufd = fd;
        // SAFETY: argsz == size_of; token_uuid_ptr unused (flags == 0).
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_DEVICE_BIND_IOMMUFD, &mut arg) }?;
        Ok(arg.out_devid)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: returns the attached pt id (a HWPT
    /// id when an IOAS was given).
    pub fn attach_pt(&self, pt_id: u32) -> io::Result<u32> {
        let mut arg = VfioDeviceAttachIommufdPt::new();
        arg.pt_id = pt_id;
        // SAFETY: pointer-free structure, argsz == size_of.
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut arg) }?;
        Ok(arg.pt_id)
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`
    pub fn detach_pt(&self) -> io::Result<()> {
        let mut arg = VfioDeviceDetachIommufdPt::new();
        // SAFETY: pointer-free structure, argsz == size_of.
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut arg) }?;
        Ok(())
    }

    /// `VFIO_DEVICE_GET_INFO`
    pub fn info(&self) -> io::Result<VfioDeviceInfo> {
        let mut arg = VfioDeviceInfo::new();
        // SAFETY: pointer-free structure; the kernel writes at most argsz bytes.
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_DEVICE_GET_INFO, &mut arg) }?;
        Ok(arg)
    }

    /// `VFIO_DEVICE_GET_REGION_INFO`
    pub fn region_info(&self, index: u32) -> io::Result<VfioRegionInfo> {
        let mut arg = VfioRegionInfo::new();
        arg.index = index;
        // SAFETY: pointer-free structure; the kernel writes at most argsz
        // bytes (capability chains are only copied if argsz is larger).
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_DEVICE_GET_REGION_INFO, &mut arg) }?;
        Ok(arg)
    }

    /// Access one region (BAR, config space) via pread/pwrite on the device fd.
    pub fn region(&self, index: u32) -> Result<Region<'_>> {
        let info = self
            .region_info(index)
            .with_context(|| format!("VFIO_DEVICE_GET_REGION_INFO index {index}"))?;
        ensure!(
            info.flags & (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)
                == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE),
            "region {index} is not read/write (flags {:#x})",
            info.flags
        );
        Ok(Region { dev: self, info })
    }
}

impl AsFd for VfioDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A readable/writable region of a [`VfioDevice`].
pub struct Region<'a> {
    dev: &'a VfioDevice,
    pub info: VfioRegionInfo,
}

impl Region<'_> {
    fn pos(&self, off: u64, len: usize) -> Result<u64> {
        let end = off.checked_add(len as u64);
        ensure!(
            end.is_some_and(|e| e <= self.info.size),
            "access {off:#x}+{len} outside region {} of size {:#x}",
            self.info.index,
            self.info.size
        );
        self.info
            .offset
            .checked_add(off)
            .context("region offset overflow")
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let pos = self.pos(off, buf.len())?;
        self.dev.file.read_exact_at(buf, pos).with_context(|| {
            format!(
                "pread region {} offset {off:#x} len {}",
                self.info.index,
                buf.len()
            )
        })
    }

    pub fn write(&self, off: u64, buf: &[u8]) -> Result<()> {
        let pos = self.pos(off, buf.len())?;
        self.dev.file.write_all_at(buf, pos).with_context(|| {
            format!(
                "pwrite region {} offset {off:#x} len {}",
                self.info.index,
                buf.len()
            )
        })
    }

    pub fn read16(&self, off: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn write16(&self, off: u64, v: u16) -> Result<()> {
        self.write(off, &v.to_le_bytes())
    }
}

impl Mmio for Region<'_> {
    // vfio-pci BAR accesses are little-endian byte streams.
    fn read32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn write32(&self, offset: u64, value: u32) -> Result<()> {
        self.write(offset, &value.to_le_bytes())
    }
}

/// PCI_COMMAND register offset and bits.
pub const PCI_COMMAND: u64 = 0x04;
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
pub const PCI_COMMAND_MASTER: u16 = 0x4;

/// Enable memory decode and bus mastering through the config region
/// (vfio-pci does not enable bus mastering by itself; without it the
/// device's DMA goes nowhere).
pub fn enable_bus_master(dev: &VfioDevice) -> Result<u16> {
    let cfg = dev.region(VFIO_PCI_CONFIG_REGION_INDEX)?;
    let cmd = cfg.read16(PCI_COMMAND).context("reading PCI_COMMAND")?;
    let new = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    if new != cmd {
        cfg.write16(PCI_COMMAND, new)
            .context("writing PCI_COMMAND")?;
    }
    let now = cfg.read16(PCI_COMMAND).context("re-reading PCI_COMMAND")?;
    ensure!(
        now & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
            == (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER),
        "PCI_COMMAND is {now:#06x} after enabling memory+master"
    );
    Ok(now)
}

/// Legacy `/dev/vfio/vfio` container.
pub struct VfioContainer {
    file: File,
}

impl VfioContainer {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: open_rw(path)?,
        })
    }

    /// `VFIO_GET_API_VERSION`
    pub fn api_version(&self) -> io::Result<i32> {
        // SAFETY: takes no argument.
        unsafe { ioctl_val(self.file.as_fd(), VFIO_GET_API_VERSION, 0) }
    }

    /// `VFIO_CHECK_EXTENSION` (> 0 if supported)
    pub fn check_extension(&self, ext: u32) -> io::Result<i32> {
        // SAFETY: integer argument.
        unsafe { ioctl_val(self.file.as_fd(), VFIO_CHECK_EXTENSION, ext.into()) }
    }

    /// `VFIO_SET_IOMMU`
    pub fn set_iommu(&self, ty: u32) -> io::Result<()> {
        // SAFETY: integer argument.
        unsafe { ioctl_val(self.file.as_fd(), VFIO_SET_IOMMU, ty.into()) }.map(drop)
    }

    /// `VFIO_IOMMU_MAP_DMA` (the kernel pins `vaddr`, never writes through it here).
    pub fn map_dma(&self, vaddr: u64, iova: u64, size: u64, flags: u32) -> io::Result<()> {
        let mut arg = VfioIommuType1DmaMap::new();
        arg.flags = flags;
        arg.vaddr = vaddr;
        arg.iova = iova;
        arg.size = size;
        // SAFETY: argsz == size_of; vaddr is only pinned.
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_IOMMU_MAP_DMA, &mut arg) }.map(drop)
    }

    /// `VFIO_IOMMU_UNMAP_DMA`: returns the number of bytes unmapped.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> io::Result<u64> {
        let mut arg = VfioIommuType1DmaUnmap::new();
        arg.iova = iova;
        arg.size = size;
        // SAFETY: argsz == size_of without the dirty-bitmap flag: no data[].
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_IOMMU_UNMAP_DMA, &mut arg) }?;
        Ok(arg.size)
    }
}

impl AsFd for VfioContainer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `/dev/vfio/<group>`
pub struct VfioGroup {
    file: File,
}

impl VfioGroup {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: open_rw(path)?,
        })
    }

    /// `VFIO_GROUP_GET_STATUS`
    pub fn status(&self) -> io::Result<VfioGroupStatus> {
        let mut arg = VfioGroupStatus::new();
        // SAFETY: pointer-free structure.
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_GROUP_GET_STATUS, &mut arg) }?;
        Ok(arg)
    }

    /// `VFIO_GROUP_SET_CONTAINER`
    pub fn set_container(&self, container: &VfioContainer) -> io::Result<()> {
        let mut fd: i32 = container.file.as_raw_fd();
        // SAFETY: the argument is a pointer to the container fd (an int).
        unsafe { ioctl_ptr(self.file.as_fd(), VFIO_GROUP_SET_CONTAINER, &mut fd) }.map(drop)
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for device `name` (the PCI address).
    pub fn device(&self, name: &str) -> io::Result<VfioDevice> {
        let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the argument is a NUL-terminated string the kernel only reads.
        let fd = unsafe {
            ioctl_ptr(
                self.file.as_fd(),
                VFIO_GROUP_GET_DEVICE_FD,
                c.as_ptr().cast_mut(),
            )
        }?;
        // SAFETY: on success the ioctl returns a new fd that we now own.
        Ok(VfioDevice::from_owned_fd(unsafe {
            OwnedFd::from_raw_fd(fd)
        }))
    }
}

impl AsFd for VfioGroup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
