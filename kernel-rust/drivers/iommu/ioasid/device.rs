// SPDX-License-Identifier: GPL-2.0

//! VFIO devices bound to `/dev/ioasid`, the analogue of iommufd's `device.c`.
//!
//! vfio binds a device cdev to a `/dev/ioasid` file with `VFIO_DEVICE_BIND_IOMMUFD`, attaches
//! it with `VFIO_DEVICE_ATTACH_IOMMUFD_PT` and detaches it with `VFIO_DEVICE_DETACH_IOMMUFD_PT`
//! through the callbacks of [`kernel::vfio::IommuProvider`], which `ioasid.rs` implements with
//! the functions here. Binding takes the DMA ownership of the device's IOMMU group (one device
//! per group), attaching attaches the group to the IOMMU domain of a hardware page table
//! ([`Hwpt`]), and unbinding, when vfio closes the device, undoes it all.
//!
//! # No-snoop and KVM
//!
//! KVM lets a guest's `WBINVD` flush the host's caches (and honours the guest's memory types)
//! only if a VFIO file of the VM answers `vfio_file_enforced_coherent()` with false: a guest
//! needs to flush only if its devices can write memory without snooping the CPU caches.
//! iommufd answers from the IOMMU's capability alone. `/dev/ioasid` answers false only when all
//! of these hold, read at the time of the question:
//!
//! - the device is attached to a paging domain (otherwise it can do no DMA at all);
//! - the domain does not enforce cache coherency, so the IOMMU lets no-snoop requests through
//!   (every domain enforces it where the IOMMU can);
//! - the device can issue no-snoop requests: PCI Express with Enable No Snoop set in Device
//!   Control (of the physical function, for a virtual function), or PCI-X; never conventional
//!   PCI. A device that is not PCI is assumed able to;
//! - the platform honours no-snoop, which is the case on x86, the only architecture where KVM
//!   acts on the answer.
//!
//! vfio asks KVM to ask again after every attach and detach, so that KVM registers or
//! unregisters non-coherent DMA exactly when the answer changes.

use kernel::{
    alloc::KVVec,
    device::Device,
    iommu::domain::{
        device_capable,
        device_hw_info,
        resv_regions,
        Attachment,
        Capability,
        DmaOwnership,
        Group,
        ResvKind, //
    },
    new_mutex, pci,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
};

use crate::{
    hwpt::Hwpt,
    ioas::Ioas,
    object::{
        NewObject,
        Object, //
    },
    ucmd::{
        IommuHwInfo,
        Ucmd, //
    },
    IoasidCtx,
};

/// A VFIO device bound to a `/dev/ioasid` file, iommufd's `struct iommufd_device`.
///
/// # Invariants
///
/// The DMA ownership of the IOMMU group of `dev` is held by `owner` for as long as this lives.
#[pin_data]
pub(crate) struct IoasidDevice {
    dev: ARef<Device>,
    /// The id of the device in its file.
    id: u32,
    /// Whether the IOMMU can make the device's domains enforce cache coherency.
    enforce_cc: bool,
    owner: DmaOwnership,
    /// The HWPT the device is attached to, if any.
    #[pin]
    attached: Mutex<Option<Attached>>,
}

/// The attachment of a device to a HWPT.
struct Attached {
    /// Dropped first: the group is detached before the HWPT can go.
    attachment: Attachment,
    hwpt: Arc<Hwpt>,
}

impl IoasidDevice {
    /// The device.
    pub(crate) fn dev(&self) -> &Device {
        &self.dev
    }

    /// Whether the IOMMU can make the device's domains enforce cache coherency.
    pub(crate) fn enforce_cc(&self) -> bool {
        self.enforce_cc
    }

    /// The id of the HWPT the device is attached to, or `None`.
    pub(crate) fn attached_hwpt(&self) -> Option<u32> {
        self.attached.lock().as_ref().map(|a| a.hwpt.id())
    }

    /// Whether the device can issue DMA requests with the No Snoop attribute now.
    fn may_issue_no_snoop(&self) -> bool {
        if let Some(forced) = crate::test::no_snoop_override() {
            return forced;
        }
        match <&pci::Device>::try_from(&*self.dev) {
            // A function whose config space cannot be read is assumed to be able to.
            Ok(pdev) => pdev.no_snoop_capable().unwrap_or(true),
            // Nothing tells whether a device that is not PCI can: assume it can.
            Err(_) => true,
        }
    }
}

