//! `ioasid-bench`: how long MAP+UNMAP and COPY take on `/dev/ioasid` (with a domain, and
//! without a device) against mainline iommufd (with a domain, and bare) and VFIO type1, measured
//! in one process in one boot so that the ratios compare like with like (same kernel, same
//! guest, same buffer).
//!
//! The backends:
//!
//! * `ioasid+domain` — `/dev/ioasid` with the edu device's VFIO cdev bound and a HWPT allocated
//!   on each IOAS (`IOMMU_HWPT_ALLOC`), so MAP pins and `iommu_map`s: the fair comparison with
//!   `iommufd+domain` and `type1`.
//! * `ioasid` — `/dev/ioasid`, an IOAS without a device: MAP pins and records the pages, no
//!   `iommu_map`. Unlike mainline's bare IOAS it pins at MAP even without a domain (a deliberate
//!   difference), so its MAP is pinning plus bookkeeping.
//! * `iommufd+domain` — `/dev/iommu` with the edu device's VFIO cdev bound and a HWPT allocated
//!   on each IOAS, so mainline pins and `iommu_map`s at MAP time.
//! * `iommufd` — `/dev/iommu`, an IOAS without a domain: mainline only records the range and
//!   pins nothing. Shown for reference, not as a target.
//! * `type1` — a VFIO type1v2 container with the edu device's group: `VFIO_IOMMU_MAP_DMA` pins
//!   and `iommu_map`s. It has no COPY.
//!
//! Every operation's result is verified so that a broken backend cannot produce a fast number:
//! MAP must land at the fixed IOVA asked for, UNMAP must return exactly the bytes mapped, the
//! pinning counters of `/proc/self/status` must move by exactly what the backend is supposed to
//! pin (`VmPin` for iommufd and `/dev/ioasid`, `VmLck` for type1, nothing for a bare iommufd
//! IOAS) and come back after UNMAP, and COPY must share the source's pages (no counter moves).
//!
//! Times are `Instant` (`clock_gettime(CLOCK_MONOTONIC)`) around the whole loop of one phase.
//! Backends run in groups, one after the other (see [`groups`]): within a group they are open
//! together and their repetitions interleaved, the starting backend rotating, so drift of the
//! (TCG) guest does not favour one of them. A VFIO cdev is bound to one iommufd file at a time
//! and cannot be opened twice, so `ioasid+domain` cannot be open with `iommufd+domain`: group 1
//! is `ioasid`, `iommufd+domain` and `iommufd`, group 2 `ioasid+domain` alone, after group 1
//! closed the cdev, and then `type1` (a VFIO group cannot be used while the device's cdev is
//! open). Ratios across groups are therefore not protected from drift; the report says so.

use crate::accounting::vm_pin_and_lck_kib;
use crate::difftest::domain::edu_cdev;
use crate::dmabuf::DmaBuffer;
use crate::errno::describe_error;
use crate::vfio::{VfioContainer, VfioDevice, VfioGroup};
use crate::workload::{find_edu, open_type1};
use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use ioasid_uapi::iommufd::{IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE};
use ioasid_uapi::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
use ioasid_uapi::{DEV_IOASID, DEV_IOMMU, Iommufd};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// First IOVA of every workload: above the x86 MSI window (0xfee00000) that a VT-d domain
/// reserves, and 1 GiB-aligned so the 1 GiB mapping can use the largest IOMMU page.
pub const BASE_IOVA: u64 = 4 * GIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
pub enum BackendKind {
    /// /dev/ioasid, IOAS without a device (pins at MAP, no iommu_map)
    #[value(name = "ioasid")]
    #[serde(rename = "ioasid")]
    Ioasid,
    /// /dev/ioasid with the edu device bound and a HWPT on each IOAS
    #[value(name = "ioasid+domain")]
    #[serde(rename = "ioasid+domain")]
    IoasidDomain,
    /// /dev/iommu with the edu device bound and a HWPT on each IOAS
    #[value(name = "iommufd+domain")]
    #[serde(rename = "iommufd+domain")]
    IommufdDomain,
    /// /dev/iommu, IOAS without a domain (pins nothing)
    #[value(name = "iommufd")]
    #[serde(rename = "iommufd")]
    Iommufd,
    /// VFIO type1v2 container with the edu device's group
    #[value(name = "type1")]
    #[serde(rename = "type1")]
    Type1,
}

/// Every backend, in report order (also the default set, with and without `--quick`).
pub const ALL_BACKENDS: [BackendKind; 5] = [
    BackendKind::IoasidDomain,
    BackendKind::Ioasid,
    BackendKind::IommufdDomain,
    BackendKind::Iommufd,
    BackendKind::Type1,
];

/// The (ours, reference) pairs whose ratios are computed, in the order they are printed.
pub const PAIRS: [(BackendKind, BackendKind); 5] = [
    (BackendKind::IoasidDomain, BackendKind::IommufdDomain),
    (BackendKind::IoasidDomain, BackendKind::Type1),
    (BackendKind::Ioasid, BackendKind::IommufdDomain),
    (BackendKind::Ioasid, BackendKind::Type1),
    (BackendKind::Ioasid, BackendKind::Iommufd),
];

/// Which `/proc/self/status` counter a backend's pins show in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// `VmPin` (`mm->pinned_vm`): iommufd and /dev/ioasid.
    VmPin,
    /// `VmLck` (`mm->locked_vm`): type1 charges its pins there.
    VmLck,
    /// Nothing is pinned (iommufd without a domain).
    Nothing,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Ioasid => "ioasid",
            BackendKind::IoasidDomain => "ioasid+domain",
            BackendKind::IommufdDomain => "iommufd+domain",
            BackendKind::Iommufd => "iommufd",
            BackendKind::Type1 => "type1",
        }
    }

    /// What a MAP does on this backend (printed with the results).
    pub fn what(self) -> &'static str {
        match self {
            BackendKind::Ioasid => {
                "/dev/ioasid, IOAS without a device: MAP pins and records the pages, no iommu_map"
            }
            BackendKind::IoasidDomain => {
                "/dev/ioasid, edu cdev bound, a HWPT on each IOAS: MAP pins and iommu_maps"
            }
            BackendKind::IommufdDomain => {
                "/dev/iommu, edu cdev bound, a HWPT on each IOAS: MAP pins and iommu_maps"
            }
            BackendKind::Iommufd => {
                "/dev/iommu, IOAS without a domain: MAP records the range, pins nothing"
            }
            BackendKind::Type1 => {
                "VFIO type1v2 container with the edu group: MAP_DMA pins and iommu_maps"
            }
        }
    }

    pub fn pinning(self) -> Pinning {
        match self {
            // /dev/ioasid charges each page once per file, with or without a domain.
            BackendKind::Ioasid | BackendKind::IoasidDomain | BackendKind::IommufdDomain => {
                Pinning::VmPin
            }
            BackendKind::Iommufd => Pinning::Nothing,
            BackendKind::Type1 => Pinning::VmLck,
        }
    }

    /// type1 has no equivalent of `IOMMU_IOAS_COPY`.
    pub fn has_copy(self) -> bool {
        self != BackendKind::Type1
    }

    /// Needs the edu device bound to vfio-pci.
    pub fn needs_device(self) -> bool {
        matches!(
            self,
            BackendKind::IoasidDomain | BackendKind::IommufdDomain | BackendKind::Type1
        )
    }

    /// The group it runs in (see [`groups`]): backends of one group are open together, so a
    /// group holds at most one user of the edu device (its cdev, or its VFIO group).
    fn group(self) -> usize {
        match self {
            BackendKind::Ioasid | BackendKind::IommufdDomain | BackendKind::Iommufd => 0,
            BackendKind::IoasidDomain => 1,
            BackendKind::Type1 => 2,
        }
    }
}

