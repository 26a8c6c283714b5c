//! Page pinning per process, counted in the kernel: the eBPF programs add each
//! pin, unpin and accounting call to per-process counters (`PINS` map,
//! `ioasid_ebpf_common::PinCounters`, key tgid) and per-function counters
//! (per-CPU `PIN_KINDS` array), which userspace reads at each report
//! ([`PinAggregator::update`]). One ring buffer record per pinning call cost
//! too much at 4 KiB map rates (issue 5).
//!
//! Counts are in pins: one `FOLL_PIN` reference, which for the GUP functions
//! is one page. `memfd_pin_folios()` takes one pin per folio and its callers
//! (iommufd, /dev/ioasid) add the other pages' pins with `folio_add_pins()`,
//! so counting both gives one pin per page there too.
//!
//! Two unpins are not counted in `unpinned` (the eBPF side decides, see
//! `ebpf/ioasid-ebpf/src/main.rs`):
//! - an unpin made inside a pin call of the same thread: GUP dropping pins it
//!   took itself before migrating pages for a long-term pin; the pin call's
//!   return value already leaves them out (`unpinned_inside_pin`);
//! - the second call of `unpin_user_pages_dirty_lock(make_dirty = false)` and
//!   the `unpin_user_pages()` it makes with the same arguments: the pair counts once.
//!
//! Exited processes: the map is bounded (`PINS_MAX_ENTRIES`), so at each
//! report the entries of processes that are gone from /proc are removed from it
//! and their counts folded into [`PinAggregator`]'s own totals, which keep them
//! (the table and the `pinned` lines show exited processes too). A pid reused
//! later continues the same row.

use std::collections::BTreeMap;

use ioasid_ebpf_common::{PinCounters, PinKindCounters, pin_fn};

use crate::{
    aggregate::Aggregator,
    args::SortKey,
    startstate::{ProcStart, StartState},
};

/// What a traced function does to the pin or accounting counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Takes pins.
    Pin,
    /// Drops pins.
    Unpin,
    /// Charges or uncharges pages.
    Account,
}

/// The traced pinning functions, with their `PIN_KINDS` index, in report order.
pub const PIN_FUNCTIONS: [(&str, u32, Class); 15] = [
    (
        "pin_user_pages_fast",
        pin_fn::PIN_USER_PAGES_FAST,
        Class::Pin,
    ),
    (
        "pin_user_pages_remote",
        pin_fn::PIN_USER_PAGES_REMOTE,
        Class::Pin,
    ),
    ("pin_user_pages", pin_fn::PIN_USER_PAGES, Class::Pin),
    (
        "pin_user_pages_unlocked",
        pin_fn::PIN_USER_PAGES_UNLOCKED,
        Class::Pin,
    ),
    ("memfd_pin_folios", pin_fn::MEMFD_PIN_FOLIOS, Class::Pin),
    ("folio_add_pins", pin_fn::FOLIO_ADD_PINS, Class::Pin),
    ("unpin_user_page", pin_fn::UNPIN_USER_PAGE, Class::Unpin),
    ("unpin_folio", pin_fn::UNPIN_FOLIO, Class::Unpin),
    ("unpin_user_pages", pin_fn::UNPIN_USER_PAGES, Class::Unpin),
    (
        "unpin_user_pages_dirty_lock",
        pin_fn::UNPIN_USER_PAGES_DIRTY_LOCK,
        Class::Unpin,
    ),
    (
        "unpin_user_page_range_dirty_lock",
        pin_fn::UNPIN_USER_PAGE_RANGE_DIRTY_LOCK,
        Class::Unpin,
    ),
    ("unpin_user_folio", pin_fn::UNPIN_USER_FOLIO, Class::Unpin),
    ("unpin_folios", pin_fn::UNPIN_FOLIOS, Class::Unpin),
    (
        "__account_locked_vm",
        pin_fn::ACCOUNT_LOCKED_VM,
        Class::Account,
    ),
    (
        "iopt_pages_update_pinned",
        pin_fn::IOPT_PAGES_UPDATE_PINNED,
        Class::Account,
    ),
];

