//! Aggregation of decoded events. Counters are cumulative since attach.
//!
//! Since Linux 6.15-ish `iommu_map()` is `iommu_map_nosync()` followed by a
//! sync, so one mapping can produce two records on the same thread: first
//! the inner `iommu_map_nosync`, then the outer `iommu_map` with the same
//! arguments. The per (process, domain) aggregate counts such a mapping once
//! (from the nosync record); the outer record is marked `wraps_nosync`.
//! Per-function aggregates ([`KindStats`]) count every call as it was made.
//!
//! Unmaps come from `iommu_unmap` and `iommu_unmap_fast` (VFIO type1 uses
//! the latter, falling back to the former when it unmaps nothing). Neither
//! calls the other, so both count as unmapped bytes of their domain.
//!
//! KVM: `kvm_arch_register_noncoherent_dma()` / `kvm_arch_unregister_noncoherent_dma()` are
//! called by the KVM-VFIO device (virt/kvm/vfio.c, `kvm_vfio_update_coherency()`) when the
//! set of VFIO files it holds goes from all-coherent to containing one whose IOMMU cannot
//! enforce cache coherency, and back. From register to unregister the VM's
//! `noncoherent_dma_count` is non-zero: KVM honours the guest's WBINVD (and, on VMX, the
//! guest's memory types). That device is the only caller, at most one per VM, and it only
//! calls on a change, so the calls for one VM alternate and the last one seen is the VM's
//! state; [`KvmStats`] keeps it per `struct kvm *`.
//!
//! Attach and detach tie a domain to devices: a group attached to a domain (the group
//! number read in the kernel, its devices from sysfs) stays with it until a detach of that
//! domain or a replace moves it; [`GroupAttach`] keeps it per `struct iommu_group *`. Groups
//! attached before ioasid-top started are not known.

use std::collections::{BTreeMap, HashMap};

use ioasid_ebpf_common::{AttachEvent, MapEvent, prot};

use crate::{
    args::SortKey,
    event::{AttachFn, AttachOp, Event, KvmOp, MapFn, UnmapFn, comm_str},
    phys::PhysTracker,
    pins::PinAggregator,
    ranges::RangeTracker,
};

/// `--pid` and `--comm`: which processes are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub pid: Option<u32>,
    /// Substring of the task name.
    pub comm: Option<String>,
}

impl Filter {
    /// Whether a process (tgid) with this task name is reported.
    pub fn matches(&self, pid: u32, comm: &str) -> bool {
        self.pid.is_none_or(|p| p == pid) && self.matches_comm(comm)
    }

    /// Whether a task name passes `--comm`.
    pub fn matches_comm(&self, comm: &str) -> bool {
        self.comm.as_deref().is_none_or(|c| comm.contains(c))
    }
}

/// Per (process, domain) counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// `comm` of the last event seen for this key.
    pub comm: String,
    /// Successful map calls.
    pub maps: u64,
    /// Map calls that returned an error.
    pub failed_maps: u64,
    /// Unmap calls.
    pub unmaps: u64,
    /// Bytes mapped by successful map calls.
    pub mapped_bytes: u64,
    /// Bytes reported unmapped by unmap calls.
    pub unmapped_bytes: u64,
    /// The last map call that failed: its errno (negative), IOVA and size.
    pub last_failed_map: Option<(i32, u64, u64)>,
    /// Unmap calls that unmapped less than they asked. VFIO type1's `iommu_unmap_fast` that
    /// unmapped nothing is not one: type1 then unmaps the range with `iommu_unmap`.
    pub short_unmaps: u64,
    /// The last of them: IOVA, bytes asked, bytes unmapped.
    pub last_short_unmap: Option<(u64, u64, u64)>,
    /// Successful maps with `IOMMU_CACHE` (coherent DMA).
    pub coherent_maps: u64,
    /// Successful maps of memory without `IOMMU_CACHE`: DMA the IOMMU may let past the CPU
    /// caches. Maps with `IOMMU_MMIO` (device memory for peer-to-peer DMA, which iommufd maps
    /// without `IOMMU_CACHE`) are neither: MMIO is never cached.
    pub noncoherent_maps: u64,
    /// The last of them: IOVA, size, prot.
    pub last_noncoherent_map: Option<(u64, u64, i32)>,
}

impl DomainStats {
    /// Mapped minus unmapped bytes. Negative when this process unmapped what
    /// was mapped before attach (or by another process).
    pub fn net_bytes(&self) -> i128 {
        i128::from(self.mapped_bytes) - i128::from(self.unmapped_bytes)
    }
}

/// Key of [`DomainStats`]: process (tgid) and `struct iommu_domain *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainKey {
    pub pid: u32,
    pub domain: u64,
}

/// Per KVM VM (`struct kvm *`): its non-coherent DMA (WBINVD) state and transitions.
///
/// Keyed by the VM alone, not by (process, VM): the unregister can come from another process
/// than the register (the last holder of the VM fd destroys the VM), and the state must
/// follow the VM. `pid`/`comm` are those of the last call. A `struct kvm *` freed and reused
/// by a new VM continues the same row; the state stays right (a new VM starts coherent and
/// registers first), only the counts add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmStats {
    /// Process (tgid) of the last call.
    pub pid: u32,
    /// Its `comm`.
    pub comm: String,
    /// `kvm_arch_register_noncoherent_dma` calls seen.
    pub registers: u64,
    /// `kvm_arch_unregister_noncoherent_dma` calls seen.
    pub unregisters: u64,
    /// State after the last call: true after a register (the guest's WBINVD is honoured).
    pub noncoherent: bool,
    /// `ts_ns` of the last call.
    pub last_ts_ns: u64,
}

