// SPDX-License-Identifier: GPL-2.0

//! IO address spaces (IOAS), the analogue of iommufd's `ioas.c` and `io_pagetable.c`.

use core::mem::offset_of;
use kernel::{
    alloc::KVVec,
    capability::{
        capable,
        Capability, //
    },
    fs::LocalFile,
    iommu::domain::{
        Domain,
        Mapping,
        Prot, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        Arc,
        Mutex, //
    },
    uapi,
};

use crate::{
    object::{
        NewObject,
        Object, //
    },
    pages::{
        AccountMode,
        Pages, //
    },
    ucmd::{
        read_iova_range,
        write_iova_range,
        IommuIoasAlloc,
        IommuIoasAllowIovas,
        IommuIoasCopy,
        IommuIoasIovaRanges,
        IommuIoasMap,
        IommuIoasMapFile,
        IommuIoasUnmap,
        IommuOption,
        Ucmd, //
    },
    IoasidCtx,
};

/// `ULONG_MAX`, the largest IOVA, as iommufd's IOVAs are `unsigned long`.
const ULONG_MAX: u64 = usize::MAX as u64;

/// Whether `value` does not fit in an `unsigned long` short of `ULONG_MAX`, iommufd's
/// `value >= ULONG_MAX` check of IOVAs and lengths.
#[allow(clippy::absurd_extreme_comparisons)] // `ULONG_MAX < u64::MAX` on 32-bit.
fn exceeds_ulong(value: u64) -> bool {
    value >= ULONG_MAX
}

/// `PAGE_SIZE` as an IOVA.
const PAGE: u64 = PAGE_SIZE as u64;

/// The alignment of IOVAs, lengths and user addresses in every IOAS, iommufd's
/// `iopt->iova_alignment` with an IOMMU domain of `PAGE_SIZE` pages attached. Memory is pinned
/// at map time, as iommufd pins it for a domain, and a page is the unit of pinning and of IOMMU
/// mappings, so an IOAS behaves as one with a domain from the start.
const IOVA_ALIGNMENT: u64 = PAGE;

/// The largest alignment a kernel-chosen IOVA gets, iommufd's `HPAGE_SIZE` with transparent
/// huge pages (the PMD size of 4 KiB-page x86-64 and arm64), else `PAGE_SIZE`.
#[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
const MAX_IOVA_ALIGNMENT: u64 = PAGE * 512;
#[cfg(not(CONFIG_TRANSPARENT_HUGEPAGE))]
const MAX_IOVA_ALIGNMENT: u64 = PAGE;

/// `IOMMU_IOAS_MAP_FIXED_IOVA`.
const MAP_FIXED_IOVA: u32 = uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA;
/// `IOMMU_IOAS_MAP_WRITEABLE`.
const MAP_WRITEABLE: u32 = uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
/// `IOMMU_IOAS_MAP_READABLE`.
const MAP_READABLE: u32 = uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;
/// The flags `IOMMU_IOAS_MAP` and `IOMMU_IOAS_COPY` know.
const MAP_FLAGS: u32 = MAP_FIXED_IOVA | MAP_WRITEABLE | MAP_READABLE;

/// A mapping of an IOVA range to pinned user memory, the analogue of `struct iopt_area`.
///
/// # Invariants
///
/// The `last - first + 1` bytes starting `start_byte` bytes into `pages` are within `pages`,
/// where `first` is the key of the area in [`IoPagetable::areas`].
pub(crate) struct Area {
    /// The area mapped in each IOMMU domain of the IOAS, in the order of
    /// [`IoPagetable::domains`]. Each holds a reference to `pages`, so the pages are released
    /// only once the area is unmapped everywhere.
    mappings: Mappings,
    /// The last IOVA of the area, inclusive.
    last: u64,
    /// The pinned memory the area maps, shared with the areas copied from it.
    pages: Arc<Pages>,
    /// The offset in `pages` of the byte mapped at the first IOVA.
    start_byte: usize,
    /// `IOMMU_IOAS_MAP_READABLE` and `IOMMU_IOAS_MAP_WRITEABLE`.
    prot: u32,
}

/// The mappings of an area, one per IOMMU domain of its IOAS, in the order of the domains.
///
/// The first is kept inline: an IOAS has one domain more often than not, and mapping an area
/// then allocates no vector.
struct Mappings {
    first: Option<Mapping<Pages>>,
    rest: KVVec<Mapping<Pages>>,
}

