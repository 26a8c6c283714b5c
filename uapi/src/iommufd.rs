//! Mirror of `include/uapi/linux/iommufd.h` (Linux 7.3), written by hand.
//!
//! Every structure here starts with a `u32 size` (the iommufd extensibility
//! rule): set it to `size_of::<T>()`; the `Default` impls (via `new()`) do so.
//! `__aligned_u64` fields are `u64`; all layouts are explicitly padded in the
//! header, so natural `repr(C)` alignment reproduces them (asserted below and
//! in `tests/layout.rs`).

use crate::ioctl::_IO;
use core::mem::size_of;

/// `IOMMUFD_TYPE`
pub const IOMMUFD_TYPE: u8 = b';';

// enum { IOMMUFD_CMD_* }
pub const IOMMUFD_CMD_BASE: u8 = 0x80;
pub const IOMMUFD_CMD_DESTROY: u8 = IOMMUFD_CMD_BASE;
pub const IOMMUFD_CMD_IOAS_ALLOC: u8 = 0x81;
pub const IOMMUFD_CMD_IOAS_ALLOW_IOVAS: u8 = 0x82;
pub const IOMMUFD_CMD_IOAS_COPY: u8 = 0x83;
pub const IOMMUFD_CMD_IOAS_IOVA_RANGES: u8 = 0x84;
pub const IOMMUFD_CMD_IOAS_MAP: u8 = 0x85;
pub const IOMMUFD_CMD_IOAS_UNMAP: u8 = 0x86;
pub const IOMMUFD_CMD_OPTION: u8 = 0x87;
pub const IOMMUFD_CMD_VFIO_IOAS: u8 = 0x88;
pub const IOMMUFD_CMD_HWPT_ALLOC: u8 = 0x89;
pub const IOMMUFD_CMD_GET_HW_INFO: u8 = 0x8a;
pub const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: u8 = 0x8b;
pub const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: u8 = 0x8c;
pub const IOMMUFD_CMD_HWPT_INVALIDATE: u8 = 0x8d;
pub const IOMMUFD_CMD_FAULT_QUEUE_ALLOC: u8 = 0x8e;
pub const IOMMUFD_CMD_IOAS_MAP_FILE: u8 = 0x8f;
pub const IOMMUFD_CMD_VIOMMU_ALLOC: u8 = 0x90;
pub const IOMMUFD_CMD_VDEVICE_ALLOC: u8 = 0x91;
pub const IOMMUFD_CMD_IOAS_CHANGE_PROCESS: u8 = 0x92;
pub const IOMMUFD_CMD_VEVENTQ_ALLOC: u8 = 0x93;
pub const IOMMUFD_CMD_HW_QUEUE_ALLOC: u8 = 0x94;
pub const IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA: u8 = 0x95;
/// One past the last command number known to this mirror (7.3).
pub const IOMMUFD_CMD_END: u8 = 0x96;

/// `_IO(IOMMUFD_TYPE, cmd)` — every iommufd ioctl is encoded this way.
pub const fn iommufd_ioctl(cmd: u8) -> u32 {
    _IO(IOMMUFD_TYPE, cmd)
}