/// Class of a pin function by name.
#[cfg(test)]
pub fn function_of_name(name: &str) -> Option<Class> {
    PIN_FUNCTIONS.iter().find(|f| f.0 == name).map(|f| f.2)
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

impl PinKindStats {
    /// Sum of one function's per-CPU counters.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a PinKindCounters>) -> Self {
        per_cpu
            .into_iter()
            .fold(Self::default(), |a, c| PinKindStats {
                calls: a.calls.saturating_add(c.calls),
                failed: a.failed.saturating_add(c.failed),
                pages: a.pages.saturating_add(c.pages),
            })
    }
}

/// A process's task name at its first pinning call since attach ("" when none was recorded).
pub fn comm(c: &PinCounters) -> String {
    crate::event::comm_str(&c.comm)
}

/// The kernel's pinning counters as of the last read.
#[derive(Debug, Default)]
pub struct PinAggregator {
    /// Per process: `exited` plus the live map entries.
    procs: BTreeMap<u32, PinCounters>,
    /// Counts of the map entries removed (processes that exited), for good.
    exited: BTreeMap<u32, PinCounters>,
    /// In [`PIN_FUNCTIONS`] order.
    kinds: [PinKindStats; PIN_FUNCTIONS.len()],
    /// The pids in the kernel's map at the last read: alive then.
    live: std::collections::BTreeSet<u32>,
}

impl PinAggregator {
    /// Takes a new read of the kernel's counters: `kinds` by `PIN_KINDS` index
    /// (summed over CPUs), `live` the entries left in the `PINS` map, `removed`
    /// those just removed from it (processes that exited), which are kept.
    pub fn update(
        &mut self,
        kinds: [PinKindStats; PIN_FUNCTIONS.len()],
        live: &[(u32, PinCounters)],
        removed: &[(u32, PinCounters)],
    ) {
        for (tgid, c) in removed {
            self.exited.entry(*tgid).or_default().add(c);
        }
        self.procs.clone_from(&self.exited);
        for (tgid, c) in live {
            self.procs.entry(*tgid).or_default().add(c);
        }
        self.live = live.iter().map(|(tgid, _)| *tgid).collect();
        self.kinds = kinds;
    }

    /// Whether `pid` has exited (its counts were folded out of the kernel's map) and was not
    /// reused by a process alive at the last read.
    pub fn has_exited(&self, pid: u32) -> bool {
        self.exited.contains_key(&pid) && !self.live.contains(&pid)
    }

    /// Per-process rows by pid (`comm`: see [`comm`]).
    pub fn procs(&self) -> &BTreeMap<u32, PinCounters> {
        &self.procs
    }

    /// Per-function rows in [`PIN_FUNCTIONS`] order, all of them.
    pub fn kind_rows(&self) -> Vec<(&'static str, PinKindStats)> {
        PIN_FUNCTIONS
            .iter()
            .zip(self.kinds)
            .map(|((name, _, _), k)| (*name, k))
            .collect()
    }
}

/// One process of the pinning table (and one `pinned` line).
#[derive(Debug, Clone)]
pub struct PinRow<'a> {
    pub pid: u32,
    /// Task name at its first pinning call since attach, else from its start-up state.
    pub comm: String,
    /// Counted since attach (zero when none was seen).
    pub events: PinCounters,
    /// Its start-up state, when it had one.
    pub start: Option<&'a ProcStart>,
}

