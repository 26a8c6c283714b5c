// SPDX-License-Identifier: GPL-2.0

//! IOMMU paging domains, for IOMMU user APIs.
//!
//! An IOMMU user API gives a device to userspace: it takes the DMA ownership of the device's
//! IOMMU group away from the kernel ([`DmaOwnership`]), allocates a paging domain for it
//! ([`Domain`]), maps pinned user memory into the domain ([`Mapping`]) and attaches the group to
//! the domain ([`Attachment`]). Each of these is undone when its value is dropped, in an order
//! the types enforce:
//!
//! - a domain is freed only after it is detached from every group and has no mappings left, as
//!   attachments and mappings hold a reference to it;
//! - memory is unpinned only after it is unmapped from the domain and the IOTLB is flushed, as a
//!   mapping holds a reference to the owner of the pins of the memory it maps ([`PinnedPages`])
//!   and `iommu_unmap()` flushes the IOTLB before it returns;
//! - a group is attached to a domain only while its DMA ownership is claimed, so that no kernel
//!   driver that uses the DMA API has its DMA redirected.
//!
//! C header: [`include/linux/iommu.h`](srctree/include/linux/iommu.h)

use crate::{
    alloc::{
        flags::GFP_KERNEL,
        Flags,
        KVVec, //
    },
    bindings,
    device::Device,
    error::{
        code::*,
        from_err_ptr,
        to_result,
        Error,
        Result, //
    },
    mm::pin::LongTermPins,
    page::PAGE_SHIFT,
    sync::{
        aref::{
            ARef,
            AlwaysRefCounted, //
        },
        Arc, //
    },
    types::Opaque,
};
use core::ptr::NonNull;

/// The owner of pinned pages that a [`Mapping`] maps.
///
/// A mapping holds a reference to the owner until the pages are unmapped, so that they stay
/// pinned while a device may reach them. A user API that keeps its own record of pinned memory
/// (charges, a table of pages) implements this for that record, so that a mapping costs no
/// reference-counted allocation of its own.
pub trait PinnedPages: Send + Sync {
    /// The pins of the pages.
    fn pins(&self) -> &LongTermPins;
}

impl PinnedPages for LongTermPins {
    fn pins(&self) -> &LongTermPins {
        self
    }
}

/// The access a device gets to mapped memory, the `IOMMU_*` protection flags of `iommu_map()`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Prot(u32);

impl Prot {
    /// The device may read the memory (`IOMMU_READ`).
    pub const READ: Prot = Prot(bindings::IOMMU_READ);
    /// The device may write the memory (`IOMMU_WRITE`).
    pub const WRITE: Prot = Prot(bindings::IOMMU_WRITE);
    /// The device's accesses snoop the CPU caches (`IOMMU_CACHE`); in a domain that enforces
    /// cache coherency even those the device marks no-snoop.
    pub const CACHE: Prot = Prot(bindings::IOMMU_CACHE);

    /// No access.
    pub const fn empty() -> Prot {
        Prot(0)
    }

    /// Whether all flags of `other` are set in `self`.
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Prot {
    type Output = Prot;

    fn bitor(self, rhs: Prot) -> Prot {
        Prot(self.0 | rhs.0)
    }
}

/// A capability of the IOMMU behind a device, `enum iommu_cap`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Capability {
    /// The IOMMU honours [`Prot::CACHE`] (`IOMMU_CAP_CACHE_COHERENCY`).
    CacheCoherency,
    /// A domain of the device can enforce cache coherency, blocking no-snoop DMA
    /// (`IOMMU_CAP_ENFORCE_CACHE_COHERENCY`).
    EnforceCacheCoherency,
    /// The IOMMU can track the pages the device dirties (`IOMMU_CAP_DIRTY_TRACKING`).
    DirtyTracking,
    /// The device may use PCI ATS (`IOMMU_CAP_PCI_ATS_SUPPORTED`).
    PciAtsSupported,
}

/// Returns whether the IOMMU behind `dev` has `cap`, like `device_iommu_capable()`.
///
/// A device without an IOMMU has no capability.
pub fn device_capable(dev: &Device, cap: Capability) -> bool {
    let cap = match cap {
        Capability::CacheCoherency => bindings::iommu_cap_IOMMU_CAP_CACHE_COHERENCY,
        Capability::EnforceCacheCoherency => bindings::iommu_cap_IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
        Capability::DirtyTracking => bindings::iommu_cap_IOMMU_CAP_DIRTY_TRACKING,
        Capability::PciAtsSupported => bindings::iommu_cap_IOMMU_CAP_PCI_ATS_SUPPORTED,
    };
    // SAFETY: `dev` is a valid device for the duration of the call.
    unsafe { bindings::device_iommu_capable(dev.as_raw(), cap) }
}