impl Mappings {
    fn new() -> Self {
        Mappings {
            first: None,
            rest: KVVec::new(),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Appends `mapping`. On failure `mapping` is dropped, which unmaps it.
    fn push(&mut self, mapping: Mapping<Pages>) -> Result {
        if self.first.is_none() {
            self.first = Some(mapping);
            return Ok(());
        }
        Ok(self.rest.push(mapping, GFP_KERNEL_ACCOUNT)?)
    }

    /// Removes and returns the `index`-th mapping, keeping the others in order.
    fn remove(&mut self, index: usize) -> Option<Mapping<Pages>> {
        if index > 0 {
            return self.rest.remove(index - 1).ok();
        }
        let removed = self.first.take();
        if !self.rest.is_empty() {
            self.first = self.rest.remove(0).ok();
        }
        removed
    }

    /// Drops the mappings after the first `len`, which unmaps them.
    fn truncate(&mut self, len: usize) {
        match len {
            0 => {
                self.rest.clear();
                self.first = None;
            }
            len => self.rest.truncate(len - 1),
        }
    }
}

/// The IOVA space of an IOAS, the analogue of `struct io_pagetable`.
///
/// # Invariants
///
/// - The areas are disjoint, keyed by their first IOVA.
/// - `allowed` is sorted by start and its ranges are disjoint, with `start < last`.
/// - Every area is mapped in every domain of `domains`: its `mappings` are one per domain, in
///   the same order.
/// - No area and no allowed range intersects a reserved range: the IOVA outside the aperture of
///   every domain, and the reserved regions of every device attached to a domain, are reserved.
struct IoPagetable {
    areas: RBTree<u64, Area>,
    /// The IOMMU domains of the hardware page tables of the IOAS, iommufd's `iopt->domains`.
    domains: KVVec<Arc<Domain>>,
    /// The reserved ranges, iommufd's `reserved_itree`: possibly overlapping, few.
    reserved: KVVec<Reserved>,
    /// The ranges of `IOMMU_IOAS_ALLOW_IOVAS`, `(start, last)`. Empty allows all IOVAs.
    allowed: KVVec<(u64, u64)>,
    /// `IOMMU_OPTION_HUGE_PAGES` set to 0.
    disable_large_pages: bool,
}

/// Who reserved a range of IOVA, iommufd's `owner` of a `struct iopt_reserved`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReservedBy {
    /// A domain, by the address of its [`Arc`]: the IOVA outside its aperture.
    Domain(usize),
    /// A device attached to a domain of the IOAS, by its id: its reserved regions.
    Device(u32),
}

/// A reserved range of IOVA, `[start, last]`.
struct Reserved {
    start: u64,
    last: u64,
    by: ReservedBy,
}

/// An IO address space: the IOVA space that devices attached to it see, and the user memory
/// mapped in it.
#[pin_data]
pub(crate) struct Ioas {
    #[pin]
    iopt: Mutex<IoPagetable>,
}

/// An area of an IOAS as fdinfo shows it.
pub(crate) struct AreaInfo {
    /// The first IOVA.
    pub(crate) iova: u64,
    /// The length in bytes.
    pub(crate) length: u64,
    /// Whether the area is readable by devices.
    pub(crate) readable: bool,
    /// Whether the area is writable by devices.
    pub(crate) writable: bool,
}

impl Ioas {
    fn new() -> impl PinInit<Self> {
        pin_init!(Ioas {
            // INVARIANT: Empty.
            iopt <- new_mutex!(IoPagetable {
                areas: RBTree::new(),
                domains: KVVec::new(),
                reserved: KVVec::new(),
                allowed: KVVec::new(),
                disable_large_pages: false,
            }),
        })
    }

    /// Calls `f` for each area, in ascending order of IOVA, with the IOAS locked.
    pub(crate) fn for_each_area(&self, mut f: impl FnMut(AreaInfo)) {
        let iopt = self.iopt.lock();
        for (&iova, area) in iopt.areas.iter() {
            f(AreaInfo {
                iova,
                length: (area.last - iova).wrapping_add(1),
                readable: area.prot & MAP_READABLE != 0,
                writable: area.prot & MAP_WRITEABLE != 0,
            });
        }
    }

    /// Maps every area of the IOAS into `domain` and keeps the areas mapped there from now on,
    /// like `iopt_table_add_domain()`.
    ///
    /// The IOVA outside the aperture of the domain is reserved from now on. Fails with
    /// [`EADDRINUSE`] if an area or an allowed range lies there, and with the error of the IOMMU
    /// driver if a map fails; then nothing stays mapped in `domain` and nothing is reserved.
    pub(crate) fn add_domain(&self, domain: &Arc<Domain>) -> Result {
        let mut iopt = self.iopt.lock();
        let by = ReservedBy::Domain(Arc::as_ptr(domain) as usize);
        let (aperture_start, aperture_last) = domain.aperture();
        let mut outside = KVVec::new();
        if aperture_start > 0 {
            outside.push((0, aperture_start - 1), GFP_KERNEL_ACCOUNT)?;
        }
        if aperture_last < ULONG_MAX {
            outside.push((aperture_last + 1, ULONG_MAX), GFP_KERNEL_ACCOUNT)?;
        }
        iopt.reserve(&outside, by)?;
        if let Err(e) = iopt.fill_domain(domain) {
            iopt.unreserve(by);
            return Err(e);
        }
        Ok(())
    }

    /// Reserves `ranges` (`(start, last)`) for the device `id` attached to a domain of the IOAS,
    /// like `iopt_table_enforce_dev_resv_regions()`. Fails with [`EADDRINUSE`] if an area or
    /// an allowed range intersects one; then nothing is reserved.
    pub(crate) fn reserve_for_device(&self, id: u32, ranges: &[(u64, u64)]) -> Result {
        self.iopt.lock().reserve(ranges, ReservedBy::Device(id))
    }

