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
};

use crate::ioas::Ioas;

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
    /// Makes the HWPT `id` of `domain` for `ioas`, mapping the areas of `ioas` into `domain`.
    ///
    /// Fails with the error of [`Ioas::add_domain`].
    pub(crate) fn new(ioas: Arc<Ioas>, domain: Domain, id: u32, auto: bool) -> Result<Arc<Self>> {
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

impl Drop for Hwpt {
    fn drop(&mut self) {
        // By the type invariants the domain is one of the IOAS: unmap the IOAS from it. The
        // domain is freed when the last attachment of a device to it goes.
        self.ioas.remove_domain(&self.domain);
    }
}
