// SPDX-License-Identifier: GPL-2.0

//! Long-term pinning of user memory.
//!
//! A driver that lets a device access user memory for an unbounded time, such as an IOMMU user
//! API mapping it for DMA, pins the pages with `FOLL_PIN | FOLL_LONGTERM`: the pages stay resident
//! and at the same physical address until they are unpinned, and the mm does not migrate them
//! into `ZONE_MOVABLE` or CMA while they are pinned. See
//! `Documentation/core-api/pin_user_pages.rst`.
//!
//! The pages of a memfd are pinned with `memfd_pin_folios()`, which pins whole folios; they are
//! held here as pins of their pages all the same, so both kinds are released alike.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{
    alloc::{
        Flags,
        KVVec, //
    },
    bindings,
    error::{
        code::*,
        to_result,
        Error,
        Result, //
    },
    fs::LocalFile,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    uaccess::UserPtr,
};

/// How many pages [`LongTermPins::pin_user_pages_fast`] pins per call to
/// `pin_user_pages_fast()`, so that a large range is pinned in bounded steps.
const PIN_BATCH: usize = 512;

/// Pages of the current process, or of a memfd, pinned long-term, unpinned when this is dropped.
///
/// This is the owned result of `pin_user_pages_fast(..., FOLL_LONGTERM, ...)` or of
/// `memfd_pin_folios()`: dropping it calls `unpin_user_pages_dirty_lock()` for pages pinned for
/// writing, which marks them dirty, and `unpin_user_pages()` otherwise.
///
/// # Invariants
///
/// - Every page of `pages` is a page that `pin_user_pages_fast()` pinned with
///   `FOLL_LONGTERM`, and `FOLL_WRITE` if `write` is true, or a page of a folio that
///   `memfd_pin_folios()` pinned. Each element owns one pin of its page (of its folio), which
///   nothing else releases. The same page may appear more than once, each time with a pin of its
///   own.
pub struct LongTermPins {
    pages: PageArray,
    write: bool,
}

/// The pages of [`LongTermPins`]. A single page is kept inline, so that pinning one page, the
/// common case of an IOMMU user API mapping small buffers, allocates nothing.
enum PageArray {
    One(*mut bindings::page),
    Many(KVVec<*mut bindings::page>),
}

impl PageArray {
    fn as_slice(&self) -> &[*mut bindings::page] {
        match self {
            PageArray::One(page) => core::slice::from_ref(page),
            PageArray::Many(pages) => pages,
        }
    }
}

// SAFETY: The pins are not tied to the pinning task: they may be released, and the page pointers
// used, from any thread.
unsafe impl Send for LongTermPins {}

// SAFETY: `&LongTermPins` only reads the page pointers and the pfns of the pinned pages, which
// is safe from any thread.
unsafe impl Sync for LongTermPins {}

