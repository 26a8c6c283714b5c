//! Layout, constant and ioctl-number checks against Linux 7.3's uAPI headers.
//!
//! The expected values below were produced once, interactively, by a C
//! program compiled against the pristine 7.3.4 tree's
//! `include/uapi/linux/{iommufd,vfio,kvm}.h` (x86_64, gcc), printing
//! `sizeof`/`offsetof`/the macro values; they agree with a hand computation
//! from the `_IOC` encoding (`dir << 30 | size << 16 | type << 8 | nr`, e.g.
//! `IOMMU_IOAS_ALLOC = ';' (0x3b) << 8 | 0x81 = 0x3b81`,
//! `KVM_CREATE_DEVICE = 3 << 30 | 12 << 16 | 0xae << 8 | 0xe0 = 0xc00caee0`).
//! No kernel header is needed at test time.

// The `as u64` casts are deliberate: one comparison shape for constants of
// any C type.
#![allow(clippy::unnecessary_cast)]

use core::mem::{offset_of, size_of};
use ioasid_uapi::iommufd::*;
use ioasid_uapi::kvm::*;
use ioasid_uapi::vfio::*;

/// asm-generic ioctl encoding (x86, arm64, riscv, ...).
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
#[test]
fn ioctl_numbers_match_7_3_headers() {
    assert_eq!(IOMMU_DESTROY, 0x00003b80, "IOMMU_DESTROY");
    assert_eq!(IOMMU_IOAS_ALLOC, 0x00003b81, "IOMMU_IOAS_ALLOC");
    assert_eq!(IOMMU_IOAS_ALLOW_IOVAS, 0x00003b82, "IOMMU_IOAS_ALLOW_IOVAS");
    assert_eq!(IOMMU_IOAS_COPY, 0x00003b83, "IOMMU_IOAS_COPY");
    assert_eq!(IOMMU_IOAS_IOVA_RANGES, 0x00003b84, "IOMMU_IOAS_IOVA_RANGES");
    assert_eq!(IOMMU_IOAS_MAP, 0x00003b85, "IOMMU_IOAS_MAP");
    assert_eq!(IOMMU_IOAS_UNMAP, 0x00003b86, "IOMMU_IOAS_UNMAP");
    assert_eq!(IOMMU_OPTION, 0x00003b87, "IOMMU_OPTION");
    assert_eq!(IOMMU_VFIO_IOAS, 0x00003b88, "IOMMU_VFIO_IOAS");
    assert_eq!(IOMMU_HWPT_ALLOC, 0x00003b89, "IOMMU_HWPT_ALLOC");
    assert_eq!(IOMMU_GET_HW_INFO, 0x00003b8a, "IOMMU_GET_HW_INFO");
    assert_eq!(
        IOMMU_HWPT_SET_DIRTY_TRACKING, 0x00003b8b,
        "IOMMU_HWPT_SET_DIRTY_TRACKING"
    );
    assert_eq!(
        IOMMU_HWPT_GET_DIRTY_BITMAP, 0x00003b8c,
        "IOMMU_HWPT_GET_DIRTY_BITMAP"
    );
    assert_eq!(IOMMU_HWPT_INVALIDATE, 0x00003b8d, "IOMMU_HWPT_INVALIDATE");
    assert_eq!(
        IOMMU_FAULT_QUEUE_ALLOC, 0x00003b8e,
        "IOMMU_FAULT_QUEUE_ALLOC"
    );
    assert_eq!(IOMMU_IOAS_MAP_FILE, 0x00003b8f, "IOMMU_IOAS_MAP_FILE");
    assert_eq!(IOMMU_VIOMMU_ALLOC, 0x00003b90, "IOMMU_VIOMMU_ALLOC");
    assert_eq!(IOMMU_VDEVICE_ALLOC, 0x00003b91, "IOMMU_VDEVICE_ALLOC");
    assert_eq!(
        IOMMU_IOAS_CHANGE_PROCESS, 0x00003b92,
        "IOMMU_IOAS_CHANGE_PROCESS"
    );
    assert_eq!(IOMMU_VEVENTQ_ALLOC, 0x00003b93, "IOMMU_VEVENTQ_ALLOC");
    assert_eq!(IOMMU_HW_QUEUE_ALLOC, 0x00003b94, "IOMMU_HW_QUEUE_ALLOC");
    assert_eq!(
        IOMMU_IOAS_NOIOMMU_GET_PA, 0x00003b95,
        "IOMMU_IOAS_NOIOMMU_GET_PA"
    );
    assert_eq!(VFIO_GET_API_VERSION, 0x00003b64, "VFIO_GET_API_VERSION");
    assert_eq!(VFIO_CHECK_EXTENSION, 0x00003b65, "VFIO_CHECK_EXTENSION");
    assert_eq!(VFIO_SET_IOMMU, 0x00003b66, "VFIO_SET_IOMMU");
    assert_eq!(VFIO_GROUP_GET_STATUS, 0x00003b67, "VFIO_GROUP_GET_STATUS");
    assert_eq!(
        VFIO_GROUP_SET_CONTAINER, 0x00003b68,
        "VFIO_GROUP_SET_CONTAINER"
    );
    assert_eq!(
        VFIO_GROUP_UNSET_CONTAINER, 0x00003b69,
        "VFIO_GROUP_UNSET_CONTAINER"
    );
    assert_eq!(
        VFIO_GROUP_GET_DEVICE_FD, 0x00003b6a,
        "VFIO_GROUP_GET_DEVICE_FD"
    );
    assert_eq!(VFIO_DEVICE_GET_INFO, 0x00003b6b, "VFIO_DEVICE_GET_INFO");
    assert_eq!(
        VFIO_DEVICE_GET_REGION_INFO, 0x00003b6c,
        "VFIO_DEVICE_GET_REGION_INFO"
    );
    assert_eq!(
        VFIO_DEVICE_GET_IRQ_INFO, 0x00003b6d,
        "VFIO_DEVICE_GET_IRQ_INFO"
    );
    assert_eq!(VFIO_DEVICE_SET_IRQS, 0x00003b6e, "VFIO_DEVICE_SET_IRQS");
    assert_eq!(VFIO_DEVICE_RESET, 0x00003b6f, "VFIO_DEVICE_RESET");
    assert_eq!(VFIO_DEVICE_FEATURE, 0x00003b75, "VFIO_DEVICE_FEATURE");
    assert_eq!(
        VFIO_DEVICE_BIND_IOMMUFD, 0x00003b76,
        "VFIO_DEVICE_BIND_IOMMUFD"
    );
    assert_eq!(
        VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x00003b77,
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT"
    );
    assert_eq!(
        VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x00003b78,
        "VFIO_DEVICE_DETACH_IOMMUFD_PT"
    );
    assert_eq!(VFIO_IOMMU_GET_INFO, 0x00003b70, "VFIO_IOMMU_GET_INFO");
    assert_eq!(VFIO_IOMMU_MAP_DMA, 0x00003b71, "VFIO_IOMMU_MAP_DMA");
    assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x00003b72, "VFIO_IOMMU_UNMAP_DMA");
    assert_eq!(KVM_GET_API_VERSION, 0x0000ae00, "KVM_GET_API_VERSION");
    assert_eq!(KVM_CREATE_VM, 0x0000ae01, "KVM_CREATE_VM");
    assert_eq!(KVM_CHECK_EXTENSION, 0x0000ae03, "KVM_CHECK_EXTENSION");
    assert_eq!(KVM_CREATE_DEVICE, 0xc00caee0, "KVM_CREATE_DEVICE");
    assert_eq!(KVM_SET_DEVICE_ATTR, 0x4018aee1, "KVM_SET_DEVICE_ATTR");
    assert_eq!(KVM_GET_DEVICE_ATTR, 0x4018aee2, "KVM_GET_DEVICE_ATTR");
    assert_eq!(KVM_HAS_DEVICE_ATTR, 0x4018aee3, "KVM_HAS_DEVICE_ATTR");
}

