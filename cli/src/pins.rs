//! Page pinning per process: the pin, unpin and accounting records of the
//! eBPF programs (`ioasid_ebpf_common::PinEvent`), aggregated per process.
//!
//! Counts are in pins: one `FOLL_PIN` reference, which for the GUP functions
//! is one page. `memfd_pin_folios()` takes one pin per folio and its callers
//! (iommufd, /dev/ioasid) add the other pages' pins with `folio_add_pins()`,
//! so counting both gives one pin per page there too.
//!
//! Two records must not be counted:
//! - an unpin made inside a pin call of the same thread (`INSIDE_PIN`): GUP
//!   dropping pins it took itself before migrating pages for a long-term pin;
//!   the pin call's return value already leaves them out;
//! - `unpin_user_pages_dirty_lock(make_dirty = false)`, which calls
//!   `unpin_user_pages()` with the same arguments: its inner call was reported
//!   (and counted) just before on the same thread. Like `wraps_nosync` of
//!   iommu_map, the outer record is marked `nested` and not counted again.

use std::collections::{BTreeMap, HashMap};

use ioasid_ebpf_common::{PinEvent, flags, kind};

/// `FOLL_LONGTERM` of `enum gup_flags` (include/linux/mm_types.h, 1 << 8 since
/// Linux 6.2). Only used to split pins into long-term and short-term for
/// display; every pin counts in the totals either way.
pub const FOLL_LONGTERM: u32 = 1 << 8;

/// What a traced function does to the pin or accounting counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Takes pins: `ret` (when > 0) pins, or `count` for `folio_add_pins` (ret 0).
    Pin,
    /// Drops `count` pins.
    Unpin,
    /// Charges (`flags` = inc) or uncharges `count` pages when `ret` is 0.
    Account,
}

/// The traced pinning functions, with their record kind, in report order.
pub const PIN_FUNCTIONS: [(&str, u16, Class); 15] = [
    ("pin_user_pages_fast", kind::PIN_USER_PAGES_FAST, Class::Pin),
    (
        "pin_user_pages_remote",
        kind::PIN_USER_PAGES_REMOTE,
        Class::Pin,
    ),
    ("pin_user_pages", kind::PIN_USER_PAGES, Class::Pin),
    (
        "pin_user_pages_unlocked",
        kind::PIN_USER_PAGES_UNLOCKED,
        Class::Pin,
    ),
    ("memfd_pin_folios", kind::MEMFD_PIN_FOLIOS, Class::Pin),
    ("folio_add_pins", kind::FOLIO_ADD_PINS, Class::Pin),
    ("unpin_user_page", kind::UNPIN_USER_PAGE, Class::Unpin),
    ("unpin_folio", kind::UNPIN_FOLIO, Class::Unpin),
    ("unpin_user_pages", kind::UNPIN_USER_PAGES, Class::Unpin),
    (
        "unpin_user_pages_dirty_lock",
        kind::UNPIN_USER_PAGES_DIRTY_LOCK,
        Class::Unpin,
    ),
    (
        "unpin_user_page_range_dirty_lock",
        kind::UNPIN_USER_PAGE_RANGE_DIRTY_LOCK,
        Class::Unpin,
    ),
    ("unpin_user_folio", kind::UNPIN_USER_FOLIO, Class::Unpin),
    ("unpin_folios", kind::UNPIN_FOLIOS, Class::Unpin),
    (
        "__account_locked_vm",
        kind::ACCOUNT_LOCKED_VM,
        Class::Account,
    ),
    (
        "iopt_pages_update_pinned",
        kind::IOPT_PAGES_UPDATE_PINNED,
        Class::Account,
    ),
];

/// Name and class of a pin record kind, None for other kinds.
pub fn function_of(k: u16) -> Option<(&'static str, Class)> {
    PIN_FUNCTIONS
        .iter()
        .find(|(_, kk, _)| *kk == k)
        .map(|(name, _, class)| (*name, *class))
}

/// Class of a pin function by name.
#[cfg(test)]
pub fn function_of_name(name: &str) -> Option<Class> {
    PIN_FUNCTIONS.iter().find(|f| f.0 == name).map(|f| f.2)
}

