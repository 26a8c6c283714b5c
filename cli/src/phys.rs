//! The physical memory mapped now into each IOMMU domain, and by which process: what the
//! double-accounting audit compares with what the process was charged.
//!
//! Built from the events since attach, like [`crate::ranges`], but keeping each mapping's
//! physical address, which an unmap does not carry: a mapping is kept by IOVA with the physical
//! address of its first byte, and an unmap of `[iova, iova + unmapped)` removes or trims the
//! mappings it covers, whoever mapped them. Mappings are not merged, so a process's physical
//! ranges are exactly what it mapped.
//!
//! Bounded: at most `cap` mappings in all. A map past the cap is not tracked and counted in
//! [`PhysTracker::dropped_maps`]; the audit then says its view is incomplete.

use std::collections::BTreeMap;

/// Mappings tracked in all by default.
pub const DEFAULT_CAP: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    /// IOVA one past the last byte.
    end: u64,
    paddr: u64,
    pid: u32,
}

/// What one process has mapped, summed over domains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcPhys {
    /// Bytes mapped, over all domains: a page mapped into two domains counts twice.
    pub mapped_bytes: u64,
    /// Bytes of distinct physical memory among them.
    pub distinct_bytes: u64,
    /// Domains with at least one mapping of the process.
    pub domains: usize,
}

impl ProcPhys {
    /// Bytes mapped more than once (into several domains, or twice into one).
    pub fn repeated_bytes(&self) -> u64 {
        self.mapped_bytes - self.distinct_bytes
    }
}

/// A process's physical ranges `[start, end)` and the domains they are mapped into.
type PhysRanges = (Vec<(u64, u64)>, std::collections::BTreeSet<u64>);

#[derive(Debug, Clone)]
pub struct PhysTracker {
    /// domain -> IOVA start -> mapping; disjoint within a domain.
    domains: BTreeMap<u64, BTreeMap<u64, Mapping>>,
    len: usize,
    cap: usize,
    /// Maps not tracked because of the cap.
    pub dropped_maps: u64,
}

impl Default for PhysTracker {
    fn default() -> Self {
        Self::with_cap(DEFAULT_CAP)
    }
}

impl PhysTracker {
    pub fn with_cap(cap: usize) -> Self {
        PhysTracker {
            domains: BTreeMap::new(),
            len: 0,
            cap,
            dropped_maps: 0,
        }
    }

    /// A successful map of `size` bytes at `iova` to `paddr` by process `pid`. A map over
    /// tracked IOVAs (an unmap was missed) replaces them.
    pub fn map(&mut self, pid: u32, domain: u64, iova: u64, paddr: u64, size: u64) {
        if size == 0 {
            return;
        }
        let end = iova.saturating_add(size);
        self.unmap(domain, iova, end - iova);
        if self.len >= self.cap {
            self.dropped_maps += 1;
            return;
        }
        self.domains
            .entry(domain)
            .or_default()
            .insert(iova, Mapping { end, paddr, pid });
        self.len += 1;
    }

    /// An unmap that unmapped `unmapped` bytes at `iova`: removes what it covers, keeping
    /// the pieces of mappings that stick out on either side.
    pub fn unmap(&mut self, domain: u64, iova: u64, unmapped: u64) {
        let Some(maps) = self.domains.get_mut(&domain) else {
            return;
        };
        let end = iova.saturating_add(unmapped);
        // The mapping that starts before `iova` may reach into the range.
        let first = maps
            .range(..iova)
            .next_back()
            .filter(|(_, m)| m.end > iova)
            .map(|(s, _)| *s)
            .unwrap_or(iova);
        let hit: Vec<u64> = maps.range(first..end).map(|(s, _)| *s).collect();
        for start in hit {
            let Some(m) = maps.remove(&start) else {
                continue;
            };
            self.len -= 1;
            if start < iova {
                maps.insert(start, Mapping { end: iova, ..m });
                self.len += 1;
            }
            if m.end > end {
                maps.insert(
                    end,
                    Mapping {
                        end: m.end,
                        paddr: m.paddr + (end - start),
                        pid: m.pid,
                    },
                );
                self.len += 1;
            }
        }
        if maps.is_empty() {
            self.domains.remove(&domain);
        }
    }