pub const IOMMU_DESTROY: u32 = iommufd_ioctl(IOMMUFD_CMD_DESTROY);
pub const IOMMU_IOAS_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_ALLOC);
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
pub const IOMMU_IOAS_COPY: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_COPY);
pub const IOMMU_IOAS_IOVA_RANGES: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_IOVA_RANGES);
pub const IOMMU_IOAS_MAP: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_MAP);
pub const IOMMU_IOAS_UNMAP: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_UNMAP);
pub const IOMMU_OPTION: u32 = iommufd_ioctl(IOMMUFD_CMD_OPTION);
pub const IOMMU_VFIO_IOAS: u32 = iommufd_ioctl(IOMMUFD_CMD_VFIO_IOAS);
pub const IOMMU_HWPT_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_HWPT_ALLOC);
pub const IOMMU_GET_HW_INFO: u32 = iommufd_ioctl(IOMMUFD_CMD_GET_HW_INFO);
pub const IOMMU_HWPT_SET_DIRTY_TRACKING: u32 = iommufd_ioctl(IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
pub const IOMMU_HWPT_GET_DIRTY_BITMAP: u32 = iommufd_ioctl(IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
pub const IOMMU_HWPT_INVALIDATE: u32 = iommufd_ioctl(IOMMUFD_CMD_HWPT_INVALIDATE);
pub const IOMMU_FAULT_QUEUE_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
pub const IOMMU_IOAS_MAP_FILE: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_MAP_FILE);
pub const IOMMU_VIOMMU_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_VIOMMU_ALLOC);
pub const IOMMU_VDEVICE_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_VDEVICE_ALLOC);
pub const IOMMU_IOAS_CHANGE_PROCESS: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_CHANGE_PROCESS);
pub const IOMMU_VEVENTQ_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_VEVENTQ_ALLOC);
pub const IOMMU_HW_QUEUE_ALLOC: u32 = iommufd_ioctl(IOMMUFD_CMD_HW_QUEUE_ALLOC);
pub const IOMMU_IOAS_NOIOMMU_GET_PA: u32 = iommufd_ioctl(IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA);

/// Implemented by every iommufd command structure: its `size` field.
pub trait IommufdCmd: Sized {
    /// `sizeof(struct ...)` as the header defines it.
    const SIZE: u32 = size_of::<Self>() as u32;
}

macro_rules! iommufd_cmd {
    ($($t:ident),* $(,)?) => {$(
        impl IommufdCmd for $t {}
        impl $t {
            /// Zeroed structure with `size` set to `sizeof(struct)`.
            pub fn new() -> Self {
                Self { size: <Self as IommufdCmd>::SIZE, ..Default::default() }
            }
        }
    )*};
}

/// `struct iommu_destroy`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuDestroy {
    pub size: u32,
    pub id: u32,
}

/// `struct iommu_ioas_alloc`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasAlloc {
    pub size: u32,
    /// Must be 0
    pub flags: u32,
    pub out_ioas_id: u32,
}

/// `struct iommu_iova_range` (`last` is inclusive)
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIovaRange {
    pub start: u64,
    pub last: u64,
}

/// `struct iommu_ioas_iova_ranges`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasIovaRanges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub __reserved: u32,
    /// user pointer to `struct iommu_iova_range[num_iovas]`
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

/// `struct iommu_ioas_allow_iovas`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasAllowIovas {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub __reserved: u32,
    /// user pointer to `struct iommu_iova_range[num_iovas]`
    pub allowed_iovas: u64,
}

// enum iommufd_ioas_map_flags
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `struct iommu_ioas_map`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub __reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_ioas_noiommu_get_pa`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasNoiommuGetPa {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub __reserved: u32,
    pub iova: u64,
    pub length: u64,
    pub out_phys: u64,
}

/// `struct iommu_ioas_map_file`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasMapFile {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub fd: i32,
    pub start: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_ioas_copy`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasCopy {
    pub size: u32,
    pub flags: u32,
    pub dst_ioas_id: u32,
    pub src_ioas_id: u32,
    pub length: u64,
    pub dst_iova: u64,
    pub src_iova: u64,
}

/// `struct iommu_ioas_unmap`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

// enum iommufd_option
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
pub const IOMMU_OPTION_HUGE_PAGES: u32 = 1;
// enum iommufd_option_ops
pub const IOMMU_OPTION_OP_SET: u16 = 0;
pub const IOMMU_OPTION_OP_GET: u16 = 1;

/// `struct iommu_option`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuOption {
    pub size: u32,
    pub option_id: u32,
    pub op: u16,
    pub __reserved: u16,
    pub object_id: u32,
    pub val64: u64,
}

// enum iommufd_vfio_ioas_op
pub const IOMMU_VFIO_IOAS_GET: u16 = 0;
pub const IOMMU_VFIO_IOAS_SET: u16 = 1;
pub const IOMMU_VFIO_IOAS_CLEAR: u16 = 2;