impl KvmStats {
    /// The last call seen.
    pub fn last_op(&self) -> KvmOp {
        if self.noncoherent {
            KvmOp::Register
        } else {
            KvmOp::Unregister
        }
    }
}

/// Per traced function counters (every call, nested or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    pub calls: u64,
    /// map: calls returning an error; unmap: calls that unmapped less than
    /// asked; kvm: always 0.
    pub failed: u64,
    /// map: bytes of successful calls; unmap: bytes unmapped; kvm: 0.
    pub bytes: u64,
}

/// Traced functions in a stable order (the order of report lines).
pub const FUNCTIONS: [&str; 11] = [
    "iommu_map",
    "iommu_map_nosync",
    "iommu_unmap",
    "iommu_unmap_fast",
    "kvm_arch_register_noncoherent_dma",
    "kvm_arch_unregister_noncoherent_dma",
    "iommu_attach_group",
    "iommu_detach_group",
    "iommu_attach_group_handle",
    "iommu_detach_group_handle",
    "iommu_replace_group_handle",
];

/// An IOMMU group attached to a domain, as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupAttach {
    /// `struct iommu_domain *` it is attached to.
    pub domain: u64,
    /// Its number (`/sys/kernel/iommu_groups/<id>`); -1 when the kernel's BTF did not say
    /// where to read it.
    pub id: i32,
    /// Its devices (PCI addresses), from sysfs; None until looked up.
    pub devices: Option<Vec<String>>,
    /// Process (tgid) and task name of the attach.
    pub pid: u32,
    pub comm: String,
}

/// What the aggregator concluded about one event (for per-event output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// An `iommu_map` record whose inner `iommu_map_nosync` call was already
    /// reported (and counted) just before on the same thread.
    pub wraps_nosync: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapArgsKey {
    domain: u64,
    iova: u64,
    paddr: u64,
    size: u64,
}

impl From<&MapEvent> for MapArgsKey {
    fn from(e: &MapEvent) -> Self {
        MapArgsKey {
            domain: e.domain,
            iova: e.iova,
            paddr: e.paddr,
            size: e.size,
        }
    }
}

/// Events the kernel side could not deliver (sum of the per-CPU `LOST` array).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Ring buffer full: record dropped.
    pub ringbuf: u64,
    /// kretprobe without the arguments of its kprobe: record not made (or,
    /// for a pinning function, call not counted).
    pub no_entry: u64,
    /// Pinning calls of a process the full `PINS` map had no entry for: not
    /// counted for that process (the per-function counts have them).
    pub pin_map_full: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.ringbuf
            .saturating_add(self.no_entry)
            .saturating_add(self.pin_map_full)
    }
}

#[derive(Debug, Default)]
pub struct Aggregator {
    domains: BTreeMap<DomainKey, DomainStats>,
    /// Per `struct kvm *`.
    vms: BTreeMap<u64, KvmStats>,
    kinds: BTreeMap<&'static str, KindStats>,
    /// Last iommu_map_nosync per thread, to recognise the wrapping iommu_map.
    last_nosync: HashMap<u32, MapArgsKey>,
    /// Wrapping `iommu_map` calls that the kernel side counted instead of reporting
    /// (`ELIDED_MAPS`, read at each report): calls and bytes.
    elided_maps: (u64, u64),
    /// Pinning counters, read from the kernel at each report.
    pins: PinAggregator,
    /// The IOVA ranges mapped now (`ioasid-top domain` only).
    ranges: Option<RangeTracker>,
    /// The physical memory mapped now, per process (`ioasid-top audit` only).
    phys: Option<PhysTracker>,
    /// Groups attached now, by `struct iommu_group *`.
    groups: BTreeMap<u64, GroupAttach>,
    filter: Filter,
    events: u64,
    undecodable: u64,
}

impl Aggregator {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports what `filter` lets through; tracks the mapped ranges when given a tracker.
    pub fn with(filter: Filter, ranges: Option<RangeTracker>) -> Self {
        Aggregator {
            filter,
            ranges,
            ..Self::default()
        }
    }

    /// The `--pid`/`--comm` filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether the event passes the filter (the caller drops it otherwise).
    pub fn accepts(&self, ev: &Event) -> bool {
        let h = ev.header();
        self.filter.pid.is_none_or(|p| p == h.tgid)
            && (self.filter.comm.is_none() || self.filter.matches_comm(&comm_str(&h.comm)))
    }

    /// The mapped ranges, when tracked.
    pub fn ranges(&self) -> Option<&RangeTracker> {
        self.ranges.as_ref()
    }

    /// Tracks the physical memory each process maps from now on (for the audit).
    pub fn track_phys(&mut self) {
        self.phys.get_or_insert_with(PhysTracker::default);
    }

    /// The physical memory mapped now, when tracked.
    pub fn phys(&self) -> Option<&PhysTracker> {
        self.phys.as_ref()
    }

