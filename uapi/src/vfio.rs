//! The subset of `include/uapi/linux/vfio.h` (Linux 7.3) used by the device
//! tests: container/group (type1) API, device info/regions, and the cdev
//! iommufd bind/attach/detach API. VFIO encodes every ioctl as
//! `_IO(VFIO_TYPE, VFIO_BASE + n)` (the `_IOR/_IOW` in the header comments
//! are documentation only).

#![allow(non_upper_case_globals)]

use crate::ioctl::_IO;
use core::mem::size_of;

pub const VFIO_API_VERSION: i32 = 0;

// Extensions
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_SPAPR_TCE_IOMMU: u32 = 2;
pub const VFIO_TYPE1v2_IOMMU: u32 = 3;
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
pub const VFIO_EEH: u32 = 5;
/// `__VFIO_RESERVED_TYPE1_NESTING_IOMMU` (no longer supported)
pub const __VFIO_RESERVED_TYPE1_NESTING_IOMMU: u32 = 6;
pub const VFIO_SPAPR_TCE_v2_IOMMU: u32 = 7;
pub const VFIO_NOIOMMU_IOMMU: u32 = 8;
pub const VFIO_UNMAP_ALL: u32 = 9;
pub const VFIO_UPDATE_VADDR: u32 = 10;

pub const VFIO_TYPE: u8 = b';';
pub const VFIO_BASE: u8 = 100;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`
pub const fn vfio_ioctl(n: u8) -> u32 {
    _IO(VFIO_TYPE, VFIO_BASE + n)
}

// -------- container (/dev/vfio/vfio) --------
pub const VFIO_GET_API_VERSION: u32 = vfio_ioctl(0);
pub const VFIO_CHECK_EXTENSION: u32 = vfio_ioctl(1);
pub const VFIO_SET_IOMMU: u32 = vfio_ioctl(2);

// -------- group (/dev/vfio/$GROUP) --------
pub const VFIO_GROUP_GET_STATUS: u32 = vfio_ioctl(3);
pub const VFIO_GROUP_SET_CONTAINER: u32 = vfio_ioctl(4);
pub const VFIO_GROUP_UNSET_CONTAINER: u32 = vfio_ioctl(5);
pub const VFIO_GROUP_GET_DEVICE_FD: u32 = vfio_ioctl(6);

// -------- device --------
pub const VFIO_DEVICE_GET_INFO: u32 = vfio_ioctl(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u32 = vfio_ioctl(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_ioctl(9);
pub const VFIO_DEVICE_SET_IRQS: u32 = vfio_ioctl(10);
pub const VFIO_DEVICE_RESET: u32 = vfio_ioctl(11);
pub const VFIO_DEVICE_FEATURE: u32 = vfio_ioctl(17);
pub const VFIO_DEVICE_BIND_IOMMUFD: u32 = vfio_ioctl(18);
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u32 = vfio_ioctl(19);
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u32 = vfio_ioctl(20);

// -------- type1 IOMMU (container) --------
pub const VFIO_IOMMU_GET_INFO: u32 = vfio_ioctl(12);
pub const VFIO_IOMMU_MAP_DMA: u32 = vfio_ioctl(13);
pub const VFIO_IOMMU_UNMAP_DMA: u32 = vfio_ioctl(14);

/// `struct vfio_group_status`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioGroupStatus {
    pub argsz: u32,
    pub flags: u32,
}
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;

/// `struct vfio_device_info`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioDeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}
pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;
pub const VFIO_DEVICE_FLAGS_PLATFORM: u32 = 1 << 2;
pub const VFIO_DEVICE_FLAGS_AMBA: u32 = 1 << 3;
pub const VFIO_DEVICE_FLAGS_CCW: u32 = 1 << 4;
pub const VFIO_DEVICE_FLAGS_AP: u32 = 1 << 5;
pub const VFIO_DEVICE_FLAGS_FSL_MC: u32 = 1 << 6;
pub const VFIO_DEVICE_FLAGS_CAPS: u32 = 1 << 7;
pub const VFIO_DEVICE_FLAGS_CDX: u32 = 1 << 8;

/// `struct vfio_region_info`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioRegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}
pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;

// vfio-pci fixed region indexes
pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
pub const VFIO_PCI_BAR1_REGION_INDEX: u32 = 1;
pub const VFIO_PCI_BAR2_REGION_INDEX: u32 = 2;
pub const VFIO_PCI_BAR3_REGION_INDEX: u32 = 3;
pub const VFIO_PCI_BAR4_REGION_INDEX: u32 = 4;
pub const VFIO_PCI_BAR5_REGION_INDEX: u32 = 5;
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const VFIO_PCI_VGA_REGION_INDEX: u32 = 8;
pub const VFIO_PCI_NUM_REGIONS: u32 = 9;

/// `struct vfio_iommu_type1_dma_map` (plain `__u64`s, naturally aligned)
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioIommuType1DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 1 << 2;

/// `struct vfio_iommu_type1_dma_unmap` without its trailing flexible
/// `__u8 data[]` (only used with `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioIommuType1DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 1 << 2;

/// `struct vfio_device_bind_iommufd`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
    pub token_uuid_ptr: u64,
}
pub const VFIO_DEVICE_BIND_FLAG_TOKEN: u32 = 1 << 0;

/// `struct vfio_device_attach_iommufd_pt`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
    pub pasid: u32,
}
pub const VFIO_DEVICE_ATTACH_PASID: u32 = 1 << 0;

/// `struct vfio_device_detach_iommufd_pt`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VfioDeviceDetachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pasid: u32,
}
pub const VFIO_DEVICE_DETACH_PASID: u32 = 1 << 0;

/// Implemented by VFIO argument structures that begin with `argsz`.
pub trait VfioArg: Sized + Default {
    const ARGSZ: u32 = size_of::<Self>() as u32;
    /// Zeroed structure with `argsz` set to `sizeof(struct)`.
    fn new() -> Self;
}

macro_rules! vfio_arg {
    ($($t:ident),* $(,)?) => {$(
        impl VfioArg for $t {
            fn new() -> Self {
                Self { argsz: <Self as VfioArg>::ARGSZ, ..Default::default() }
            }
        }
    )*};
}
vfio_arg!(
    VfioGroupStatus,
    VfioDeviceInfo,
    VfioRegionInfo,
    VfioIommuType1DmaMap,
    VfioIommuType1DmaUnmap,
    VfioDeviceBindIommufd,
    VfioDeviceAttachIommufdPt,
    VfioDeviceDetachIommufdPt,
);

const _: () = {
    assert!(size_of::<VfioGroupStatus>() == 8);
    assert!(size_of::<VfioDeviceInfo>() == 24);
    assert!(size_of::<VfioRegionInfo>() == 32);
    assert!(size_of::<VfioIommuType1DmaMap>() == 32);
    assert!(size_of::<VfioIommuType1DmaUnmap>() == 24);
    assert!(size_of::<VfioDeviceBindIommufd>() == 24);
    assert!(size_of::<VfioDeviceAttachIommufdPt>() == 16);
    assert!(size_of::<VfioDeviceDetachIommufdPt>() == 12);
};