    /// Releases what [`Ioas::reserve_for_device`] reserved for the device `id`.
    pub(crate) fn unreserve_for_device(&self, id: u32) {
        self.iopt.lock().unreserve(ReservedBy::Device(id));
    }

    /// Unmaps every area of the IOAS from `domain` and stops keeping them mapped there, like
    /// `iopt_table_remove_domain()`, and releases the IOVA outside its aperture. Does nothing if
    /// `domain` is not a domain of the IOAS.
    pub(crate) fn remove_domain(&self, domain: &Arc<Domain>) {
        let mut iopt = self.iopt.lock();
        iopt.unreserve(ReservedBy::Domain(Arc::as_ptr(domain) as usize));
        let Some(index) = iopt.domains.iter().position(|d| Arc::ptr_eq(d, domain)) else {
            return;
        };
        for (_, area) in iopt.areas.iter_mut() {
            // INVARIANT: The mappings stay in the order of the domains.
            drop(area.mappings.remove(index));
        }
        drop(iopt.domains.remove(index));
    }
}

impl IoPagetable {
    /// Reserves `ranges` for `by`, like `iopt_reserve_iova()` for each: fails with
    /// [`EADDRINUSE`] if an area or an allowed range intersects one, reserving nothing.
    fn reserve(&mut self, ranges: &[(u64, u64)], by: ReservedBy) -> Result {
        for &(start, last) in ranges {
            let allowed = self.allowed.iter().any(|&(s, l)| s <= last && start <= l);
            if allowed || self.first_area(start, last).is_some() {
                return Err(EADDRINUSE);
            }
        }
        self.reserved.reserve(ranges.len(), GFP_KERNEL_ACCOUNT)?;
        for &(start, last) in ranges {
            // INVARIANT: Checked above: no area or allowed range intersects the range.
            self.reserved
                .push_within_capacity(Reserved { start, last, by })
                .map_err(|_| ENOMEM)?;
        }
        Ok(())
    }

    /// Releases every range `by` reserved, like `iopt_remove_reserved_iova()`.
    fn unreserve(&mut self, by: ReservedBy) {
        self.reserved.retain(|r| r.by != by);
    }

    /// The last IOVA of the reserved ranges that intersect `[start, last]`, if any.
    fn reserved_in(&self, start: u64, last: u64) -> Option<u64> {
        self.reserved
            .iter()
            .filter(|r| r.start <= last && start <= r.last)
            .map(|r| r.last)
            .max()
    }

    /// Maps every area into `domain`, the filling half of `iopt_table_add_domain()`.
    fn fill_domain(&mut self, domain: &Arc<Domain>) -> Result {
        let iopt = self;
        iopt.domains.reserve(1, GFP_KERNEL_ACCOUNT)?;
        // Fill the domain area by area; on failure, drop what this domain got so far.
        let mut failed = None;
        for (&first, area) in iopt.areas.iter_mut() {
            let mapped = map_area(
                domain,
                first,
                area.last,
                &area.pages,
                area.start_byte,
                area.prot,
            )
            .and_then(|mapping| area.mappings.push(mapping));
            if let Err(e) = mapped {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            let n = iopt.domains.len();
            for (_, area) in iopt.areas.iter_mut() {
                if area.mappings.len() > n {
                    area.mappings.truncate(n);
                }
            }
            return Err(e);
        }
        // INVARIANT: Every area got one mapping in `domain`, last in its `mappings`.
        iopt.domains
            .push_within_capacity(domain.clone())
            .map_err(|_| ENOMEM)
    }
}

/// The IOMMU protection of an area with `IOMMU_IOAS_MAP_*` flags `prot`: iommufd maps with
/// `IOMMU_CACHE` always, which an IOMMU that enforces coherency turns into snooped DMA.
fn iommu_prot(prot: u32) -> Prot {
    let mut iommu_prot = Prot::CACHE;
    if prot & MAP_READABLE != 0 {
        iommu_prot = iommu_prot | Prot::READ;
    }
    if prot & MAP_WRITEABLE != 0 {
        iommu_prot = iommu_prot | Prot::WRITE;
    }
    iommu_prot
}

/// Maps the area `[first, last]`, of the bytes of `pages` from `start_byte` on, into `domain`.
fn map_area(
    domain: &Arc<Domain>,
    first: u64,
    last: u64,
    pages: &Arc<Pages>,
    start_byte: usize,
    prot: u32,
) -> Result<Mapping<Pages>> {
    // CAST: An area's length fits in the `usize` of the pages it maps.
    let npages = ((last - first) as usize + 1) / PAGE_SIZE;
    domain.map_pins(
        first,
        pages,
        start_byte / PAGE_SIZE,
        npages,
        iommu_prot(prot),
        GFP_KERNEL_ACCOUNT,
    )
}

/// Maps the area `[first, last]` into every domain of `domains`, for a new area.
fn map_area_everywhere(
    domains: &[Arc<Domain>],
    first: u64,
    last: u64,
    pages: &Arc<Pages>,
    start_byte: usize,
    prot: u32,
) -> Result<Mappings> {
    let mut mappings = Mappings::new();
    for domain in domains {
        // On failure, `mappings` is dropped, which unmaps the area from the domains before.
        mappings.push(map_area(domain, first, last, pages, start_byte, prot)?)?;
    }
    Ok(mappings)
}

/// Returns the lowest IOVA of `[start, last]` that is aligned to `align` (a power of two) but
/// for `page_offset` and leaves room for `length` bytes, like `__alloc_iova_check_range()`.
fn check_range(start: u64, last: u64, length: u64, align: u64, page_offset: u64) -> Option<u64> {
    let aligned = (start.checked_add(align - 1)? & !(align - 1)) | page_offset;
    if aligned >= last || last - aligned < length - 1 {
        return None;
    }
    Some(aligned)
}

impl IoPagetable {
    /// Returns `(first, last)` of the first area that intersects `[start, last]`, like
    /// `iopt_area_iter_first()`.
    fn first_area(&self, start: u64, last: u64) -> Option<(u64, u64)> {
        match self.areas.cursor_lower_bound(&start) {
            Some(cursor) => {
                if let Some((&first, area)) = cursor.peek_prev() {
                    if area.last >= start {
                        return Some((first, area.last));
                    }
                }
                let (&first, area) = cursor.current();
                (first <= last).then_some((first, area.last))
            }
            None => {
                let cursor = self.areas.cursor_back()?;
                let (&first, area) = cursor.current();
                (area.last >= start).then_some((first, area.last))
            }
        }
    }