/// `struct iommu_vfio_ioas`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuVfioIoas {
    pub size: u32,
    pub ioas_id: u32,
    pub op: u16,
    pub __reserved: u16,
}

// enum iommufd_hwpt_alloc_flags
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = 1 << 1;
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
pub const IOMMU_HWPT_ALLOC_PASID: u32 = 1 << 3;

// enum iommu_hwpt_vtd_s1_flags
pub const IOMMU_VTD_S1_SRE: u64 = 1 << 0;
pub const IOMMU_VTD_S1_EAFE: u64 = 1 << 1;
pub const IOMMU_VTD_S1_WPE: u64 = 1 << 2;

/// `struct iommu_hwpt_vtd_s1` (`IOMMU_HWPT_DATA_VTD_S1` payload; no `size` field)
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwptVtdS1 {
    pub flags: u64,
    pub pgtbl_addr: u64,
    pub addr_width: u32,
    pub __reserved: u32,
}

// enum iommu_hwpt_data_type
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
pub const IOMMU_HWPT_DATA_VTD_S1: u32 = 1;
pub const IOMMU_HWPT_DATA_ARM_SMMUV3: u32 = 2;
pub const IOMMU_HWPT_DATA_AMD_GUEST: u32 = 3;

/// `struct iommu_hwpt_alloc`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwptAlloc {
    pub size: u32,
    pub flags: u32,
    pub dev_id: u32,
    pub pt_id: u32,
    pub out_hwpt_id: u32,
    pub __reserved: u32,
    pub data_type: u32,
    pub data_len: u32,
    pub data_uptr: u64,
    pub fault_id: u32,
    pub __reserved2: u32,
}

// enum iommu_hw_info_vtd_flags
pub const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: u32 = 1 << 0;

/// `struct iommu_hw_info_vtd` (`IOMMU_HW_INFO_TYPE_INTEL_VTD` payload)
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwInfoVtd {
    pub flags: u32,
    pub __reserved: u32,
    pub cap_reg: u64,
    pub ecap_reg: u64,
}

// enum iommu_hw_info_arm_smmuv3_flags
pub const IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI: u32 = 1 << 0;

/// `struct iommu_hw_info_arm_smmuv3`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwInfoArmSmmuv3 {
    pub flags: u32,
    pub __reserved: u32,
    pub idr: [u32; 6],
    pub iidr: u32,
    pub aidr: u32,
}

/// `struct iommu_hw_info_amd`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwInfoAmd {
    pub efr: u64,
    pub efr2: u64,
}

// enum iommu_hw_info_type
pub const IOMMU_HW_INFO_TYPE_NONE: u32 = 0;
pub const IOMMU_HW_INFO_TYPE_DEFAULT: u32 = 0;
pub const IOMMU_HW_INFO_TYPE_INTEL_VTD: u32 = 1;
pub const IOMMU_HW_INFO_TYPE_ARM_SMMUV3: u32 = 2;
pub const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: u32 = 3;
pub const IOMMU_HW_INFO_TYPE_AMD: u32 = 4;

// enum iommufd_hw_capabilities
pub const IOMMU_HW_CAP_DIRTY_TRACKING: u64 = 1 << 0;
pub const IOMMU_HW_CAP_PCI_PASID_EXEC: u64 = 1 << 1;
pub const IOMMU_HW_CAP_PCI_PASID_PRIV: u64 = 1 << 2;
pub const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: u64 = 1 << 3;

// enum iommufd_hw_info_flags
pub const IOMMU_HW_INFO_FLAG_INPUT_TYPE: u32 = 1 << 0;

/// `struct iommu_hw_info`.
///
/// The C structure has an anonymous `union { __u32 in_data_type; __u32
/// out_data_type; }` at offset 24; both members are the same `u32`, mirrored
/// here as the single field `data_type` (see [`IommuHwInfo::out_data_type`]).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwInfo {
    pub size: u32,
    pub flags: u32,
    pub dev_id: u32,
    pub data_len: u32,
    pub data_uptr: u64,
    /// `in_data_type` / `out_data_type` union
    pub data_type: u32,
    pub out_max_pasid_log2: u8,
    pub __reserved: [u8; 3],
    pub out_capabilities: u64,
}