/// What the IOMMU driver reports of the IOMMU behind a device, for userspace.
pub struct HwInfo {
    /// The `IOMMU_HW_INFO_TYPE_*` of `data`; `IOMMU_HW_INFO_TYPE_NONE` when the driver reports
    /// nothing.
    pub data_type: u32,
    /// The driver's data, such as `struct iommu_hw_info_vtd`.
    pub data: KVVec<u8>,
}

/// Returns what the IOMMU driver reports of the IOMMU behind `dev`, of the
/// `IOMMU_HW_INFO_TYPE_*` `data_type` (`IOMMU_HW_INFO_TYPE_DEFAULT` for the driver's own), like
/// `iommu_device_hw_info()`.
///
/// Fails with the error of the driver, such as [`EOPNOTSUPP`] for a type it does not have.
pub fn device_hw_info(dev: &Device, data_type: u32) -> Result<HwInfo> {
    let mut length: u32 = 0;
    let mut data_type = data_type;
    // SAFETY: `dev` is a valid device for the duration of the call, `length` and `data_type`
    // are valid for writes.
    let data = from_err_ptr(unsafe {
        bindings::iommu_device_hw_info(dev.as_raw(), &mut length, &mut data_type)
    })?;
    let mut copy = KVVec::new();
    if !data.is_null() {
        // SAFETY: The driver returned `length` bytes at `data`, which this function now owns.
        let bytes = unsafe { core::slice::from_raw_parts(data.cast::<u8>(), length as usize) };
        let copied = copy.extend_from_slice(bytes, GFP_KERNEL);
        // SAFETY: `data` came from `kmalloc()`, and is freed only here.
        unsafe { bindings::kfree(data) };
        copied?;
    }
    Ok(HwInfo {
        data_type,
        data: copy,
    })
}

/// A kind of reserved IOVA region of a device, `enum iommu_resv_type`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ResvKind {
    /// Must be mapped 1:1 at all times (`IOMMU_RESV_DIRECT`).
    Direct,
    /// Advertised as 1:1 but usually relaxable for device assignment
    /// (`IOMMU_RESV_DIRECT_RELAXABLE`).
    DirectRelaxable,
    /// Must not be mapped (`IOMMU_RESV_RESERVED`).
    Reserved,
    /// The hardware MSI window, which the IOMMU does not translate (`IOMMU_RESV_MSI`).
    Msi,
    /// A software-managed MSI window (`IOMMU_RESV_SW_MSI`).
    SwMsi,
}

/// A reserved IOVA region of a device.
#[derive(Clone, Copy, Debug)]
pub struct ResvRegion {
    /// The first IOVA.
    pub start: u64,
    /// The length in bytes, at least 1.
    pub length: u64,
    /// What the region is for.
    pub kind: ResvKind,
}

/// Returns the reserved IOVA regions of `dev`, like `iommu_get_resv_regions()`: the ranges of
/// IOVA its DMA must not be given, such as the MSI window.
pub fn resv_regions(dev: &Device) -> Result<KVVec<ResvRegion>> {
    let mut head = core::mem::MaybeUninit::<bindings::list_head>::uninit();
    let head = head.as_mut_ptr();
    // SAFETY: `head` is valid for writes; an empty list points to itself. It stays where it is
    // until `iommu_put_resv_regions()` has emptied it below.
    unsafe {
        (*head).next = head;
        (*head).prev = head;
    }
    // SAFETY: `dev` is a valid device and `head` an empty list, which this fills with regions
    // allocated for the caller.
    unsafe { bindings::iommu_get_resv_regions(dev.as_raw(), head) };
    let mut regions = KVVec::new();
    let mut result = Ok(());
    // SAFETY: `head` is a valid list, filled by `iommu_get_resv_regions()`.
    let mut pos = unsafe { (*head).next };
    while pos != head {
        // SAFETY: Every entry of the list is the `list` member of a `struct iommu_resv_region`.
        let region = unsafe { &*crate::container_of!(pos, bindings::iommu_resv_region, list) };
        let kind = match region.type_ {
            bindings::iommu_resv_type_IOMMU_RESV_DIRECT => ResvKind::Direct,
            bindings::iommu_resv_type_IOMMU_RESV_DIRECT_RELAXABLE => ResvKind::DirectRelaxable,
            bindings::iommu_resv_type_IOMMU_RESV_MSI => ResvKind::Msi,
            bindings::iommu_resv_type_IOMMU_RESV_SW_MSI => ResvKind::SwMsi,
            _ => ResvKind::Reserved,
        };
        if result.is_ok() && region.length > 0 {
            result = regions
                .push(
                    ResvRegion {
                        start: region.start,
                        // CAST: `size_t` fits in a `u64`.
                        length: region.length as u64,
                        kind,
                    },
                    GFP_KERNEL,
                )
                .map_err(Error::from);
        }
        // SAFETY: `pos` is an entry of the valid list.
        pos = unsafe { (*pos).next };
    }
    // SAFETY: `head` holds the regions `iommu_get_resv_regions()` gave, which this frees.
    unsafe { bindings::iommu_put_resv_regions(dev.as_raw(), head) };
    result.map(|()| regions)
}