/// The processes seen pinning or listed at start-up that pass `--pid`/`--comm`, by pid, or
/// in `--sort` order: `pid`; `comm` (then pid); `pinned`, `pins`, `unpins` (most first, then
/// pid); other keys keep pid order.
pub fn pin_rows<'a>(
    agg: &Aggregator,
    start: &'a StartState,
    sort: Option<SortKey>,
) -> Vec<PinRow<'a>> {
    let procs = agg.pins().procs();
    let pids: std::collections::BTreeSet<u32> =
        procs.keys().chain(start.procs.keys()).copied().collect();
    let mut rows: Vec<PinRow<'a>> = pids
        .into_iter()
        .map(|pid| {
            let events = procs.get(&pid).copied().unwrap_or_default();
            let start = start.procs.get(&pid);
            let mut comm = comm(&events);
            if comm.is_empty() {
                comm = start.map_or_else(String::new, |s| s.comm.clone());
            }
            PinRow {
                pid,
                comm,
                events,
                start,
            }
        })
        .filter(|r| agg.filter().matches(r.pid, &r.comm))
        .collect();
    match sort {
        Some(SortKey::Comm) => rows.sort_by(|a, b| (&a.comm, a.pid).cmp(&(&b.comm, b.pid))),
        Some(SortKey::Pinned) => {
            rows.sort_by_key(|r| (std::cmp::Reverse(r.events.net_pinned()), r.pid));
        }
        Some(SortKey::Pins) => rows.sort_by_key(|r| (std::cmp::Reverse(r.events.pinned), r.pid)),
        Some(SortKey::Unpins) => {
            rows.sort_by_key(|r| (std::cmp::Reverse(r.events.unpinned), r.pid));
        }
        _ => {}
    }
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    /// A PINS map value of process `comm`, the other counters zero.
    pub(crate) fn counters(name: &str) -> PinCounters {
        PinCounters {
            comm: crate::event::tests::comm(name),
            ..PinCounters::default()
        }
    }

    fn row_pids(rows: &[PinRow<'_>]) -> Vec<u32> {
        rows.iter().map(|r| r.pid).collect()
    }

    /// Three processes seen pinning and one only at start-up; each key its own order, and
    /// --comm keeps the matching ones (the start-up name stands in for a missing comm).
    #[test]
    fn pin_rows_sort_and_filter() {
        use crate::aggregate::Filter;
        let proc = |name: &str, pinned: u64, unpinned: u64| {
            let mut c = counters(name);
            (c.pinned, c.longterm, c.unpinned) = (pinned, pinned, unpinned);
            c
        };
        let live = [
            (10, proc("qemu-b", 100, 90)),
            (20, proc("qemu-a", 50, 0)),
            (30, proc("fio", 200, 190)),
        ];
        let mut start = StartState::default();
        start.procs.insert(
            5,
            ProcStart {
                comm: "qemu-old".into(),
                vm_pin_pages: 8,
                vm_lck_pages: 0,
                ioasid_files: vec![],
            },
        );
        let mut a = Aggregator::new();
        a.pins_mut().update(Default::default(), &live, &[]);
        assert_eq!(row_pids(&pin_rows(&a, &start, None)), [5, 10, 20, 30]);
        for (key, want) in [
            (SortKey::Pid, [5, 10, 20, 30]),
            (SortKey::Comm, [30, 20, 10, 5]),
            // Net: 10, 50, 10, 0.
            (SortKey::Pinned, [20, 10, 30, 5]),
            (SortKey::Pins, [30, 10, 20, 5]),
            (SortKey::Unpins, [30, 10, 5, 20]),
            (SortKey::Maps, [5, 10, 20, 30]),
        ] {
            assert_eq!(row_pids(&pin_rows(&a, &start, Some(key))), want, "{key:?}");
        }
        let rows = pin_rows(&a, &start, None);
        assert_eq!(rows[0].comm, "qemu-old");
        assert!(rows[0].start.is_some() && rows[1].start.is_none());

        let filtered = |comm: &str| {
            let filter = Filter {
                pid: None,
                comm: Some(comm.into()),
            };
            let mut a = Aggregator::with(filter, None);
            a.pins_mut().update(Default::default(), &live, &[]);
            a
        };
        let qemu = filtered("qemu");
        assert_eq!(
            row_pids(&pin_rows(&qemu, &start, Some(SortKey::Pinned))),
            [20, 10, 5]
        );
        assert!(pin_rows(&filtered("nobody"), &start, None).is_empty());
    }

    #[test]
    fn every_pin_function_has_its_own_index() {
        for (i, (name, idx, _)) in PIN_FUNCTIONS.iter().enumerate() {
            assert_eq!(*idx as usize, i, "{name}: report order is index order");
            assert!(PIN_FUNCTIONS[i + 1..].iter().all(|(n, _, _)| n != name));
        }
        assert_eq!(PIN_FUNCTIONS.len(), pin_fn::COUNT as usize);
    }

    /// iommufd with a domain: the kernel counted 16 pins, 16 counted by
    /// iopt_pages_update_pinned, then their unpin and uncount.
    #[test]
    fn live_counters_are_read_as_they_are() {
        let mut a = PinAggregator::default();
        let mut c = counters("vfio-edu-worklo");
        (c.pin_calls, c.pinned, c.longterm, c.iommufd_added) = (1, 16, 16, 16);
        a.update(Default::default(), &[(9, c)], &[]);
        let p = &a.procs()[&9];
        assert_eq!(
            (p.pinned, p.longterm, p.net_pinned(), p.net_iommufd()),
            (16, 16, 16, 16)
        );
        (c.unpinned, c.iommufd_removed) = (16, 16);
        a.update(Default::default(), &[(9, c)], &[]);
        let p = &a.procs()[&9];
        assert_eq!((p.net_pinned(), p.net_iommufd(), p.unpinned), (0, 0, 16));
        assert_eq!(comm(p), "vfio-edu-worklo");
        // Reading the same counters again does not count them twice.
        a.update(Default::default(), &[(9, c)], &[]);
        assert_eq!(a.procs()[&9].pinned, 16);
    }

    #[test]
    fn exited_processes_are_kept_and_a_reused_pid_adds_up() {
        let mut a = PinAggregator::default();
        let mut c = counters("short-lived");
        (c.pin_calls, c.pinned, c.longterm, c.locked_vm_charged) = (2, 8, 8, 8);
        a.update(Default::default(), &[(7, c), (8, counters("other"))], &[]);
        // Process 7 exited: its entry was removed from the map and folded in.
        a.update(Default::default(), &[(8, counters("other"))], &[(7, c)]);
        assert_eq!(a.procs()[&7].pinned, 8);
        a.update(Default::default(), &[(8, counters("other"))], &[]);
        assert_eq!(a.procs()[&7].net_locked_vm(), 8);
        assert_eq!(comm(&a.procs()[&7]), "short-lived");
        assert_eq!(comm(&a.procs()[&8]), "other");
        // A new process with pid 7: its entry starts from zero, the row continues.
        let mut n = counters("reused");
        (n.unpinned, n.locked_vm_uncharged) = (8, 8);
        a.update(Default::default(), &[(7, n)], &[]);
        let p = &a.procs()[&7];
        assert_eq!((p.net_pinned(), p.net_locked_vm()), (0, 0));
        assert_eq!(comm(p), "reused");
    }

    #[test]
    fn kind_rows_are_all_functions_in_order() {
        let mut a = PinAggregator::default();
        let mut kinds = [PinKindStats::default(); PIN_FUNCTIONS.len()];
        kinds[pin_fn::ACCOUNT_LOCKED_VM as usize] = PinKindStats::sum(&[
            PinKindCounters {
                calls: 2,
                failed: 1,
                pages: 64,
            },
            PinKindCounters {
                calls: 1,
                failed: 0,
                pages: 16,
            },
        ]);
        a.update(kinds, &[], &[]);
        let rows = a.kind_rows();
        assert_eq!(rows.len(), 15);
        assert_eq!(rows[0].0, "pin_user_pages_fast");
        let acct = rows[pin_fn::ACCOUNT_LOCKED_VM as usize];
        assert_eq!(acct.0, "__account_locked_vm");
        assert_eq!((acct.1.calls, acct.1.failed, acct.1.pages), (3, 1, 80));
    }
}
