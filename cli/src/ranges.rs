//! The IOVA ranges mapped now in each IOMMU domain, for `ioasid-top domain`.
//!
//! Built from the events since attach: a successful map adds `[iova, iova + size)` (an
//! `iommu_map` that wraps an `iommu_map_nosync` is counted once: [`crate::aggregate`] decides,
//! and only calls [`RangeTracker::map`] for the mapping), an unmap removes
//! `[iova, iova + unmapped)`, which may cover several maps or part of one. Ranges are kept
//! merged: adjacent ones mapped by the same process with the same `prot` are one range.
//!
//! Bounded: a domain holds at most `cap` ranges. A map that would need one more is not
//! tracked, and a partial unmap that would split a range past the cap drops the range's
//! upper piece; either way the domain is marked truncated and the bytes left out are
//! counted, so the view says it is incomplete.

use std::collections::BTreeMap;

/// Ranges tracked per domain by default.
pub const DEFAULT_CAP: usize = 65_536;

/// One merged range: `[start, end)`, its `prot` and the process that mapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub prot: i32,
    pub pid: u32,
    /// Task name at the first map of the range.
    pub comm: String,
}

impl Range {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    end: u64,
    prot: i32,
    pid: u32,
    comm: String,
}

impl Entry {
    fn joins(&self, pid: u32, prot: i32) -> bool {
        self.pid == pid && self.prot == prot
    }
}

/// One domain's ranges and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainRanges {
    /// start -> entry; disjoint, and no two adjacent entries share (pid, prot).
    ranges: BTreeMap<u64, Entry>,
    /// Bytes in `ranges`.
    bytes: u64,
    /// Successful mappings seen (a wrapped `iommu_map_nosync` once).
    pub maps: u64,
    /// Unmap calls seen.
    pub unmaps: u64,
    /// Bytes unmapped that no tracked range covered (mapped before attach, by a filtered-out
    /// process, or left out by the cap).
    pub unmapped_untracked_bytes: u64,
    /// Bytes of maps over ranges already tracked (the kernel refuses such maps: an unmap
    /// was missed, e.g. lost); the new map replaces them.
    pub remapped_bytes: u64,
    /// Set once anything was left out because of the cap.
    pub truncated: bool,
    /// Maps not tracked because of the cap.
    pub dropped_maps: u64,
    /// Bytes left out because of the cap (dropped maps and dropped pieces of split ranges).
    pub dropped_bytes: u64,
}

impl DomainRanges {
    /// Ranges now, by IOVA.
    pub fn ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.ranges.iter().map(|(start, e)| Range {
            start: *start,
            end: e.end,
            prot: e.prot,
            pid: e.pid,
            comm: e.comm.clone(),
        })
    }

    /// Number of ranges now.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes mapped now (tracked).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn insert(&mut self, start: u64, e: Entry) {
        self.bytes += e.end - start;
        self.ranges.insert(start, e);
    }

    fn take(&mut self, start: u64) -> Option<Entry> {
        let e = self.ranges.remove(&start)?;
        self.bytes -= e.end - start;
        Some(e)
    }

    /// Removes `[start, end)` from the tracked ranges; returns the bytes removed.
    fn remove(&mut self, start: u64, end: u64, cap: usize) -> u64 {
        let mut removed = 0;
        // The range that starts below `start` and may reach into it, then those starting inside.
        let first = self
            .ranges
            .range(..start)
            .next_back()
            .filter(|(_, e)| e.end > start)
            .map(|(s, _)| *s);
        let inside: Vec<u64> = self.ranges.range(start..end).map(|(s, _)| *s).collect();
        for s in first.into_iter().chain(inside) {
            let Some(e) = self.take(s) else { continue };
            removed += e.end.min(end) - s.max(start);
            if s < start {
                self.insert(
                    s,
                    Entry {
                        end: start,
                        ..e.clone()
                    },
                );
            }
            if e.end > end {
                if self.ranges.len() < cap {
                    self.insert(end, e);
                } else {
                    self.truncated = true;
                    self.dropped_bytes += e.end - end;
                }
            }
        }
        removed
    }

    fn map(&mut self, iova: u64, size: u64, prot: i32, pid: u32, comm: &str, cap: usize) {
        self.maps += 1;
        let end = iova.saturating_add(size);
        if end == iova {
            return;
        }
        self.remapped_bytes += self.remove(iova, end, cap);
        let (mut start, mut stop) = (iova, end);
        let mut comm = comm.to_owned();
        // Join the range ending at `iova` and the one starting at `end` when they match.
        if let Some((&s, e)) = self.ranges.range(..iova).next_back()
            && e.end == iova
            && e.joins(pid, prot)
            && let Some(e) = self.take(s)
        {
            start = s;
            comm = e.comm;
        }
        if self.ranges.get(&end).is_some_and(|e| e.joins(pid, prot))
            && let Some(e) = self.take(end)
        {
            stop = e.end;
        }
        if (start, stop) == (iova, end) && self.ranges.len() >= cap {
            self.truncated = true;
            self.dropped_maps += 1;
            self.dropped_bytes += size;
            return;
        }
        self.insert(
            start,
            Entry {
                end: stop,
                prot,
                pid,
                comm,
            },
        );
    }

    fn unmap(&mut self, iova: u64, unmapped: u64, cap: usize) {
        self.unmaps += 1;
        let removed = self.remove(iova, iova.saturating_add(unmapped), cap);
        self.unmapped_untracked_bytes += unmapped - removed;
    }
}