/// An IOMMU group: the devices the IOMMU cannot isolate from each other.
///
/// # Invariants
///
/// Instances are always reference counted: a [`Group`] is only reached through an [`ARef`], whose
/// reference keeps the `struct iommu_group` valid.
#[repr(transparent)]
pub struct Group(Opaque<bindings::iommu_group>);

// SAFETY: An `iommu_group` may be used and its references dropped from any thread; its state is
// protected by its own mutex.
unsafe impl Send for Group {}
// SAFETY: As above.
unsafe impl Sync for Group {}

// SAFETY: `iommu_group_ref_get()` and `iommu_group_put()` take and drop a reference to the group,
// which keeps it valid.
unsafe impl AlwaysRefCounted for Group {
    fn inc_ref(&self) {
        // SAFETY: The existence of `&self` means the reference count is not zero.
        unsafe { bindings::iommu_group_ref_get(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which is dropped here.
        unsafe { bindings::iommu_group_put(obj.cast().as_ptr()) };
    }
}

impl Group {
    /// Returns the IOMMU group of `dev`, or `None` if no IOMMU translates its DMA.
    pub fn of_device(dev: &Device) -> Option<ARef<Group>> {
        // SAFETY: `dev` is a valid device for the duration of the call.
        let group = NonNull::new(unsafe { bindings::iommu_group_get(dev.as_raw()) })?;
        // SAFETY: `iommu_group_get()` returned a reference, which the `ARef` takes over.
        Some(unsafe { ARef::from_raw(group.cast()) })
    }

    fn as_raw(&self) -> *mut bindings::iommu_group {
        self.0.get()
    }

    /// Whether the MSIs of every device of the group are isolated: a device cannot raise
    /// interrupts on behalf of another (`iommu_group_has_isolated_msi()`).
    pub fn has_isolated_msi(&self) -> bool {
        // SAFETY: `self` is a valid group by the type invariants.
        unsafe { bindings::iommu_group_has_isolated_msi(self.as_raw()) }
    }

    /// Takes the DMA ownership of the group for `owner`, like `iommu_group_claim_dma_owner()`:
    /// the kernel's DMA API domain is replaced by a blocking domain until a domain is attached.
    ///
    /// Fails with [`EPERM`] if the group is owned already, or if a driver that uses the DMA API
    /// is bound to one of its devices. `owner` only identifies the owner, by its address.
    pub fn claim_dma_owner<T>(group: &ARef<Group>, owner: &T) -> Result<DmaOwnership> {
        let cookie = core::ptr::from_ref(owner).cast_mut().cast();
        // SAFETY: `group` is valid and `cookie` is not NULL; the group never dereferences it.
        to_result(unsafe { bindings::iommu_group_claim_dma_owner(group.as_raw(), cookie) })?;
        // INVARIANT: The ownership was just claimed.
        Ok(DmaOwnership {
            group: group.clone(),
        })
    }
}

/// The DMA ownership of an IOMMU group, released when this is dropped.
///
/// # Invariants
///
/// The DMA ownership of `group` was claimed with `iommu_group_claim_dma_owner()`, and is released
/// only by the drop of this value.
pub struct DmaOwnership {
    group: ARef<Group>,
}

impl DmaOwnership {
    /// The owned group.
    pub fn group(&self) -> &ARef<Group> {
        &self.group
    }
}

impl Drop for DmaOwnership {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the ownership is claimed, and it is released only here.
        unsafe { bindings::iommu_group_release_dma_owner(self.group.as_raw()) };
    }
}

/// An IOMMU paging domain: page tables that translate the DMA of the groups attached to it.
///
/// A domain is built with [`Domain::alloc_paging`] and configured through `&mut` (such as
/// [`Domain::enforce_cache_coherency`], which must come before the first map), then shared in an
/// [`Arc`] by the [`Mapping`]s and [`Attachment`]s that use it.
///
/// # Invariants
///
/// `ptr` is a paging domain that `iommu_paging_domain_alloc_flags()` returned and that only the
/// drop of this value frees.
pub struct Domain {
    ptr: NonNull<bindings::iommu_domain>,
    enforces_coherency: bool,
}

// SAFETY: The IOMMU core allows a domain to be mapped, unmapped, attached and freed from any
// thread; concurrent maps and unmaps of disjoint ranges are allowed, which is all `&Domain` does.
unsafe impl Send for Domain {}
// SAFETY: As above.
unsafe impl Sync for Domain {}

impl Domain {
    /// Allocates a paging domain that can translate the DMA of `dev`, like
    /// `iommu_paging_domain_alloc()`.
    ///
    /// Fails with [`ENODEV`] if no IOMMU translates the DMA of `dev`, and with the error of the
    /// IOMMU driver otherwise.
    pub fn alloc_paging(dev: &Device) -> Result<Self> {
        // SAFETY: `dev` is a valid device for the duration of the call.
        let ptr =
            from_err_ptr(unsafe { bindings::iommu_paging_domain_alloc_flags(dev.as_raw(), 0) })?;
        let ptr = NonNull::new(ptr).ok_or(ENOMEM)?;
        // INVARIANT: The domain was just allocated.
        Ok(Self {
            ptr,
            enforces_coherency: false,
        })
    }