/// A device bound to a file: what vfio holds between bind and unbind.
pub(crate) struct Binding {
    ctx: Arc<IoasidCtx>,
    device: Arc<IoasidDevice>,
}

/// Binds `dev` to the file of `ctx`, like `iommufd_device_bind()`: returns the binding and the
/// id of the new device object.
///
/// Fails with [`EINVAL`] if the IOMMU cannot make the device's DMA snoop the CPU caches, with
/// [`ENODEV`] if no IOMMU translates its DMA, with [`EPERM`] if its MSIs are not isolated or its
/// IOMMU group is owned by someone else (a kernel driver, another file, or another device of
/// the group: one device per group is supported).
pub(crate) fn bind(ctx: Arc<IoasidCtx>, dev: &Device) -> Result<(KBox<Binding>, u32)> {
    if !device_capable(dev, Capability::CacheCoherency) {
        return Err(EINVAL);
    }
    let group = Group::of_device(dev).ok_or(ENODEV)?;
    if !group.has_isolated_msi() {
        return Err(EPERM);
    }
    let owner = Group::claim_dma_owner(&group, &*ctx)?;

    let new_object = NewObject::new(&ctx.objects)?;
    let id = new_object.id();
    let device = Arc::pin_init(
        try_pin_init!(IoasidDevice {
            dev: dev.into(),
            id,
            enforce_cc: device_capable(dev, Capability::EnforceCacheCoherency),
            owner,
            attached <- new_mutex!(None),
        }),
        GFP_KERNEL_ACCOUNT,
    )?;
    let binding = KBox::new(
        Binding {
            ctx: ctx.clone(),
            device: device.clone(),
        },
        GFP_KERNEL_ACCOUNT,
    )?;
    new_object.finalize(Object::Device(device));
    Ok((binding, id))
}

/// What `VFIO_DEVICE_ATTACH_IOMMUFD_PT` names, looked up.
enum Target {
    /// A HWPT, with the device counted as its user.
    Hwpt(Arc<Hwpt>),
    /// An IOAS with no automatic HWPT the device can use yet.
    NewAuto(Arc<Ioas>),
    /// The HWPT the device is attached to already.
    Same(u32),
}