/// `kinds` split into the groups that run one after the other, in order, each non-empty and in
/// `kinds`' order: `ioasid`, `iommufd+domain` and `iommufd`; then `ioasid+domain` alone (the
/// cdev binds to one iommufd file at a time and cannot be opened twice); then `type1` (its VFIO
/// group cannot be used while the cdev is open).
pub fn groups(kinds: &[BackendKind]) -> Vec<Vec<BackendKind>> {
    (0..3)
        .map(|g| kinds.iter().copied().filter(|k| k.group() == g).collect())
        .filter(|g: &Vec<BackendKind>| !g.is_empty())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Map `count` ranges of `size` bytes, then unmap them one by one.
    MapUnmap,
    /// With `count` ranges mapped in a first IOAS (not timed), COPY each into a second IOAS,
    /// then unmap the copies.
    Copy,
}

impl Op {
    /// Name of the timed phase before the UNMAP phase.
    pub fn first_phase(self) -> &'static str {
        match self {
            Op::MapUnmap => "map",
            Op::Copy => "copy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub name: String,
    pub op: Op,
    pub count: u64,
    pub size: u64,
}

impl Workload {
    fn new(op: Op, size: u64, count: u64) -> Self {
        let verb = match op {
            Op::MapUnmap => "map",
            Op::Copy => "copy",
        };
        Self {
            name: format!("{verb} {} x {count}", human_size(size)),
            op,
            count,
            size,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.count * self.size
    }
}

/// The issue's workloads (4 KiB × 65536, 2 MiB × 512, 1 GiB × 1, COPY 2 MiB × 512), or small
/// ones for CI.
pub fn workloads(quick: bool) -> Vec<Workload> {
    let list: [(Op, u64, u64); 4] = if quick {
        [
            (Op::MapUnmap, 4 * KIB, 1024),
            (Op::MapUnmap, 2 * MIB, 16),
            (Op::MapUnmap, 32 * MIB, 1),
            (Op::Copy, 2 * MIB, 16),
        ]
    } else {
        [
            (Op::MapUnmap, 4 * KIB, 65536),
            (Op::MapUnmap, 2 * MIB, 512),
            (Op::MapUnmap, GIB, 1),
            (Op::Copy, 2 * MIB, 512),
        ]
    };
    list.into_iter()
        .map(|(op, size, count)| Workload::new(op, size, count))
        .collect()
}

/// The buffer every workload maps from: as large as the largest workload.
pub fn buffer_len(workloads: &[Workload]) -> u64 {
    workloads.iter().map(Workload::bytes).max().unwrap_or(0)
}

/// `4K`, `2M`, `1G`; bytes when not a whole number of KiB.
pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= GIB && b.is_multiple_of(GIB) => format!("{}G", b / GIB),
        b if b >= MIB && b.is_multiple_of(MIB) => format!("{}M", b / MIB),
        b if b >= KIB && b.is_multiple_of(KIB) => format!("{}K", b / KIB),
        b => format!("{b}"),
    }
}

/// MAP+UNMAP and COPY benchmark: /dev/ioasid against iommufd (with and without a domain) and
/// VFIO type1, in one run.
#[derive(Debug, Parser)]
#[command(name = "ioasid-bench", version)]
pub struct Args {
    /// small sizes for CI (4 KiB x 1024, 2 MiB x 16, 32 MiB x 1, COPY 2 MiB x 16)
    #[arg(long)]
    pub quick: bool,
    /// repetitions of every measurement (default: 5; with --quick, 2)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub reps: Option<u32>,
    /// backends to measure, comma-separated (default: all)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BackendKind>,
    /// PCI address of the edu device (default: the first 1234:11e8 found)
    #[arg(long)]
    pub bdf: Option<String>,
    /// where to write the JSON report (default: $IOASID_VM_OUT/bench.json when that is set)
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
    /// instead: the cost of tracing iommu_map — a 4 KiB MAP+UNMAP loop on iommufd+domain, bare,
    /// under ioasid-top (--no-pins, and with its pinning probes), under an equivalent bpftrace
    /// program and under empty fexit programs (JSON: overhead.json)
    #[arg(long)]
    pub overhead: bool,
    /// --overhead: rounds, each running every mode once (default: 5; with --quick, 1)
    #[arg(long, requires = "overhead", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: Option<u32>,
    /// --overhead: 4 KiB mappings per loop (default: 16384; with --quick, 1024)
    #[arg(long, requires = "overhead", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub maps: Option<u64>,
    /// --overhead: keep the tracers' output in DIR (default: a temporary directory, removed)
    #[arg(long, requires = "overhead", value_name = "DIR")]
    pub trace_dir: Option<PathBuf>,
}

impl Args {
    pub fn reps(&self) -> u32 {
        self.reps.unwrap_or(if self.quick { 2 } else { 5 })
    }

    /// --overhead: (mappings per loop, rounds, loops per mode and round); --reps is the last
    /// (default: 3; with --quick, 1).
    pub fn overhead_sizes(&self) -> (u64, usize, u32) {
        let maps = self.maps.unwrap_or(if self.quick { 1024 } else { 16384 });
        let rounds = self.rounds.unwrap_or(if self.quick { 1 } else { 5 });
        let loops = self.reps.unwrap_or(if self.quick { 1 } else { 3 });
        (maps, rounds as usize, loops)
    }

    /// The chosen backends in report order, each once.
    pub fn backends(&self) -> Vec<BackendKind> {
        ALL_BACKENDS
            .into_iter()
            .filter(|b| self.backends.is_empty() || self.backends.contains(b))
            .collect()
    }

    /// `--json`, else `$IOASID_VM_OUT/bench.json` (`vm_out` is that variable's value).
    pub fn json_path(&self, vm_out: Option<&Path>) -> Option<PathBuf> {
        self.json
            .clone()
            .or_else(|| vm_out.map(|d| d.join("bench.json")))
    }
}