    /// Checks that `length` bytes at `iova` can be mapped, like `iopt_check_iova()`.
    ///
    /// Fails with [`EINVAL`] if `iova` is not aligned to [`IOVA_ALIGNMENT`] or the range
    /// intersects a reserved one, with [`EOVERFLOW`] if the range wraps and with [`EEXIST`] if it
    /// intersects an area.
    fn check_iova(&self, iova: u64, length: u64) -> Result {
        if iova % IOVA_ALIGNMENT != 0 {
            return Err(EINVAL);
        }
        let last = iova.checked_add(length - 1).ok_or(EOVERFLOW)?;
        if self.reserved_in(iova, last).is_some() {
            return Err(EINVAL);
        }
        if self.first_area(iova, last).is_some() {
            return Err(EEXIST);
        }
        Ok(())
    }

    /// Finds a free IOVA range of `length` bytes for memory at `addr`, like
    /// `iopt_alloc_iova()`: never IOVA 0, within the allowed ranges, aligned like `addr` up to a
    /// huge page. Fails with [`ENOSPC`] if there is none.
    fn alloc_iova(&self, addr: u64, length: u64) -> Result<u64> {
        let page_offset = addr % PAGE;

        // Protect `next_power_of_two()` from overflow.
        if length == 0 || length >= ULONG_MAX / 2 {
            return Err(EOVERFLOW);
        }

        // Keep the alignment of `addr`, which increases the chance of mapping a huge page.
        let mut align = length.next_power_of_two();
        if addr != 0 {
            align = align.min(1 << addr.trailing_zeros());
        }
        align = align.min(MAX_IOVA_ALIGNMENT);
        // Memory that is not page aligned cannot keep its offset in a page aligned IOVA.
        if align < IOVA_ALIGNMENT {
            return Err(EINVAL);
        }

        let (lo, hi) = (PAGE, ULONG_MAX - PAGE);
        let whole = [(lo, hi)];
        let allowed: &[(u64, u64)] = if self.allowed.is_empty() {
            &whole
        } else {
            &self.allowed
        };

        // Adjacent allowed ranges make one span, as with `interval_tree_for_each_span()`.
        let mut i = 0;
        while i < allowed.len() {
            let (span_start, mut span_last) = allowed[i];
            i += 1;
            while i < allowed.len() && span_last.checked_add(1) == Some(allowed[i].0) {
                span_last = allowed[i].1;
                i += 1;
            }
            let (span_start, span_last) = (span_start.max(lo), span_last.min(hi));
            if span_start > span_last {
                continue;
            }
            if let Some(iova) = self.find_free(span_start, span_last, length, align, page_offset) {
                return Ok(iova);
            }
        }
        Err(ENOSPC)
    }

    /// Returns the first IOVA within `[span_start, span_last]` where `length` bytes fit between
    /// the areas and the reserved ranges, aligned to `align` but for `page_offset`.
    fn find_free(
        &self,
        span_start: u64,
        span_last: u64,
        length: u64,
        align: u64,
        page_offset: u64,
    ) -> Option<u64> {
        let mut start = span_start;
        loop {
            let iova = self.find_hole(start, span_last, length, align, page_offset)?;
            match self.reserved_in(iova, iova + (length - 1)) {
                None => return Some(iova),
                // Start again past the reserved range: `start` only grows, so this ends.
                Some(last) => start = last.checked_add(1).filter(|&s| s <= span_last)?,
            }
        }
    }

