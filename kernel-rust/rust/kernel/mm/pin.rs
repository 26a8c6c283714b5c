// SPDX-License-Identifier: GPL-2.0

//! Long-term pinning of user memory.
//!
//! A driver that lets a device access user memory for an unbounded time, such as an IOMMU user
//! API mapping it for DMA, pins the pages with `FOLL_PIN | FOLL_LONGTERM`: the pages stay resident
//! and at the same physical address until they are unpinned, and the mm does not migrate them
//! into `ZONE_MOVABLE` or CMA while they are pinned. See
//! `Documentation/core-api/pin_user_pages.rst`.
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
        Result, //
    },
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    uaccess::UserPtr,
};

/// How many pages [`LongTermPins::pin_user_pages_fast`] pins per call to
/// `pin_user_pages_fast()`, so that a large range is pinned in bounded steps.
const PIN_BATCH: usize = 512;

/// Pages of the current process pinned with `FOLL_LONGTERM`, unpinned when this is dropped.
///
/// This is the owned result of `pin_user_pages_fast(..., FOLL_LONGTERM, ...)`: dropping it calls
/// `unpin_user_pages_dirty_lock()` for pages pinned for writing, which marks them dirty, and
/// `unpin_user_pages()` otherwise.
///
/// # Invariants
///
/// - Every element of `pages` is a page that `pin_user_pages_fast()` pinned with
///   `FOLL_LONGTERM`, and `FOLL_WRITE` if `write` is true. Each element owns one pin of its page,
///   which nothing else releases. The same page may appear more than once, each time with a pin
///   of its own.
pub struct LongTermPins {
    pages: KVVec<*mut bindings::page>,
    write: bool,
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
        if !start.is_multiple_of(PAGE_SIZE) {
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

        // INVARIANT: Empty.
        let mut pins = Self {
            pages: KVVec::with_capacity(nr_pages, flags)?,
            write,
        };

        while pins.pages.len() < nr_pages {
            let done = pins.pages.len();
            let batch = (nr_pages - done).min(PIN_BATCH);
            let addr = start + (done << PAGE_SHIFT);
            let spare = pins.pages.spare_capacity_mut();

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
            unsafe { pins.pages.inc_len(pinned) };
        }
        Ok(pins)
    }

    /// Returns the number of pinned pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Returns `true` if no pages are pinned.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Returns whether the pages were pinned for writing.
    pub fn is_writable(&self) -> bool {
        self.write
    }

    /// Returns the page frame numbers of the pinned pages, in the order of their user addresses.
    pub fn pfns(&self) -> impl Iterator<Item = usize> + '_ {
        self.pages.iter().map(|&page| {
            // SAFETY: By the type invariants `page` is pinned, so it is a valid page.
            unsafe { bindings::page_to_pfn(page) }
        })
    }
}

impl Drop for LongTermPins {
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        let pages = self.pages.as_mut_ptr();
        let len = self.pages.len();
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