impl IommuHwInfo {
    /// The `out_data_type` union member.
    pub fn out_data_type(&self) -> u32 {
        self.data_type
    }
    /// Set the `in_data_type` union member (requires `IOMMU_HW_INFO_FLAG_INPUT_TYPE`).
    pub fn set_in_data_type(&mut self, ty: u32) {
        self.data_type = ty;
    }
}

// enum iommufd_hwpt_set_dirty_tracking_flags
pub const IOMMU_HWPT_DIRTY_TRACKING_ENABLE: u32 = 1;

/// `struct iommu_hwpt_set_dirty_tracking`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwptSetDirtyTracking {
    pub size: u32,
    pub flags: u32,
    pub hwpt_id: u32,
    pub __reserved: u32,
}

// enum iommufd_hwpt_get_dirty_bitmap_flags
pub const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: u32 = 1;

/// `struct iommu_hwpt_get_dirty_bitmap`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuHwptGetDirtyBitmap {
    pub size: u32,
    pub hwpt_id: u32,
    pub flags: u32,
    pub __reserved: u32,
    pub iova: u64,
    pub length: u64,
    pub page_size: u64,
    pub data: u64,
}

/// `struct iommu_fault_alloc`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuFaultAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_fault_id: u32,
    pub out_fault_fd: u32,
}

/// `struct iommu_ioas_change_process`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IommuIoasChangeProcess {
    pub size: u32,
    pub __reserved: u32,
}

iommufd_cmd!(
    IommuDestroy,
    IommuIoasAlloc,
    IommuIoasIovaRanges,
    IommuIoasAllowIovas,
    IommuIoasMap,
    IommuIoasNoiommuGetPa,
    IommuIoasMapFile,
    IommuIoasCopy,
    IommuIoasUnmap,
    IommuOption,
    IommuVfioIoas,
    IommuHwptAlloc,
    IommuHwInfo,
    IommuHwptSetDirtyTracking,
    IommuHwptGetDirtyBitmap,
    IommuFaultAlloc,
    IommuIoasChangeProcess,
);

// Compile-time layout checks (sizes documented by the header's fixed layouts;
// verified against the 7.3 header with a C program, see tests/layout.rs).
const _: () = {
    assert!(size_of::<IommuDestroy>() == 8);
    assert!(size_of::<IommuIoasAlloc>() == 12);
    assert!(size_of::<IommuIovaRange>() == 16);
    assert!(size_of::<IommuIoasIovaRanges>() == 32);
    assert!(size_of::<IommuIoasAllowIovas>() == 24);
    assert!(size_of::<IommuIoasMap>() == 40);
    assert!(size_of::<IommuIoasNoiommuGetPa>() == 40);
    assert!(size_of::<IommuIoasMapFile>() == 40);
    assert!(size_of::<IommuIoasCopy>() == 40);
    assert!(size_of::<IommuIoasUnmap>() == 24);
    assert!(size_of::<IommuOption>() == 24);
    assert!(size_of::<IommuVfioIoas>() == 12);
    assert!(size_of::<IommuHwptVtdS1>() == 24);
    assert!(size_of::<IommuHwptAlloc>() == 48);
    assert!(size_of::<IommuHwInfoVtd>() == 24);
    assert!(size_of::<IommuHwInfoArmSmmuv3>() == 40);
    assert!(size_of::<IommuHwInfoAmd>() == 16);
    assert!(size_of::<IommuHwInfo>() == 40);
    assert!(size_of::<IommuHwptSetDirtyTracking>() == 16);
    assert!(size_of::<IommuHwptGetDirtyBitmap>() == 48);
    assert!(size_of::<IommuFaultAlloc>() == 16);
    assert!(size_of::<IommuIoasChangeProcess>() == 8);
};