    /// What each process has mapped now, by pid.
    pub fn per_process(&self) -> BTreeMap<u32, ProcPhys> {
        let mut ranges: BTreeMap<u32, PhysRanges> = BTreeMap::new();
        for (domain, maps) in &self.domains {
            for (start, m) in maps {
                let (r, doms) = ranges.entry(m.pid).or_default();
                r.push((m.paddr, m.paddr.saturating_add(m.end - start)));
                doms.insert(*domain);
            }
        }
        ranges
            .into_iter()
            .map(|(pid, (mut r, doms))| {
                let mapped_bytes = r.iter().map(|(s, e)| e - s).sum();
                r.sort_unstable();
                let mut distinct_bytes = 0;
                let mut cur: Option<(u64, u64)> = None;
                for (s, e) in r {
                    match cur {
                        Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
                        Some((cs, ce)) => {
                            distinct_bytes += ce - cs;
                            cur = Some((s, e));
                        }
                        None => cur = Some((s, e)),
                    }
                }
                if let Some((cs, ce)) = cur {
                    distinct_bytes += ce - cs;
                }
                (
                    pid,
                    ProcPhys {
                        mapped_bytes,
                        distinct_bytes,
                        domains: doms.len(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn one_buffer_in_two_domains_is_mapped_twice_but_distinct_once() {
        let mut t = PhysTracker::default();
        // 1 MiB at paddr 0x4000_0000 in two pieces into domain A, and whole into domain B.
        t.map(7, 0xa, 0x10_0000, 0x4000_0000, MIB / 2);
        t.map(7, 0xa, 0x18_0000, 0x4008_0000, MIB / 2);
        t.map(7, 0xb, 0x90_0000, 0x4000_0000, MIB);
        let p = t.per_process()[&7];
        assert_eq!(p.mapped_bytes, 2 * MIB);
        assert_eq!(p.distinct_bytes, MIB);
        assert_eq!(p.repeated_bytes(), MIB);
        assert_eq!(p.domains, 2);
    }

    #[test]
    fn unmaps_trim_and_split_with_the_right_physical_addresses() {
        let mut t = PhysTracker::default();
        t.map(7, 0xa, 0x0, 0x100_0000, 4 * MIB);
        t.map(7, 0xb, 0x0, 0x100_0000 + MIB, MIB);
        // The middle 2 MiB of A: A keeps [0, 1) and [3, 4) MiB, at their own paddrs.
        t.unmap(0xa, MIB, 2 * MIB);
        let p = t.per_process()[&7];
        assert_eq!(p.mapped_bytes, 3 * MIB);
        // B's 1 MiB is A's second MiB, which A no longer maps: nothing repeats.
        assert_eq!(p.repeated_bytes(), 0);
        // A's last MiB is at paddr 0x100_0000 + 3 MiB: map it into B, and it repeats.
        t.map(7, 0xb, 0x40_0000, 0x100_0000 + 3 * MIB, MIB);
        assert_eq!(t.per_process()[&7].repeated_bytes(), MIB);
        // Unmapping everything empties it; an unmap of nothing changes nothing.
        t.unmap(0xa, 0, 8 * MIB);
        t.unmap(0xb, 0, 8 * MIB);
        t.unmap(0xc, 0, MIB);
        assert!(t.per_process().is_empty());
        assert_eq!(t.len, 0);
    }

    #[test]
    fn processes_are_apart_and_the_cap_is_counted() {
        let mut t = PhysTracker::with_cap(2);
        t.map(7, 0xa, 0, 0x1000, 0x1000);
        t.map(8, 0xb, 0, 0x1000, 0x1000);
        let per = t.per_process();
        assert_eq!(per[&7].repeated_bytes(), 0);
        assert_eq!(per[&8].repeated_bytes(), 0);
        t.map(7, 0xc, 0, 0x1000, 0x1000);
        assert_eq!(t.dropped_maps, 1);
        // A remap over a tracked IOVA replaces it.
        t.map(7, 0xa, 0, 0x9000, 0x1000);
        assert_eq!(t.per_process()[&7].distinct_bytes, 0x1000);
        assert_eq!(t.len, 2);
    }
}