/// Median (the lower middle one for an even count) and minimum of one phase's samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseStats {
    pub phase: &'static str,
    pub samples_ns: Vec<u64>,
    pub median_ns: u64,
    pub min_ns: u64,
}

impl PhaseStats {
    pub fn new(phase: &'static str, samples_ns: Vec<u64>) -> Self {
        let mut sorted = samples_ns.clone();
        sorted.sort_unstable();
        let median_ns = sorted
            .get(sorted.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0);
        Self {
            phase,
            min_ns: sorted.first().copied().unwrap_or(0),
            median_ns,
            samples_ns,
        }
    }
}

/// One workload on one backend: the first phase (map or copy), unmap, and their sum per
/// repetition ("total").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    pub workload: String,
    pub backend: BackendKind,
    pub phases: Vec<PhaseStats>,
}

impl Measurement {
    pub fn new(workload: &Workload, backend: BackendKind, samples: &[(u64, u64)]) -> Self {
        let first = samples.iter().map(|s| s.0).collect();
        let unmap = samples.iter().map(|s| s.1).collect();
        let total = samples.iter().map(|s| s.0 + s.1).collect();
        Self {
            workload: workload.name.clone(),
            backend,
            phases: vec![
                PhaseStats::new(workload.op.first_phase(), first),
                PhaseStats::new("unmap", unmap),
                PhaseStats::new("total", total),
            ],
        }
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.phase == name)
    }
}

/// `reference`'s median time over `ours`' for one phase of one workload: above 1, `ours` (a
/// /dev/ioasid backend) is faster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub workload: String,
    pub ours: BackendKind,
    pub reference: BackendKind,
    pub phase: &'static str,
    pub ratio: f64,
}

/// The ratios of every [`PAIRS`] pair measured on the same workload: by workload (in the order
/// of `results`), then pair (in [`PAIRS`] order), then phase.
pub fn ratios(results: &[Measurement]) -> Vec<Ratio> {
    let mut workloads: Vec<&str> = Vec::new();
    for m in results {
        if !workloads.contains(&m.workload.as_str()) {
            workloads.push(&m.workload);
        }
    }
    let find = |workload: &str, backend| {
        results
            .iter()
            .find(|m| m.backend == backend && m.workload == workload)
    };
    let mut out = Vec::new();
    for workload in workloads {
        for (ours, reference) in PAIRS {
            let (Some(mine), Some(theirs)) = (find(workload, ours), find(workload, reference))
            else {
                continue;
            };
            for p in &mine.phases {
                let Some(q) = theirs.phase(p.phase) else {
                    continue;
                };
                if p.median_ns > 0 {
                    out.push(Ratio {
                        workload: workload.to_string(),
                        ours,
                        reference,
                        phase: p.phase,
                        ratio: q.median_ns as f64 / p.median_ns as f64,
                    });
                }
            }
        }
    }
    out
}

/// Whether transparent huge pages back the buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thp {
    /// `/sys/kernel/mm/transparent_hugepage/enabled`, the bracketed choice.
    pub setting: String,
    /// What `madvise(MADV_HUGEPAGE)` answered: `accepted`, else the errno.
    pub madvise_hugepage: String,
    /// `AnonHugePages` of the buffer's VMA in /proc/self/smaps.
    pub anon_huge_kib: u64,
    pub buffer_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendInfo {
    pub backend: BackendKind,
    pub what: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `uname -r` of the guest.
    pub kernel: String,
    pub quick: bool,
    pub reps: u32,
    pub buffer_bytes: u64,
    pub thp: Thp,
    /// What the run changed or found that bears on the numbers.
    pub notes: Vec<String>,
    pub backends: Vec<BackendInfo>,
    pub workloads: Vec<Workload>,
    pub results: Vec<Measurement>,
    pub ratios: Vec<Ratio>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The human-readable report: setup, one table row per workload and backend, the ratios.
pub fn format_report(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ioasid-bench: kernel {}, {} repetitions{}, buffer {} (THP {}, MADV_HUGEPAGE {}: {} of {} KiB in huge pages)",
        r.kernel,
        r.reps,
        if r.quick { ", --quick sizes" } else { "" },
        human_size(r.buffer_bytes),
        r.thp.setting,
        r.thp.madvise_hugepage,
        r.thp.anon_huge_kib,
        r.thp.buffer_kib,
    );
    for b in &r.backends {
        let _ = writeln!(s, "  {:<15} {}", b.backend.name(), b.what);
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "\ntimes in ms, median / min of {} repetitions (clock_gettime MONOTONIC around each phase; \
         total: of the per-repetition sums)",
        r.reps
    );
    let _ = writeln!(
        s,
        "{:<18} {:<15} {:>21} {:>21} {:>21}",
        "workload", "backend", "map or copy", "unmap", "total"
    );
    let cell = |p: Option<&PhaseStats>| match p {
        Some(p) => format!("{:.2} / {:.2}", ms(p.median_ns), ms(p.min_ns)),
        None => "-".into(),
    };
    for m in &r.results {
        let first = m.phases.first();
        let _ = writeln!(
            s,
            "{:<18} {:<15} {:>21} {:>21} {:>21}",
            m.workload,
            m.backend.name(),
            cell(first),
            cell(m.phase("unmap")),
            cell(m.phase("total")),
        );
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(
            s,
            "\nratios of medians, reference / ours (above 1.00x: ours, the /dev/ioasid backend, is faster):"
        );
    }
    // Each "ours" once, in PAIRS order.
    let mut ours_list: Vec<BackendKind> = Vec::new();
    for (ours, _) in PAIRS {
        if !ours_list.contains(&ours) {
            ours_list.push(ours);
        }
    }
    for w in &r.workloads {
        for &ours in &ours_list {
            let mut parts = Vec::new();
            for reference in PAIRS.iter().filter(|p| p.0 == ours).map(|p| p.1) {
                let of = |phase: &str| {
                    r.ratios
                        .iter()
                        .find(|x| {
                            x.workload == w.name
                                && x.ours == ours
                                && x.reference == reference
                                && x.phase == phase
                        })
                        .map(|x| x.ratio)
                };
                let Some(total) = of("total") else {
                    continue;
                };
                let detail: Vec<String> = [w.op.first_phase(), "unmap"]
                    .into_iter()
                    .filter_map(|p| of(p).map(|x| format!("{p} {x:.2}x")))
                    .collect();
                parts.push(format!(
                    "{total:.2}x {} ({})",
                    reference.name(),
                    detail.join(", ")
                ));
            }
            if !parts.is_empty() {
                let _ = writeln!(s, "  {}: {} is {}", w.name, ours.name(), parts.join("; "));
            }
        }
    }
    s
}

