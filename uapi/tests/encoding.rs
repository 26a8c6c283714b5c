//! Host tests of the `_IOC` helpers, the command-structure constructors and
//! the errno-preserving wrapper (driven against `/dev/null`, which answers
//! every ioctl with ENOTTY, so no iommufd is required).
#![allow(non_snake_case)]

use ioasid_uapi::ioctl::*;
use ioasid_uapi::iommufd::*;
use ioasid_uapi::vfio::{VfioArg, VfioDeviceBindIommufd, VfioRegionInfo};
use ioasid_uapi::{Iommufd, struct_bytes};

#[test]
fn io_encoding_round_trips() {
    for n in 0..=0xffu8 {
        let nr = _IO(IOMMUFD_TYPE, n);
        assert_eq!(_IOC_NR(nr), n as u32);
        assert_eq!(_IOC_TYPE(nr), b';' as u32);
        assert_eq!(_IOC_SIZE(nr), 0);
        assert_eq!(_IOC_DIR(nr), _IOC_NONE);
    }
    let nr = _IOWR::<[u8; 40]>(0xae, 0xe0);
    assert_eq!(_IOC_SIZE(nr), 40);
    assert_eq!(_IOC_DIR(nr), _IOC_READ | _IOC_WRITE);
    assert_eq!(_IOC_DIR(_IOR::<u32>(1, 2)), _IOC_READ);
    assert_eq!(_IOC_DIR(_IOW::<u32>(1, 2)), _IOC_WRITE);
}

#[test]
fn every_iommufd_cmd_is_io_semicolon_base_plus_n() {
    let all = [
        IOMMU_DESTROY,
        IOMMU_IOAS_ALLOC,
        IOMMU_IOAS_ALLOW_IOVAS,
        IOMMU_IOAS_COPY,
        IOMMU_IOAS_IOVA_RANGES,
        IOMMU_IOAS_MAP,
        IOMMU_IOAS_UNMAP,
        IOMMU_OPTION,
        IOMMU_VFIO_IOAS,
        IOMMU_HWPT_ALLOC,
        IOMMU_GET_HW_INFO,
        IOMMU_HWPT_SET_DIRTY_TRACKING,
        IOMMU_HWPT_GET_DIRTY_BITMAP,
        IOMMU_HWPT_INVALIDATE,
        IOMMU_FAULT_QUEUE_ALLOC,
        IOMMU_IOAS_MAP_FILE,
        IOMMU_VIOMMU_ALLOC,
        IOMMU_VDEVICE_ALLOC,
        IOMMU_IOAS_CHANGE_PROCESS,
        IOMMU_VEVENTQ_ALLOC,
        IOMMU_HW_QUEUE_ALLOC,
        IOMMU_IOAS_NOIOMMU_GET_PA,
    ];
    assert_eq!(all.len(), (IOMMUFD_CMD_END - IOMMUFD_CMD_BASE) as usize);
    for (i, nr) in all.iter().enumerate() {
        assert_eq!(*nr, _IO(b';', 0x80 + i as u8));
    }
}

#[test]
fn constructors_set_size_and_zero_the_rest() {
    let m = IommuIoasMap::new();
    assert_eq!(m.size, 40);
    assert_eq!(
        (
            m.flags,
            m.ioas_id,
            m.__reserved,
            m.user_va,
            m.length,
            m.iova
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(IommuIoasAlloc::new().size, 12);
    assert_eq!(IommuDestroy::new().size, 8);
    assert_eq!(IommuHwInfo::new().size, 40);
    assert_eq!(VfioRegionInfo::new().argsz, 32);
    assert_eq!(VfioDeviceBindIommufd::new().argsz, 24);
}

#[test]
fn struct_bytes_is_native_layout() {
    let mut a = IommuIoasAlloc::new();
    a.flags = 0x0102_0304;
    a.out_ioas_id = 7;
    let b = struct_bytes(&a);
    assert_eq!(b.len(), 12);
    assert_eq!(&b[0..4], &12u32.to_ne_bytes());
    assert_eq!(&b[4..8], &0x0102_0304u32.to_ne_bytes());
    assert_eq!(&b[8..12], &7u32.to_ne_bytes());
}

#[test]
fn wrapper_preserves_raw_errno() {
    // /dev/null has no unlocked_ioctl: every ioctl fails with ENOTTY.
    let fd = Iommufd::open("/dev/null").expect("open /dev/null");
    let e = fd.ioas_alloc().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    let e = fd.destroy(1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    let e = fd.ioas_iova_ranges(1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    let mut buf = struct_bytes(&IommuIoasAlloc::new());
    // SAFETY: IOMMU_IOAS_ALLOC carries no user pointers.
    let e = unsafe { fd.ioctl_raw(IOMMU_IOAS_ALLOC, &mut buf) }.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
}

#[test]
fn ioctl_raw_refuses_size_beyond_buffer() {
    let fd = Iommufd::open("/dev/null").expect("open /dev/null");
    let mut short = [0u8; 3];
    // SAFETY: refused before reaching the kernel.
    let e = unsafe { fd.ioctl_raw(IOMMU_IOAS_ALLOC, &mut short) }.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(e.raw_os_error(), None);
    let mut lying = struct_bytes(&IommuIoasAlloc::new());
    lying[0..4].copy_from_slice(&64u32.to_ne_bytes());
    // SAFETY: refused before reaching the kernel.
    let e = unsafe { fd.ioctl_raw(IOMMU_IOAS_ALLOC, &mut lying) }.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn open_missing_device_reports_enoent() {
    let e = Iommufd::open("/nonexistent/ioasid-test-dev").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}