    /// Accounts one event.
    pub fn observe(&mut self, ev: &Event) -> Observed {
        self.events += 1;
        let h = ev.header();
        let mut observed = Observed::default();
        match ev {
            Event::Map(f, m) => {
                let k = self.kinds.entry(f.name()).or_default();
                k.calls += 1;
                if m.ret == 0 {
                    k.bytes = k.bytes.saturating_add(m.size);
                } else {
                    k.failed += 1;
                }
                let args = MapArgsKey::from(m);
                match f {
                    MapFn::IommuMapNosync => {
                        self.last_nosync.insert(h.tid, args);
                    }
                    MapFn::IommuMap => {
                        if self.last_nosync.get(&h.tid) == Some(&args) {
                            self.last_nosync.remove(&h.tid);
                            observed.wraps_nosync = true;
                        }
                    }
                }
                if !observed.wraps_nosync {
                    let d = self.domain_entry(h.tgid, m.domain, &h.comm);
                    if m.ret == 0 {
                        d.maps += 1;
                        d.mapped_bytes = d.mapped_bytes.saturating_add(m.size);
                        if m.prot & prot::IOMMU_CACHE != 0 {
                            d.coherent_maps += 1;
                        } else if m.prot & prot::IOMMU_MMIO == 0 {
                            d.noncoherent_maps += 1;
                            d.last_noncoherent_map = Some((m.iova, m.size, m.prot));
                        }
                    } else {
                        d.failed_maps += 1;
                        d.last_failed_map = Some((m.ret, m.iova, m.size));
                    }
                    if let Some(r) = self.ranges.as_mut().filter(|_| m.ret == 0) {
                        r.map(m.domain, m.iova, m.size, m.prot, h.tgid, &comm_str(&h.comm));
                    }
                    if let Some(p) = self.phys.as_mut().filter(|_| m.ret == 0) {
                        p.map(h.tgid, m.domain, m.iova, m.paddr, m.size);
                    }
                }
            }
            Event::Unmap(f, u) => {
                let k = self.kinds.entry(f.name()).or_default();
                k.calls += 1;
                k.bytes = k.bytes.saturating_add(u.unmapped);
                if u.unmapped < u.size {
                    k.failed += 1;
                }
                let d = self.domain_entry(h.tgid, u.domain, &h.comm);
                d.unmaps += 1;
                d.unmapped_bytes = d.unmapped_bytes.saturating_add(u.unmapped);
                let type1_fallback = *f == UnmapFn::IommuUnmapFast && u.unmapped == 0;
                if u.unmapped < u.size && !type1_fallback {
                    d.short_unmaps += 1;
                    d.last_short_unmap = Some((u.iova, u.size, u.unmapped));
                }
                if let Some(r) = &mut self.ranges {
                    r.unmap(u.domain, u.iova, u.unmapped);
                }
                if let Some(p) = &mut self.phys {
                    p.unmap(u.domain, u.iova, u.unmapped);
                }
            }
            Event::Kvm(op, k) => {
                self.kinds.entry(op.function()).or_default().calls += 1;
                let vm = self.vms.entry(k.kvm).or_default();
                vm.pid = h.tgid;
                let c = comm_str(&h.comm);
                if vm.comm != c {
                    vm.comm = c;
                }
                vm.last_ts_ns = h.ts_ns;
                match op {
                    KvmOp::Register => {
                        vm.registers += 1;
                        vm.noncoherent = true;
                    }
                    KvmOp::Unregister => {
                        vm.unregisters += 1;
                        vm.noncoherent = false;
                    }
                }
            }
            Event::Attach(f, a) => {
                let k = self.kinds.entry(f.name()).or_default();
                k.calls += 1;
                if a.ret != 0 {
                    k.failed += 1;
                }
                self.track_group(*f, a);
            }
        }
        observed
    }

    /// Keeps the group-to-domain ties up to date with an attach-family call that the filter
    /// does not show: a group is often detached by another task than the one that attached it
    /// (its file closed elsewhere), and a missed detach would leave it tied.
    pub fn track_unshown(&mut self, ev: &Event) {
        if let Event::Attach(f, a) = ev {
            self.track_group(*f, a);
        }
    }

    fn track_group(&mut self, f: AttachFn, a: &AttachEvent) {
        if a.ret != 0 {
            return;
        }
        match f.op() {
            AttachOp::Attach | AttachOp::Replace => {
                let g = self.groups.entry(a.group).or_default();
                if g.id != a.group_id {
                    g.devices = None;
                }
                g.domain = a.domain;
                g.id = a.group_id;
                g.pid = a.header.tgid;
                g.comm = comm_str(&a.header.comm);
            }
            AttachOp::Detach => {
                if self
                    .groups
                    .get(&a.group)
                    .is_some_and(|g| g.domain == a.domain)
                {
                    self.groups.remove(&a.group);
                }
            }
        }
    }

    /// Counts a record that could not be decoded.
    pub fn undecodable(&mut self) {
        self.undecodable += 1;
    }

    fn domain_entry(&mut self, pid: u32, domain: u64, comm: &[u8]) -> &mut DomainStats {
        let d = self.domains.entry(DomainKey { pid, domain }).or_default();
        let c = comm_str(comm);
        if d.comm != c {
            d.comm = c;
        }
        d
    }

    /// Decoded events seen.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Records that could not be decoded.
    pub fn undecodable_records(&self) -> u64 {
        self.undecodable
    }

    /// Per (process, domain) rows, most net bytes first, then by pid/domain.
    pub fn domain_rows(&self) -> Vec<(DomainKey, &DomainStats)> {
        self.domain_rows_by(None)
    }