/// `VmPin` and `VmLck` of this process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub pin_kib: u64,
    pub lck_kib: u64,
}

fn counters() -> Result<Counters> {
    let (pin_kib, lck_kib) = vm_pin_and_lck_kib().map_err(|e| anyhow!(e))?;
    Ok(Counters { pin_kib, lck_kib })
}

/// Did the counters move from `before` to `after` by exactly `kib` where `pinning` says the
/// backend's pins show, and nowhere else?
pub fn check_pins(
    pinning: Pinning,
    before: Counters,
    after: Counters,
    kib: u64,
) -> Result<(), String> {
    let delta = |a: u64, b: u64| i128::from(b) - i128::from(a);
    let pin = delta(before.pin_kib, after.pin_kib);
    let lck = delta(before.lck_kib, after.lck_kib);
    let (want_pin, want_lck) = match pinning {
        Pinning::VmPin => (i128::from(kib), 0),
        Pinning::VmLck => (0, i128::from(kib)),
        Pinning::Nothing => (0, 0),
    };
    if (pin, lck) == (want_pin, want_lck) {
        Ok(())
    } else {
        Err(format!(
            "VmPin moved by {pin} KiB and VmLck by {lck} KiB, expected {want_pin} and {want_lck}"
        ))
    }
}

/// `AnonHugePages` of the VMA of /proc/self/smaps text that contains `addr`.
pub fn smaps_anon_huge_kib(smaps: &str, addr: u64) -> Option<u64> {
    let mut inside = false;
    for line in smaps.lines() {
        let header = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            });
        if let Some((start, end)) = header {
            inside = start <= addr && addr < end;
        } else if inside && let Some(rest) = line.strip_prefix("AnonHugePages:") {
            return rest.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

fn thp_info(buf: &DmaBuffer, madvise_hugepage: &std::io::Result<()>) -> Result<Thp> {
    let enabled_path = "/sys/kernel/mm/transparent_hugepage/enabled";
    let setting = match std::fs::read_to_string(enabled_path) {
        Ok(text) => text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .unwrap_or("unknown")
            .to_string(),
        Err(_) => "unavailable".to_string(),
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps").context("reading /proc/self/smaps")?;
    let anon_huge_kib = smaps_anon_huge_kib(&smaps, buf.addr())
        .with_context(|| format!("no AnonHugePages for {:#x} in smaps", buf.addr()))?;
    Ok(Thp {
        setting,
        madvise_hugepage: match madvise_hugepage {
            Ok(()) => "accepted".into(),
            Err(e) => describe_error(e),
        },
        anon_huge_kib,
        buffer_kib: buf.len() as u64 / KIB,
    })
}

/// The edu device, bound to vfio-pci.
pub(crate) struct Edu {
    pub(crate) bdf: String,
    pub(crate) cdev: PathBuf,
}

/// A HWPT (an IOMMU domain) of the edu device on each IOAS; `dev` holds the binding.
pub(crate) struct Domain {
    dev: VfioDevice,
    hwpts: [u32; 2],
}

/// An open backend. iommufd ones have two IOASes: the second is COPY's destination.
pub(crate) enum Mapper {
    Iommufd {
        fd: Iommufd,
        ioas: [u32; 2],
        domain: Option<Domain>,
    },
    Type1 {
        container: VfioContainer,
        group: VfioGroup,
    },
}

impl Mapper {
    /// Opens `kind`; `span` bytes from [`BASE_IOVA`] must be mappable.
    pub(crate) fn open(
        kind: BackendKind,
        edu: Option<&Edu>,
        args: &Args,
        span: u64,
    ) -> Result<Self> {
        let edu = || edu.context("the edu device is needed but was not set up");
        match kind {
            BackendKind::Ioasid => Self::open_iommufd(Path::new(DEV_IOASID), None, span),
            BackendKind::IoasidDomain => {
                Self::open_iommufd(Path::new(DEV_IOASID), Some(&edu()?.cdev), span)
            }
            BackendKind::Iommufd => Self::open_iommufd(Path::new(DEV_IOMMU), None, span),
            BackendKind::IommufdDomain => {
                Self::open_iommufd(Path::new(DEV_IOMMU), Some(&edu()?.cdev), span)
            }
            BackendKind::Type1 => {
                let (container, group) = open_type1(&args.sysfs, &args.devfs, &edu()?.bdf)?;
                Ok(Mapper::Type1 { container, group })
            }
        }
    }

    fn open_iommufd(path: &Path, cdev: Option<&Path>, span: u64) -> Result<Self> {
        let fd = Iommufd::open(path).with_context(|| format!("opening {}", path.display()))?;
        let ioas = [
            fd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?,
            fd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?,
        ];
        let domain = match cdev {
            None => None,
            Some(cdev) => {
                let dev = VfioDevice::open_cdev(cdev)?;
                let dev_id = dev.bind_iommufd(fd.as_fd()).with_context(|| {
                    format!(
                        "VFIO_DEVICE_BIND_IOMMUFD {} to {}",
                        cdev.display(),
                        path.display()
                    )
                })?;
                let mut hwpts = [0; 2];
                for (hwpt, id) in hwpts.iter_mut().zip(ioas) {
                    *hwpt = fd
                        .hwpt_alloc(dev_id, id, 0)
                        .with_context(|| format!("IOMMU_HWPT_ALLOC dev {dev_id} on ioas {id}"))?;
                }
                Some(Domain { dev, hwpts })
            }
        };
        let last = BASE_IOVA + span - 1;
        for id in ioas {
            let ranges = fd
                .ioas_iova_ranges(id)
                .with_context(|| format!("IOMMU_IOAS_IOVA_RANGES ioas {id}"))?;
            ensure!(
                ranges
                    .ranges
                    .iter()
                    .any(|r| r.start <= BASE_IOVA && last <= r.last),
                "{}: IOVA {BASE_IOVA:#x}..={last:#x} is outside ioas {id}'s ranges {:x?}",
                path.display(),
                ranges.ranges
            );
        }
        Ok(Mapper::Iommufd { fd, ioas, domain })
    }

    fn map(&self, space: usize, vaddr: u64, iova: u64, len: u64) -> Result<()> {
        match self {
            Mapper::Iommufd { fd, ioas, .. } => {
                let got = fd
                    .ioas_map(
                        ioas[space],
                        vaddr,
                        len,
                        Some(iova),
                        IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                    )
                    .with_context(|| {
                        format!(
                            "IOMMU_IOAS_MAP ioas {} iova {iova:#x} length {len:#x}",
                            ioas[space]
                        )
                    })?;
                ensure!(
                    got == iova,
                    "IOMMU_IOAS_MAP placed {len:#x} bytes at {got:#x}, not at the fixed {iova:#x}"
                );
                Ok(())
            }
            Mapper::Type1 { container, .. } => {
                ensure!(space == 0, "type1 has one address space");
                container
                    .map_dma(
                        vaddr,
                        iova,
                        len,
                        VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                    )
                    .with_context(|| format!("VFIO_IOMMU_MAP_DMA iova {iova:#x} size {len:#x}"))
            }
        }
    }

    /// Unmaps exactly `len` bytes at `iova` (anything else is an error).
    fn unmap(&self, space: usize, iova: u64, len: u64) -> Result<()> {
        let unmapped = match self {
            Mapper::Iommufd { fd, ioas, .. } => {
                fd.ioas_unmap(ioas[space], iova, len).with_context(|| {
                    format!(
                        "IOMMU_IOAS_UNMAP ioas {} iova {iova:#x} length {len:#x}",
                        ioas[space]
                    )
                })?
            }
            Mapper::Type1 { container, .. } => container
                .unmap_dma(iova, len)
                .with_context(|| format!("VFIO_IOMMU_UNMAP_DMA iova {iova:#x} size {len:#x}"))?,
        };
        ensure!(
            unmapped == len,
            "unmap of {len:#x} bytes at {iova:#x} in space {space} returned {unmapped:#x}"
        );
        Ok(())
    }

    /// `IOMMU_IOAS_COPY` of `len` bytes at `iova` from the first IOAS to the same IOVA of the
    /// second.
    fn copy(&self, iova: u64, len: u64) -> Result<()> {
        match self {
            Mapper::Iommufd { fd, ioas, .. } => {
                let got = fd
                    .ioas_copy(
                        ioas[1],
                        ioas[0],
                        iova,
                        len,
                        Some(iova),
                        IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                    )
                    .with_context(|| {
                        format!(
                            "IOMMU_IOAS_COPY ioas {} -> {} iova {iova:#x} length {len:#x}",
                            ioas[0], ioas[1]
                        )
                    })?;
                ensure!(
                    got == iova,
                    "IOMMU_IOAS_COPY placed the copy at {got:#x}, not at the fixed {iova:#x}"
                );
                Ok(())
            }
            Mapper::Type1 { .. } => bail!("type1 has no COPY"),
        }
    }

    /// Destroys what was created, in order (HWPTs before their IOASes), checking each step.
    pub(crate) fn close(self) -> Result<()> {
        match self {
            Mapper::Iommufd { fd, ioas, domain } => {
                if let Some(d) = &domain {
                    for h in d.hwpts {
                        fd.destroy(h)
                            .with_context(|| format!("IOMMU_DESTROY hwpt {h}"))?;
                    }
                }
                for id in ioas {
                    fd.destroy(id)
                        .with_context(|| format!("IOMMU_DESTROY ioas {id}"))?;
                }
                // Closing the device unbinds it; the binding holds the iommufd file.
                drop(domain.map(|d| d.dev));
                drop(fd);
            }
            Mapper::Type1 { container, group } => {
                drop(group);
                drop(container);
            }
        }
        Ok(())
    }
}

fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One repetition of `w` on `m`: (first phase, unmap) in nanoseconds.
pub(crate) fn run_once(
    m: &Mapper,
    kind: BackendKind,
    w: &Workload,
    buf_addr: u64,
) -> Result<(u64, u64)> {
    let ranges = || (0..w.count).map(|i| (buf_addr + i * w.size, BASE_IOVA + i * w.size));
    let pins = |before, after, kib, when: &str| {
        check_pins(kind.pinning(), before, after, kib)
            .map_err(|e| anyhow!("{}: {}: {when}: {e}", kind.name(), w.name))
    };
    let before = counters()?;
    let map_all = |space| -> Result<u64> {
        let start = Instant::now();
        for (vaddr, iova) in ranges() {
            m.map(space, vaddr, iova, w.size)?;
        }
        Ok(elapsed_ns(start))
    };
    let unmap_all = |space| -> Result<u64> {
        let start = Instant::now();
        for (_, iova) in ranges() {
            m.unmap(space, iova, w.size)?;
        }
        Ok(elapsed_ns(start))
    };
    let sample = match w.op {
        Op::MapUnmap => {
            let map_ns = map_all(0)?;
            pins(before, counters()?, w.bytes() / KIB, "after MAP")?;
            let unmap_ns = unmap_all(0)?;
            (map_ns, unmap_ns)
        }
        Op::Copy => {
            // The source mappings are set up and torn down outside the timed phases.
            map_all(0)?;
            let source = counters()?;
            pins(before, source, w.bytes() / KIB, "after the source MAP")?;
            let start = Instant::now();
            for (_, iova) in ranges() {
                m.copy(iova, w.size)?;
            }
            let copy_ns = elapsed_ns(start);
            pins(
                source,
                counters()?,
                0,
                "after COPY (it must share the source's pinned pages)",
            )?;
            let unmap_ns = unmap_all(1)?;
            unmap_all(0)?;
            (copy_ns, unmap_ns)
        }
    };
    pins(before, counters()?, 0, "after UNMAP")?;
    Ok(sample)
}

/// Runs every workload on `kinds` (opened together, repetitions interleaved) into `samples`.
fn run_group(
    kinds: &[BackendKind],
    edu: Option<&Edu>,
    args: &Args,
    workloads: &[Workload],
    buf: &DmaBuffer,
    samples: &mut BTreeMap<(usize, BackendKind), Vec<(u64, u64)>>,
) -> Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    let span = buffer_len(workloads);
    let mut mappers = Vec::new();
    for &kind in kinds {
        let m = Mapper::open(kind, edu, args, span)
            .with_context(|| format!("setting up backend {}", kind.name()))?;
        mappers.push((kind, m));
    }
    let reps = args.reps();
    for (wi, w) in workloads.iter().enumerate() {
        let here: Vec<&(BackendKind, Mapper)> = mappers
            .iter()
            .filter(|(k, _)| w.op == Op::MapUnmap || k.has_copy())
            .collect();
        if here.is_empty() {
            continue;
        }
        let names: Vec<&str> = here.iter().map(|(k, _)| k.name()).collect();
        eprintln!("ioasid-bench: {} on {} x {reps}", w.name, names.join(", "));
        for rep in 0..reps as usize {
            // Rotate which backend goes first so none always runs on a "fresh" guest.
            for j in 0..here.len() {
                let (kind, m) = here[(j + rep) % here.len()];
                let s = run_once(m, *kind, w, buf.addr()).with_context(|| {
                    format!("{} on {}, repetition {}", w.name, kind.name(), rep + 1)
                })?;
                samples.entry((wi, *kind)).or_default().push(s);
            }
        }
    }
    for (kind, m) in mappers {
        m.close()
            .with_context(|| format!("tearing down backend {}", kind.name()))?;
    }
    Ok(())
}

/// type1's limit on the number of mappings of a container (`dma_entry_limit`, 65535 by
/// default), read when a container is opened.
const TYPE1_DMA_ENTRY_LIMIT: &str = "module/vfio_iommu_type1/parameters/dma_entry_limit";

/// Raises type1's `dma_entry_limit` to `needed` when it is lower: the 4 KiB x 65536 workload
/// needs one entry more than the default. Returns the value to restore, if it was raised.
fn raise_type1_entry_limit(sysfs_root: &Path, needed: u64) -> Result<Option<u64>> {
    let path = sysfs_root.join(TYPE1_DMA_ENTRY_LIMIT);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let limit: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}", path.display()))?;
    if limit >= needed {
        return Ok(None);
    }
    std::fs::write(&path, needed.to_string())
        .with_context(|| format!("writing {needed} to {}", path.display()))?;
    Ok(Some(limit))
}

