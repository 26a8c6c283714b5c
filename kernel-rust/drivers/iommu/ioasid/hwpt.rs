// SPDX-License-Identifier: GPL-2.0

//! Hardware page tables (HWPT), the analogue of iommufd's `hw_pagetable.c`.
//!
//! A paging HWPT is an IOMMU paging domain that maps everything its IOAS maps: it is added to
//! the domains of the IOAS when it is made, which maps the areas of the IOAS into it, and
//! removed when it is dropped, which unmaps them. Devices attach to HWPTs.

use kernel::{
    iommu::domain::Domain,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
    },
    uapi,
};

use crate::{
    device::IoasidDevice,
    ioas::Ioas,
    object::{
        NewObject,
        Object, //
    },
    ucmd::{
        IommuHwptAlloc,
        Ucmd, //
    },
    IoasidCtx,
};

/// A paging hardware page table, iommufd's `struct iommufd_hwpt_paging`.
///
/// # Invariants
///
/// `domain` is one of the domains of `ioas` for as long as this lives.
pub(crate) struct Hwpt {
    ioas: Arc<Ioas>,
    domain: Arc<Domain>,
    /// The id of the HWPT in its file.
    id: u32,
    /// Made by attaching a device to an IOAS rather than by `IOMMU_HWPT_ALLOC`: destroyed when
    /// its last device detaches, as iommufd's automatic domains are.
    auto: bool,
    /// The devices attached or being attached. Changed only under the lock of the object table,
    /// which orders the accesses; `IOMMU_DESTROY` fails with `EBUSY` while it is not 0.
    users: Atomic<usize>,
}

impl Hwpt {
    /// Makes the HWPT `id` of `ioas` for `device`: allocates an IOMMU paging domain for the
    /// device, makes it enforce cache coherency if the IOMMU can, and maps the areas of `ioas`
    /// into it, like `iommufd_hwpt_paging_alloc()`.
    ///
    /// Fails with the error of the IOMMU driver or of [`Ioas::add_domain`].
    pub(crate) fn alloc_for(
        device: &IoasidDevice,
        ioas: Arc<Ioas>,
        id: u32,
        auto: bool,
    ) -> Result<Arc<Self>> {
        let mut domain = Domain::alloc_paging(device.dev())?;
        // Coherency is enforced whenever the IOMMU can, before the domain maps anything. The
        // IOMMU said it could for this device: failing is a driver bug, as in iommufd.
        if device.enforce_cc() && !domain.enforce_cache_coherency() {
            kernel::warn_on!(true);
            return Err(EINVAL);
        }
        Self::new(ioas, domain, id, auto)
    }

    /// Makes the HWPT `id` of `domain` for `ioas`, mapping the areas of `ioas` into `domain`.
    ///
    /// Fails with the error of [`Ioas::add_domain`].
    fn new(ioas: Arc<Ioas>, domain: Domain, id: u32, auto: bool) -> Result<Arc<Self>> {
        let domain = Arc::new(domain, GFP_KERNEL_ACCOUNT)?;
        // Allocated before the domain is filled, so that nothing can fail after.
        let hwpt = Arc::new(
            Hwpt {
                ioas,
                domain,
                id,
                auto,
                users: Atomic::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        // On failure `hwpt` is dropped, and with it, the domain: `remove_domain` of a domain
        // the IOAS does not have does nothing.
        // INVARIANT: From here on the domain is one of the IOAS.
        hwpt.ioas.add_domain(&hwpt.domain)?;
        Ok(hwpt)
    }

    /// The IOAS the HWPT maps.
    pub(crate) fn ioas(&self) -> &Arc<Ioas> {
        &self.ioas
    }

    /// The IOMMU domain of the HWPT.
    pub(crate) fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }

    /// The id of the HWPT in its file.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Whether an attach to the IOAS made the HWPT.
    pub(crate) fn is_auto(&self) -> bool {
        self.auto
    }

    /// The number of devices attached or being attached.
    pub(crate) fn users(&self) -> usize {
        self.users.load(Relaxed)
    }

    /// Counts a device more; to be called with the object table locked.
    pub(crate) fn get_user(&self) {
        self.users.add(1, Relaxed);
    }

    /// Counts a device less and returns how many are left; to be called with the object table
    /// locked.
    pub(crate) fn put_user(&self) -> usize {
        self.users.fetch_sub(1, Relaxed) - 1
    }
}

/// `IOMMU_HWPT_ALLOC`: makes a paging HWPT of an IOAS for a device, like
/// `iommufd_hwpt_alloc()`.
///
/// Only paging HWPTs without flags or driver data are supported: any `IOMMU_HWPT_ALLOC_*` flag
/// (nesting parent, dirty tracking, PASID, fault id) and any `IOMMU_HWPT_DATA_*` type but
/// `IOMMU_HWPT_DATA_NONE` fail with `EOPNOTSUPP`, as iommufd fails what the IOMMU cannot do. A
/// `data_len` that does not go with `data_type` fails with `EINVAL`, a `dev_id` that is not a
/// device with `ENOENT`, and a `pt_id` that is not an IOAS with `EINVAL`.
pub(crate) fn alloc(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuHwptAlloc>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.__reserved != 0 {
        return Err(EOPNOTSUPP);
    }
    let data_none = cmd.data_type == uapi::iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE;
    if (data_none && cmd.data_len != 0) || (!data_none && cmd.data_len == 0) {
        return Err(EINVAL);
    }
    let (device, ioas) = {
        let objects = ctx.objects.lock();
        let device = match objects.get(cmd.dev_id) {
            Some(Object::Device(device)) => device.clone(),
            _ => return Err(ENOENT),
        };
        let ioas = match objects.get(cmd.pt_id) {
            Some(Object::Ioas(ioas)) => ioas.clone(),
            // Nesting parents and vIOMMUs are not supported; iommufd fails a missing object
            // and one of another kind alike.
            _ => return Err(EINVAL),
        };
        (device, ioas)
    };
    if cmd.flags != 0 || !data_none {
        return Err(EOPNOTSUPP);
    }

    let new_object = NewObject::new(&ctx.objects)?;
    let hwpt = Hwpt::alloc_for(&device, ioas, new_object.id(), false)?;
    ucmd.cmd.out_hwpt_id = new_object.id();
    // On failure `new_object` frees the id and `hwpt` unmaps the IOAS from its domain.
    ucmd.respond()?;
    new_object.finalize(Object::HwptPaging(hwpt));
    Ok(())
}

impl Drop for Hwpt {
    fn drop(&mut self) {
        // By the type invariants the domain is one of the IOAS: unmap the IOAS from it. The
        // domain is freed when the last attachment of a device to it goes.
        self.ioas.remove_domain(&self.domain);
    }
}