    /// Per (process, domain) rows in `--sort` order: `pid`, `comm`, `maps`, `unmaps`,
    /// `failed`, `domain` first by that key; then (and for other keys) most net bytes
    /// first, then most maps, then by pid/domain.
    pub fn domain_rows_by(&self, sort: Option<SortKey>) -> Vec<(DomainKey, &DomainStats)> {
        let mut rows: Vec<_> = self.domains.iter().map(|(k, v)| (*k, v)).collect();
        rows.sort_by(|(ka, a), (kb, b)| {
            let first = match sort {
                Some(SortKey::Pid) => ka.pid.cmp(&kb.pid),
                Some(SortKey::Comm) => a.comm.cmp(&b.comm).then(ka.pid.cmp(&kb.pid)),
                Some(SortKey::Maps) => b.maps.cmp(&a.maps),
                Some(SortKey::Unmaps) => b.unmaps.cmp(&a.unmaps),
                Some(SortKey::Failed) => b.failed_maps.cmp(&a.failed_maps),
                Some(SortKey::Domain) => ka.domain.cmp(&kb.domain),
                _ => std::cmp::Ordering::Equal,
            };
            first
                .then(b.net_bytes().cmp(&a.net_bytes()))
                .then(b.maps.cmp(&a.maps))
                .then(ka.cmp(kb))
        });
        rows
    }

    /// Per function rows in [`FUNCTIONS`] order; functions never called are
    /// included with zero counts so the report shape is stable. `iommu_map` includes the
    /// wrapping calls the kernel side counted without a record ([`Self::set_elided_maps`]).
    pub fn kind_rows(&self) -> Vec<(&'static str, KindStats)> {
        FUNCTIONS
            .iter()
            .map(|f| {
                let mut k = self.kinds.get(f).copied().unwrap_or_default();
                if *f == MapFn::IommuMap.name() {
                    k.calls = k.calls.saturating_add(self.elided_maps.0);
                    k.bytes = k.bytes.saturating_add(self.elided_maps.1);
                }
                (*f, k)
            })
            .collect()
    }

    /// The kernel side's counts of successful `iommu_map` calls that wrapped a reported
    /// `iommu_map_nosync` and got no record of their own: calls and bytes, since attach.
    /// Their mappings are counted once already, from the inner record.
    pub fn set_elided_maps(&mut self, calls: u64, bytes: u64) {
        self.elided_maps = (calls, bytes);
    }

    /// What [`Self::set_elided_maps`] set last: calls and bytes.
    pub fn elided_maps(&self) -> (u64, u64) {
        self.elided_maps
    }

    /// The pinning aggregate.
    pub fn pins(&self) -> &PinAggregator {
        &self.pins
    }

    /// The pinning aggregate, to update from the kernel's counters.
    pub fn pins_mut(&mut self) -> &mut PinAggregator {
        &mut self.pins
    }

    /// Per KVM VM rows, by `struct kvm *`.
    pub fn kvm_rows(&self) -> Vec<(u64, &KvmStats)> {
        self.vms.iter().map(|(k, v)| (*k, v)).collect()
    }

    /// Per KVM VM rows in `--sort` order: by pid or comm (then pid) for those keys, else
    /// (and then) by `struct kvm *`.
    pub fn kvm_rows_by(&self, sort: Option<SortKey>) -> Vec<(u64, &KvmStats)> {
        let mut rows = self.kvm_rows();
        match sort {
            Some(SortKey::Pid) => rows.sort_by_key(|(kvm, vm)| (vm.pid, *kvm)),
            Some(SortKey::Comm) => rows.sort_by(|(ka, a), (kb, b)| {
                (a.comm.as_str(), a.pid, ka).cmp(&(b.comm.as_str(), b.pid, kb))
            }),
            _ => {}
        }
        rows
    }

    /// The groups attached now (as far as seen), by `struct iommu_group *`.
    pub fn groups(&self) -> &BTreeMap<u64, GroupAttach> {
        &self.groups
    }

    /// The groups attached to `domain` now.
    pub fn domain_groups(&self, domain: u64) -> Vec<&GroupAttach> {
        self.groups
            .values()
            .filter(|g| g.domain == domain)
            .collect()
    }