#[test]
fn constants_match_7_3_headers() {
    assert_eq!(
        IOMMU_IOAS_MAP_FIXED_IOVA as u64, 1,
        "IOMMU_IOAS_MAP_FIXED_IOVA"
    );
    assert_eq!(
        IOMMU_IOAS_MAP_WRITEABLE as u64, 2,
        "IOMMU_IOAS_MAP_WRITEABLE"
    );
    assert_eq!(IOMMU_IOAS_MAP_READABLE as u64, 4, "IOMMU_IOAS_MAP_READABLE");
    assert_eq!(
        IOMMU_OPTION_RLIMIT_MODE as u64, 0,
        "IOMMU_OPTION_RLIMIT_MODE"
    );
    assert_eq!(IOMMU_OPTION_HUGE_PAGES as u64, 1, "IOMMU_OPTION_HUGE_PAGES");
    assert_eq!(IOMMU_OPTION_OP_SET as u64, 0, "IOMMU_OPTION_OP_SET");
    assert_eq!(IOMMU_OPTION_OP_GET as u64, 1, "IOMMU_OPTION_OP_GET");
    assert_eq!(IOMMU_VFIO_IOAS_GET as u64, 0, "IOMMU_VFIO_IOAS_GET");
    assert_eq!(IOMMU_VFIO_IOAS_SET as u64, 1, "IOMMU_VFIO_IOAS_SET");
    assert_eq!(IOMMU_VFIO_IOAS_CLEAR as u64, 2, "IOMMU_VFIO_IOAS_CLEAR");
    assert_eq!(
        IOMMU_HWPT_ALLOC_NEST_PARENT as u64, 1,
        "IOMMU_HWPT_ALLOC_NEST_PARENT"
    );
    assert_eq!(
        IOMMU_HWPT_ALLOC_DIRTY_TRACKING as u64, 2,
        "IOMMU_HWPT_ALLOC_DIRTY_TRACKING"
    );
    assert_eq!(
        IOMMU_HWPT_FAULT_ID_VALID as u64, 4,
        "IOMMU_HWPT_FAULT_ID_VALID"
    );
    assert_eq!(IOMMU_HWPT_ALLOC_PASID as u64, 8, "IOMMU_HWPT_ALLOC_PASID");
    assert_eq!(IOMMU_VTD_S1_SRE as u64, 1, "IOMMU_VTD_S1_SRE");
    assert_eq!(IOMMU_VTD_S1_EAFE as u64, 2, "IOMMU_VTD_S1_EAFE");
    assert_eq!(IOMMU_VTD_S1_WPE as u64, 4, "IOMMU_VTD_S1_WPE");
    assert_eq!(IOMMU_HWPT_DATA_NONE as u64, 0, "IOMMU_HWPT_DATA_NONE");
    assert_eq!(IOMMU_HWPT_DATA_VTD_S1 as u64, 1, "IOMMU_HWPT_DATA_VTD_S1");
    assert_eq!(
        IOMMU_HWPT_DATA_ARM_SMMUV3 as u64, 2,
        "IOMMU_HWPT_DATA_ARM_SMMUV3"
    );
    assert_eq!(
        IOMMU_HWPT_DATA_AMD_GUEST as u64, 3,
        "IOMMU_HWPT_DATA_AMD_GUEST"
    );
    assert_eq!(
        IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 as u64, 1,
        "IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17"
    );
    assert_eq!(IOMMU_HW_INFO_TYPE_NONE as u64, 0, "IOMMU_HW_INFO_TYPE_NONE");
    assert_eq!(
        IOMMU_HW_INFO_TYPE_DEFAULT as u64, 0,
        "IOMMU_HW_INFO_TYPE_DEFAULT"
    );
    assert_eq!(
        IOMMU_HW_INFO_TYPE_INTEL_VTD as u64, 1,
        "IOMMU_HW_INFO_TYPE_INTEL_VTD"
    );
    assert_eq!(
        IOMMU_HW_INFO_TYPE_ARM_SMMUV3 as u64, 2,
        "IOMMU_HW_INFO_TYPE_ARM_SMMUV3"
    );
    assert_eq!(
        IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV as u64, 3,
        "IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV"
    );
    assert_eq!(IOMMU_HW_INFO_TYPE_AMD as u64, 4, "IOMMU_HW_INFO_TYPE_AMD");
    assert_eq!(
        IOMMU_HW_CAP_DIRTY_TRACKING as u64, 1,
        "IOMMU_HW_CAP_DIRTY_TRACKING"
    );
    assert_eq!(
        IOMMU_HW_CAP_PCI_PASID_EXEC as u64, 2,
        "IOMMU_HW_CAP_PCI_PASID_EXEC"
    );
    assert_eq!(
        IOMMU_HW_CAP_PCI_PASID_PRIV as u64, 4,
        "IOMMU_HW_CAP_PCI_PASID_PRIV"
    );
    assert_eq!(
        IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED as u64, 8,
        "IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED"
    );
    assert_eq!(
        IOMMU_HW_INFO_FLAG_INPUT_TYPE as u64, 1,
        "IOMMU_HW_INFO_FLAG_INPUT_TYPE"
    );
    assert_eq!(
        IOMMU_HWPT_DIRTY_TRACKING_ENABLE as u64, 1,
        "IOMMU_HWPT_DIRTY_TRACKING_ENABLE"
    );
    assert_eq!(
        IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR as u64, 1,
        "IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR"
    );
    assert_eq!(VFIO_API_VERSION as u64, 0, "VFIO_API_VERSION");
    assert_eq!(VFIO_TYPE1_IOMMU as u64, 1, "VFIO_TYPE1_IOMMU");
    assert_eq!(VFIO_TYPE1v2_IOMMU as u64, 3, "VFIO_TYPE1v2_IOMMU");
    assert_eq!(VFIO_NOIOMMU_IOMMU as u64, 8, "VFIO_NOIOMMU_IOMMU");
    assert_eq!(VFIO_UNMAP_ALL as u64, 9, "VFIO_UNMAP_ALL");
    assert_eq!(VFIO_GROUP_FLAGS_VIABLE as u64, 1, "VFIO_GROUP_FLAGS_VIABLE");
    assert_eq!(
        VFIO_GROUP_FLAGS_CONTAINER_SET as u64, 2,
        "VFIO_GROUP_FLAGS_CONTAINER_SET"
    );
    assert_eq!(VFIO_DEVICE_FLAGS_RESET as u64, 1, "VFIO_DEVICE_FLAGS_RESET");
    assert_eq!(VFIO_DEVICE_FLAGS_PCI as u64, 2, "VFIO_DEVICE_FLAGS_PCI");
    assert_eq!(VFIO_DEVICE_FLAGS_CAPS as u64, 128, "VFIO_DEVICE_FLAGS_CAPS");
    assert_eq!(
        VFIO_REGION_INFO_FLAG_READ as u64, 1,
        "VFIO_REGION_INFO_FLAG_READ"
    );
    assert_eq!(
        VFIO_REGION_INFO_FLAG_WRITE as u64, 2,
        "VFIO_REGION_INFO_FLAG_WRITE"
    );
    assert_eq!(
        VFIO_REGION_INFO_FLAG_MMAP as u64, 4,
        "VFIO_REGION_INFO_FLAG_MMAP"
    );
    assert_eq!(
        VFIO_REGION_INFO_FLAG_CAPS as u64, 8,
        "VFIO_REGION_INFO_FLAG_CAPS"
    );
    assert_eq!(
        VFIO_PCI_BAR0_REGION_INDEX as u64, 0,
        "VFIO_PCI_BAR0_REGION_INDEX"
    );
    assert_eq!(
        VFIO_PCI_CONFIG_REGION_INDEX as u64, 7,
        "VFIO_PCI_CONFIG_REGION_INDEX"
    );
    assert_eq!(VFIO_PCI_NUM_REGIONS as u64, 9, "VFIO_PCI_NUM_REGIONS");
    assert_eq!(VFIO_DMA_MAP_FLAG_READ as u64, 1, "VFIO_DMA_MAP_FLAG_READ");
    assert_eq!(VFIO_DMA_MAP_FLAG_WRITE as u64, 2, "VFIO_DMA_MAP_FLAG_WRITE");
    assert_eq!(VFIO_DMA_MAP_FLAG_VADDR as u64, 4, "VFIO_DMA_MAP_FLAG_VADDR");
    assert_eq!(
        VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP as u64, 1,
        "VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP"
    );
    assert_eq!(VFIO_DMA_UNMAP_FLAG_ALL as u64, 2, "VFIO_DMA_UNMAP_FLAG_ALL");
    assert_eq!(
        VFIO_DMA_UNMAP_FLAG_VADDR as u64, 4,
        "VFIO_DMA_UNMAP_FLAG_VADDR"
    );
    assert_eq!(
        VFIO_DEVICE_BIND_FLAG_TOKEN as u64, 1,
        "VFIO_DEVICE_BIND_FLAG_TOKEN"
    );
    assert_eq!(
        VFIO_DEVICE_ATTACH_PASID as u64, 1,
        "VFIO_DEVICE_ATTACH_PASID"
    );
    assert_eq!(
        VFIO_DEVICE_DETACH_PASID as u64, 1,
        "VFIO_DEVICE_DETACH_PASID"
    );
    assert_eq!(KVMIO as u64, 174, "KVMIO");
    assert_eq!(KVM_API_VERSION as u64, 12, "KVM_API_VERSION");
    assert_eq!(KVM_DEV_TYPE_VFIO as u64, 4, "KVM_DEV_TYPE_VFIO");
    assert_eq!(KVM_DEV_VFIO_FILE as u64, 1, "KVM_DEV_VFIO_FILE");
    assert_eq!(KVM_DEV_VFIO_FILE_ADD as u64, 1, "KVM_DEV_VFIO_FILE_ADD");
    assert_eq!(KVM_DEV_VFIO_FILE_DEL as u64, 2, "KVM_DEV_VFIO_FILE_DEL");
    assert_eq!(KVM_DEV_VFIO_GROUP as u64, 1, "KVM_DEV_VFIO_GROUP");
    assert_eq!(KVM_DEV_VFIO_GROUP_ADD as u64, 1, "KVM_DEV_VFIO_GROUP_ADD");
    assert_eq!(KVM_DEV_VFIO_GROUP_DEL as u64, 2, "KVM_DEV_VFIO_GROUP_DEL");
    assert_eq!(KVM_CREATE_DEVICE_TEST as u64, 1, "KVM_CREATE_DEVICE_TEST");
}