impl Binding {
    /// Attaches the device to the HWPT or IOAS `*pt_id`, or moves it there, like
    /// `iommufd_device_attach()` and `iommufd_device_replace()`. For an IOAS, the device is
    /// attached to an automatic HWPT of the IOAS, made if there is none yet for a device of its
    /// coherency, whose id is returned in `*pt_id`.
    ///
    /// Fails with [`ENOENT`] for an id that does not exist and with [`EINVAL`] for an object
    /// that is not an IOAS or a HWPT. On failure the device stays where it was.
    pub(crate) fn attach(&self, pt_id: &mut u32) -> Result {
        let mut attached = self.device.attached.lock();
        let current = attached.as_ref().map(|a| a.hwpt.id());
        let target = {
            let objects = self.ctx.objects.lock();
            match objects.get(*pt_id) {
                None => return Err(ENOENT),
                Some(Object::HwptPaging(hwpt)) if current == Some(hwpt.id()) => {
                    Target::Same(hwpt.id())
                }
                Some(Object::HwptPaging(hwpt)) => {
                    hwpt.get_user();
                    Target::Hwpt(hwpt.clone())
                }
                Some(Object::Ioas(ioas)) => {
                    // Reuse an automatic HWPT only with the device's coherency, so that snoop
                    // control is never given up for a device whose IOMMU has it.
                    let auto = objects.iter().find_map(|(_, object)| match object {
                        Object::HwptPaging(hwpt)
                            if hwpt.is_auto()
                                && Arc::ptr_eq(hwpt.ioas(), ioas)
                                && hwpt.domain().enforces_coherency() == self.device.enforce_cc =>
                        {
                            Some(hwpt.clone())
                        }
                        _ => None,
                    });
                    match auto {
                        Some(hwpt) if current == Some(hwpt.id()) => Target::Same(hwpt.id()),
                        Some(hwpt) => {
                            hwpt.get_user();
                            Target::Hwpt(hwpt)
                        }
                        None => Target::NewAuto(ioas.clone()),
                    }
                }
                Some(Object::Device(_)) => return Err(EINVAL),
            }
        };
        let hwpt = match target {
            Target::Same(id) => {
                *pt_id = id;
                return Ok(());
            }
            Target::Hwpt(hwpt) => hwpt,
            Target::NewAuto(ioas) => self.new_auto_hwpt(ioas)?,
        };

        // The device's reserved regions are reserved in the IOAS it goes to, before it can DMA
        // there, like `iopt_table_enforce_dev_resv_regions()`.
        let id = self.device.id;
        let moves_ioas = attached
            .as_ref()
            .is_none_or(|a| !Arc::ptr_eq(a.hwpt.ioas(), hwpt.ioas()));
        if moves_ioas {
            if let Err(e) = self.reserve_regions(hwpt.ioas()) {
                drop(attached);
                self.put_hwpt(hwpt);
                return Err(e);
            }
        }

        // The IOMMU core refuses to attach a group that is attached elsewhere: detach first.
        // Replacing is therefore not atomic; a failure re-attaches the old HWPT.
        let old = attached.take().map(|a| {
            drop(a.attachment);
            a.hwpt
        });
        match Attachment::new(hwpt.domain(), &self.device.owner) {
            Ok(attachment) => {
                *pt_id = hwpt.id();
                *attached = Some(Attached { attachment, hwpt });
                drop(attached);
                if let Some(old) = old {
                    if moves_ioas {
                        old.ioas().unreserve_for_device(id);
                    }
                    self.put_hwpt(old);
                }
                Ok(())
            }
            Err(e) => {
                if moves_ioas {
                    hwpt.ioas().unreserve_for_device(id);
                }
                if let Some(old) = old {
                    match Attachment::new(old.domain(), &self.device.owner) {
                        Ok(attachment) => {
                            *attached = Some(Attached {
                                attachment,
                                hwpt: old,
                            })
                        }
                        Err(_) => {
                            // The group was attached to that domain a moment ago. The device
                            // is left detached, so nothing of it stays reserved.
                            kernel::warn_on!(true);
                            old.ioas().unreserve_for_device(id);
                            self.put_hwpt(old);
                        }
                    }
                }
                drop(attached);
                self.put_hwpt(hwpt);
                Err(e)
            }
        }
    }

    /// Reserves the device's reserved IOVA regions in `ioas`, but those advertised as relaxable
    /// for device assignment, as iommufd does.
    fn reserve_regions(&self, ioas: &Ioas) -> Result {
        let regions = resv_regions(&self.device.dev)?;
        let mut ranges = KVVec::with_capacity(regions.len(), GFP_KERNEL)?;
        for r in regions
            .iter()
            .filter(|r| r.kind != ResvKind::DirectRelaxable)
        {
            ranges
                .push_within_capacity((r.start, r.start.saturating_add(r.length - 1)))
                .map_err(|_| ENOMEM)?;
        }
        ioas.reserve_for_device(self.device.id, &ranges)
    }

    /// Makes an automatic HWPT of `ioas` for the device, counting the device as its user.
    fn new_auto_hwpt(&self, ioas: Arc<Ioas>) -> Result<Arc<Hwpt>> {
        let new_object = NewObject::new(&self.ctx.objects)?;
        let hwpt = Hwpt::alloc_for(&self.device, ioas, new_object.id(), true)?;
        // Nobody can see the HWPT before `finalize`, so no lock orders this.
        hwpt.get_user();
        new_object.finalize(Object::HwptPaging(hwpt.clone()));
        Ok(hwpt)
    }

    /// Stops counting the device as a user of `hwpt`, and destroys `hwpt` if it is automatic
    /// and this was its last device, as iommufd does.
    fn put_hwpt(&self, hwpt: Arc<Hwpt>) {
        let removed = {
            let mut objects = self.ctx.objects.lock();
            if hwpt.put_user() == 0 && hwpt.is_auto() {
                objects.remove_unchecked(hwpt.id()).ok()
            } else {
                None
            }
        };
        // Torn down without the table lock: the last reference unmaps the IOAS from the domain.
        drop(removed);
        drop(hwpt);
    }