/// Per-process counters from events (cumulative since attach).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinStats {
    pub comm: String,
    /// Pin calls (successful or not).
    pub pin_calls: u64,
    /// Pin calls that failed (negative return).
    pub failed_pins: u64,
    /// Pins taken.
    pub pinned: u64,
    /// ... of which by a call with `FOLL_LONGTERM` (`memfd_pin_folios` and
    /// `folio_add_pins` pins are long-term by definition).
    pub longterm: u64,
    /// Pins dropped (not counting nested or inside-pin unpins).
    pub unpinned: u64,
    /// Pins dropped by GUP inside a pin call (not in `unpinned`).
    pub unpinned_inside_pin: u64,
    /// `__account_locked_vm` pages charged / uncharged (mm `locked_vm`, VmLck).
    pub locked_vm_charged: u64,
    pub locked_vm_uncharged: u64,
    /// `iopt_pages_update_pinned` pages added / removed (iommufd's `pinned_vm`).
    pub iommufd_added: u64,
    pub iommufd_removed: u64,
}

impl PinStats {
    /// Long-term pins held now, as far as events tell: long-term pins taken
    /// minus pins dropped by the process. Short-term pins (I/O in flight:
    /// 9p, O_DIRECT) are left out: whoever completes the I/O drops them,
    /// often a kworker, so they would never net out in the pinning process.
    /// Negative when the process drops pins taken before attach (or drops its
    /// own short-term pins itself: unpins do not say which kind they drop).
    pub fn net_pinned(&self) -> i128 {
        i128::from(self.longterm) - i128::from(self.unpinned)
    }
    pub fn net_locked_vm(&self) -> i128 {
        i128::from(self.locked_vm_charged) - i128::from(self.locked_vm_uncharged)
    }
    pub fn net_iommufd(&self) -> i128 {
        i128::from(self.iommufd_added) - i128::from(self.iommufd_removed)
    }
}

/// Per-function counters (every call, nested or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinKindStats {
    pub calls: u64,
    /// Pins: calls with a negative return; accounting: calls that failed.
    pub failed: u64,
    /// Pins taken / dropped / pages (un)charged by this function.
    pub pages: u64,
}

#[derive(Debug, Default)]
pub struct PinAggregator {
    procs: BTreeMap<u32, PinStats>,
    kinds: HashMap<u16, PinKindStats>,
    /// Last unpin_user_pages per thread: (array, count).
    last_unpin_pages: HashMap<u32, (u64, u64)>,
}

/// What the aggregator concluded about one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinObserved {
    /// Counted elsewhere: an unpin inside a pin call, or the outer call of a
    /// nested unpin pair.
    pub nested: bool,
}

impl PinAggregator {
    pub fn observe(&mut self, e: &PinEvent) -> PinObserved {
        let h = &e.header;
        let Some((_, class)) = function_of(h.kind) else {
            return PinObserved::default();
        };
        let mut nested = false;
        let k = self.kinds.entry(h.kind).or_default();
        k.calls += 1;
        let comm = crate::event::comm_str(&h.comm);
        let p = self.procs.entry(h.tgid).or_default();
        if p.comm != comm {
            p.comm = comm;
        }
        match class {
            Class::Pin => {
                p.pin_calls += 1;
                // folio_add_pins returns 0 and adds `count`; the others return
                // the number of pins taken.
                let taken = if h.kind == kind::FOLIO_ADD_PINS {
                    if e.ret == 0 { Some(e.count) } else { None }
                } else {
                    u64::try_from(e.ret).ok()
                };
                match taken {
                    Some(n) => {
                        k.pages = k.pages.saturating_add(n);
                        p.pinned = p.pinned.saturating_add(n);
                        let longterm = h.kind == kind::MEMFD_PIN_FOLIOS
                            || h.kind == kind::FOLIO_ADD_PINS
                            || e.flags & FOLL_LONGTERM != 0;
                        if longterm {
                            p.longterm = p.longterm.saturating_add(n);
                        }
                    }
                    None => {
                        k.failed += 1;
                        p.failed_pins += 1;
                    }
                }
            }
            Class::Unpin => {
                k.pages = k.pages.saturating_add(e.count);
                if h.flags & flags::INSIDE_PIN != 0 {
                    nested = true;
                    p.unpinned_inside_pin = p.unpinned_inside_pin.saturating_add(e.count);
                } else if h.kind == kind::UNPIN_USER_PAGES_DIRTY_LOCK
                    && e.flags == 0
                    && self.last_unpin_pages.get(&h.tid) == Some(&(e.obj, e.count))
                {
                    nested = true;
                } else {
                    p.unpinned = p.unpinned.saturating_add(e.count);
                }
                if h.kind == kind::UNPIN_USER_PAGES {
                    self.last_unpin_pages.insert(h.tid, (e.obj, e.count));
                } else {
                    self.last_unpin_pages.remove(&h.tid);
                }
            }
            Class::Account => {
                if e.ret != 0 {
                    k.failed += 1;
                } else {
                    k.pages = k.pages.saturating_add(e.count);
                    let inc = e.flags != 0;
                    let (up, down) = if h.kind == kind::ACCOUNT_LOCKED_VM {
                        (&mut p.locked_vm_charged, &mut p.locked_vm_uncharged)
                    } else {
                        (&mut p.iommufd_added, &mut p.iommufd_removed)
                    };
                    let c = if inc { up } else { down };
                    *c = c.saturating_add(e.count);
                }
            }
        }
        PinObserved { nested }
    }