impl LongTermPins {
    /// Pins the `nr_pages` pages of the current process's memory that start at `start`.
    ///
    /// `start` must be page aligned, else this fails with [`EINVAL`]. The pages are pinned with
    /// `FOLL_LONGTERM`, and with `FOLL_WRITE` if `write` is true, in batches of a bounded number
    /// of pages. Memory for the page array is allocated with `flags`.
    ///
    /// Fails with the error of `pin_user_pages_fast()`, such as [`EFAULT`] for an address that is
    /// not mapped (or not writable when `write` is true), or [`ENOMEM`]. Pages pinned before the
    /// failure are unpinned again.
    pub fn pin_user_pages_fast(
        start: UserPtr,
        nr_pages: usize,
        write: bool,
        flags: Flags,
    ) -> Result<Self> {
        // CAST: A user address is an integer the width of a pointer.
        let start = start.as_const_ptr() as usize;
        if start % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        // The range must fit in the address space; `pin_user_pages_fast()` checks the same.
        nr_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
            .ok_or(EOVERFLOW)?;

        let mut gup_flags = bindings::FOLL_LONGTERM;
        if write {
            gup_flags |= bindings::FOLL_WRITE;
        }

        if nr_pages == 1 {
            let mut page: *mut bindings::page = core::ptr::null_mut();
            // SAFETY: `page` has room for the one page pointer that `pin_user_pages_fast()`
            // writes at most. `start` is a user address, which it validates itself.
            let ret = unsafe { bindings::pin_user_pages_fast(start, 1, gup_flags, &mut page) };
            to_result(ret)?;
            // It pins the page or fails; do not take a buggy 0 for a pin.
            if ret != 1 {
                return Err(EFAULT);
            }
            // INVARIANT: It pinned this page with `gup_flags`, a pin that `pins` now owns.
            return Ok(Self {
                pages: PageArray::One(page),
                write,
            });
        }

        // INVARIANT: Empty.
        let mut pins = Self {
            pages: PageArray::Many(KVVec::with_capacity(nr_pages, flags)?),
            write,
        };
        // Just made `Many`.
        let PageArray::Many(pages) = &mut pins.pages else {
            return Err(EINVAL);
        };

        while pages.len() < nr_pages {
            let done = pages.len();
            let batch = (nr_pages - done).min(PIN_BATCH);
            let addr = start + (done << PAGE_SHIFT);
            let spare = pages.spare_capacity_mut();

            // CAST: `batch` is at most `PIN_BATCH`, which fits in a `c_int`.
            // SAFETY: `spare` has room for `nr_pages - done` pointers, so for the `batch` page
            // pointers that `pin_user_pages_fast()` writes at most. `addr` is a user address,
            // which `pin_user_pages_fast()` validates itself.
            let ret = unsafe {
                bindings::pin_user_pages_fast(
                    addr,
                    batch as i32,
                    gup_flags,
                    spare.as_mut_ptr().cast(),
                )
            };
            to_result(ret)?;
            // `pin_user_pages_fast()` pins at least one page or fails; do not loop on a buggy 0.
            if ret == 0 {
                return Err(EFAULT);
            }

            // CAST: `ret` is positive and at most `batch`.
            let pinned = ret as usize;
            // SAFETY: `pin_user_pages_fast()` initialized the first `pinned <= batch` elements
            // of the spare capacity.
            // INVARIANT: It pinned each of these pages with `gup_flags`, one pin per element,
            // which `pins` now owns.
            unsafe { pages.inc_len(pinned) };
        }
        Ok(pins)
    }

    /// Pins the `nr_pages` pages of the memfd `file` that start at byte offset `start`.
    ///
    /// `start` must be page aligned, else this fails with [`EINVAL`]. Pages the file does not
    /// have yet are allocated. `write` only says whether the pages are marked dirty when they are
    /// unpinned: a memfd's pages are writable. Memory for the page array is allocated with
    /// `flags`.
    ///
    /// Fails with the error of `memfd_pin_folios()`: [`EINVAL`] if `file` is not a memfd (shmem or
    /// hugetlbfs) or the range goes beyond its size, [`ENOMEM`]. Pages pinned before the failure
    /// are unpinned again.
    pub fn pin_memfd(
        file: &LocalFile,
        start: u64,
        nr_pages: usize,
        write: bool,
        flags: Flags,
    ) -> Result<Self> {
        if start % PAGE_SIZE as u64 != 0 {
            return Err(EINVAL);
        }
        // CAST: `usize` fits in a `u64` on every architecture the kernel supports.
        let end = (nr_pages as u64)
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|len| start.checked_add(len))
            .ok_or(EOVERFLOW)?;
        // `memfd_pin_folios()` takes `loff_t` offsets, the last one inclusive.
        let last = i64::try_from(end.saturating_sub(1)).map_err(|_| EOVERFLOW)?;

        // INVARIANT: Empty.
        let mut pins = Self {
            pages: PageArray::Many(KVVec::with_capacity(nr_pages, flags)?),
            write,
        };
        // Just made `Many`.
        let PageArray::Many(pages) = &mut pins.pages else {
            return Err(EINVAL);
        };
        let mut folios: KVVec<*mut bindings::folio> =
            KVVec::with_capacity(nr_pages.min(PIN_BATCH), flags)?;