/// The ranges of every domain tracked (or of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeTracker {
    /// Only this domain, when set.
    only: Option<u64>,
    cap: usize,
    domains: BTreeMap<u64, DomainRanges>,
}

impl RangeTracker {
    /// Tracks `only` that domain (or all when None), at most `cap` ranges per domain.
    pub fn new(only: Option<u64>, cap: usize) -> Self {
        let mut domains = BTreeMap::new();
        if let Some(d) = only {
            // Reported even when nothing is seen in it.
            domains.insert(d, DomainRanges::default());
        }
        RangeTracker { only, cap, domains }
    }

    /// The cap on ranges per domain.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn domain(&mut self, domain: u64) -> Option<&mut DomainRanges> {
        if self.only.is_some_and(|d| d != domain) {
            return None;
        }
        Some(self.domains.entry(domain).or_default())
    }

    /// A successful mapping (counted once however many nested calls reported it).
    pub fn map(&mut self, domain: u64, iova: u64, size: u64, prot: i32, pid: u32, comm: &str) {
        let cap = self.cap;
        if let Some(d) = self.domain(domain) {
            d.map(iova, size, prot, pid, comm, cap);
        }
    }

    /// An unmap call that unmapped `unmapped` bytes from `iova`.
    pub fn unmap(&mut self, domain: u64, iova: u64, unmapped: u64) {
        let cap = self.cap;
        if let Some(d) = self.domain(domain) {
            d.unmap(iova, unmapped, cap);
        }
    }

    /// Per domain, by address.
    pub fn domains(&self) -> impl Iterator<Item = (u64, &DomainRanges)> {
        self.domains.iter().map(|(k, v)| (*k, v))
    }
}