    fn as_raw(&self) -> *mut bindings::iommu_domain {
        self.ptr.as_ptr()
    }

    /// Makes the domain enforce cache coherency: the IOMMU then makes every DMA of the domain
    /// snoop the CPU caches, no-snoop requests included (`enforce_cache_coherency` of the domain's
    /// operations, as iommufd and VFIO type1 call it).
    ///
    /// Takes `&mut self`, so only before the domain is shared and maps anything: the IOMMU may
    /// apply the setting to the entries it writes from then on only. Returns whether the domain
    /// now enforces cache coherency; `false` if the IOMMU cannot.
    pub fn enforce_cache_coherency(&mut self) -> bool {
        // SAFETY: By the type invariants `self.ptr` is a live paging domain, and `&mut self` means
        // nothing maps into it concurrently.
        self.enforces_coherency =
            unsafe { bindings::iommu_domain_enforce_cache_coherency(self.as_raw()) };
        self.enforces_coherency
    }

    /// Whether [`Domain::enforce_cache_coherency`] succeeded.
    pub fn enforces_coherency(&self) -> bool {
        self.enforces_coherency
    }

    /// The bitmap of the page sizes the domain maps with.
    pub fn pgsize_bitmap(&self) -> usize {
        // SAFETY: By the type invariants `self.ptr` is live; the field is set at allocation.
        unsafe { (*self.as_raw()).pgsize_bitmap }
    }

    /// The first and last IOVA the domain can translate, inclusive.
    pub fn aperture(&self) -> (u64, u64) {
        // SAFETY: By the type invariants `self.ptr` is live; the geometry is set at allocation.
        let geometry = unsafe { &(*self.as_raw()).geometry };
        (geometry.aperture_start, geometry.aperture_end)
    }

