//! The subset of `include/uapi/linux/kvm.h` (Linux 7.3) needed to hand a
//! VFIO file to KVM (the KVM-VFIO pseudo device).

use crate::ioctl::{_IO, _IOW, _IOWR};
use core::mem::size_of;

pub const KVMIO: u8 = 0xAE;

pub const KVM_GET_API_VERSION: u32 = _IO(KVMIO, 0x00);
/// What `KVM_GET_API_VERSION` returns (`KVM_API_VERSION`); it has not changed since 2.6.22.
pub const KVM_API_VERSION: i32 = 12;
/// Returns a VM fd; argument is the machine type (0).
pub const KVM_CREATE_VM: u32 = _IO(KVMIO, 0x01);
pub const KVM_CHECK_EXTENSION: u32 = _IO(KVMIO, 0x03);

/// `struct kvm_create_device`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmCreateDevice {
    /// in: `KVM_DEV_TYPE_*`
    pub type_: u32,
    /// out: device handle (fd)
    pub fd: u32,
    /// in: `KVM_CREATE_DEVICE_*`
    pub flags: u32,
}
pub const KVM_CREATE_DEVICE_TEST: u32 = 1;

/// `struct kvm_device_attr`
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmDeviceAttr {
    /// no flags currently defined
    pub flags: u32,
    /// device-defined
    pub group: u32,
    /// group-defined
    pub attr: u64,
    /// userspace address of attr data
    pub addr: u64,
}

// enum kvm_device_type
pub const KVM_DEV_TYPE_FSL_MPIC_20: u32 = 1;
pub const KVM_DEV_TYPE_FSL_MPIC_42: u32 = 2;
pub const KVM_DEV_TYPE_XICS: u32 = 3;
pub const KVM_DEV_TYPE_VFIO: u32 = 4;

// KVM-VFIO device attribute groups/attributes
pub const KVM_DEV_VFIO_FILE: u32 = 1;
pub const KVM_DEV_VFIO_FILE_ADD: u64 = 1;
pub const KVM_DEV_VFIO_FILE_DEL: u64 = 2;
/// compat alias of [`KVM_DEV_VFIO_FILE`]
pub const KVM_DEV_VFIO_GROUP: u32 = KVM_DEV_VFIO_FILE;
/// compat alias of [`KVM_DEV_VFIO_FILE_ADD`]
pub const KVM_DEV_VFIO_GROUP_ADD: u64 = KVM_DEV_VFIO_FILE_ADD;
/// compat alias of [`KVM_DEV_VFIO_FILE_DEL`]
pub const KVM_DEV_VFIO_GROUP_DEL: u64 = KVM_DEV_VFIO_FILE_DEL;
pub const KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE: u64 = 3;

pub const KVM_CREATE_DEVICE: u32 = _IOWR::<KvmCreateDevice>(KVMIO, 0xe0);
// ioctls for fds returned by KVM_CREATE_DEVICE
pub const KVM_SET_DEVICE_ATTR: u32 = _IOW::<KvmDeviceAttr>(KVMIO, 0xe1);
pub const KVM_GET_DEVICE_ATTR: u32 = _IOW::<KvmDeviceAttr>(KVMIO, 0xe2);
pub const KVM_HAS_DEVICE_ATTR: u32 = _IOW::<KvmDeviceAttr>(KVMIO, 0xe3);

const _: () = {
    assert!(size_of::<KvmCreateDevice>() == 12);
    assert!(size_of::<KvmDeviceAttr>() == 24);
};