    /// Returns the first IOVA within `[span_start, span_last]` where `length` bytes fit between
    /// the areas, aligned to `align` but for `page_offset`, like the inner loop of
    /// `iopt_alloc_iova()`.
    fn find_hole(
        &self,
        span_start: u64,
        span_last: u64,
        length: u64,
        align: u64,
        page_offset: u64,
    ) -> Option<u64> {
        let span_start = check_range(span_start, span_last, length, align, page_offset)?;

        // The holes between the areas in the span.
        let mut hole_start = Some(span_start);
        for (&first, area) in self.areas.iter() {
            let Some(start) = hole_start else { break };
            if area.last < start {
                continue;
            }
            if first > span_last {
                break;
            }
            if first > start {
                if let Some(iova) = check_range(start, first - 1, length, align, page_offset) {
                    return Some(iova);
                }
            }
            hole_start = area.last.checked_add(1);
        }
        let start = hole_start.filter(|&start| start <= span_last)?;
        check_range(start, span_last, length, align, page_offset)
    }

    /// Unmaps the areas within `[start, last]`, like `iopt_unmap_iova_range()`, and returns the
    /// number of bytes unmapped.
    ///
    /// Fails with [`ENOENT`] at an area that is not entirely within the range: areas are never
    /// split. The areas before it in the range are unmapped all the same, as in iommufd.
    fn unmap_range(&mut self, mut start: u64, last: u64) -> Result<u64> {
        let mut unmapped: u64 = 0;
        while let Some((first, area_last)) = self.first_area(start, last) {
            if first < start || area_last > last {
                return Err(ENOENT);
            }
            // Dropping the area drops its reference to the pinned pages: the last one
            // uncharges and unpins them.
            drop(self.areas.remove(&first));
            unmapped = unmapped.wrapping_add(area_last - first + 1);
            if area_last >= last {
                break;
            }
            start = area_last + 1;
        }
        Ok(unmapped)
    }
}

/// `IOMMU_IOAS_ALLOC`: creates an IOAS and returns its id in `out_ioas_id`, like
/// `iommufd_ioas_alloc_ioctl()`.
pub(crate) fn alloc(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasAlloc>) -> Result {
    if ucmd.cmd.flags != 0 {
        return Err(EOPNOTSUPP);
    }

    let new_object = NewObject::new(&ctx.objects)?;
    let ioas = Arc::pin_init(Ioas::new(), GFP_KERNEL_ACCOUNT)?;

    ucmd.cmd.out_ioas_id = new_object.id();
    // On failure `new_object` is dropped, which frees the id again.
    ucmd.respond()?;

    new_object.finalize(Object::Ioas(ioas));
    Ok(())
}

/// Returns the IOAS `id` of `ctx`.
fn get_ioas(ctx: &IoasidCtx, id: u32) -> Result<Arc<Ioas>> {
    ctx.objects.lock().get_ioas(id)
}

/// Checks the flags and sizes common to `IOMMU_IOAS_MAP` and `IOMMU_IOAS_COPY`.
fn check_map_flags(flags: u32) -> Result {
    if flags & (MAP_WRITEABLE | MAP_READABLE) == 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// Maps `length` bytes, at `cmd_iova` or a kernel-chosen IOVA by `flags`, to the memory that
/// `pin` pins: the part of `iopt_map_common()` that `IOMMU_IOAS_MAP` and `IOMMU_IOAS_MAP_FILE`
/// share. `addr` is the user address or file offset of the memory. Returns the IOVA.
fn map_pages(
    ioas: &Ioas,
    flags: u32,
    cmd_iova: u64,
    length: u64,
    addr: u64,
    pin: impl FnOnce() -> Result<(Arc<Pages>, usize)>,
) -> Result<u64> {
    // `iopt_alloc_area_pages()`.
    if length % IOVA_ALIGNMENT != 0 {
        return Err(EINVAL);
    }

    let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
    let mut iopt = ioas.iopt.lock();
    let iova = if flags & MAP_FIXED_IOVA != 0 {
        iopt.check_iova(cmd_iova, length)?;
        cmd_iova
    } else {
        iopt.alloc_iova(addr, length)?
    };
    // `iopt_insert_area()`: the memory must start where the IOVA does in its page.
    if addr % IOVA_ALIGNMENT != 0 {
        return Err(EINVAL);
    }

    let (pages, start_byte) = pin()?;
    let last = iova + (length - 1);
    let prot = flags & (MAP_READABLE | MAP_WRITEABLE);
    let mappings = map_area_everywhere(&iopt.domains, iova, last, &pages, start_byte, prot)?;
    // INVARIANT: `pages` covers `length` bytes from `start_byte`. `check_iova()` or
    // `alloc_iova()` checked that the range is free and does not wrap. The area is mapped in
    // every domain.
    let area = Area {
        mappings,
        last,
        pages,
        start_byte,
        prot,
    };
    iopt.areas.insert(node.into_node(iova, area));
    Ok(iova)
}

/// `IOMMU_IOAS_MAP`: maps user memory into an IOAS, like `iommufd_ioas_map()`.
///
/// Unlike iommufd, which pins the memory only once a device needs it, the memory is pinned and
/// charged here: see "Differences from iommufd" in `ioasid.rs`.
pub(crate) fn map(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasMap>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.flags & !MAP_FLAGS != 0 || cmd.__reserved != 0 {
        return Err(EOPNOTSUPP);
    }
    if exceeds_ulong(cmd.iova) || exceeds_ulong(cmd.length) {
        return Err(EOVERFLOW);
    }
    check_map_flags(cmd.flags)?;

    let ioas = get_ioas(ctx, cmd.ioas_id)?;

    // `iopt_alloc_user_pages()`. The casts do not truncate, `ULONG_MAX` bounds both values.
    let uptr = usize::try_from(cmd.user_va).map_err(|_| EOVERFLOW)?;
    let length = cmd.length as usize;
    uptr.checked_add(length).ok_or(EOVERFLOW)?;
    if length == 0 || length > usize::MAX - PAGE_SIZE {
        return Err(EINVAL);
    }

    let writable = cmd.flags & MAP_WRITEABLE != 0;
    let iova = map_pages(&ioas, cmd.flags, cmd.iova, cmd.length, cmd.user_va, || {
        Pages::pin(&ctx.account, uptr, length, writable)
    })?;

    ucmd.cmd.iova = iova;
    ucmd.respond()
}

/// `IOMMU_IOAS_MAP_FILE`: maps a range of a memfd into an IOAS, like
/// `iommufd_ioas_map_file()`.
///
/// The pages are pinned and charged here, as those of `IOMMU_IOAS_MAP`, and charged once per
/// file with the same pages mapped from the memfd's user mappings.
pub(crate) fn map_file(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasMapFile>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.flags & !MAP_FLAGS != 0 {
        return Err(EOPNOTSUPP);
    }
    if exceeds_ulong(cmd.iova) || exceeds_ulong(cmd.length) {
        return Err(EOVERFLOW);
    }
    check_map_flags(cmd.flags)?;

    let ioas = get_ioas(ctx, cmd.ioas_id)?;

    // `iopt_map_file_pages()`. The cast does not truncate, `ULONG_MAX` bounds the value.
    let length = cmd.length as usize;
    if length == 0 {
        return Err(EINVAL);
    }
    cmd.start.checked_add(cmd.length - 1).ok_or(EOVERFLOW)?;
    // CAST: A negative fd is no file: `fget()` of it fails like that of a closed one.
    let file = LocalFile::fget(cmd.fd as u32)?;
    // `iopt_alloc_pages()`.
    if length > usize::MAX - PAGE_SIZE {
        return Err(EINVAL);
    }

    let writable = cmd.flags & MAP_WRITEABLE != 0;
    let iova = map_pages(&ioas, cmd.flags, cmd.iova, cmd.length, cmd.start, || {
        Pages::pin_memfd(&ctx.account, &file, cmd.start, length, writable)
    })?;

    ucmd.cmd.iova = iova;
    ucmd.respond()
}

/// `IOMMU_IOAS_UNMAP`: unmaps the areas of a range, like `iommufd_ioas_unmap()`.
///
/// `iova` 0 and `length` `U64_MAX` unmap everything and cannot fail with [`ENOENT`]; any other
/// range must cover whole areas and at least one of them.
pub(crate) fn unmap(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasUnmap>) -> Result {
    let cmd = &ucmd.cmd;
    let ioas = get_ioas(ctx, cmd.ioas_id)?;

    let unmapped = if cmd.iova == 0 && cmd.length == u64::MAX {
        ioas.iopt.lock().unmap_range(0, ULONG_MAX)?
    } else {
        if exceeds_ulong(cmd.iova) || exceeds_ulong(cmd.length) {
            return Err(EOVERFLOW);
        }
        if cmd.length == 0 {
            return Err(EINVAL);
        }
        let last = cmd.iova.checked_add(cmd.length - 1).ok_or(EOVERFLOW)?;
        let unmapped = ioas.iopt.lock().unmap_range(cmd.iova, last)?;
        if unmapped == 0 {
            return Err(ENOENT);
        }
        unmapped
    };

    ucmd.cmd.length = unmapped;
    ucmd.respond()
}

/// `IOMMU_IOAS_COPY`: maps the memory mapped at a range of one IOAS into another, sharing the
/// pinned pages, like `iommufd_ioas_copy()`.
pub(crate) fn copy(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasCopy>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.flags & !MAP_FLAGS != 0 {
        return Err(EOPNOTSUPP);
    }
    if exceeds_ulong(cmd.length) || exceeds_ulong(cmd.src_iova) || exceeds_ulong(cmd.dst_iova) {
        return Err(EOVERFLOW);
    }
    check_map_flags(cmd.flags)?;

    // `iopt_get_pages()`: the source range must be covered by contiguous areas.
    let src = get_ioas(ctx, cmd.src_ioas_id)?;
    if cmd.length == 0 {
        return Err(EINVAL);
    }
    let src_last = cmd.src_iova.checked_add(cmd.length - 1).ok_or(EOVERFLOW)?;
    // The slices of pinned pages to map: pages, offset in them, length.
    let mut pieces: KVVec<(Arc<Pages>, usize, u64)> = KVVec::new();
    {
        let iopt = src.iopt.lock();
        let mut cur = cmd.src_iova;
        loop {
            let (first, area_last) = iopt.first_area(cur, cur).ok_or(ENOENT)?;
            let area = iopt.areas.get(&first).ok_or(ENOENT)?;
            let piece_last = area_last.min(src_last);
            // CAST: The offset is within the area, whose bytes are within `pages`.
            let start_byte = area.start_byte + (cur - first) as usize;
            pieces.push(
                (area.pages.clone(), start_byte, piece_last - cur + 1),
                GFP_KERNEL_ACCOUNT,
            )?;
            if area_last >= src_last {
                break;
            }
            cur = area_last + 1;
        }
    }
    drop(src);

    let dst = get_ioas(ctx, cmd.dst_ioas_id)?;
    let prot = cmd.flags & (MAP_READABLE | MAP_WRITEABLE);
    let mut nodes = KVVec::with_capacity(pieces.len(), GFP_KERNEL_ACCOUNT)?;
    for _ in 0..pieces.len() {
        nodes.push(
            RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
            GFP_KERNEL_ACCOUNT,
        )?;
    }

    let mut iopt = dst.iopt.lock();
    // `iopt_alloc_area_pages()`.
    if cmd.length % IOVA_ALIGNMENT != 0 {
        return Err(EINVAL);
    }
    let iova = if cmd.flags & MAP_FIXED_IOVA != 0 {
        iopt.check_iova(cmd.dst_iova, cmd.length)?;
        cmd.dst_iova
    } else {
        let (pages, start_byte, _) = &pieces[0];
        // CAST: `start_byte` is within the pages, whose address fits in a `u64`.
        iopt.alloc_iova(pages.addr() + *start_byte as u64, cmd.length)?
    };
    // `iopt_insert_area()`, piece by piece: pages pinned read-only cannot be mapped writable,
    // and a piece must start where its IOVA does in its page.
    for (pages, start_byte, _) in pieces.iter() {
        if prot & MAP_WRITEABLE != 0 && !pages.writable() {
            return Err(EPERM);
        }
        if *start_byte as u64 % IOVA_ALIGNMENT != 0 {
            return Err(EINVAL);
        }
    }

    // Map every piece in every domain before inserting any, so that a failure leaves nothing.
    let mut areas = KVVec::with_capacity(pieces.len(), GFP_KERNEL_ACCOUNT)?;
    let mut next = iova;
    for (pages, start_byte, length) in pieces.drain_all() {
        // INVARIANT: The piece is within the source area, so within `pages`. The range
        // `[iova, iova + cmd.length - 1]` is free and does not wrap, and the pieces tile it.
        kernel::warn_on!(start_byte as u64 + length > pages.len_bytes() as u64);
        let last = next + (length - 1);
        let mappings = map_area_everywhere(&iopt.domains, next, last, &pages, start_byte, prot)?;
        let area = Area {
            mappings,
            last,
            pages,
            start_byte,
            prot,
        };
        areas
            .push_within_capacity((next, area))
            .map_err(|_| ENOMEM)?;
        next = next.wrapping_add(length);
    }
    for (first, area) in areas.drain_all() {
        let Some(node) = nodes.pop() else { break };
        iopt.areas.insert(node.into_node(first, area));
    }
    drop(iopt);

    ucmd.cmd.dst_iova = iova;
    ucmd.respond()
}

/// `IOMMU_IOAS_IOVA_RANGES`: reports the IOVA ranges usable for mappings, like
/// `iommufd_ioas_iova_ranges()`.
///
/// They are the holes between the reserved ranges of the IOAS: the IOVA outside the aperture of
/// its domains and the reserved regions of the devices attached to them. With none, the whole
/// IOVA space is usable. The alignment is [`IOVA_ALIGNMENT`].
pub(crate) fn iova_ranges(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuIoasIovaRanges>) -> Result {
    if ucmd.cmd.__reserved != 0 {
        return Err(EOPNOTSUPP);
    }
    let ioas = get_ioas(ctx, ucmd.cmd.ioas_id)?;

    // The holes, computed under the lock and written out without it.
    let mut holes: KVVec<(u64, u64)> = KVVec::new();
    {
        let iopt = ioas.iopt.lock();
        let mut reserved: KVVec<(u64, u64)> =
            KVVec::with_capacity(iopt.reserved.len(), GFP_KERNEL)?;
        for r in iopt.reserved.iter() {
            reserved
                .push_within_capacity((r.start, r.last))
                .map_err(|_| ENOMEM)?;
        }
        drop(iopt);
        reserved.sort_unstable();
        // Reserved ranges may overlap: walk them in order of start, keeping the next free IOVA.
        let mut next = Some(0u64);
        for (start, last) in reserved.iter().copied() {
            let Some(free) = next else { break };
            if start > free {
                holes.push((free, start - 1), GFP_KERNEL)?;
            }
            next = next.max(last.checked_add(1)).filter(|_| last < ULONG_MAX);
        }
        if let Some(free) = next {
            holes.push((free, ULONG_MAX), GFP_KERNEL)?;
        }
    }
    let max_iovas = ucmd.cmd.num_iovas;
    let mut num_iovas = 0;
    for &(start, last) in holes.iter() {
        if num_iovas < max_iovas {
            write_iova_range(ucmd.cmd.allowed_iovas, num_iovas, start, last)?;
        }
        num_iovas += 1;
    }
    ucmd.cmd.num_iovas = num_iovas;
    ucmd.cmd.out_iova_alignment = IOVA_ALIGNMENT;
    ucmd.respond()?;
    if num_iovas > max_iovas {
        return Err(EMSGSIZE);
    }
    Ok(())
}

/// `IOMMU_IOAS_ALLOW_IOVAS`: restricts kernel-chosen IOVAs to the given ranges, like
/// `iommufd_ioas_allow_iovas()`. No ranges lift the restriction.
pub(crate) fn allow_iovas(ctx: &IoasidCtx, ucmd: Ucmd<IommuIoasAllowIovas>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.__reserved != 0 {
        return Err(EOPNOTSUPP);
    }
    let ioas = get_ioas(ctx, cmd.ioas_id)?;

    // `iommufd_ioas_load_iovas()`: each range must be non-empty and disjoint from the others.
    let mut allowed: KVVec<(u64, u64)> = KVVec::new();
    for i in 0..cmd.num_iovas {
        let (start, last) = read_iova_range(cmd.allowed_iovas, i)?;
        if start >= last {
            return Err(EINVAL);
        }
        let pos = allowed.partition_point(|&(s, _)| s < start);
        if pos > 0 && allowed[pos - 1].1 >= start {
            return Err(EINVAL);
        }
        if pos < allowed.len() && allowed[pos].0 <= last {
            return Err(EINVAL);
        }
        allowed.reserve(1, GFP_KERNEL_ACCOUNT)?;
        allowed
            .insert_within_capacity(pos, (start, last))
            .map_err(|_| ENOMEM)?;
    }

    // `iopt_set_allow_iova()`: an allowed range must not intersect a reserved one.
    let mut iopt = ioas.iopt.lock();
    if allowed
        .iter()
        .any(|&(start, last)| iopt.reserved_in(start, last).is_some())
    {
        return Err(EADDRINUSE);
    }
    // INVARIANT: `allowed` is sorted and its ranges are disjoint and non-empty, and no reserved
    // range intersects one.
    iopt.allowed = allowed;
    Ok(())
}

/// `IOMMU_OPTION`: gets or sets an option, like `iommufd_option()`.
pub(crate) fn option(ctx: &IoasidCtx, mut ucmd: Ucmd<IommuOption>) -> Result {
    let cmd = &ucmd.cmd;
    if cmd.__reserved != 0 {
        return Err(EOPNOTSUPP);
    }
    let get = cmd.op == uapi::iommufd_option_ops_IOMMU_OPTION_OP_GET as u16;
    let set = cmd.op == uapi::iommufd_option_ops_IOMMU_OPTION_OP_SET as u16;

    let val64 = match cmd.option_id {
        uapi::iommufd_option_IOMMU_OPTION_RLIMIT_MODE => {
            if cmd.object_id != 0 {
                return Err(EOPNOTSUPP);
            }
            if get {
                u64::from(ctx.account.mode() == AccountMode::Mm)
            } else if set {
                if !capable(Capability::SYS_RESOURCE) {
                    return Err(EPERM);
                }
                let objects = ctx.objects.lock();
                if !objects.is_empty() {
                    return Err(EBUSY);
                }
                let mode = match cmd.val64 {
                    0 => AccountMode::User,
                    1 => AccountMode::Mm,
                    _ => return Err(EINVAL),
                };
                ctx.account.set_mode(mode)?;
                cmd.val64
            } else {
                return Err(EOPNOTSUPP);
            }
        }
        uapi::iommufd_option_IOMMU_OPTION_HUGE_PAGES => {
            let ioas = get_ioas(ctx, cmd.object_id)?;
            let mut iopt = ioas.iopt.lock();
            if get {
                u64::from(!iopt.disable_large_pages)
            } else if set {
                // With no devices there are no page tables to check against.
                iopt.disable_large_pages = match cmd.val64 {
                    0 => true,
                    1 => false,
                    _ => return Err(EINVAL),
                };
                cmd.val64
            } else {
                return Err(EOPNOTSUPP);
            }
        }
        _ => return Err(EOPNOTSUPP),
    };

    ucmd.cmd.val64 = val64;
    ucmd.respond_u64(offset_of!(uapi::iommu_option, val64), val64)
}