    /// The PCI devices of every group attached now, as far as known, sorted, without repeats.
    pub fn attached_devices(&self) -> Vec<&str> {
        let mut devices: Vec<&str> = self
            .groups
            .values()
            .flat_map(|g| g.devices.iter().flatten().map(String::as_str))
            .collect();
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    /// The PCI devices of the groups attached to `domain` now, as far as known, sorted.
    pub fn domain_devices(&self, domain: u64) -> Vec<&str> {
        let mut devices: Vec<&str> = self
            .domain_groups(domain)
            .into_iter()
            .flat_map(|g| g.devices.iter().flatten().map(String::as_str))
            .collect();
        devices.sort_unstable();
        devices
    }

    /// Looks up the devices of the groups that do not have them yet with `lookup` (group
    /// number to PCI addresses; None when it cannot tell).
    pub fn fill_group_devices(&mut self, lookup: impl Fn(i32) -> Option<Vec<String>>) {
        for g in self.groups.values_mut() {
            if g.devices.is_none() && g.id >= 0 {
                g.devices = lookup(g.id);
            }
        }
    }

    /// Number of kvm register / unregister calls seen.
    pub fn kvm_calls(&self, op: KvmOp) -> u64 {
        self.kinds.get(op.function()).map_or(0, |k| k.calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        UnmapFn,
        tests::{hdr, map_event, unmap_event},
    };

    #[test]
    fn attach_ties_a_domain_to_its_groups_until_detach_or_replace() {
        use crate::event::{AttachFn, tests::attach_event};
        let ev = |f, domain, group, id| Event::Attach(f, attach_event(f, 40, domain, group, id));
        let mut agg = Aggregator::new();
        agg.observe(&ev(AttachFn::AttachGroupHandle, 0xd1, 0x91, 5));
        agg.observe(&ev(AttachFn::AttachGroup, 0xd2, 0x92, 6));
        agg.fill_group_devices(|id| Some(vec![format!("0000:00:0{id}.0")]));
        let ids = |agg: &Aggregator, d| -> Vec<i32> {
            agg.domain_groups(d).iter().map(|g| g.id).collect()
        };
        assert_eq!(ids(&agg, 0xd1), [5]);
        assert_eq!(
            agg.groups()[&0x91].devices.as_deref(),
            Some(&["0000:00:05.0".to_owned()][..])
        );
        // A failed attach changes nothing but the failure count.
        let mut failed = attach_event(AttachFn::AttachGroup, 40, 0xd3, 0x92, 6);
        failed.ret = -16;
        agg.observe(&Event::Attach(AttachFn::AttachGroup, failed));
        assert_eq!(ids(&agg, 0xd2), [6]);
        assert_eq!(agg.kinds["iommu_attach_group"].failed, 1);
        // Replace moves group 5 to 0xd2; a detach of the domain it left does nothing.
        agg.observe(&ev(AttachFn::ReplaceGroupHandle, 0xd2, 0x91, 5));
        agg.observe(&ev(AttachFn::DetachGroupHandle, 0xd1, 0x91, 5));
        assert_eq!(ids(&agg, 0xd2), [5, 6]);
        assert!(ids(&agg, 0xd1).is_empty());
        agg.observe(&ev(AttachFn::DetachGroup, 0xd2, 0x92, 6));
        agg.observe(&ev(AttachFn::DetachGroupHandle, 0xd2, 0x91, 5));
        assert!(agg.groups().is_empty());
        assert_eq!(agg.kinds["iommu_detach_group_handle"].calls, 2);
    }

    fn unmap(f: UnmapFn, tgid: u32, domain: u64, iova: u64, size: u64, unmapped: u64) -> Event {
        Event::Unmap(f, unmap_event(f, tgid, domain, iova, size, unmapped))
    }

    const D1: u64 = 0xffff_8880_0000_1000;
    const D2: u64 = 0xffff_8880_0000_2000;

    #[test]
    fn maps_unmaps_and_net_bytes_per_process_and_domain() {
        let mut a = Aggregator::new();
        a.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 100, 100, D1, 0x1000, 8192, 0),
        ));
        a.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 100, 101, D1, 0x9000, 4096, 0),
        ));
        a.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 100, 100, D1, 0xa000, 4096, -12),
        ));
        a.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 200, 200, D2, 0x0, 1 << 21, 0),
        ));
        a.observe(&unmap(UnmapFn::IommuUnmap, 100, D1, 0x1000, 8192, 8192));

        let rows = a.domain_rows();
        assert_eq!(rows.len(), 2);
        // Sorted by net bytes: pid 200 (2 MiB) first.
        assert_eq!(
            rows[0].0,
            DomainKey {
                pid: 200,
                domain: D2
            }
        );
        assert_eq!(rows[0].1.net_bytes(), 1 << 21);
        let (k, s) = &rows[1];
        assert_eq!(
            *k,
            DomainKey {
                pid: 100,
                domain: D1
            }
        );
        assert_eq!(s.comm, "qemu-system-x86");
        assert_eq!((s.maps, s.failed_maps, s.unmaps), (2, 1, 1));
        assert_eq!(s.mapped_bytes, 8192 + 4096);
        assert_eq!(s.net_bytes(), 4096);
        assert_eq!(a.events(), 5);

        let kinds = a.kind_rows();
        assert_eq!(kinds.len(), FUNCTIONS.len());
        assert_eq!(
            kinds[0],
            (
                "iommu_map",
                KindStats {
                    calls: 4,
                    failed: 1,
                    bytes: 8192 + 4096 + (1 << 21)
                }
            )
        );
        assert_eq!(kinds[1], ("iommu_map_nosync", KindStats::default()));
        assert_eq!(
            kinds[2],
            (
                "iommu_unmap",
                KindStats {
                    calls: 1,
                    failed: 0,
                    bytes: 8192
                }
            )
        );
        assert_eq!(kinds[3], ("iommu_unmap_fast", KindStats::default()));
    }

    #[test]
    fn net_bytes_can_go_negative() {
        let mut a = Aggregator::new();
        a.observe(&unmap(UnmapFn::IommuUnmap, 7, D1, 0, 4096, 4096));
        assert_eq!(a.domain_rows()[0].1.net_bytes(), -4096);
    }

    #[test]
    fn short_unmap_counts_as_failed_kind() {
        let mut a = Aggregator::new();
        a.observe(&unmap(UnmapFn::IommuUnmap, 7, D1, 0, 8192, 4096));
        assert_eq!(
            a.kind_rows()[2].1,
            KindStats {
                calls: 1,
                failed: 1,
                bytes: 4096
            }
        );
    }

    /// VFIO type1: maps with iommu_map, unmaps with iommu_unmap_fast, and
    /// falls back to iommu_unmap when the fast call unmapped nothing. Once
    /// everything is unmapped the net bytes of the domain are zero.
    #[test]
    fn type1_workload_unmapping_everything_nets_to_zero() {
        const SIZES: [u64; 4] = [4096, 1 << 21, 1 << 30, 8192];
        let mut a = Aggregator::new();
        let mut iova = 0u64;
        for size in SIZES {
            a.observe(&Event::Map(
                MapFn::IommuMap,
                map_event(MapFn::IommuMap, 300, 301, D1, iova, size, 0),
            ));
            iova += size;
        }
        iova = 0;
        for (i, size) in SIZES.into_iter().enumerate() {
            if i < SIZES.len() - 1 {
                a.observe(&unmap(UnmapFn::IommuUnmapFast, 300, D1, iova, size, size));
            } else {
                // The fast call unmapped nothing; the slow path did it.
                a.observe(&unmap(UnmapFn::IommuUnmapFast, 300, D1, iova, size, 0));
                a.observe(&unmap(UnmapFn::IommuUnmap, 300, D1, iova, size, size));
            }
            iova += size;
        }

        let rows = a.domain_rows();
        assert_eq!(rows.len(), 1);
        let (k, d) = &rows[0];
        assert_eq!(
            *k,
            DomainKey {
                pid: 300,
                domain: D1
            }
        );
        assert_eq!((d.maps, d.unmaps, d.failed_maps), (4, 5, 0));
        let total: u64 = SIZES.iter().sum();
        assert_eq!(d.mapped_bytes, total);
        assert_eq!(d.unmapped_bytes, total);
        assert_eq!(d.net_bytes(), 0);

        let kinds = a.kind_rows();
        assert_eq!(
            kinds[2],
            (
                "iommu_unmap",
                KindStats {
                    calls: 1,
                    failed: 0,
                    bytes: 8192
                }
            )
        );
        assert_eq!(
            kinds[3],
            (
                "iommu_unmap_fast",
                KindStats {
                    calls: 4,
                    failed: 1,
                    bytes: 4096 + (1 << 21) + (1 << 30)
                }
            )
        );
        assert_eq!(a.events(), 9);
    }

    #[test]
    fn iommu_map_wrapping_nosync_is_counted_once() {
        let mut a = Aggregator::new();
        let inner = map_event(MapFn::IommuMapNosync, 100, 105, D1, 0x1000, 4096, 0);
        let outer = map_event(MapFn::IommuMap, 100, 105, D1, 0x1000, 4096, 0);
        assert!(
            !a.observe(&Event::Map(MapFn::IommuMapNosync, inner))
                .wraps_nosync
        );
        assert!(a.observe(&Event::Map(MapFn::IommuMap, outer)).wraps_nosync);
        let rows = a.domain_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].1.maps, rows[0].1.mapped_bytes), (1, 4096));
        // ...but both calls show in the per-function aggregates.
        assert_eq!(a.kind_rows()[0].1.calls, 1);
        assert_eq!(a.kind_rows()[1].1.calls, 1);

        // A second iommu_map on that thread with no new nosync is its own mapping.
        let again = map_event(MapFn::IommuMap, 100, 105, D1, 0x1000, 4096, 0);
        assert!(!a.observe(&Event::Map(MapFn::IommuMap, again)).wraps_nosync);
        assert_eq!(a.domain_rows()[0].1.maps, 2);
    }

    #[test]
    fn wrappers_counted_in_the_kernel_join_the_iommu_map_row_only() {
        let mut a = Aggregator::new();
        // The kernel reported the inner call only, and counted the wrapper.
        let inner = map_event(MapFn::IommuMapNosync, 100, 105, D1, 0x1000, 8192, 0);
        a.observe(&Event::Map(MapFn::IommuMapNosync, inner));
        a.set_elided_maps(1, 8192);
        let kinds = a.kind_rows();
        assert_eq!(
            (kinds[0].0, kinds[0].1.calls, kinds[0].1.bytes),
            ("iommu_map", 1, 8192)
        );
        assert_eq!(
            (kinds[1].0, kinds[1].1.calls, kinds[1].1.bytes),
            ("iommu_map_nosync", 1, 8192)
        );
        // The mapping counts once, from the inner record.
        assert_eq!(a.domain_rows()[0].1.maps, 1);
        assert_eq!(a.events(), 1);
        // A later read replaces the counts (they are cumulative in the kernel).
        a.set_elided_maps(3, 3 * 8192);
        assert_eq!(a.kind_rows()[0].1.calls, 3);
    }

    #[test]
    fn nosync_on_another_thread_or_other_args_is_not_merged() {
        let mut a = Aggregator::new();
        a.observe(&Event::Map(
            MapFn::IommuMapNosync,
            map_event(MapFn::IommuMapNosync, 1, 1, D1, 0x1000, 4096, 0),
        ));
        let other_thread = map_event(MapFn::IommuMap, 1, 2, D1, 0x1000, 4096, 0);
        assert!(
            !a.observe(&Event::Map(MapFn::IommuMap, other_thread))
                .wraps_nosync
        );
        let other_iova = map_event(MapFn::IommuMap, 1, 1, D1, 0x2000, 4096, 0);
        assert!(
            !a.observe(&Event::Map(MapFn::IommuMap, other_iova))
                .wraps_nosync
        );
        assert_eq!(a.domain_rows()[0].1.maps, 3);
    }

    fn kvm(op: KvmOp, tgid: u32, vm: u64, ts_ns: u64, name: &str) -> Event {
        let k = match op {
            KvmOp::Register => ioasid_ebpf_common::kind::KVM_REGISTER_NONCOHERENT_DMA,
            KvmOp::Unregister => ioasid_ebpf_common::kind::KVM_UNREGISTER_NONCOHERENT_DMA,
        };
        let mut header = hdr(
            k,
            std::mem::size_of::<ioasid_ebpf_common::KvmEvent>(),
            tgid,
            tgid,
            name,
        );
        header.ts_ns = ts_ns;
        Event::Kvm(op, ioasid_ebpf_common::KvmEvent { header, kvm: vm })
    }

    const VM1: u64 = 0xffff_c900_0010_0000;
    const VM2: u64 = 0xffff_c900_0020_0000;

    #[test]
    fn kvm_state_flips_per_vm() {
        let mut a = Aggregator::new();
        assert!(a.kvm_rows().is_empty());
        a.observe(&kvm(KvmOp::Register, 40, VM1, 10, "qemu-a"));
        a.observe(&kvm(KvmOp::Register, 41, VM2, 11, "qemu-b"));
        let rows = a.kvm_rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, VM1);
        assert_eq!(
            *rows[0].1,
            KvmStats {
                pid: 40,
                comm: "qemu-a".into(),
                registers: 1,
                unregisters: 0,
                noncoherent: true,
                last_ts_ns: 10,
            }
        );
        assert_eq!(rows[0].1.last_op(), KvmOp::Register);

        a.observe(&kvm(KvmOp::Unregister, 40, VM1, 20, "qemu-a"));
        let rows = a.kvm_rows();
        let vm1 = rows[0].1;
        assert_eq!(
            (vm1.registers, vm1.unregisters, vm1.noncoherent),
            (1, 1, false)
        );
        assert_eq!((vm1.last_op(), vm1.last_ts_ns), (KvmOp::Unregister, 20));
        // The other VM is untouched.
        assert_eq!((rows[1].1.registers, rows[1].1.noncoherent), (1, true));
        assert_eq!(a.kvm_calls(KvmOp::Register), 2);
        assert_eq!(a.kvm_calls(KvmOp::Unregister), 1);
        // kvm calls are not IOMMU domains.
        assert!(a.domain_rows().is_empty());
    }

    /// The VM is destroyed by the last holder of its fd, which may be another process: the
    /// state follows the VM, the row names the process of the last call.
    #[test]
    fn kvm_unregister_from_another_process_turns_the_vm_off() {
        let mut a = Aggregator::new();
        a.observe(&kvm(KvmOp::Register, 40, VM1, 1, "qemu"));
        a.observe(&kvm(KvmOp::Unregister, 77, VM1, 2, "helper"));
        let rows = a.kvm_rows();
        assert_eq!(rows.len(), 1);
        let vm = rows[0].1;
        assert!(!vm.noncoherent);
        assert_eq!((vm.pid, vm.comm.as_str()), (77, "helper"));
    }

    /// Attached while the device was in: only the unregister is seen. The VM is off now.
    #[test]
    fn kvm_unregister_without_register_seen() {
        let mut a = Aggregator::new();
        a.observe(&kvm(KvmOp::Unregister, 5, VM2, 3, "qemu"));
        let vm = a.kvm_rows()[0].1.clone();
        assert_eq!(
            (vm.registers, vm.unregisters, vm.noncoherent),
            (0, 1, false)
        );
        // A freed and reused struct kvm: a new VM registers first; the state is right again.
        a.observe(&kvm(KvmOp::Register, 6, VM2, 4, "qemu2"));
        let vm = a.kvm_rows()[0].1.clone();
        assert_eq!((vm.registers, vm.unregisters, vm.noncoherent), (1, 1, true));
        assert_eq!(vm.pid, 6);
    }

    fn map_at(f: MapFn, tgid: u32, tid: u32, domain: u64, iova: u64, size: u64) -> Event {
        Event::Map(f, map_event(f, tgid, tid, domain, iova, size, 0))
    }

    /// Rows of four processes: (pid, comm, maps, unmaps, failed, net bytes) differ so that
    /// every key gives its own order.
    fn sortable() -> Aggregator {
        let mut a = Aggregator::new();
        let named = |mut ev: Event, name: &str| {
            if let Event::Map(_, m) = &mut ev {
                m.header.comm = crate::event::tests::comm(name);
            }
            ev
        };
        // pid 30 "b": 1 map of 1 MiB, in D2.
        a.observe(&named(map_at(MapFn::IommuMap, 30, 30, D2, 0, 1 << 20), "b"));
        // pid 10 "c": 3 maps of 4 KiB, 1 failed.
        for i in 0..3 {
            a.observe(&named(
                map_at(MapFn::IommuMap, 10, 10, D1, i << 12, 4096),
                "c",
            ));
        }
        let mut failed = map_event(MapFn::IommuMap, 10, 10, D1, 0x9000, 4096, -22);
        failed.header.comm = crate::event::tests::comm("c");
        a.observe(&Event::Map(MapFn::IommuMap, failed));
        // pid 20 "a": 2 maps of 64 KiB, 2 unmaps.
        for i in 0..2 {
            a.observe(&named(
                map_at(MapFn::IommuMap, 20, 20, D1, 0x10_0000 + (i << 16), 1 << 16),
                "a",
            ));
        }
        for iova in [0x10_0000, 0x10_1000] {
            let mut u = unmap_event(UnmapFn::IommuUnmap, 20, D1, iova, 4096, 4096);
            u.header.comm = crate::event::tests::comm("a");
            a.observe(&Event::Unmap(UnmapFn::IommuUnmap, u));
        }
        a
    }

    fn pids(rows: &[(DomainKey, &DomainStats)]) -> Vec<u32> {
        rows.iter().map(|(k, _)| k.pid).collect()
    }

    #[test]
    fn domain_rows_sort_by_each_key() {
        let a = sortable();
        // Default: net bytes (1 MiB, 128 KiB - 8 KiB, 12 KiB).
        assert_eq!(pids(&a.domain_rows()), [30, 20, 10]);
        for (key, want) in [
            (SortKey::Mapped, [30, 20, 10]),
            (SortKey::Pid, [10, 20, 30]),
            (SortKey::Comm, [20, 30, 10]),
            (SortKey::Maps, [10, 20, 30]),
            (SortKey::Unmaps, [20, 30, 10]),
            (SortKey::Failed, [10, 30, 20]),
            // D1 < D2; among D1 by net bytes.
            (SortKey::Domain, [20, 10, 30]),
            // Keys of other tables keep the default order.
            (SortKey::Pinned, [30, 20, 10]),
        ] {
            assert_eq!(pids(&a.domain_rows_by(Some(key))), want, "{key:?}");
        }
    }

    #[test]
    fn kvm_rows_sort_by_pid_and_comm_else_by_address() {
        let mut a = Aggregator::new();
        a.observe(&kvm(KvmOp::Register, 40, VM1, 1, "zeta"));
        a.observe(&kvm(KvmOp::Register, 41, VM2, 2, "alpha"));
        a.observe(&kvm(KvmOp::Register, 39, 0xffff_c900_0030_0000, 3, "mid"));
        let vms = |rows: Vec<(u64, &KvmStats)>| rows.iter().map(|(_, v)| v.pid).collect::<Vec<_>>();
        assert_eq!(vms(a.kvm_rows_by(None)), [40, 41, 39]);
        assert_eq!(vms(a.kvm_rows_by(Some(SortKey::Pid))), [39, 40, 41]);
        assert_eq!(vms(a.kvm_rows_by(Some(SortKey::Comm))), [41, 39, 40]);
        assert_eq!(vms(a.kvm_rows_by(Some(SortKey::Maps))), [40, 41, 39]);
    }

    #[test]
    fn comm_and_pid_filter() {
        let f = Filter {
            pid: None,
            comm: Some("edu-work".into()),
        };
        assert!(f.matches(1, "vfio-edu-worklo"));
        assert!(!f.matches(1, "qemu-system-x86"));
        // Case-sensitive substring.
        assert!(!f.matches(1, "vfio-EDU-worklo"));
        let both = Filter {
            pid: Some(7),
            ..f.clone()
        };
        assert!(both.matches(7, "vfio-edu-worklo"));
        assert!(!both.matches(8, "vfio-edu-worklo"));
        assert!(Filter::default().matches(3, ""));

        let a = Aggregator::with(f, None);
        assert!(!a.accepts(&map_at(MapFn::IommuMap, 1, 1, D1, 0, 4096)));
        let mut m = map_event(MapFn::IommuMap, 1, 1, D1, 0, 4096, 0);
        m.header.comm = crate::event::tests::comm("vfio-edu-worklo");
        assert!(a.accepts(&Event::Map(MapFn::IommuMap, m)));
        let pid_only = Aggregator::with(
            Filter {
                pid: Some(5),
                comm: None,
            },
            None,
        );
        assert!(pid_only.accepts(&map_at(MapFn::IommuMap, 5, 9, D1, 0, 4096)));
        assert!(!pid_only.accepts(&map_at(MapFn::IommuMap, 6, 6, D1, 0, 4096)));
    }

    /// The range view takes the aggregator's decision on nesting: the iommu_map wrapping an
    /// iommu_map_nosync adds its range once; failed maps add nothing; unmaps remove what
    /// they unmapped.
    #[test]
    fn ranges_follow_the_counted_mappings() {
        use crate::ranges::{DEFAULT_CAP, RangeTracker};
        let mut a = Aggregator::with(
            Filter::default(),
            Some(RangeTracker::new(None, DEFAULT_CAP)),
        );
        assert!(Aggregator::new().ranges().is_none());
        for i in 0..4u64 {
            let iova = 0x10_0000 + (i << 16);
            a.observe(&map_at(MapFn::IommuMapNosync, 50, 51, D1, iova, 1 << 16));
            assert!(
                a.observe(&map_at(MapFn::IommuMap, 50, 51, D1, iova, 1 << 16))
                    .wraps_nosync
            );
        }
        a.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 50, 51, D1, 0x80_0000, 4096, -17),
        ));
        let t = a.ranges().expect("tracked");
        let (dom, d) = t.domains().next().expect("one domain");
        assert_eq!(dom, D1);
        assert_eq!((d.maps, d.len(), d.bytes()), (4, 1, 4 << 16));
        let r: Vec<_> = d.ranges().collect();
        assert_eq!(
            (r[0].start, r[0].end, r[0].pid, r[0].prot),
            (0x10_0000, 0x14_0000, 50, 0b111)
        );
        assert_eq!(r[0].comm, "qemu-system-x86");
        a.observe(&unmap(
            UnmapFn::IommuUnmap,
            50,
            D1,
            0x11_0000,
            1 << 17,
            1 << 17,
        ));
        let d = a.ranges().expect("tracked").domains().next().expect("d").1;
        let r: Vec<_> = d.ranges().map(|r| (r.start, r.end)).collect();
        assert_eq!(r, [(0x10_0000, 0x11_0000), (0x13_0000, 0x14_0000)]);
        assert_eq!((d.unmaps, d.bytes()), (1, 2 << 16));
    }

    #[test]
    fn undecodable_is_counted() {
        let mut a = Aggregator::new();
        a.undecodable();
        assert_eq!(a.undecodable_records(), 1);
        assert_eq!(a.events(), 0);
    }
}
