//! `ioasid-uapi`: the one place in this workspace where ioctl structures and
//! request numbers live.
//!
//! * [`iommufd`] — `#[repr(C)]` mirror of `include/uapi/linux/iommufd.h`
//!   (Linux 7.3), written by hand from the header.
//! * [`vfio`] — the VFIO container/group/device/cdev subset used by tests.
//! * [`kvm`] — `KVM_CREATE_VM`, `KVM_CREATE_DEVICE`, `KVM_SET_DEVICE_ATTR`
//!   and the KVM-VFIO device constants.
//! * [`iommu_sysfs`] — the IOMMU behind a PCI device and its snoop control, from sysfs.
//! * [`test_hook`] — the no-snoop test hook of a `CONFIG_IOASID_TEST` kernel (debugfs).
//! * [`fdinfo`] — the pinning lines of a `/dev/ioasid` file's fdinfo (a procfs uAPI).
//! * [`ioctl`] — `_IO/_IOR/_IOW/_IOWR` as `const fn`s plus raw `ioctl(2)`.
//! * [`Iommufd`] — a thin safe wrapper that works the same on `/dev/iommu`
//!   and `/dev/ioasid`, preserving the raw errno of every failure.

pub mod fdinfo;
pub mod ioctl;
pub mod iommu_sysfs;
pub mod iommufd;
mod iommufd_fd;
pub mod kvm;
pub mod pci;
pub mod test_hook;
pub mod vfio;

pub use iommufd_fd::{DEV_IOASID, DEV_IOMMU, Iommufd, IovaRanges, struct_bytes};