        while pages.len() < nr_pages {
            let done = pages.len();
            // CAST: `done < nr_pages`, whose byte length fits in a `u64` (checked above).
            let pos = i64::try_from(start + (done << PAGE_SHIFT) as u64).map_err(|_| EOVERFLOW)?;
            let mut offset: crate::ffi::c_ulong = 0;
            folios.clear();
            let spare = folios.spare_capacity_mut();

            // CAST: The capacity is at most `PIN_BATCH`, which fits in a `c_uint`.
            // SAFETY: `file` is a valid file for the duration of the call. `spare` has room for
            // the `spare.len()` folio pointers that `memfd_pin_folios()` writes at most, and
            // `offset` is a valid `pgoff_t` to write.
            let ret = unsafe {
                bindings::memfd_pin_folios(
                    file.as_ptr(),
                    pos,
                    last,
                    spare.as_mut_ptr().cast(),
                    spare.len() as u32,
                    &mut offset,
                )
            };
            if ret < 0 {
                // CAST: A negative return value is an errno.
                return Err(Error::from_errno(ret as i32));
            }
            // CAST: `ret` is non-negative and at most the capacity of `folios`.
            let pinned = ret as usize;
            // SAFETY: `memfd_pin_folios()` initialized the first `pinned` elements of the spare
            // capacity, each a folio it pinned once; `folios` owns these pins until they are
            // handed to `pins` below.
            unsafe { folios.inc_len(pinned) };
            if pinned == 0 {
                // It pins at least one folio or fails; do not loop on a buggy 0.
                return Err(EFAULT);
            }

            // `offset` is the byte offset of `pos` in the first folio.
            let mut first = offset >> PAGE_SHIFT;
            for (i, &folio) in folios.iter().enumerate() {
                // SAFETY: `folio` is pinned, so it is a valid folio.
                let folio_pages = unsafe { bindings::folio_nr_pages(folio) } as usize;
                let wanted = (folio_pages.saturating_sub(first)).min(nr_pages - pages.len());
                // One pin per page: the folio holds one, add the others.
                let added = match wanted {
                    0 => Err(EFAULT),
                    1 => Ok(()),
                    // CAST: A folio has fewer pages than `c_uint::MAX`.
                    // SAFETY: `folio` is pinned (`folio_add_pins()` requires it).
                    n => to_result(unsafe { bindings::folio_add_pins(folio, (n - 1) as u32) }),
                };
                if let Err(e) = added {
                    // SAFETY: The folios from `i` on each hold the one pin `memfd_pin_folios()`
                    // took, which nothing else releases.
                    unsafe { bindings::unpin_folios(folios.as_mut_ptr().add(i), folios.len() - i) };
                    return Err(e);
                }
                for n in first..first + wanted {
                    // SAFETY: `n` is a page index within `folio`, a valid folio.
                    let page = unsafe { bindings::folio_page(folio, n) };
                    // INVARIANT: Each of these pages owns one of the `wanted` pins of its folio.
                    // `pages` has room for `nr_pages` elements and gets at most as many.
                    if pages.push_within_capacity(page).is_err() {
                        crate::warn_on!(true);
                    }
                }
                first = 0;
            }
        }
        Ok(pins)
    }

    /// Returns the number of pinned pages.
    pub fn len(&self) -> usize {
        self.pages.as_slice().len()
    }

    /// Returns `true` if no pages are pinned.
    pub fn is_empty(&self) -> bool {
        self.pages.as_slice().is_empty()
    }

    /// Returns whether the pages were pinned for writing.
    pub fn is_writable(&self) -> bool {
        self.write
    }

    /// Returns the page frame numbers of the pinned pages, in the order of their user addresses.
    pub fn pfns(&self) -> impl Iterator<Item = usize> + '_ {
        self.pages.as_slice().iter().map(|&page| {
            // SAFETY: By the type invariants `page` is pinned, so it is a valid page.
            unsafe { bindings::page_to_pfn(page) }
        })
    }
}

impl Drop for LongTermPins {
    fn drop(&mut self) {
        let pages = match &mut self.pages {
            PageArray::One(page) => core::slice::from_mut(page),
            PageArray::Many(pages) => pages,
        };
        if pages.is_empty() {
            return;
        }
        let len = pages.len();
        let pages = pages.as_mut_ptr();
        if self.write {
            // SAFETY: By the type invariants `pages[..len]` are pages pinned with `FOLL_PIN`,
            // whose pins `self` owns and releases exactly once, here.
            unsafe { bindings::unpin_user_pages_dirty_lock(pages, len, true) };
        } else {
            // SAFETY: As above.
            unsafe { bindings::unpin_user_pages(pages, len) };
        }
    }
}