/// `prot` as `R`/`W`/`C` letters (read, write, cache-coherent), `-` for a clear bit, and
/// `+0x..` for other bits.
pub fn prot_letters(prot: i32) -> String {
    use ioasid_ebpf_common::prot::{IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE};
    let mut s = String::new();
    for (bit, c) in [(IOMMU_READ, 'R'), (IOMMU_WRITE, 'W'), (IOMMU_CACHE, 'C')] {
        s.push(if prot & bit != 0 { c } else { '-' });
    }
    let rest = prot & !(IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    if rest != 0 {
        s.push_str(&format!("+{rest:#x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u64 = 0xffff_8880_0000_1000;
    const RW: i32 = 0b011;
    const RWC: i32 = 0b111;
    const K: u64 = 1024;

    fn spans(t: &RangeTracker, d: u64) -> Vec<(u64, u64, i32, u32)> {
        t.domains()
            .find(|(k, _)| *k == d)
            .map(|(_, r)| {
                r.ranges()
                    .map(|r| (r.start, r.end, r.prot, r.pid))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn bytes(t: &RangeTracker, d: u64) -> u64 {
        t.domains()
            .find(|(k, _)| *k == d)
            .map_or(0, |(_, r)| r.bytes())
    }

    #[test]
    fn adjacent_maps_of_one_process_and_prot_merge() {
        let mut t = RangeTracker::new(None, DEFAULT_CAP);
        // Out of order: the middle one joins both neighbours.
        t.map(D, 0x10_0000, 64 * K, RW, 9, "wl");
        t.map(D, 0x12_0000, 64 * K, RW, 9, "wl");
        assert_eq!(spans(&t, D).len(), 2);
        t.map(D, 0x11_0000, 64 * K, RW, 9, "wl");
        t.map(D, 0x13_0000, 64 * K, RW, 9, "wl");
        assert_eq!(spans(&t, D), [(0x10_0000, 0x14_0000, RW, 9)]);
        assert_eq!(bytes(&t, D), 256 * K);
        assert_eq!(t.domains().next().expect("d").1.len(), 1);
        // Another prot or another process next to it stays apart.
        t.map(D, 0x14_0000, 4 * K, RWC, 9, "wl");
        t.map(D, 0x14_1000, 4 * K, RWC, 10, "other");
        t.map(D, 0x0f_f000, 4 * K, RW, 10, "other");
        assert_eq!(
            spans(&t, D),
            [
                (0x0f_f000, 0x10_0000, RW, 10),
                (0x10_0000, 0x14_0000, RW, 9),
                (0x14_0000, 0x14_1000, RWC, 9),
                (0x14_1000, 0x14_2000, RWC, 10),
            ]
        );
        // A gap is not bridged.
        t.map(D, 0x20_0000, 4 * K, RW, 9, "wl");
        assert_eq!(spans(&t, D).len(), 5);
        let d = t.domains().next().expect("a domain").1;
        assert_eq!((d.maps, d.unmaps, d.truncated), (8, 0, false));
    }

    #[test]
    fn unmap_covering_several_maps_and_parts_of_others() {
        let mut t = RangeTracker::new(None, DEFAULT_CAP);
        for i in 0..4 {
            t.map(D, 0x10_0000 + i * 64 * K, 64 * K, RW, 9, "wl");
        }
        t.map(D, 0x20_0000, 8 * K, RWC, 9, "wl");
        // Part of one (the middle: splits), then across the rest of the first range and
        // into the second one.
        t.unmap(D, 0x11_0000, 4 * K);
        assert_eq!(
            spans(&t, D),
            [
                (0x10_0000, 0x11_0000, RW, 9),
                (0x11_1000, 0x14_0000, RW, 9),
                (0x20_0000, 0x20_2000, RWC, 9),
            ]
        );
        t.unmap(D, 0x12_0000, 0x20_1000 - 0x12_0000);
        assert_eq!(
            spans(&t, D),
            [
                (0x10_0000, 0x11_0000, RW, 9),
                (0x11_1000, 0x12_0000, RW, 9),
                (0x20_1000, 0x20_2000, RWC, 9),
            ]
        );
        let d = t.domains().next().expect("a domain").1;
        // The second unmap ran over the 0x14_0000..0x20_0000 gap: not mapped, not tracked.
        assert_eq!(d.unmapped_untracked_bytes, 0x20_0000 - 0x14_0000);
        assert_eq!(d.bytes(), 64 * K + 60 * K + 4 * K);
        // Unmapping the rest empties the domain; the domain stays, with its totals.
        t.unmap(D, 0, 0x30_0000);
        assert!(spans(&t, D).is_empty());
        assert_eq!(bytes(&t, D), 0);
        assert_eq!(t.domains().next().expect("kept").1.unmaps, 3);
    }

    #[test]
    fn a_short_unmap_removes_only_what_was_unmapped() {
        let mut t = RangeTracker::new(None, DEFAULT_CAP);
        t.map(D, 0, 16 * K, RW, 1, "a");
        t.unmap(D, 0, 0);
        assert_eq!(spans(&t, D), [(0, 16 * K, RW, 1)]);
        t.unmap(D, 12 * K, 4 * K);
        assert_eq!(spans(&t, D), [(0, 12 * K, RW, 1)]);
        // Mapped before attach: counted as untracked.
        t.unmap(D, 1 << 30, 8 * K);
        assert_eq!(
            t.domains().next().expect("d").1.unmapped_untracked_bytes,
            8 * K
        );
    }

    #[test]
    fn a_map_over_tracked_ranges_replaces_them() {
        let mut t = RangeTracker::new(None, DEFAULT_CAP);
        t.map(D, 0, 8 * K, RW, 1, "a");
        t.map(D, 4 * K, 8 * K, RWC, 2, "b");
        assert_eq!(spans(&t, D), [(0, 4 * K, RW, 1), (4 * K, 12 * K, RWC, 2)]);
        let d = t.domains().next().expect("d").1;
        assert_eq!((d.remapped_bytes, d.bytes()), (4 * K, 12 * K));
    }

    #[test]
    fn only_one_domain_when_asked_and_reported_even_if_unseen() {
        const OTHER: u64 = 0xffff_8880_0000_2000;
        let mut t = RangeTracker::new(Some(D), DEFAULT_CAP);
        assert_eq!(t.domains().count(), 1);
        t.map(OTHER, 0, K, RW, 1, "a");
        t.unmap(OTHER, 0, K);
        assert_eq!(t.domains().map(|(d, _)| d).collect::<Vec<_>>(), [D]);
        assert_eq!(t.domains().next().expect("d").1, &DomainRanges::default());
        t.map(D, 0, K, RW, 1, "a");
        assert_eq!(spans(&t, D), [(0, K, RW, 1)]);
    }

    #[test]
    fn the_cap_truncates_explicitly() {
        let mut t = RangeTracker::new(None, 2);
        // Gaps between them: each is its own range.
        t.map(D, 0, K, RW, 1, "a");
        t.map(D, 2 * K, K, RW, 1, "a");
        t.map(D, 4 * K, 2 * K, RW, 1, "a");
        let d = t.domains().next().expect("d").1;
        assert!(d.truncated);
        assert_eq!((d.len(), d.dropped_maps, d.dropped_bytes), (2, 1, 2 * K));
        // Joining an existing range needs no new slot: still tracked at the cap.
        t.map(D, K, K, RW, 1, "a");
        assert_eq!(spans(&t, D), [(0, 3 * K, RW, 1)]);
        t.map(D, 8 * K, 8 * K, RW, 1, "a");
        assert_eq!(spans(&t, D).len(), 2);
        // A split past the cap drops the upper piece, and says so.
        t.unmap(D, 10 * K, K);
        let d = t.domains().next().expect("d").1;
        assert_eq!(spans(&t, D), [(0, 3 * K, RW, 1), (8 * K, 10 * K, RW, 1)]);
        assert_eq!((d.dropped_maps, d.dropped_bytes), (1, 2 * K + 5 * K));
        assert_eq!(d.unmapped_untracked_bytes, 0);
    }

    #[test]
    fn zero_sized_and_wrapping_maps() {
        let mut t = RangeTracker::new(None, DEFAULT_CAP);
        t.map(D, 0x1000, 0, RW, 1, "a");
        assert!(spans(&t, D).is_empty());
        t.map(D, u64::MAX - 0xfff, 0x2000, RW, 1, "a");
        assert_eq!(spans(&t, D), [(u64::MAX - 0xfff, u64::MAX, RW, 1)]);
        t.unmap(D, u64::MAX - 0xfff, 0x2000);
        assert!(spans(&t, D).is_empty());
    }

    #[test]
    fn prot_as_letters() {
        assert_eq!(prot_letters(RWC), "RWC");
        assert_eq!(prot_letters(RW), "RW-");
        assert_eq!(prot_letters(1), "R--");
        assert_eq!(prot_letters(0), "---");
        assert_eq!(prot_letters(RW | 8), "RW-+0x8");
    }
}