    /// Per-process rows by pid.
    pub fn procs(&self) -> &BTreeMap<u32, PinStats> {
        &self.procs
    }

    /// Per-function rows in [`PIN_FUNCTIONS`] order, all of them.
    pub fn kind_rows(&self) -> Vec<(&'static str, PinKindStats)> {
        PIN_FUNCTIONS
            .iter()
            .map(|(name, k, _)| (*name, self.kinds.get(k).copied().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::tests::hdr;

    pub(crate) fn pin_event(
        k: u16,
        tgid: u32,
        tid: u32,
        obj: u64,
        count: u64,
        fl: u32,
        ret: i64,
    ) -> PinEvent {
        PinEvent {
            header: hdr(k, size_of::<PinEvent>(), tgid, tid, "vfio-edu-worklo"),
            obj,
            start: 0x7f00_0000_0000,
            count,
            flags: fl,
            _pad: 0,
            ret,
        }
    }

    #[test]
    fn every_pin_kind_has_one_function() {
        for (i, (name, k, _)) in PIN_FUNCTIONS.iter().enumerate() {
            assert_eq!(function_of(*k).map(|f| f.0), Some(*name));
            assert!(
                PIN_FUNCTIONS[i + 1..]
                    .iter()
                    .all(|(n, kk, _)| n != name && kk != k)
            );
        }
        assert_eq!(function_of(kind::IOMMU_MAP), None);
    }

    /// iommufd with a domain: pin_user_pages_fast pins, iopt_pages_update_pinned
    /// counts them, unmapping unpins by range and uncounts.
    #[test]
    fn iommufd_map_unmap_nets_to_zero() {
        let mut a = PinAggregator::default();
        a.observe(&pin_event(
            kind::PIN_USER_PAGES_FAST,
            9,
            9,
            0,
            16,
            FOLL_LONGTERM | 3,
            16,
        ));
        a.observe(&pin_event(
            kind::IOPT_PAGES_UPDATE_PINNED,
            9,
            9,
            0xa,
            16,
            1,
            0,
        ));
        let p = &a.procs()[&9];
        assert_eq!(
            (p.pinned, p.longterm, p.net_pinned(), p.net_iommufd()),
            (16, 16, 16, 16)
        );
        a.observe(&pin_event(
            kind::UNPIN_USER_PAGE_RANGE_DIRTY_LOCK,
            9,
            9,
            0xb,
            16,
            1,
            0,
        ));
        a.observe(&pin_event(
            kind::IOPT_PAGES_UPDATE_PINNED,
            9,
            9,
            0xa,
            16,
            0,
            0,
        ));
        let p = &a.procs()[&9];
        assert_eq!((p.net_pinned(), p.net_iommufd(), p.unpinned), (0, 0, 16));
        assert_eq!(p.comm, "vfio-edu-worklo");
    }

    #[test]
    fn memfd_pins_count_folios_plus_added_pins() {
        let mut a = PinAggregator::default();
        // One 2 MiB folio: one pin, then 511 added.
        a.observe(&pin_event(kind::MEMFD_PIN_FOLIOS, 1, 1, 0xf, 64, 0, 1));
        a.observe(&pin_event(kind::FOLIO_ADD_PINS, 1, 1, 0xf0, 511, 0, 0));
        // A failed folio_add_pins adds nothing.
        a.observe(&pin_event(kind::FOLIO_ADD_PINS, 1, 1, 0xf0, 511, 0, -12));
        let p = &a.procs()[&1];
        assert_eq!(
            (p.pinned, p.longterm, p.failed_pins, p.pin_calls),
            (512, 512, 1, 3)
        );
    }

    #[test]
    fn dirty_lock_wrapper_and_inside_pin_unpins_count_once() {
        let mut a = PinAggregator::default();
        a.observe(&pin_event(
            kind::PIN_USER_PAGES_REMOTE,
            2,
            3,
            0,
            8,
            FOLL_LONGTERM,
            8,
        ));
        // make_dirty = false: unpin_user_pages inside, then the wrapper.
        assert!(
            !a.observe(&pin_event(kind::UNPIN_USER_PAGES, 2, 3, 0x100, 4, 0, 0))
                .nested
        );
        assert!(
            a.observe(&pin_event(
                kind::UNPIN_USER_PAGES_DIRTY_LOCK,
                2,
                3,
                0x100,
                4,
                0,
                0
            ))
            .nested
        );
        // make_dirty = true does its own unpinning.
        assert!(
            !a.observe(&pin_event(
                kind::UNPIN_USER_PAGES_DIRTY_LOCK,
                2,
                3,
                0x200,
                4,
                1,
                0
            ))
            .nested
        );
        // GUP unpinning inside a pin call is not counted.
        let mut inside = pin_event(kind::UNPIN_FOLIOS, 2, 3, 0x300, 2, 0, 0);
        inside.header.flags |= flags::INSIDE_PIN;
        assert!(a.observe(&inside).nested);
        let p = &a.procs()[&2];
        assert_eq!(
            (p.unpinned, p.unpinned_inside_pin, p.net_pinned()),
            (8, 2, 0)
        );
        // Per function every call counts.
        let rows = a.kind_rows();
        let get = |n: &str| {
            rows.iter()
                .find(|r| r.0 == n)
                .map(|r| r.1)
                .unwrap_or_default()
        };
        assert_eq!(get("unpin_user_pages_dirty_lock").calls, 2);
        assert_eq!(get("unpin_user_pages").pages, 4);
    }

    #[test]
    fn failed_pins_and_short_term_pins() {
        let mut a = PinAggregator::default();
        a.observe(&pin_event(kind::PIN_USER_PAGES_FAST, 4, 4, 0, 16, 0, -14));
        a.observe(&pin_event(kind::PIN_USER_PAGES_FAST, 4, 4, 0, 16, 0x1, 3));
        let p = &a.procs()[&4];
        assert_eq!((p.failed_pins, p.pinned, p.longterm), (1, 3, 0));
        // Short-term pins are not in the net count.
        assert_eq!(a.procs()[&4].net_pinned(), 0);
        a.observe(&pin_event(
            kind::PIN_USER_PAGES_REMOTE,
            4,
            4,
            0,
            4,
            FOLL_LONGTERM,
            4,
        ));
        a.observe(&pin_event(kind::UNPIN_USER_PAGE, 4, 4, 0x1, 1, 0, 0));
        assert_eq!(a.procs()[&4].net_pinned(), 3);
        // More unpins than pins seen: the process released what it pinned before attach.
        a.observe(&pin_event(kind::UNPIN_USER_PAGES, 4, 4, 0x9, 5, 0, 0));
        assert_eq!(a.procs()[&4].net_pinned(), -2);
    }

    #[test]
    fn type1_accounting_charges_and_uncharges_locked_vm() {
        let mut a = PinAggregator::default();
        a.observe(&pin_event(kind::ACCOUNT_LOCKED_VM, 5, 5, 0x3000, 64, 1, 0));
        a.observe(&pin_event(
            kind::ACCOUNT_LOCKED_VM,
            5,
            5,
            0x3000,
            64,
            1,
            -12,
        ));
        a.observe(&pin_event(kind::ACCOUNT_LOCKED_VM, 5, 5, 0x3000, 16, 0, 0));
        let p = &a.procs()[&5];
        assert_eq!(
            (
                p.locked_vm_charged,
                p.locked_vm_uncharged,
                p.net_locked_vm()
            ),
            (64, 16, 48)
        );
        let rows = a.kind_rows();
        let acct = rows
            .iter()
            .find(|r| r.0 == "__account_locked_vm")
            .map(|r| r.1)
            .unwrap_or_default();
        assert_eq!((acct.calls, acct.failed, acct.pages), (3, 1, 80));
    }
}