    /// Maps `npages` pages of the pins of `owner`, from the `first`-th on, at `iova` with
    /// `prot`, like `iommu_map()` for each run of physically contiguous pages, so that the IOMMU
    /// can use large pages where the memory allows.
    ///
    /// The returned [`Mapping`] keeps `owner`, and unmaps the range when it is dropped. Fails
    /// with [`EINVAL`] if the pages are not within the pins or the range wraps, and with the
    /// error of `iommu_map()` otherwise, with nothing mapped. The caller must not map over a
    /// range that is mapped already: the IOMMU driver fails such a map.
    pub fn map_pins<P: PinnedPages>(
        self: &Arc<Self>,
        iova: u64,
        owner: &Arc<P>,
        first: usize,
        npages: usize,
        prot: Prot,
        gfp: Flags,
    ) -> Result<Mapping<P>> {
        let pins = owner.pins();
        let end = first.checked_add(npages).ok_or(EINVAL)?;
        if end > pins.len() || npages == 0 {
            return Err(EINVAL);
        }
        let len = npages.checked_shl(PAGE_SHIFT as u32).ok_or(EINVAL)?;
        let iova_ul = usize::try_from(iova).map_err(|_| EINVAL)?;
        iova_ul.checked_add(len - 1).ok_or(EINVAL)?;

        // Runs of consecutive pfns `(first pfn, number)`, each mapped with one `iommu_map()`.
        let mut mapped = 0usize;
        let mut result = Ok(());
        let mut map_run = |(pfn, n): (usize, usize)| -> Result {
            let bytes = n << PAGE_SHIFT;
            // CAST: A page frame number shifted into a physical address fits `phys_addr_t`.
            let paddr = (pfn as bindings::phys_addr_t) << PAGE_SHIFT;
            // SAFETY: `self.ptr` is live by the type invariants. The pages are pinned by `pins`,
            // whose owner the returned `Mapping` keeps until they are unmapped; on failure, what
            // was mapped is unmapped below before the owner can be dropped.
            to_result(unsafe {
                bindings::iommu_map(
                    self.as_raw(),
                    iova_ul + mapped,
                    paddr,
                    bytes,
                    prot.0 as i32,
                    gfp.as_raw(),
                )
            })?;
            mapped += bytes;
            Ok(())
        };
        let mut run: Option<(usize, usize)> = None;
        for pfn in pins.pfns().skip(first).take(npages) {
            run = match run {
                Some((start, n)) if start + n == pfn => Some((start, n + 1)),
                Some(done) => {
                    result = map_run(done);
                    if result.is_err() {
                        break;
                    }
                    Some((pfn, 1))
                }
                None => Some((pfn, 1)),
            };
        }
        if let (Ok(()), Some(last)) = (&result, run) {
            result = map_run(last);
        }
        if let Err(e) = result {
            if mapped > 0 {
                // SAFETY: `[iova, iova + mapped)` was mapped above by this call.
                let unmapped = unsafe { bindings::iommu_unmap(self.as_raw(), iova_ul, mapped) };
                if unmapped != mapped {
                    // The pages may still be mapped: keep them pinned for good.
                    crate::warn_on!(true);
                    core::mem::forget(owner.clone());
                }
            }
            return Err(e);
        }
        // INVARIANT: `[iova, iova + len)` maps pages that the pins of `owner` pin.
        Ok(Mapping {
            domain: self.clone(),
            iova: iova_ul,
            len,
            owner: owner.clone(),
        })
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the domain is live and freed only here. No group is
        // attached and nothing is mapped: attachments and mappings hold an `Arc` of the domain.
        unsafe { bindings::iommu_domain_free(self.as_raw()) };
    }
}

/// A range of IOVA of a [`Domain`] mapped to pinned pages, unmapped when this is dropped.
///
/// # Invariants
///
/// `[iova, iova + len)` of `domain` maps pages that the pins of `owner` pin, and only the drop
/// of this value unmaps it.
pub struct Mapping<P: PinnedPages = LongTermPins> {
    domain: Arc<Domain>,
    iova: usize,
    len: usize,
    owner: Arc<P>,
}

impl<P: PinnedPages> Mapping<P> {
    /// The domain the range is mapped in.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }
}

impl<P: PinnedPages> Drop for Mapping<P> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the range is mapped, and unmapped only here.
        // `iommu_unmap()` flushes the IOTLB before it returns, so the pins may go right after.
        let unmapped = unsafe { bindings::iommu_unmap(self.domain.as_raw(), self.iova, self.len) };
        if unmapped != self.len {
            // The pages may still be mapped: keep them pinned for good.
            crate::warn_on!(true);
            core::mem::forget(self.owner.clone());
        }
    }
}

/// An IOMMU group attached to a [`Domain`], detached when this is dropped.
///
/// # Invariants
///
/// `group` is attached to `domain` with `iommu_attach_group()`, and only the drop of this value
/// detaches it.
pub struct Attachment {
    domain: Arc<Domain>,
    group: ARef<Group>,
}

impl Attachment {
    /// Attaches the group of `owner` to `domain`, like `iommu_attach_group()`.
    ///
    /// Requires the DMA ownership of the group, so that the group is not taken from a kernel
    /// driver. Fails with [`EBUSY`] if the group is attached to another domain, and with
    /// [`EINVAL`] if the domain is not compatible with the group's devices.
    pub fn new(domain: &Arc<Domain>, owner: &DmaOwnership) -> Result<Self> {
        let group = owner.group().clone();
        // SAFETY: The domain and the group are valid.
        to_result(unsafe { bindings::iommu_attach_group(domain.as_raw(), group.as_raw()) })?;
        // INVARIANT: The group was just attached.
        Ok(Self {
            domain: domain.clone(),
            group,
        })
    }

    /// The domain the group is attached to.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the group is attached to the domain, and detached only
        // here. With the DMA ownership claimed the group goes to its blocking domain, else to its
        // default domain.
        unsafe { bindings::iommu_detach_group(self.domain.as_raw(), self.group.as_raw()) };
    }
}