    /// Detaches the device, if it is attached, like `iommufd_device_detach()`: its group goes
    /// back to the blocking domain.
    pub(crate) fn detach(&self) {
        let attached = self.device.attached.lock().take();
        if let Some(Attached { attachment, hwpt }) = attached {
            drop(attachment);
            hwpt.ioas().unreserve_for_device(self.device.id);
            self.put_hwpt(hwpt);
        }
    }

    /// Whether the DMA of the device is coherent with the CPU caches, by the rules at the top
    /// of this file.
    pub(crate) fn enforced_coherent(&self) -> bool {
        let attached = self.device.attached.lock();
        match attached.as_ref() {
            None => true,
            Some(a) if a.hwpt.domain().enforces_coherency() => true,
            Some(_) => !self.device.may_issue_no_snoop(),
        }
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        // vfio detaches before it unbinds; make sure all the same.
        self.detach();
        // The device object goes with its binding; the DMA ownership with the last reference.
        let removed = self.ctx.objects.lock().remove_unchecked(self.device.id);
        drop(removed);
    }
}

/// `IOMMU_GET_HW_INFO`: reports what the IOMMU driver says of the IOMMU behind a device, like
/// `iommufd_get_hw_info()`.
///
/// The driver's data is copied to `data_uptr`, truncated to `data_len` and zero-filled up to it,
/// and `data_len` is set to the length the driver has. Fails with `EOPNOTSUPP` for unknown flags
/// or a non-zero `__reserved`, with `ENOENT` if `dev_id` is not a device, and with `EFAULT` if
/// the buffer cannot be written. PASIDs are not supported, so no PASID is reported.
pub(crate) fn get_hw_info(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuHwInfo>) -> Result {
    const INPUT_TYPE: u32 = uapi::iommufd_hw_info_flags_IOMMU_HW_INFO_FLAG_INPUT_TYPE;
    let cmd = &ucmd.cmd;
    if cmd.flags & !INPUT_TYPE != 0 || cmd.__reserved != [0; 3] {
        return Err(EOPNOTSUPP);
    }
    // Drivers do not support a random input type: only with the flag is it one.
    let in_type = if cmd.flags & INPUT_TYPE != 0 {
        cmd.__bindgen_anon_1
    } else {
        uapi::iommu_hw_info_type_IOMMU_HW_INFO_TYPE_DEFAULT
    };
    let device = match ctx.objects.lock().get(cmd.dev_id) {
        Some(Object::Device(device)) => device.clone(),
        _ => return Err(ENOENT),
    };

    let info = device_hw_info(device.dev(), in_type)?;
    // CAST: The length of the driver's data came as a `u32`.
    let data_len = info.data.len() as u32;
    // CAST: `u32` fits in `usize`.
    let room = cmd.data_len as usize;
    let copy_len = room.min(info.data.len());
    let addr = usize::try_from(cmd.data_uptr).map_err(|_| EFAULT)?;
    let mut writer = UserSlice::new(UserPtr::from_addr(addr), room).writer();
    writer.write_slice(&info.data[..copy_len])?;
    // Zero what the user's buffer has beyond the driver's data, like `clear_user()`.
    let zeros = [0u8; 64];
    while !writer.is_empty() {
        let n = writer.len().min(zeros.len());
        writer.write_slice(&zeros[..n])?;
    }

    let mut capabilities = 0;
    if device_capable(device.dev(), Capability::DirtyTracking) {
        capabilities |= u64::from(uapi::iommufd_hw_capabilities_IOMMU_HW_CAP_DIRTY_TRACKING);
    }
    if !device_capable(device.dev(), Capability::PciAtsSupported) {
        capabilities |= u64::from(uapi::iommufd_hw_capabilities_IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED);
    }
    ucmd.cmd.data_len = data_len;
    ucmd.cmd.__bindgen_anon_1 = info.data_type;
    ucmd.cmd.out_max_pasid_log2 = 0;
    ucmd.cmd.out_capabilities = capabilities;
    ucmd.respond()
}