/// When more than one group runs: which ran one after the other rather than interleaved.
pub fn groups_note(groups: &[Vec<BackendKind>]) -> Option<String> {
    if groups.len() < 2 {
        return None;
    }
    let names: Vec<String> = groups
        .iter()
        .map(|g| g.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
        .collect();
    Some(format!(
        "ran in {} groups, one after the other: {}; repetitions are interleaved within a group \
         only (the edu device's cdev binds to one iommufd file at a time, and type1 needs it \
         closed), so ratios across groups are exposed to the guest's drift",
        groups.len(),
        names
            .iter()
            .map(|n| format!("[{n}]"))
            .collect::<Vec<_>>()
            .join(" then ")
    ))
}

/// The whole benchmark.
pub fn run(args: &Args) -> Result<Report> {
    let kinds = args.backends();
    ensure!(!kinds.is_empty(), "no backend chosen");
    let workloads = workloads(args.quick);
    let span = buffer_len(&workloads);
    let (buf, madvise_hugepage) = DmaBuffer::new_huge_aligned(
        usize::try_from(span).context("buffer size does not fit usize")?,
    )
    .with_context(|| format!("mmap + populate of a {} buffer", human_size(span)))?;
    let thp = thp_info(&buf, &madvise_hugepage)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?
        .trim()
        .to_string();

    let edu = if kinds.iter().any(|k| k.needs_device()) {
        let bdf = find_edu(&args.sysfs, args.bdf.as_deref())?;
        let cdev = edu_cdev(&args.sysfs, &args.devfs, Some(&bdf))?;
        Some(Edu { bdf, cdev })
    } else {
        None
    };

    let mut samples = BTreeMap::new();
    let groups = groups(&kinds);
    let mut notes = Vec::new();
    if let Some(note) = groups_note(&groups) {
        notes.push(note);
    }
    // Each group closes what it opened (the cdev's binding included) before the next one runs.
    for group in &groups {
        if group.as_slice() != [BackendKind::Type1] {
            run_group(group, edu.as_ref(), args, &workloads, &buf, &mut samples)?;
            continue;
        }
        let most = workloads.iter().map(|w| w.count).max().unwrap_or(0);
        let raised = raise_type1_entry_limit(&args.sysfs, most)?;
        if let Some(old) = raised {
            notes.push(format!(
                "type1: dma_entry_limit raised from {old} to {most} for this run (one mapping per entry)"
            ));
        }
        let result = run_group(group, edu.as_ref(), args, &workloads, &buf, &mut samples);
        if let Some(old) = raised {
            let path = args.sysfs.join(TYPE1_DMA_ENTRY_LIMIT);
            std::fs::write(&path, old.to_string())
                .with_context(|| format!("restoring {old} in {}", path.display()))?;
        }
        result?;
    }

    let mut results = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for &kind in &kinds {
            if let Some(s) = samples.get(&(wi, kind)) {
                results.push(Measurement::new(w, kind, s));
            }
        }
    }
    let ratios = ratios(&results);
    Ok(Report {
        kernel,
        quick: args.quick,
        reps: args.reps(),
        buffer_bytes: buf.len() as u64,
        thp,
        notes,
        backends: kinds
            .iter()
            .map(|&backend| BackendInfo {
                backend,
                what: backend.what(),
            })
            .collect(),
        workloads,
        results,
        ratios,
    })
}