#[test]
fn struct_layouts_match_7_3_headers() {
    assert_eq!(size_of::<IommuDestroy>(), 8, "sizeof(struct iommu_destroy)");
    assert_eq!(
        offset_of!(IommuDestroy, size),
        0,
        "offsetof(struct iommu_destroy, size)"
    );
    assert_eq!(
        offset_of!(IommuDestroy, id),
        4,
        "offsetof(struct iommu_destroy, id)"
    );
    assert_eq!(
        size_of::<IommuIoasAlloc>(),
        12,
        "sizeof(struct iommu_ioas_alloc)"
    );
    assert_eq!(
        offset_of!(IommuIoasAlloc, flags),
        4,
        "offsetof(struct iommu_ioas_alloc, flags)"
    );
    assert_eq!(
        offset_of!(IommuIoasAlloc, out_ioas_id),
        8,
        "offsetof(struct iommu_ioas_alloc, out_ioas_id)"
    );
    assert_eq!(
        size_of::<IommuIovaRange>(),
        16,
        "sizeof(struct iommu_iova_range)"
    );
    assert_eq!(
        offset_of!(IommuIovaRange, start),
        0,
        "offsetof(struct iommu_iova_range, start)"
    );
    assert_eq!(
        offset_of!(IommuIovaRange, last),
        8,
        "offsetof(struct iommu_iova_range, last)"
    );
    assert_eq!(
        size_of::<IommuIoasIovaRanges>(),
        32,
        "sizeof(struct iommu_ioas_iova_ranges)"
    );
    assert_eq!(
        offset_of!(IommuIoasIovaRanges, ioas_id),
        4,
        "offsetof(struct iommu_ioas_iova_ranges, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasIovaRanges, num_iovas),
        8,
        "offsetof(struct iommu_ioas_iova_ranges, num_iovas)"
    );
    assert_eq!(
        offset_of!(IommuIoasIovaRanges, __reserved),
        12,
        "offsetof(struct iommu_ioas_iova_ranges, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuIoasIovaRanges, allowed_iovas),
        16,
        "offsetof(struct iommu_ioas_iova_ranges, allowed_iovas)"
    );
    assert_eq!(
        offset_of!(IommuIoasIovaRanges, out_iova_alignment),
        24,
        "offsetof(struct iommu_ioas_iova_ranges, out_iova_alignment)"
    );
    assert_eq!(
        size_of::<IommuIoasAllowIovas>(),
        24,
        "sizeof(struct iommu_ioas_allow_iovas)"
    );
    assert_eq!(
        offset_of!(IommuIoasAllowIovas, ioas_id),
        4,
        "offsetof(struct iommu_ioas_allow_iovas, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasAllowIovas, num_iovas),
        8,
        "offsetof(struct iommu_ioas_allow_iovas, num_iovas)"
    );
    assert_eq!(
        offset_of!(IommuIoasAllowIovas, __reserved),
        12,
        "offsetof(struct iommu_ioas_allow_iovas, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuIoasAllowIovas, allowed_iovas),
        16,
        "offsetof(struct iommu_ioas_allow_iovas, allowed_iovas)"
    );
    assert_eq!(
        size_of::<IommuIoasMap>(),
        40,
        "sizeof(struct iommu_ioas_map)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, flags),
        4,
        "offsetof(struct iommu_ioas_map, flags)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, ioas_id),
        8,
        "offsetof(struct iommu_ioas_map, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, __reserved),
        12,
        "offsetof(struct iommu_ioas_map, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, user_va),
        16,
        "offsetof(struct iommu_ioas_map, user_va)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, length),
        24,
        "offsetof(struct iommu_ioas_map, length)"
    );
    assert_eq!(
        offset_of!(IommuIoasMap, iova),
        32,
        "offsetof(struct iommu_ioas_map, iova)"
    );
    assert_eq!(
        size_of::<IommuIoasNoiommuGetPa>(),
        40,
        "sizeof(struct iommu_ioas_noiommu_get_pa)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, flags),
        4,
        "offsetof(struct iommu_ioas_noiommu_get_pa, flags)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, ioas_id),
        8,
        "offsetof(struct iommu_ioas_noiommu_get_pa, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, __reserved),
        12,
        "offsetof(struct iommu_ioas_noiommu_get_pa, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, iova),
        16,
        "offsetof(struct iommu_ioas_noiommu_get_pa, iova)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, length),
        24,
        "offsetof(struct iommu_ioas_noiommu_get_pa, length)"
    );
    assert_eq!(
        offset_of!(IommuIoasNoiommuGetPa, out_phys),
        32,
        "offsetof(struct iommu_ioas_noiommu_get_pa, out_phys)"
    );
    assert_eq!(
        size_of::<IommuIoasMapFile>(),
        40,
        "sizeof(struct iommu_ioas_map_file)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, flags),
        4,
        "offsetof(struct iommu_ioas_map_file, flags)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, ioas_id),
        8,
        "offsetof(struct iommu_ioas_map_file, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, fd),
        12,
        "offsetof(struct iommu_ioas_map_file, fd)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, start),
        16,
        "offsetof(struct iommu_ioas_map_file, start)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, length),
        24,
        "offsetof(struct iommu_ioas_map_file, length)"
    );
    assert_eq!(
        offset_of!(IommuIoasMapFile, iova),
        32,
        "offsetof(struct iommu_ioas_map_file, iova)"
    );
    assert_eq!(
        size_of::<IommuIoasCopy>(),
        40,
        "sizeof(struct iommu_ioas_copy)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, flags),
        4,
        "offsetof(struct iommu_ioas_copy, flags)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, dst_ioas_id),
        8,
        "offsetof(struct iommu_ioas_copy, dst_ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, src_ioas_id),
        12,
        "offsetof(struct iommu_ioas_copy, src_ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, length),
        16,
        "offsetof(struct iommu_ioas_copy, length)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, dst_iova),
        24,
        "offsetof(struct iommu_ioas_copy, dst_iova)"
    );
    assert_eq!(
        offset_of!(IommuIoasCopy, src_iova),
        32,
        "offsetof(struct iommu_ioas_copy, src_iova)"
    );
    assert_eq!(
        size_of::<IommuIoasUnmap>(),
        24,
        "sizeof(struct iommu_ioas_unmap)"
    );
    assert_eq!(
        offset_of!(IommuIoasUnmap, ioas_id),
        4,
        "offsetof(struct iommu_ioas_unmap, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuIoasUnmap, iova),
        8,
        "offsetof(struct iommu_ioas_unmap, iova)"
    );
    assert_eq!(
        offset_of!(IommuIoasUnmap, length),
        16,
        "offsetof(struct iommu_ioas_unmap, length)"
    );
    assert_eq!(size_of::<IommuOption>(), 24, "sizeof(struct iommu_option)");
    assert_eq!(
        offset_of!(IommuOption, option_id),
        4,
        "offsetof(struct iommu_option, option_id)"
    );
    assert_eq!(
        offset_of!(IommuOption, op),
        8,
        "offsetof(struct iommu_option, op)"
    );
    assert_eq!(
        offset_of!(IommuOption, __reserved),
        10,
        "offsetof(struct iommu_option, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuOption, object_id),
        12,
        "offsetof(struct iommu_option, object_id)"
    );
    assert_eq!(
        offset_of!(IommuOption, val64),
        16,
        "offsetof(struct iommu_option, val64)"
    );
    assert_eq!(
        size_of::<IommuVfioIoas>(),
        12,
        "sizeof(struct iommu_vfio_ioas)"
    );
    assert_eq!(
        offset_of!(IommuVfioIoas, ioas_id),
        4,
        "offsetof(struct iommu_vfio_ioas, ioas_id)"
    );
    assert_eq!(
        offset_of!(IommuVfioIoas, op),
        8,
        "offsetof(struct iommu_vfio_ioas, op)"
    );
    assert_eq!(
        offset_of!(IommuVfioIoas, __reserved),
        10,
        "offsetof(struct iommu_vfio_ioas, __reserved)"
    );
    assert_eq!(
        size_of::<IommuHwptVtdS1>(),
        24,
        "sizeof(struct iommu_hwpt_vtd_s1)"
    );
    assert_eq!(
        offset_of!(IommuHwptVtdS1, flags),
        0,
        "offsetof(struct iommu_hwpt_vtd_s1, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwptVtdS1, pgtbl_addr),
        8,
        "offsetof(struct iommu_hwpt_vtd_s1, pgtbl_addr)"
    );
    assert_eq!(
        offset_of!(IommuHwptVtdS1, addr_width),
        16,
        "offsetof(struct iommu_hwpt_vtd_s1, addr_width)"
    );
    assert_eq!(
        offset_of!(IommuHwptVtdS1, __reserved),
        20,
        "offsetof(struct iommu_hwpt_vtd_s1, __reserved)"
    );
    assert_eq!(
        size_of::<IommuHwptAlloc>(),
        48,
        "sizeof(struct iommu_hwpt_alloc)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, flags),
        4,
        "offsetof(struct iommu_hwpt_alloc, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, dev_id),
        8,
        "offsetof(struct iommu_hwpt_alloc, dev_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, pt_id),
        12,
        "offsetof(struct iommu_hwpt_alloc, pt_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, out_hwpt_id),
        16,
        "offsetof(struct iommu_hwpt_alloc, out_hwpt_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, __reserved),
        20,
        "offsetof(struct iommu_hwpt_alloc, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, data_type),
        24,
        "offsetof(struct iommu_hwpt_alloc, data_type)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, data_len),
        28,
        "offsetof(struct iommu_hwpt_alloc, data_len)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, data_uptr),
        32,
        "offsetof(struct iommu_hwpt_alloc, data_uptr)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, fault_id),
        40,
        "offsetof(struct iommu_hwpt_alloc, fault_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptAlloc, __reserved2),
        44,
        "offsetof(struct iommu_hwpt_alloc, __reserved2)"
    );
    assert_eq!(
        size_of::<IommuHwInfoVtd>(),
        24,
        "sizeof(struct iommu_hw_info_vtd)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoVtd, flags),
        0,
        "offsetof(struct iommu_hw_info_vtd, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoVtd, __reserved),
        4,
        "offsetof(struct iommu_hw_info_vtd, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoVtd, cap_reg),
        8,
        "offsetof(struct iommu_hw_info_vtd, cap_reg)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoVtd, ecap_reg),
        16,
        "offsetof(struct iommu_hw_info_vtd, ecap_reg)"
    );
    assert_eq!(
        size_of::<IommuHwInfoArmSmmuv3>(),
        40,
        "sizeof(struct iommu_hw_info_arm_smmuv3)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoArmSmmuv3, idr),
        8,
        "offsetof(struct iommu_hw_info_arm_smmuv3, idr)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoArmSmmuv3, iidr),
        32,
        "offsetof(struct iommu_hw_info_arm_smmuv3, iidr)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoArmSmmuv3, aidr),
        36,
        "offsetof(struct iommu_hw_info_arm_smmuv3, aidr)"
    );
    assert_eq!(
        size_of::<IommuHwInfoAmd>(),
        16,
        "sizeof(struct iommu_hw_info_amd)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoAmd, efr),
        0,
        "offsetof(struct iommu_hw_info_amd, efr)"
    );
    assert_eq!(
        offset_of!(IommuHwInfoAmd, efr2),
        8,
        "offsetof(struct iommu_hw_info_amd, efr2)"
    );
    assert_eq!(size_of::<IommuHwInfo>(), 40, "sizeof(struct iommu_hw_info)");
    assert_eq!(
        offset_of!(IommuHwInfo, flags),
        4,
        "offsetof(struct iommu_hw_info, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, dev_id),
        8,
        "offsetof(struct iommu_hw_info, dev_id)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, data_len),
        12,
        "offsetof(struct iommu_hw_info, data_len)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, data_uptr),
        16,
        "offsetof(struct iommu_hw_info, data_uptr)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, data_type),
        24,
        "offsetof(struct iommu_hw_info, in_data_type)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, data_type),
        24,
        "offsetof(struct iommu_hw_info, out_data_type)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, out_max_pasid_log2),
        28,
        "offsetof(struct iommu_hw_info, out_max_pasid_log2)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, __reserved),
        29,
        "offsetof(struct iommu_hw_info, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuHwInfo, out_capabilities),
        32,
        "offsetof(struct iommu_hw_info, out_capabilities)"
    );
    assert_eq!(
        size_of::<IommuHwptSetDirtyTracking>(),
        16,
        "sizeof(struct iommu_hwpt_set_dirty_tracking)"
    );
    assert_eq!(
        offset_of!(IommuHwptSetDirtyTracking, flags),
        4,
        "offsetof(struct iommu_hwpt_set_dirty_tracking, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwptSetDirtyTracking, hwpt_id),
        8,
        "offsetof(struct iommu_hwpt_set_dirty_tracking, hwpt_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptSetDirtyTracking, __reserved),
        12,
        "offsetof(struct iommu_hwpt_set_dirty_tracking, __reserved)"
    );
    assert_eq!(
        size_of::<IommuHwptGetDirtyBitmap>(),
        48,
        "sizeof(struct iommu_hwpt_get_dirty_bitmap)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, hwpt_id),
        4,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, hwpt_id)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, flags),
        8,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, flags)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, __reserved),
        12,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, __reserved)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, iova),
        16,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, iova)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, length),
        24,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, length)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, page_size),
        32,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, page_size)"
    );
    assert_eq!(
        offset_of!(IommuHwptGetDirtyBitmap, data),
        40,
        "offsetof(struct iommu_hwpt_get_dirty_bitmap, data)"
    );
    assert_eq!(
        size_of::<IommuFaultAlloc>(),
        16,
        "sizeof(struct iommu_fault_alloc)"
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, flags),
        4,
        "offsetof(struct iommu_fault_alloc, flags)"
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, out_fault_id),
        8,
        "offsetof(struct iommu_fault_alloc, out_fault_id)"
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, out_fault_fd),
        12,
        "offsetof(struct iommu_fault_alloc, out_fault_fd)"
    );
    assert_eq!(
        size_of::<IommuIoasChangeProcess>(),
        8,
        "sizeof(struct iommu_ioas_change_process)"
    );
    assert_eq!(
        offset_of!(IommuIoasChangeProcess, __reserved),
        4,
        "offsetof(struct iommu_ioas_change_process, __reserved)"
    );
    assert_eq!(
        size_of::<VfioGroupStatus>(),
        8,
        "sizeof(struct vfio_group_status)"
    );
    assert_eq!(
        offset_of!(VfioGroupStatus, argsz),
        0,
        "offsetof(struct vfio_group_status, argsz)"
    );
    assert_eq!(
        offset_of!(VfioGroupStatus, flags),
        4,
        "offsetof(struct vfio_group_status, flags)"
    );
    assert_eq!(
        size_of::<VfioDeviceInfo>(),
        24,
        "sizeof(struct vfio_device_info)"
    );
    assert_eq!(
        offset_of!(VfioDeviceInfo, flags),
        4,
        "offsetof(struct vfio_device_info, flags)"
    );
    assert_eq!(
        offset_of!(VfioDeviceInfo, num_regions),
        8,
        "offsetof(struct vfio_device_info, num_regions)"
    );
    assert_eq!(
        offset_of!(VfioDeviceInfo, num_irqs),
        12,
        "offsetof(struct vfio_device_info, num_irqs)"
    );
    assert_eq!(
        offset_of!(VfioDeviceInfo, cap_offset),
        16,
        "offsetof(struct vfio_device_info, cap_offset)"
    );
    assert_eq!(
        offset_of!(VfioDeviceInfo, pad),
        20,
        "offsetof(struct vfio_device_info, pad)"
    );
    assert_eq!(
        size_of::<VfioRegionInfo>(),
        32,
        "sizeof(struct vfio_region_info)"
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, flags),
        4,
        "offsetof(struct vfio_region_info, flags)"
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, index),
        8,
        "offsetof(struct vfio_region_info, index)"
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, cap_offset),
        12,
        "offsetof(struct vfio_region_info, cap_offset)"
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, size),
        16,
        "offsetof(struct vfio_region_info, size)"
    );
    assert_eq!(
        offset_of!(VfioRegionInfo, offset),
        24,
        "offsetof(struct vfio_region_info, offset)"
    );
    assert_eq!(
        size_of::<VfioIommuType1DmaMap>(),
        32,
        "sizeof(struct vfio_iommu_type1_dma_map)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaMap, flags),
        4,
        "offsetof(struct vfio_iommu_type1_dma_map, flags)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaMap, vaddr),
        8,
        "offsetof(struct vfio_iommu_type1_dma_map, vaddr)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaMap, iova),
        16,
        "offsetof(struct vfio_iommu_type1_dma_map, iova)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaMap, size),
        24,
        "offsetof(struct vfio_iommu_type1_dma_map, size)"
    );
    assert_eq!(
        size_of::<VfioIommuType1DmaUnmap>(),
        24,
        "sizeof(struct vfio_iommu_type1_dma_unmap)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaUnmap, flags),
        4,
        "offsetof(struct vfio_iommu_type1_dma_unmap, flags)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaUnmap, iova),
        8,
        "offsetof(struct vfio_iommu_type1_dma_unmap, iova)"
    );
    assert_eq!(
        offset_of!(VfioIommuType1DmaUnmap, size),
        16,
        "offsetof(struct vfio_iommu_type1_dma_unmap, size)"
    );
    assert_eq!(
        size_of::<VfioDeviceBindIommufd>(),
        24,
        "sizeof(struct vfio_device_bind_iommufd)"
    );
    assert_eq!(
        offset_of!(VfioDeviceBindIommufd, flags),
        4,
        "offsetof(struct vfio_device_bind_iommufd, flags)"
    );
    assert_eq!(
        offset_of!(VfioDeviceBindIommufd, iommufd),
        8,
        "offsetof(struct vfio_device_bind_iommufd, iommufd)"
    );
    assert_eq!(
        offset_of!(VfioDeviceBindIommufd, out_devid),
        12,
        "offsetof(struct vfio_device_bind_iommufd, out_devid)"
    );
    assert_eq!(
        offset_of!(VfioDeviceBindIommufd, token_uuid_ptr),
        16,
        "offsetof(struct vfio_device_bind_iommufd, token_uuid_ptr)"
    );
    assert_eq!(
        size_of::<VfioDeviceAttachIommufdPt>(),
        16,
        "sizeof(struct vfio_device_attach_iommufd_pt)"
    );
    assert_eq!(
        offset_of!(VfioDeviceAttachIommufdPt, flags),
        4,
        "offsetof(struct vfio_device_attach_iommufd_pt, flags)"
    );
    assert_eq!(
        offset_of!(VfioDeviceAttachIommufdPt, pt_id),
        8,
        "offsetof(struct vfio_device_attach_iommufd_pt, pt_id)"
    );
    assert_eq!(
        offset_of!(VfioDeviceAttachIommufdPt, pasid),
        12,
        "offsetof(struct vfio_device_attach_iommufd_pt, pasid)"
    );
    assert_eq!(
        size_of::<VfioDeviceDetachIommufdPt>(),
        12,
        "sizeof(struct vfio_device_detach_iommufd_pt)"
    );
    assert_eq!(
        offset_of!(VfioDeviceDetachIommufdPt, flags),
        4,
        "offsetof(struct vfio_device_detach_iommufd_pt, flags)"
    );
    assert_eq!(
        offset_of!(VfioDeviceDetachIommufdPt, pasid),
        8,
        "offsetof(struct vfio_device_detach_iommufd_pt, pasid)"
    );
    assert_eq!(
        size_of::<KvmCreateDevice>(),
        12,
        "sizeof(struct kvm_create_device)"
    );
    assert_eq!(
        offset_of!(KvmCreateDevice, type_),
        0,
        "offsetof(struct kvm_create_device, type)"
    );
    assert_eq!(
        offset_of!(KvmCreateDevice, fd),
        4,
        "offsetof(struct kvm_create_device, fd)"
    );
    assert_eq!(
        offset_of!(KvmCreateDevice, flags),
        8,
        "offsetof(struct kvm_create_device, flags)"
    );
    assert_eq!(
        size_of::<KvmDeviceAttr>(),
        24,
        "sizeof(struct kvm_device_attr)"
    );
    assert_eq!(
        offset_of!(KvmDeviceAttr, flags),
        0,
        "offsetof(struct kvm_device_attr, flags)"
    );
    assert_eq!(
        offset_of!(KvmDeviceAttr, group),
        4,
        "offsetof(struct kvm_device_attr, group)"
    );
    assert_eq!(
        offset_of!(KvmDeviceAttr, attr),
        8,
        "offsetof(struct kvm_device_attr, attr)"
    );
    assert_eq!(
        offset_of!(KvmDeviceAttr, addr),
        16,
        "offsetof(struct kvm_device_attr, addr)"
    );
}