/// `ioasid-bench`'s main: run, print the report, write the JSON.
pub fn main_with(args: &Args) -> Result<()> {
    if args.overhead {
        return crate::overhead::main_with(args);
    }
    let report = run(args)?;
    print!("{}", format_report(&report));
    let vm_out = std::env::var_os("IOASID_VM_OUT").map(PathBuf::from);
    if let Some(path) = args.json_path(vm_out.as_deref()) {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("ioasid-bench: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_defaults() {
        let a = Args::try_parse_from(["x"]).unwrap();
        assert_eq!(a.reps(), 5);
        assert_eq!(a.backends(), ALL_BACKENDS.to_vec());
        assert!(a.backends().contains(&BackendKind::IoasidDomain));
        // bench-quick runs `ioasid-bench --quick`: every backend, ioasid+domain included.
        let a = Args::try_parse_from(["x", "--quick"]).unwrap();
        assert_eq!(a.backends(), ALL_BACKENDS.to_vec());
        assert!(a.backends().contains(&BackendKind::IoasidDomain));
        let a = Args::try_parse_from(["x", "--backends", "type1,ioasid+domain"]).unwrap();
        assert_eq!(
            a.backends(),
            vec![BackendKind::IoasidDomain, BackendKind::Type1]
        );
        let a = Args::try_parse_from(["x", "--quick", "--backends", "type1,ioasid,type1"]).unwrap();
        assert_eq!(a.reps(), 2);
        assert_eq!(a.backends(), vec![BackendKind::Ioasid, BackendKind::Type1]);
        let a = Args::try_parse_from(["x", "--backends", "iommufd+domain", "--reps", "7"]).unwrap();
        assert_eq!(a.backends(), vec![BackendKind::IommufdDomain]);
        assert_eq!(a.reps(), 7);
        assert!(Args::try_parse_from(["x", "--reps", "0"]).is_err());
        assert!(Args::try_parse_from(["x", "--backends", "vfio"]).is_err());
        assert!(
            Args::try_parse_from(["x", "--rounds", "2"]).is_err(),
            "needs --overhead"
        );
        let o = Args::try_parse_from(["x", "--overhead"]).unwrap();
        assert_eq!(o.overhead_sizes(), (16384, 5, 3));
        let o = Args::try_parse_from(["x", "--overhead", "--quick"]).unwrap();
        assert_eq!(o.overhead_sizes(), (1024, 1, 1));
        let o = Args::try_parse_from([
            "x",
            "--overhead",
            "--maps",
            "8",
            "--rounds",
            "2",
            "--reps",
            "4",
        ])
        .unwrap();
        assert_eq!(o.overhead_sizes(), (8, 2, 4));
        assert_eq!(
            a.json_path(Some(Path::new("/out"))),
            Some(PathBuf::from("/out/bench.json"))
        );
        assert_eq!(a.json_path(None), None);
        let a = Args::try_parse_from(["x", "--json", "/r.json"]).unwrap();
        assert_eq!(
            a.json_path(Some(Path::new("/out"))),
            Some(PathBuf::from("/r.json"))
        );
    }

    #[test]
    fn backends_and_their_rules() {
        let k = BackendKind::IoasidDomain;
        assert_eq!(k.name(), "ioasid+domain");
        assert_eq!(
            BackendKind::from_str(k.name(), false).ok(),
            Some(k),
            "--backends name"
        );
        assert_eq!(serde_json::to_value(k).unwrap(), "ioasid+domain");
        assert!(k.needs_device() && k.has_copy());
        assert_eq!(k.pinning(), Pinning::VmPin);
        assert!(k.what().contains("iommu_maps"), "{}", k.what());
        let plain = BackendKind::Ioasid;
        assert!(!plain.needs_device());
        assert_eq!(
            plain.pinning(),
            Pinning::VmPin,
            "pins even without a domain"
        );
        assert!(
            plain.what().contains("without a device"),
            "{}",
            plain.what()
        );
        assert!(plain.what().contains("no iommu_map"), "{}", plain.what());
        for b in ALL_BACKENDS {
            assert_eq!(BackendKind::from_str(b.name(), false).ok(), Some(b));
            assert_eq!(serde_json::to_value(b).unwrap(), b.name());
        }
    }

    #[test]
    fn groups_never_share_the_device() {
        use BackendKind::*;
        assert_eq!(
            groups(&ALL_BACKENDS),
            vec![
                vec![Ioasid, IommufdDomain, Iommufd],
                vec![IoasidDomain],
                vec![Type1]
            ]
        );
        assert_eq!(
            groups(&[IoasidDomain, IommufdDomain]),
            vec![vec![IommufdDomain], vec![IoasidDomain]],
            "group 1 closes the cdev before ioasid+domain opens it"
        );
        assert_eq!(groups(&[Ioasid, Iommufd]), vec![vec![Ioasid, Iommufd]]);
        assert_eq!(groups(&[]), Vec::<Vec<BackendKind>>::new());
        // Every chosen backend runs exactly once, and no group has two users of the device.
        for g in groups(&ALL_BACKENDS) {
            assert!(g.iter().filter(|k| k.needs_device()).count() <= 1, "{g:?}");
        }
        let flat: Vec<BackendKind> = groups(&ALL_BACKENDS).concat();
        assert_eq!(flat.len(), ALL_BACKENDS.len());
        assert!(ALL_BACKENDS.iter().all(|b| flat.contains(b)));
        assert_eq!(groups_note(&groups(&[Ioasid, Iommufd])), None);
        let note = groups_note(&groups(&ALL_BACKENDS)).unwrap();
        assert!(
            note.contains(
                "3 groups, one after the other: [ioasid, iommufd+domain, iommufd] then [ioasid+domain] then [type1]"
            ),
            "{note}"
        );
    }

    #[test]
    fn the_issues_workloads() {
        let w = workloads(false);
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "map 4K x 65536",
                "map 2M x 512",
                "map 1G x 1",
                "copy 2M x 512"
            ]
        );
        assert_eq!(buffer_len(&w), GIB);
        assert_eq!(buffer_len(&workloads(true)), 32 * MIB);
        assert_eq!(human_size(4096), "4K");
        assert_eq!(human_size(3 * MIB), "3M");
        assert_eq!(human_size(GIB + MIB), "1025M");
        assert_eq!(human_size(100), "100");
    }

    #[test]
    fn median_and_min() {
        let p = PhaseStats::new("map", vec![5, 1, 3, 9]);
        assert_eq!((p.median_ns, p.min_ns), (3, 1));
        assert_eq!(p.samples_ns, vec![5, 1, 3, 9], "kept in run order");
        let p = PhaseStats::new("map", vec![7]);
        assert_eq!((p.median_ns, p.min_ns), (7, 7));
        let p = PhaseStats::new("map", vec![]);
        assert_eq!((p.median_ns, p.min_ns), (0, 0));
    }

    #[test]
    fn pins_must_move_exactly_where_expected() {
        let c = |pin_kib, lck_kib| Counters { pin_kib, lck_kib };
        assert!(check_pins(Pinning::VmPin, c(4, 0), c(12, 0), 8).is_ok());
        assert!(check_pins(Pinning::VmPin, c(4, 0), c(8, 0), 8).is_err());
        assert!(check_pins(Pinning::VmPin, c(4, 0), c(12, 8), 8).is_err());
        assert!(check_pins(Pinning::VmLck, c(0, 0), c(0, 8), 8).is_ok());
        assert!(check_pins(Pinning::Nothing, c(0, 0), c(0, 0), 8).is_ok());
        let e = check_pins(Pinning::Nothing, c(8, 0), c(0, 0), 0).unwrap_err();
        assert!(e.contains("-8 KiB"), "{e}");
    }

    #[test]
    fn type1_entry_limit_is_raised_only_when_short() {
        let dir = crate::sysfs::testutil::TestDir::new("bench-entry-limit");
        let param = dir.path().join(TYPE1_DMA_ENTRY_LIMIT);
        std::fs::create_dir_all(param.parent().unwrap()).unwrap();
        std::fs::write(&param, "65535\n").unwrap();
        assert_eq!(raise_type1_entry_limit(dir.path(), 1024).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&param).unwrap(), "65535\n");
        assert_eq!(
            raise_type1_entry_limit(dir.path(), 65536).unwrap(),
            Some(65535)
        );
        assert_eq!(std::fs::read_to_string(&param).unwrap(), "65536");
        std::fs::write(&param, "lots").unwrap();
        assert!(raise_type1_entry_limit(dir.path(), 1).is_err());
    }

    #[test]
    fn smaps_vma_lookup() {
        let smaps = "00400000-00500000 r-xp 00000000 00:10 1 /bin/x\n\
                     AnonHugePages:         0 kB\n\
                     7f0000000000-7f0040000000 rw-p 00000000 00:00 0 \n\
                     Size:            1048576 kB\n\
                     AnonHugePages:   1044480 kB\n";
        assert_eq!(smaps_anon_huge_kib(smaps, 0x7f0000000000), Some(1044480));
        assert_eq!(smaps_anon_huge_kib(smaps, 0x400000), Some(0));
        assert_eq!(smaps_anon_huge_kib(smaps, 0x7f0040000000), None);
    }

    fn report() -> Report {
        let w = workloads(true);
        let m = |wi: usize, kind, first_ms: u64, unmap_ms: u64| {
            Measurement::new(
                &w[wi],
                kind,
                &[(first_ms * 1_000_000, unmap_ms * 1_000_000); 2],
            )
        };
        let results = vec![
            m(0, BackendKind::IoasidDomain, 10, 5),
            m(0, BackendKind::Ioasid, 10, 10),
            m(0, BackendKind::IommufdDomain, 15, 9),
            m(0, BackendKind::Iommufd, 5, 5),
            m(0, BackendKind::Type1, 20, 20),
            m(3, BackendKind::IoasidDomain, 2, 1),
            m(3, BackendKind::Ioasid, 4, 2),
            m(3, BackendKind::IommufdDomain, 4, 2),
        ];
        Report {
            kernel: "7.3.4".into(),
            quick: true,
            reps: 2,
            buffer_bytes: 32 * MIB,
            notes: vec!["type1: dma_entry_limit raised".into()],
            thp: Thp {
                setting: "madvise".into(),
                madvise_hugepage: "accepted".into(),
                anon_huge_kib: 32768,
                buffer_kib: 32768,
            },
            backends: ALL_BACKENDS
                .iter()
                .map(|&backend| BackendInfo {
                    backend,
                    what: backend.what(),
                })
                .collect(),
            ratios: ratios(&results),
            workloads: w,
            results,
        }
    }

    #[test]
    fn ratios_are_reference_over_ours() {
        use BackendKind::*;
        let r = report();
        let get = |workload, ours, reference, phase| {
            r.ratios
                .iter()
                .find(|x| {
                    x.workload == workload
                        && x.ours == ours
                        && x.reference == reference
                        && x.phase == phase
                })
                .map(|x| x.ratio)
        };
        let w0 = "map 4K x 1024";
        assert_eq!(get(w0, IoasidDomain, IommufdDomain, "total"), Some(1.6));
        assert_eq!(get(w0, IoasidDomain, IommufdDomain, "map"), Some(1.5));
        assert_eq!(get(w0, IoasidDomain, IommufdDomain, "unmap"), Some(1.8));
        assert_eq!(get(w0, IoasidDomain, Type1, "unmap"), Some(4.0));
        assert_eq!(get(w0, Ioasid, IommufdDomain, "total"), Some(1.2));
        assert_eq!(get(w0, Ioasid, IommufdDomain, "map"), Some(1.5));
        assert_eq!(get(w0, Ioasid, Type1, "total"), Some(2.0));
        assert_eq!(get(w0, Ioasid, Iommufd, "total"), Some(0.5));
        assert_eq!(get(w0, IoasidDomain, Iommufd, "total"), None, "not a pair");
        assert_eq!(get(w0, IoasidDomain, Ioasid, "total"), None, "not a pair");
        let w3 = "copy 2M x 16";
        assert_eq!(get(w3, IoasidDomain, IommufdDomain, "copy"), Some(2.0));
        assert_eq!(
            get(w3, IoasidDomain, Type1, "total"),
            None,
            "type1: no COPY"
        );
        assert_eq!(get(w3, Ioasid, Iommufd, "total"), None, "not measured");
        // Only /dev/ioasid backends are "ours", and the pairs come in PAIRS order per workload.
        assert!(
            r.ratios
                .iter()
                .all(|x| PAIRS.contains(&(x.ours, x.reference)))
        );
        let mut order: Vec<(&str, BackendKind, BackendKind)> = r
            .ratios
            .iter()
            .map(|x| (x.workload.as_str(), x.ours, x.reference))
            .collect();
        order.dedup();
        assert_eq!(
            order,
            [
                (w0, IoasidDomain, IommufdDomain),
                (w0, IoasidDomain, Type1),
                (w0, Ioasid, IommufdDomain),
                (w0, Ioasid, Type1),
                (w0, Ioasid, Iommufd),
                (w3, IoasidDomain, IommufdDomain),
                (w3, Ioasid, IommufdDomain),
            ]
        );
        assert_eq!(r.ratios.len(), 7 * 3, "map or copy, unmap, total of each");
    }

    #[test]
    fn report_text_and_json() {
        let r = report();
        let text = format_report(&r);
        let ratio_lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("ratios of medians"))
            .collect();
        assert_eq!(
            ratio_lines,
            [
                "ratios of medians, reference / ours (above 1.00x: ours, the /dev/ioasid backend, is faster):",
                "  map 4K x 1024: ioasid+domain is 1.60x iommufd+domain (map 1.50x, unmap 1.80x); 2.67x type1 (map 2.00x, unmap 4.00x)",
                "  map 4K x 1024: ioasid is 1.20x iommufd+domain (map 1.50x, unmap 0.90x); 2.00x type1 (map 2.00x, unmap 2.00x); 0.50x iommufd (map 0.50x, unmap 0.50x)",
                "  copy 2M x 16: ioasid+domain is 2.00x iommufd+domain (copy 2.00x, unmap 2.00x)",
                "  copy 2M x 16: ioasid is 1.00x iommufd+domain (copy 1.00x, unmap 1.00x)",
            ],
            "{text}"
        );
        assert!(
            text.contains(
                "  ioasid+domain   /dev/ioasid, edu cdev bound, a HWPT on each IOAS: MAP pins and iommu_maps\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  ioasid          /dev/ioasid, IOAS without a device"),
            "{text}"
        );
        assert!(
            text.contains("\nnote: type1: dma_entry_limit raised\n"),
            "{text}"
        );
        assert!(
            text.contains("THP madvise, MADV_HUGEPAGE accepted: 32768 of 32768 KiB"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("map 4K x 1024") && l.contains("type1"))
            .unwrap();
        assert!(
            row.contains("20.00 / 20.00") && row.contains("40.00 / 40.00"),
            "{row}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("map 4K x 1024") && l.contains("ioasid+domain"))
            .unwrap();
        assert!(
            row.contains("10.00 / 10.00") && row.contains("15.00 / 15.00"),
            "{row}"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["results"][0]["backend"], "ioasid+domain");
        assert_eq!(json["results"][2]["backend"], "iommufd+domain");
        assert_eq!(json["results"][5]["phases"][0]["phase"], "copy");
        assert_eq!(json["workloads"][3]["op"], "copy");
        assert_eq!(json["backends"][0]["backend"], "ioasid+domain");
        assert_eq!(json["ratios"][0]["ours"], "ioasid+domain");
        assert_eq!(json["ratios"][0]["reference"], "iommufd+domain");
        assert_eq!(json["ratios"][0]["phase"], "map");
        assert_eq!(json["ratios"][0]["ratio"], 1.5);
        assert_eq!(json["ratios"][6]["ours"], "ioasid");
    }
}
