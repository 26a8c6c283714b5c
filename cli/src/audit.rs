//! `ioasid-top audit`: verdicts over what ioasid-top collected.
//!
//! Every rule is a pure function of the collected model: the aggregator's state (events since
//! attach) and a [`Snapshot`] of sysfs and procfs read in userspace at report time
//! ([`read_snapshot`]). Rules never read files themselves, so each is unit-tested here on
//! hand-made models, firing and not firing.
//!
//! Rules (ids are stable: the `rule` field of `finding` lines):
//! - [`UNNEEDED_WBINVD`]: KVM registered non-coherent DMA for a VM, but no device that could
//!   be behind it can issue no-snoop.
//! - [`GUEST_CANNOT_FLUSH`]: a process holds a KVM VM and a VFIO device that may issue no-snoop
//!   DMA behind an IOMMU that lets it through, and KVM was never told (no KVM-VFIO device), or
//!   was last seen turning non-coherent DMA off.
//! - [`PINS_OVER_MEMLOCK`]: a process holds more locked or pinned memory than its
//!   `RLIMIT_MEMLOCK`.
//! - [`PINS_OUTLIVE_OWNER`]: a process exited holding long-term pins it took (counted in the
//!   kernel since attach) that nobody dropped since: the memory stays pinned for a file
//!   another process holds, charged to an address space that is gone.
//! - [`DOUBLE_ACCOUNTED`]: a process mapped the same physical memory into several IOMMU
//!   domains (seen since attach, [`crate::phys`]) and was charged for every copy: its
//!   `VmPin` or `VmLck` grew by at least all it mapped.
//! - [`MAPPING_ANOMALY`]: an `iommu_map` that failed, or an unmap that unmapped less than asked.
//! - [`NONCOHERENT_MAPPING`]: memory mapped without `IOMMU_CACHE` into a domain whose devices'
//!   IOMMU enforces coherency, or beside coherent mappings in the same domain.
//! - [`MAPPINGS_OUTLIVE_OWNER`]: a domain still attached to VFIO devices that no process holds
//!   any more, with memory still mapped: what their container or IOAS mapped outlived it.
//!
//! Which devices a VM has: those of the VFIO files its process holds ([`procfiles`]); for a
//! VM whose process holds none that can be read, every device bound to vfio-pci (a heuristic
//! the evidence says is one).

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    aggregate::{Aggregator, KvmStats},
    procfiles::{self, ProcFiles},
    startstate,
    table::human_bytes,
};
use ioasid_uapi::{
    iommu_sysfs,
    pci::{NoSnoop, parse_pci_config},
    test_hook,
};

/// Rule id: unneeded wbinvd exposure.
pub const UNNEEDED_WBINVD: &str = "unneeded-wbinvd-exposure";
/// Rule id: a device may issue no-snoop DMA that KVM does not know of.
pub const GUEST_CANNOT_FLUSH: &str = "guest-cannot-flush";
/// Rule id: the same pages pinned and charged more than once.
pub const DOUBLE_ACCOUNTED: &str = "double-accounted-pins";
/// Rule id: pins held after the process that took them exited.
pub const PINS_OUTLIVE_OWNER: &str = "pins-outlive-owner";
/// Rule id: pinned or locked pages over `RLIMIT_MEMLOCK`.
pub const PINS_OVER_MEMLOCK: &str = "pins-over-memlock";
/// Rule id: an `iommu_map` that failed or an `iommu_unmap` that unmapped less than asked.
pub const MAPPING_ANOMALY: &str = "mapping-anomaly";
/// Rule id: memory mapped without `IOMMU_CACHE` where DMA is meant to be coherent.
pub const NONCOHERENT_MAPPING: &str = "noncoherent-mapping";
/// Rule id: mappings left in a domain of VFIO devices that nobody holds.
pub const MAPPINGS_OUTLIVE_OWNER: &str = "mappings-outlive-owner";

/// Exit status of `ioasid-top audit --once` when the worst finding is a warning.
pub const EXIT_WARNING: u8 = 3;
/// ... when the worst finding is critical.
pub const EXIT_CRITICAL: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    #[allow(dead_code, reason = "part of the contract; no rule reports it yet")]
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable rule id.
    pub rule: &'static str,
    pub severity: Severity,
    /// Short human title of the rule.
    pub title: &'static str,
    /// What it is about, in words (process, VM, devices).
    pub subject: String,
    /// The process concerned, when there is one.
    pub pid: Option<u32>,
    /// The KVM VM (`struct kvm *`) concerned, when there is one.
    pub kvm: Option<u64>,
    /// PCI devices (BDF) concerned.
    pub devices: Vec<String>,
    /// What was observed, with its source.
    pub evidence: String,
    pub why: &'static str,
    pub action: &'static str,
}

/// A PCI device bound to vfio-pci or held through VFIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDev {
    pub bdf: String,
    pub no_snoop: NoSnoop,
    /// Whether its IOMMU enforces cache coherency (VT-d snoop control); None: not known (no
    /// IOMMU, not intel-iommu, unreadable).
    pub snoop_control: Option<bool>,
}

impl PciDev {
    fn describe(&self, no_snoop_override: Option<bool>) -> String {
        let iommu = match self.snoop_control {
            Some(true) => "IOMMU with snoop control",
            Some(false) => "IOMMU without snoop control",
            None => "IOMMU's snoop control unknown",
        };
        match no_snoop_override {
            Some(o) => format!(
                "{}: {}, but the test kernel's no_snoop_override says it {} issue no-snoop; {iommu}",
                self.bdf,
                self.no_snoop.describe(),
                if o { "can" } else { "cannot" }
            ),
            None => format!("{}: {}; {iommu}", self.bdf, self.no_snoop.describe()),
        }
    }
}

/// `RLIMIT_MEMLOCK` and what a process has locked and pinned, from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcMem {
    pub comm: String,
    pub vm_lck_pages: u64,
    pub vm_pin_pages: u64,
    /// Soft and hard limits in bytes; None: unlimited.
    pub memlock_soft: Option<u64>,
    pub memlock_hard: Option<u64>,
}

/// What rules read besides the aggregator, taken at report time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Devices in /sys/bus/pci/drivers/vfio-pci, by BDF.
    pub vfio_pci: Vec<PciDev>,
    /// Devices held through VFIO by a process but bound to another driver than vfio-pci.
    pub other_held: Vec<PciDev>,
    /// Devices of the IOMMU groups seen attached to a domain, in neither list above: those of
    /// a kernel user of the IOMMU API (a driver with its own domain).
    pub in_domains: Vec<PciDev>,
    /// Processes with VmLck or VmPin non-zero.
    pub procs: BTreeMap<u32, ProcMem>,
    /// Processes that hold VFIO devices, IOMMU files or KVM VMs, and what they hold.
    pub files: BTreeMap<u32, ProcFiles>,
    /// The `--pid` the snapshot was limited to: `files` then has that process only.
    pub pid_filter: Option<u32>,
    /// Processes whose open files could not be read (not root): `files` misses what they hold.
    pub files_unreadable: u32,
    /// Kernel threads (`PF_KTHREAD` in `/proc/<pid>/stat`): their unpins are of others' pins.
    pub kernel_threads: std::collections::BTreeSet<u32>,
    /// `<debugfs>/ioasid/no_snoop_override` of a test kernel (CONFIG_IOASID_TEST): `1` or `0`
    /// replace what config space says of every device's ability to issue no-snoop, as they do
    /// for /dev/ioasid, because no QEMU device can enable no-snoop.
    pub no_snoop_override: Option<bool>,
    /// `VmPin` and `VmLck` pages of the processes that had any when ioasid-top started: what
    /// they were charged before the events it saw.
    pub charged_at_start: BTreeMap<u32, (u64, u64)>,
    pub page_size: u64,
}

impl Snapshot {
    /// A device by PCI address.
    pub fn pci(&self, bdf: &str) -> Option<&PciDev> {
        self.vfio_pci
            .iter()
            .chain(&self.other_held)
            .chain(&self.in_domains)
            .find(|d| d.bdf == bdf)
    }

    /// Whether a device may issue no-snoop DMA; None: cannot tell.
    pub fn may_issue_no_snoop(&self, dev: &PciDev) -> Option<bool> {
        if let Some(o) = self.no_snoop_override {
            return Some(o);
        }
        match dev.no_snoop {
            NoSnoop::ConventionalPci | NoSnoop::Disabled => Some(false),
            NoSnoop::Enabled | NoSnoop::PciX => Some(true),
            NoSnoop::Unknown(_) => None,
        }
    }
}

/// A PCI device's no-snoop ability (config space) and its IOMMU's snoop control (sysfs).
fn read_pci_dev(sys_root: &Path, bdf: &str) -> PciDev {
    let cfg_path: PathBuf = sys_root.join("bus/pci/devices").join(bdf).join("config");
    let no_snoop = match fs::read(&cfg_path) {
        Ok(b) => parse_pci_config(&b),
        Err(err) => NoSnoop::Unknown(format!("reading {}: {err}", cfg_path.display())),
    };
    let snoop_control = match iommu_sysfs::device_iommu(sys_root, bdf) {
        Ok(Some(iommu)) => iommu.snoop_control(),
        Ok(None) => None,
        Err(e) => {
            eprintln!("ioasid-top: warning: audit: the IOMMU of {bdf}: {e}");
            None
        }
    };
    PciDev {
        bdf: bdf.to_owned(),
        no_snoop,
        snoop_control,
    }
}

/// Soft and hard `Max locked memory` of a `/proc/<pid>/limits` file, bytes (None: unlimited).
pub fn parse_limits_memlock(text: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .ok_or("no `Max locked memory` line")?;
    let mut it = line["Max locked memory".len()..].split_whitespace();
    let mut value = |what: &str| -> Result<Option<u64>, String> {
        match it.next() {
            Some("unlimited") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| format!("{what} limit {v:?}: {e}")),
            None => Err(format!("no {what} limit")),
        }
    };
    let soft = value("soft")?;
    let hard = value("hard")?;
    Ok((soft, hard))
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads the snapshot from `sys_root` (normally /sys) and `proc_root` (/proc). `pid`: only
/// that process. `in_domains`: the PCI addresses of the devices of the groups seen attached
/// to a domain. Processes that vanish are skipped; other per-process errors are warned about
/// on stderr.
pub fn read_snapshot(
    sys_root: &Path,
    proc_root: &Path,
    debugfs_root: &Path,
    pid: Option<u32>,
    in_domains: &[&str],
    page_size: u64,
) -> anyhow::Result<Snapshot> {
    let mut snap = Snapshot {
        page_size,
        pid_filter: pid,
        no_snoop_override: test_hook::forced_no_snoop(
            test_hook::read_no_snoop_override(debugfs_root)?.as_deref(),
        ),
        ..Snapshot::default()
    };
    let drv = sys_root.join("bus/pci/drivers/vfio-pci");
    match fs::read_dir(&drv) {
        Ok(entries) => {
            for e in entries {
                let e = e.with_context(|| format!("listing {}", drv.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Device links are BDFs (0000:00:03.0); skip bind, unbind, new_id, module...
                if name.len() != 12 || name.as_bytes().get(4) != Some(&b':') {
                    continue;
                }
                snap.vfio_pci.push(read_pci_dev(sys_root, &name));
            }
            snap.vfio_pci.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", drv.display())),
    }

    (snap.files, snap.files_unreadable) = procfiles::scan(proc_root, sys_root, pid)?;
    snap.kernel_threads = procfiles::kernel_threads(proc_root)?;
    let held: std::collections::BTreeSet<&String> =
        snap.files.values().flat_map(|f| &f.devices).collect();
    for bdf in held {
        if snap.pci(bdf).is_none() {
            let dev = read_pci_dev(sys_root, bdf);
            snap.other_held.push(dev);
        }
    }
    for bdf in in_domains {
        if snap.pci(bdf).is_none() {
            let dev = read_pci_dev(sys_root, bdf);
            snap.in_domains.push(dev);
        }
    }

    for pid in startstate::proc_pids(proc_root, pid)? {
        match read_proc_mem(&proc_root.join(pid.to_string()), page_size) {
            Ok(Some(p)) => {
                snap.procs.insert(pid, p);
            }
            Ok(None) => {}
            Err(e) => eprintln!("ioasid-top: warning: audit: pid {pid}: {e:#}"),
        }
    }
    Ok(snap)
}

/// Ok(None): vanished, or nothing locked or pinned.
fn read_proc_mem(dir: &Path, page_size: u64) -> anyhow::Result<Option<ProcMem>> {
    let status = match fs::read_to_string(dir.join("status")) {
        Ok(s) => s,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}/status", dir.display())),
    };
    let (comm, pin_kib, lck_kib) = startstate::parse_status(&status)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parsing {}/status", dir.display()))?;
    if pin_kib == 0 && lck_kib == 0 {
        return Ok(None);
    }
    let limits = match fs::read_to_string(dir.join("limits")) {
        Ok(s) => s,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}/limits", dir.display())),
    };
    let (memlock_soft, memlock_hard) = parse_limits_memlock(&limits)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parsing {}/limits", dir.display()))?;
    Ok(Some(ProcMem {
        comm,
        vm_lck_pages: lck_kib * 1024 / page_size,
        vm_pin_pages: pin_kib * 1024 / page_size,
        memlock_soft,
        memlock_hard,
    }))
}

fn bytes(pages: u64, page_size: u64) -> u64 {
    pages.saturating_mul(page_size)
}

fn limit_str(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".into(), |b| human_bytes(i128::from(b)))
}

/// The devices behind the VMs of process `pid`, and where that list comes from.
fn vm_devices(snap: &Snapshot, pid: u32) -> (Vec<&PciDev>, String) {
    if let Some(files) = snap.files.get(&pid).filter(|f| !f.devices.is_empty()) {
        let devs: Vec<&PciDev> = files.devices.iter().filter_map(|b| snap.pci(b)).collect();
        return (
            devs,
            format!("the VFIO devices pid {pid} holds (from /proc/{pid}/fd)"),
        );
    }
    (
        snap.vfio_pci.iter().collect(),
        format!(
            "by heuristic all the devices bound to vfio-pci (the VFIO files of pid {pid} could \
             not be seen)"
        ),
    )
}

fn describe_devices(snap: &Snapshot, devs: &[&PciDev]) -> String {
    devs.iter()
        .map(|d| d.describe(snap.no_snoop_override))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rule [`UNNEEDED_WBINVD`].
pub fn rule_unneeded_wbinvd(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    agg.kvm_rows()
        .into_iter()
        .filter(|(_, vm)| vm.noncoherent)
        .filter_map(|(kvm, vm)| {
            let (devs, source) = vm_devices(snap, vm.pid);
            // No device known (another VFIO driver), or one that can or may issue no-snoop.
            if devs.is_empty()
                || !devs
                    .iter()
                    .all(|d| snap.may_issue_no_snoop(d) == Some(false))
            {
                return None;
            }
            Some(Finding {
                rule: UNNEEDED_WBINVD,
                severity: Severity::Warning,
                title: "Unneeded wbinvd exposure",
                subject: format!("KVM VM {kvm:#x} (pid {} {})", vm.pid, vm.comm),
                pid: Some(vm.pid),
                kvm: Some(kvm),
                devices: devs.iter().map(|d| d.bdf.clone()).collect(),
                evidence: format!(
                    "kvm_arch_register_noncoherent_dma seen for this VM ({} register, {} \
                     unregister: non-coherent DMA on, KVM honours the guest's WBINVD). Devices \
                     behind it, {source}, from their PCI config space in sysfs: {}. None of them \
                     can issue no-snoop DMA.",
                    vm.registers,
                    vm.unregisters,
                    describe_devices(snap, &devs)
                ),
                why: "KVM turned on WBINVD emulation because the IOMMU does not enforce cache \
                      coherency, not because a device needs it: none can issue no-snoop. A guest \
                      looping WBINVD then flushes the caches of every host CPU it ran on, \
                      slowing its neighbours, for no correctness gain.",
                action: "Assign the devices through an IOMMU that enforces cache coherency \
                         (Intel VT-d snoop control, ECAP.SC; a vIOMMU with snoop-control=on), \
                         or keep such VMs on dedicated CPUs. If a device can enable no-snoop \
                         later (PCIe, Enable No Snoop settable by the guest), the exposure is \
                         needed.",
            })
        })
        .collect()
}

/// Rule [`GUEST_CANNOT_FLUSH`].
pub fn rule_guest_cannot_flush(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let vms = agg.kvm_rows();
    snap.files
        .iter()
        .filter(|(_, f)| f.kvm_vms > 0)
        .filter_map(|(&pid, files)| {
            let risky: Vec<&PciDev> = files
                .devices
                .iter()
                .filter_map(|b| snap.pci(b))
                .filter(|d| {
                    snap.may_issue_no_snoop(d) == Some(true) && d.snoop_control == Some(false)
                })
                .collect();
            if risky.is_empty() {
                return None;
            }
            let seen: Vec<(u64, &KvmStats)> = vms
                .iter()
                .filter(|(_, vm)| vm.pid == pid)
                .copied()
                .collect();
            // Without a KVM-VFIO device the devices may be the VMM's own (QEMU's userspace
            // NVMe driver holds one without giving it to the guest): only a warning.
            let (severity, kvm, told) = if files.kvm_vfio_devices == 0 {
                (
                    Severity::Warning,
                    None,
                    "The process has no KVM-VFIO device (no anon_inode:kvm-vfio fd): KVM was \
                     never given a VFIO file, so it never registered non-coherent DMA and \
                     WBINVD is a no-op for the guest, if the guest has these devices (a VMM's \
                     own use of a device, such as QEMU's userspace NVMe driver, looks the same)."
                        .to_owned(),
                )
            } else if !seen.is_empty() && seen.iter().all(|(_, vm)| !vm.noncoherent) {
                let (kvm, vm) = seen[seen.len() - 1];
                (
                    Severity::Critical,
                    Some(kvm),
                    format!(
                        "KVM VM {kvm:#x} was last seen unregistering non-coherent DMA ({} \
                         register, {} unregister): KVM treats its DMA as coherent and WBINVD \
                         is a no-op for the guest.",
                        vm.registers, vm.unregisters
                    ),
                )
            } else {
                return None;
            };
            Some(Finding {
                rule: GUEST_CANNOT_FLUSH,
                severity,
                title: "Guest cannot flush caches for no-snoop DMA",
                subject: format!("pid {pid} {}", files.comm),
                pid: Some(pid),
                kvm,
                devices: risky.iter().map(|d| d.bdf.clone()).collect(),
                evidence: format!(
                    "pid {pid} holds {} KVM VM(s) and VFIO devices (from /proc/{pid}/fd) that \
                     may issue no-snoop DMA through an IOMMU that lets it through: {}. {told}",
                    files.kvm_vms,
                    describe_devices(snap, &risky)
                ),
                why: "A no-snoop DMA write goes to memory past the CPU caches. A guest driver \
                      that uses no-snoop flushes its caches with WBINVD or CLFLUSH to see the \
                      data; with KVM treating the DMA as coherent, WBINVD does nothing, so the \
                      guest can read stale data and corrupt what the device wrote.",
                action: "Give the device's VFIO file to the VM's KVM-VFIO device (QEMU does; \
                         a VMM must call KVM_DEV_VFIO_FILE_ADD), or assign it through an \
                         IOMMU that enforces cache coherency (VT-d snoop control), or have \
                         the device's driver clear Enable No Snoop.",
            })
        })
        .collect()
}

/// Rule [`PINS_OVER_MEMLOCK`].
pub fn rule_pins_over_memlock(snap: &Snapshot) -> Vec<Finding> {
    let ps = snap.page_size;
    snap.procs
        .iter()
        .filter_map(|(&pid, p)| {
            let soft = p.memlock_soft?;
            let lck = bytes(p.vm_lck_pages, ps);
            let pin = bytes(p.vm_pin_pages, ps);
            if lck.max(pin) <= soft {
                return None;
            }
            Some(Finding {
                rule: PINS_OVER_MEMLOCK,
                severity: Severity::Warning,
                title: "Pinned pages over RLIMIT_MEMLOCK",
                subject: format!("pid {pid} {}", p.comm),
                pid: Some(pid),
                kvm: None,
                devices: Vec::new(),
                evidence: format!(
                    "/proc/{pid}/status: VmLck {}, VmPin {}; /proc/{pid}/limits: Max locked \
                     memory soft {}, hard {}.",
                    human_bytes(i128::from(lck)),
                    human_bytes(i128::from(pin)),
                    limit_str(p.memlock_soft),
                    limit_str(p.memlock_hard)
                ),
                why: "RLIMIT_MEMLOCK is what bounds the memory a process can pin for DMA (VFIO, \
                      iommufd, /dev/ioasid). This process holds more: it has CAP_IPC_LOCK, \
                      which bypasses the limit, or its limit was lowered after it pinned. \
                      Pinned memory cannot be swapped, migrated or compacted.",
                action: "Give the process the limit it needs (prlimit --memlock, systemd \
                         LimitMEMLOCK=) and drop CAP_IPC_LOCK so the limit is enforced; check \
                         what it maps (ioasid-top's pinning table).",
            })
        })
        .collect()
}

/// Rule [`PINS_OUTLIVE_OWNER`].
///
/// Pins are counted per process; when a process exits, its VFIO or IOMMU files are released
/// in its own context and their unpins count for it, so it nets out. What does not: pins it
/// took for a file another process still holds (inherited, passed over a socket). Those are
/// bounded by what all user processes still hold together, so pins taken by one and dropped by
/// another (the holder closing the file) cancel out. Kernel threads are left out: kworkers
/// drop the short-term pins of others' I/O, which would hide everything. And some live process
/// must hold a VFIO or IOMMU file for the pins to be held for.
pub fn rule_pins_outlive_owner(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let holds_files = |pid: u32| {
        snap.files.get(&pid).is_some_and(|f| {
            f.vfio_containers + f.iommufd_files + f.ioasid_files > 0 || !f.devices.is_empty()
        })
    };
    let procs = agg.pins().procs();
    let held_by_all: i128 = procs
        .iter()
        .filter(|(pid, _)| !snap.kernel_threads.contains(*pid))
        .map(|(_, c)| c.net_pinned())
        .sum();
    let holders: Vec<String> = snap
        .files
        .keys()
        .filter(|pid| holds_files(**pid))
        .map(|pid| format!("pid {pid} {}", snap.files[pid].comm))
        .collect();
    // Pins for DMA outlive their owner only through a VFIO or IOMMU file someone still holds;
    // without one, what looks held was dropped by a kernel thread (io_uring's fixed buffers).
    if held_by_all <= 0 || holders.is_empty() {
        return Vec::new();
    }
    let holders = format!(
        "Processes holding VFIO containers, iommufd or /dev/ioasid files or VFIO devices now \
         (from /proc/<pid>/fd): {}.",
        holders.join(", ")
    );
    procs
        .iter()
        .filter(|(pid, c)| agg.pins().has_exited(**pid) && c.net_pinned() > 0)
        .map(|(&pid, c)| {
            let still = c.net_pinned().min(held_by_all);
            Finding {
                rule: PINS_OUTLIVE_OWNER,
                severity: Severity::Warning,
                title: "Pinned pages outlive their owner",
                subject: format!("pid {pid} {} (exited)", crate::pins::comm(c)),
                pid: Some(pid),
                kvm: None,
                devices: Vec::new(),
                evidence: format!(
                    "pid {pid} took {} long-term pins since ioasid-top attached and dropped {}, \
                     then exited; {still} of them are still held as far as the counts of all \
                     user processes tell (their net long-term pins, kernel threads left out: \
                     {held_by_all}). {holders}",
                    c.longterm, c.unpinned
                ),
                why: "The pages stay pinned, unmovable and unswappable, for a VFIO or IOMMU file \
                      that another process inherited or was passed, while the charge for them \
                      stays with the exited process's address space and user: no live \
                      process's VmPin or VmLck shows them, and RLIMIT_MEMLOCK no longer bounds \
                      who holds them.",
                action: "Find the process that holds the file (the holders above; lsof \
                         /dev/vfio /dev/iommu /dev/ioasid) and close it, or have the VMM set \
                         O_CLOEXEC and not hand its VFIO and IOMMU files to children.",
            }
        })
        .collect()
}

/// Rule [`DOUBLE_ACCOUNTED`].
pub fn rule_double_accounted(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let Some(phys) = agg.phys() else {
        return Vec::new();
    };
    let ps = snap.page_size;
    phys.per_process()
        .into_iter()
        .filter_map(|(pid, p)| {
            if p.repeated_bytes() < ps {
                return None;
            }
            let now = snap.procs.get(&pid)?;
            let (pin0, _) = snap.charged_at_start.get(&pid).copied().unwrap_or((0, 0));
            // VmPin growth (iommufd and /dev/ioasid count pinned_vm there), and what the
            // kernel counted for the process through the DMA accounting calls: type1's
            // __account_locked_vm and iommufd's iopt_pages_update_pinned. Not VmLck growth:
            // mlock() raises it too. iommufd's mm mode charges both for one pin: the larger.
            let pin = bytes(now.vm_pin_pages.saturating_sub(pin0), ps);
            let counted = agg.pins().procs().get(&pid).copied().unwrap_or_default();
            let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
            let lck = bytes(clamp(counted.net_locked_vm()), ps);
            let iommufd = bytes(clamp(counted.net_iommufd()), ps);
            if pin.max(lck).max(iommufd) < p.mapped_bytes {
                return None;
            }
            let incomplete = if phys.dropped_maps > 0 {
                format!(
                    " ioasid-top's view is incomplete: {} maps were past its cap.",
                    phys.dropped_maps
                )
            } else {
                String::new()
            };
            let holds = snap.files.get(&pid).map_or_else(String::new, |f| {
                format!(
                    " It holds {} VFIO container(s), {} /dev/iommu and {} /dev/ioasid file(s).",
                    f.vfio_containers, f.iommufd_files, f.ioasid_files
                )
            });
            Some(Finding {
                rule: DOUBLE_ACCOUNTED,
                severity: Severity::Warning,
                title: "Double-accounted pinned pages",
                subject: format!("pid {pid} {}", now.comm),
                pid: Some(pid),
                kvm: None,
                devices: snap
                    .files
                    .get(&pid)
                    .map(|f| f.devices.iter().cloned().collect())
                    .unwrap_or_default(),
                evidence: format!(
                    "Since ioasid-top attached, the process mapped {} into {} IOMMU domains \
                     (iommu_map), {} of distinct physical memory: {} is mapped more than once. \
                     Its VmPin grew by {} (/proc/{pid}/status), __account_locked_vm charged it \
                     {} and iopt_pages_update_pinned {}: it was charged for every copy.\
                     {holds}{incomplete}",
                    human_bytes(i128::from(p.mapped_bytes)),
                    p.domains,
                    human_bytes(i128::from(p.distinct_bytes)),
                    human_bytes(i128::from(p.repeated_bytes())),
                    human_bytes(i128::from(pin)),
                    human_bytes(i128::from(lck)),
                    human_bytes(i128::from(iommufd))
                ),
                why: "Each VFIO type1 container and each iommufd IOAS pins and charges the pages \
                      it maps on its own, so memory mapped through two of them counts twice \
                      against RLIMIT_MEMLOCK: a VM can hit its limit with half its memory \
                      mapped, or an operator raises the limit to twice what is really pinned.",
                action: "Map the memory once: attach every group to one type1 container, or \
                         every device to one IOAS; between IOASes use IOMMU_IOAS_COPY, which \
                         shares the pinned pages. /dev/ioasid charges a page once per file, \
                         however many IOASes map it.",
            })
        })
        .collect()
}

/// Rule [`MAPPING_ANOMALY`]: per process and IOMMU domain, map calls that failed (a warning:
/// the mapping is missing, the caller was told) and unmap calls that unmapped less than they
/// asked (critical: the rest may still be mapped while its pages are released).
pub fn rule_mapping_anomaly(agg: &Aggregator) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, d) in agg.domain_rows() {
        let subject = format!("pid {} {}, IOMMU domain {:#x}", key.pid, d.comm, key.domain);
        let devices: Vec<String> = agg
            .domain_devices(key.domain)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some((ret, iova, size)) = d.last_failed_map {
            findings.push(Finding {
                rule: MAPPING_ANOMALY,
                severity: Severity::Warning,
                title: "Failed IOMMU mapping",
                subject: subject.clone(),
                pid: Some(key.pid),
                kvm: None,
                devices: devices.clone(),
                evidence: format!(
                    "{} iommu_map call(s) into this domain failed since ioasid-top attached; \
                     the last returned {ret} ({}) for {} at IOVA {iova:#x}.",
                    d.failed_maps,
                    std::io::Error::from_raw_os_error(-ret),
                    human_bytes(i128::from(size))
                ),
                why: "The IOMMU driver refused the mapping, most often because it could not \
                      allocate a page-table page (ENOMEM). The caller (VFIO, iommufd, \
                      /dev/ioasid) fails the map and undoes it, so nothing is left half-mapped, \
                      but the device's DMA to that range faults, and a VMM that does not stop \
                      on the error leaves its guest with a device that cannot reach its memory.",
                action: "Check the host's free memory and the kernel log (DMAR faults, \
                         allocation failures) around the time of the failure, and whether the \
                         VMM reported the failed map; a VM started under memory pressure may \
                         need a restart once memory is available.",
            });
        }
        if let Some((iova, asked, unmapped)) = d.last_short_unmap {
            findings.push(Finding {
                rule: MAPPING_ANOMALY,
                severity: Severity::Critical,
                title: "Short IOMMU unmap",
                subject,
                pid: Some(key.pid),
                kvm: None,
                devices: devices.clone(),
                evidence: format!(
                    "{} unmap call(s) on this domain unmapped less than asked since ioasid-top \
                     attached; the last asked for {} at IOVA {iova:#x} and unmapped {}.",
                    d.short_unmaps,
                    human_bytes(i128::from(asked)),
                    human_bytes(i128::from(unmapped))
                ),
                why: "The caller released what it asked to unmap, but the IOMMU may still map \
                      part of it: the device can then reach pages the host has unpinned and \
                      reused for something else. No correct caller unmaps a range it did not \
                      map in full, so this is a kernel bug (or a corrupted page table).",
                action: "Stop the domain's devices' DMA (unbind them from their driver: VFIO \
                         for a VM's) and report the kernel log with the evidence and the \
                         caller (pid); do not reuse the host until it is understood.",
            });
        }
    }
    findings
}

/// Rule [`MAPPINGS_OUTLIVE_OWNER`]: a domain that is attached now (as seen) to IOMMU groups
/// with a device bound to vfio-pci, none of whose devices any process holds, while the maps
/// seen since attach exceed the unmaps. (A group's other devices may be bridges or unbound.) A VFIO device's release detaches its group (type1 when the group
/// leaves its container, iommufd when the device is unbound) and its container or IOAS, once
/// closed, unmaps and unpins everything, so the memory still mapped was released under the
/// IOMMU's feet. Domains of devices bound to other drivers are a kernel driver's own and are
/// left out. Not evaluated when who holds the devices is not fully known: under `--pid`, with
/// processes whose files cannot be read, or with a legacy group-path device fd open
/// (`anon_inode:[vfio-device]` does not say which device it is).
pub fn rule_mappings_outlive_owner(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    if snap.pid_filter.is_some()
        || snap.files_unreadable > 0
        || snap.files.values().any(|f| f.vfio_group_device_fds > 0)
    {
        return Vec::new();
    }
    let held: std::collections::BTreeSet<&str> = snap
        .files
        .values()
        .flat_map(|f| f.devices.iter().map(String::as_str))
        .collect();
    let vfio: std::collections::BTreeSet<&str> =
        snap.vfio_pci.iter().map(|d| d.bdf.as_str()).collect();
    // Per domain: net bytes mapped since attach, and by whom.
    let mut domains: BTreeMap<u64, (i128, Vec<String>)> = BTreeMap::new();
    for (key, d) in agg.domain_rows() {
        let (net, mappers) = domains.entry(key.domain).or_default();
        *net += d.net_bytes();
        if d.mapped_bytes > 0 {
            mappers.push(format!("pid {} {}", key.pid, d.comm));
        }
    }
    let mut findings = Vec::new();
    for (domain, (net, mappers)) in domains {
        let devices = agg.domain_devices(domain);
        if net <= 0
            || !devices.iter().any(|b| vfio.contains(b))
            || devices.iter().any(|b| held.contains(b))
        {
            continue;
        }
        findings.push(Finding {
            rule: MAPPINGS_OUTLIVE_OWNER,
            severity: Severity::Critical,
            title: "IOMMU mappings left after their owner",
            subject: format!("IOMMU domain {domain:#x}, devices {}", devices.join(", ")),
            pid: None,
            kvm: None,
            devices: devices.iter().map(|b| (*b).to_owned()).collect(),
            evidence: format!(
                "The domain is attached to the IOMMU group of {} (bound to vfio-pci: {}), \
                 which no process holds: no /proc/<pid>/fd is its VFIO device or group. Since \
                 ioasid-top attached, {} more was mapped into it than unmapped, by {}.",
                devices.join(", "),
                devices
                    .iter()
                    .filter(|b| vfio.contains(*b))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                human_bytes(net),
                mappers.join(", ")
            ),
            why: "When the last holder of a VFIO device closes it, VFIO detaches the device's \
                  group from the container's or IOAS's domain, and the container or IOAS \
                  unmaps and unpins what it mapped. A domain still attached with memory \
                  mapped means that did not happen: the IOMMU still translates DMA to pages \
                  the host may have unpinned and reused, and the next user of the device \
                  starts with a stale domain. This is a kernel bug (a leaked domain or a \
                  missed unmap), or ioasid-top lost the detach (see lost_events).",
            action: "Check lost_events first; if none were lost, keep the device unbound from \
                     any user, collect the kernel log and the evidence, and reboot the host \
                     before assigning the device again.",
        });
    }
    findings
}

/// Rule [`NONCOHERENT_MAPPING`]: per process and IOMMU domain, successful maps of memory
/// without `IOMMU_CACHE` (not `IOMMU_MMIO`: device memory is never cached) when the domain's
/// devices sit behind an IOMMU with snoop control, which VFIO and iommufd make enforce
/// coherency, or when the same domain also holds coherent maps. A non-coherent domain with
/// non-coherent maps alone is how no-snoop DMA is meant to work: the wbinvd rules judge that.
/// A kernel driver's own domain is judged the same way, though there a map without
/// `IOMMU_CACHE` may be meant (a driver that manages the caches itself): the subject names the
/// caller.
pub fn rule_noncoherent_mapping(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    // Coherent maps per domain, by any process: mixed attributes are the domain's.
    let mut coherent: BTreeMap<u64, u64> = BTreeMap::new();
    for (key, d) in agg.domain_rows() {
        *coherent.entry(key.domain).or_default() += d.coherent_maps;
    }
    let mut findings = Vec::new();
    for (key, d) in agg.domain_rows() {
        let Some((iova, size, prot)) = d.last_noncoherent_map else {
            continue;
        };
        let devices = agg.domain_devices(key.domain);
        let enforcing: Vec<&PciDev> = devices
            .iter()
            .filter_map(|b| snap.pci(b))
            .filter(|dev| dev.snoop_control == Some(true))
            .collect();
        let coherent_maps = coherent.get(&key.domain).copied().unwrap_or(0);
        let mixed = coherent_maps > 0;
        if enforcing.is_empty() && !mixed {
            continue;
        }
        let mut evidence = format!(
            "{} map(s) of memory without IOMMU_CACHE into this domain since ioasid-top \
             attached; the last: {} at IOVA {iova:#x}, prot {prot:#x}.",
            d.noncoherent_maps,
            human_bytes(i128::from(size))
        );
        if mixed {
            evidence.push_str(&format!(
                " The same domain got {coherent_maps} map(s) with IOMMU_CACHE: mixed \
                 attributes."
            ));
        }
        if !enforcing.is_empty() {
            evidence.push_str(&format!(
                " Its devices sit behind an IOMMU with snoop control: {}.",
                describe_devices(snap, &enforcing)
            ));
        }
        findings.push(Finding {
            rule: NONCOHERENT_MAPPING,
            severity: Severity::Warning,
            title: "Non-coherent mapping in a coherent domain",
            subject: format!("pid {} {}, IOMMU domain {:#x}", key.pid, d.comm, key.domain),
            pid: Some(key.pid),
            kvm: None,
            devices: devices.iter().map(|b| (*b).to_owned()).collect(),
            evidence,
            why: "A mapping without IOMMU_CACHE asks for DMA that may go past the CPU caches. \
                  Where the domain enforces coherency, VFIO and iommufd tell KVM the device's \
                  DMA is coherent and the guest gets no working WBINVD; an IOMMU that honours \
                  the per-mapping attribute (VT-d snoops the whole domain instead) then lets \
                  through DMA the guest cannot flush. Memory mapped both ways in one domain \
                  means some caller maps guest memory in a way no VFIO or iommufd path does.",
            action: "Find the caller from the pid and IOVA (`ioasid-top domain` lists the range \
                     with its prot) and why it leaves out IOMMU_CACHE; map memory with it, or \
                     give the device a domain that does not enforce coherency and a KVM-VFIO \
                     device so that KVM knows.",
        });
    }
    findings
}

/// Every rule; worst first, then by rule id and subject.
pub fn evaluate(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let mut f = rule_unneeded_wbinvd(agg, snap);
    f.extend(rule_guest_cannot_flush(agg, snap));
    f.extend(rule_pins_over_memlock(snap));
    f.extend(rule_double_accounted(agg, snap));
    f.extend(rule_pins_outlive_owner(agg, snap));
    f.extend(rule_mapping_anomaly(agg));
    f.extend(rule_noncoherent_mapping(agg, snap));
    f.extend(rule_mappings_outlive_owner(agg, snap));
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.rule.cmp(b.rule))
            .then(a.subject.cmp(&b.subject))
    });
    f
}

/// Exit status for the findings: 0 when none is at warning or above.
pub fn exit_status(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Critical) => EXIT_CRITICAL,
        Some(Severity::Warning) => EXIT_WARNING,
        Some(Severity::Info) | None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, KvmOp};
    use ioasid_ebpf_common::{KvmEvent, PinCounters, kind};

    #[track_caller]
    fn assert_contains(text: &str, part: &str) {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }

    #[test]
    fn limits_parsing() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max locked memory         65536                131072               bytes     \n";
        assert_eq!(parse_limits_memlock(text), Ok((Some(65536), Some(131_072))));
        let unl = "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limits_memlock(unl), Ok((None, None)));
        assert!(parse_limits_memlock("Max cpu time unlimited unlimited\n").is_err());
        assert!(parse_limits_memlock("Max locked memory         lots    1\n").is_err());
    }

    fn kvm(agg: &mut Aggregator, op: KvmOp, vm: u64) {
        let k = match op {
            KvmOp::Register => kind::KVM_REGISTER_NONCOHERENT_DMA,
            KvmOp::Unregister => kind::KVM_UNREGISTER_NONCOHERENT_DMA,
        };
        let e = KvmEvent {
            header: crate::event::tests::hdr(
                k,
                std::mem::size_of::<KvmEvent>(),
                812,
                812,
                "kvm-vfio-worklo",
            ),
            kvm: vm,
        };
        agg.observe(&Event::Kvm(op, e));
    }

    fn snap_with(devs: &[NoSnoop]) -> Snapshot {
        Snapshot {
            vfio_pci: devs
                .iter()
                .enumerate()
                .map(|(i, n)| PciDev {
                    bdf: format!("0000:00:0{i}.0"),
                    no_snoop: n.clone(),
                    snoop_control: Some(false),
                })
                .collect(),
            page_size: 4096,
            ..Snapshot::default()
        }
    }

    #[test]
    fn noncoherent_mapping_needs_an_enforcing_iommu_or_coherent_neighbours() {
        use crate::event::{
            AttachFn, MapFn,
            tests::{attach_event, map_event},
        };
        use ioasid_ebpf_common::prot::{IOMMU_CACHE, IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE};
        const RW: i32 = IOMMU_READ | IOMMU_WRITE;
        // D1: no device known; D2: a device behind an IOMMU without snoop control; D3: one
        // behind an IOMMU with it.
        const D1: u64 = 0xffff_8880_0100_0000;
        const D2: u64 = 0xffff_8880_0200_0000;
        const D3: u64 = 0xffff_8880_0300_0000;
        let mut agg = Aggregator::new();
        for (domain, group, id) in [(D2, 0xa2, 2), (D3, 0xa3, 3)] {
            let a = attach_event(AttachFn::AttachGroupHandle, 40, domain, group, id);
            agg.observe(&Event::Attach(AttachFn::AttachGroupHandle, a));
        }
        agg.fill_group_devices(|id| Some(vec![format!("0000:00:0{id}.0")]));
        let snap = Snapshot {
            vfio_pci: [(2, false), (3, true)]
                .into_iter()
                .map(|(i, sc)| PciDev {
                    bdf: format!("0000:00:0{i}.0"),
                    no_snoop: NoSnoop::Enabled,
                    snoop_control: Some(sc),
                })
                .collect(),
            page_size: 4096,
            ..Snapshot::default()
        };
        let map = |agg: &mut Aggregator, domain: u64, iova: u64, prot: i32| {
            let mut m = map_event(MapFn::IommuMapNosync, 40, 40, domain, iova, 4096, 0);
            m.prot = prot;
            agg.observe(&Event::Map(MapFn::IommuMapNosync, m));
        };
        // Coherent memory and uncached MMIO (iommufd's dma-buf maps) everywhere: nothing.
        for domain in [D1, D2, D3] {
            map(&mut agg, domain, 0x1000, RW | IOMMU_CACHE);
            map(&mut agg, domain, 0x8000_0000, RW | IOMMU_MMIO);
        }
        assert_eq!(rule_noncoherent_mapping(&agg, &snap), []);
        // Non-coherent memory where nothing enforces coherency: how no-snoop DMA works.
        map(&mut agg, D2, 0x2000, RW);
        let f = rule_noncoherent_mapping(&agg, &snap);
        assert_eq!(f.len(), 1, "{f:?}");
        // ...but D2 already held coherent maps: mixed attributes.
        assert_contains(&f[0].subject, "0xffff888002000000");
        assert_contains(&f[0].evidence, "mixed attributes");
        assert_eq!(f[0].devices, ["0000:00:02.0"]);
        // D3's IOMMU has snoop control: a finding naming it, mixed as well.
        map(&mut agg, D3, 0x3000, IOMMU_READ);
        let f = rule_noncoherent_mapping(&agg, &snap);
        assert_eq!(f.len(), 2, "{f:?}");
        let d3 = f
            .iter()
            .find(|x| x.subject.contains("0xffff888003000000"))
            .expect("D3 finding");
        assert_eq!(
            (d3.rule, d3.severity),
            (NONCOHERENT_MAPPING, Severity::Warning)
        );
        assert_contains(&d3.evidence, "IOVA 0x3000, prot 0x1");
        assert_contains(&d3.evidence, "snoop control");
        // A domain of non-coherent maps only, with no device known: nothing.
        let mut alone = Aggregator::new();
        let mut m = map_event(MapFn::IommuMap, 41, 41, D1, 0x4000, 4096, 0);
        m.prot = RW;
        alone.observe(&Event::Map(MapFn::IommuMap, m));
        assert_eq!(rule_noncoherent_mapping(&alone, &snap), []);
        assert!(evaluate(&alone, &snap).is_empty());
        // ...but where another process mapped coherently, the domain's attributes are mixed.
        let mut m = map_event(MapFn::IommuMap, 42, 42, D1, 0x5000, 4096, 0);
        m.prot = RW | IOMMU_CACHE;
        alone.observe(&Event::Map(MapFn::IommuMap, m));
        let f = rule_noncoherent_mapping(&alone, &snap);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pid, Some(41));
        assert_contains(
            &f[0].evidence,
            "1 map(s) with IOMMU_CACHE: mixed attributes",
        );
    }

    #[test]
    fn mapping_anomaly_reports_failed_maps_and_short_unmaps_per_domain() {
        use crate::event::{
            AttachFn, MapFn, UnmapFn,
            tests::{attach_event, map_event, unmap_event},
        };
        const D1: u64 = 0xffff_8880_0100_0000;
        const D2: u64 = 0xffff_8880_0200_0000;
        let mut agg = Aggregator::new();
        // Clean traffic: maps, a full unmap, and type1's fast unmap that unmapped nothing
        // followed by the slow one.
        for (iova, size) in [(0x10_0000, 4096), (0x20_0000, 8192)] {
            let m = map_event(MapFn::IommuMap, 40, 40, D1, iova, size, 0);
            agg.observe(&Event::Map(MapFn::IommuMap, m));
        }
        let full = unmap_event(UnmapFn::IommuUnmap, 40, D1, 0x10_0000, 4096, 4096);
        agg.observe(&Event::Unmap(UnmapFn::IommuUnmap, full));
        let fast = unmap_event(UnmapFn::IommuUnmapFast, 40, D1, 0x20_0000, 8192, 0);
        agg.observe(&Event::Unmap(UnmapFn::IommuUnmapFast, fast));
        let slow = unmap_event(UnmapFn::IommuUnmap, 40, D1, 0x20_0000, 8192, 8192);
        agg.observe(&Event::Unmap(UnmapFn::IommuUnmap, slow));
        assert_eq!(rule_mapping_anomaly(&agg), []);

        // A failed map into D1: a warning naming the errno.
        let failed = map_event(MapFn::IommuMap, 40, 40, D1, 0x4000_0000, 2 << 20, -12);
        agg.observe(&Event::Map(MapFn::IommuMap, failed));
        let f = rule_mapping_anomaly(&agg);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].rule, f[0].severity),
            (MAPPING_ANOMALY, Severity::Warning)
        );
        assert_eq!(f[0].pid, Some(40));
        assert_contains(&f[0].subject, "0xffff888001000000");
        assert_contains(&f[0].evidence, "returned -12");
        assert_contains(&f[0].evidence, "0x40000000");

        assert_eq!(
            f[0].devices,
            Vec::<String>::new(),
            "no device seen attached"
        );

        // A short unmap in D2, attached to a device, by another process: critical, and the
        // worst finding, naming the device.
        let a = attach_event(AttachFn::AttachGroup, 41, D2, 0xa2, 2);
        agg.observe(&Event::Attach(AttachFn::AttachGroup, a));
        agg.fill_group_devices(|id| Some(vec![format!("0000:00:0{id}.0")]));
        let short = unmap_event(UnmapFn::IommuUnmap, 41, D2, 0x8000, 8192, 4096);
        agg.observe(&Event::Unmap(UnmapFn::IommuUnmap, short));
        let f = rule_mapping_anomaly(&agg);
        assert_eq!(f.len(), 2);
        let crit: Vec<_> = f
            .iter()
            .filter(|f| f.severity == Severity::Critical)
            .collect();
        assert_eq!(crit.len(), 1);
        assert_eq!(crit[0].pid, Some(41));
        assert_contains(&crit[0].evidence, "asked for 8.0 KiB");
        assert_contains(&crit[0].evidence, "unmapped 4.0 KiB");
        assert_eq!(crit[0].devices, ["0000:00:02.0"]);
        let snap = Snapshot::default();
        assert_eq!(exit_status(&evaluate(&agg, &snap)), EXIT_CRITICAL);
    }

    #[test]
    fn wbinvd_fires_for_a_noncoherent_vm_with_only_snooping_devices() {
        let mut agg = Aggregator::new();
        kvm(&mut agg, KvmOp::Register, 0xffff_c900_0000_1000);
        let snap = snap_with(&[NoSnoop::ConventionalPci, NoSnoop::Disabled]);
        let f = rule_unneeded_wbinvd(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, UNNEEDED_WBINVD);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].kvm, Some(0xffff_c900_0000_1000));
        assert_eq!(f[0].pid, Some(812));
        assert_eq!(f[0].devices, ["0000:00:00.0", "0000:00:01.0"]);
        assert_contains(&f[0].evidence, "vfio-pci");
        assert!(f[0].evidence.contains("conventional PCI"));
        assert_eq!(exit_status(&evaluate(&agg, &snap)), EXIT_WARNING);
    }

    #[test]
    fn wbinvd_does_not_fire() {
        let conventional = snap_with(&[NoSnoop::ConventionalPci]);
        // No KVM call seen, or the VM unregistered: coherent.
        let mut agg = Aggregator::new();
        assert!(rule_unneeded_wbinvd(&agg, &conventional).is_empty());
        kvm(&mut agg, KvmOp::Register, 1);
        kvm(&mut agg, KvmOp::Unregister, 1);
        assert!(rule_unneeded_wbinvd(&agg, &conventional).is_empty());
        // Registered, but a device can issue no-snoop, or cannot be told, or none is known.
        kvm(&mut agg, KvmOp::Register, 2);
        for devs in [
            &[NoSnoop::ConventionalPci, NoSnoop::Enabled][..],
            &[NoSnoop::Unknown("x".into())],
            &[],
        ] {
            assert!(
                rule_unneeded_wbinvd(&agg, &snap_with(devs)).is_empty(),
                "{devs:?}"
            );
        }
        assert_eq!(exit_status(&evaluate(&agg, &snap_with(&[]))), 0);
    }

    #[test]
    fn mappings_outlive_owner_needs_an_attached_vfio_device_nobody_holds() {
        use crate::event::{
            AttachFn, MapFn, UnmapFn,
            tests::{attach_event, map_event, unmap_event},
        };
        const D: u64 = 0xffff_8880_0100_0000;
        const EDU: &str = "0000:00:0a.0";
        let mut agg = Aggregator::new();
        let a = attach_event(AttachFn::AttachGroup, 50, D, 0xa0, 10);
        agg.observe(&Event::Attach(AttachFn::AttachGroup, a));
        agg.fill_group_devices(|_| Some(vec![EDU.to_owned()]));
        for iova in [0x10_0000, 0x20_0000] {
            let m = map_event(MapFn::IommuMap, 50, 50, D, iova, 8192, 0);
            agg.observe(&Event::Map(MapFn::IommuMap, m));
        }
        let vfio_bound = Snapshot {
            vfio_pci: vec![PciDev {
                bdf: EDU.into(),
                no_snoop: NoSnoop::ConventionalPci,
                snoop_control: Some(false),
            }],
            page_size: 4096,
            ..Snapshot::default()
        };
        // The VMM holds the device: its mappings are in use.
        let mut held = vfio_bound.clone();
        held.files.insert(50, vmm_files(&[EDU], 1));
        assert_eq!(rule_mappings_outlive_owner(&agg, &held), []);
        // The device bound to another driver: a kernel driver's own domain.
        let other_driver = Snapshot {
            vfio_pci: Vec::new(),
            ..vfio_bound.clone()
        };
        assert_eq!(rule_mappings_outlive_owner(&agg, &other_driver), []);
        // Under --pid, or with files it cannot read, who holds the device is not known; a
        // legacy group-path device fd does not say which device it is.
        let filtered = Snapshot {
            pid_filter: Some(50),
            ..vfio_bound.clone()
        };
        assert_eq!(rule_mappings_outlive_owner(&agg, &filtered), []);
        let unreadable = Snapshot {
            files_unreadable: 1,
            ..vfio_bound.clone()
        };
        assert_eq!(rule_mappings_outlive_owner(&agg, &unreadable), []);
        let mut group_device_fd = vfio_bound.clone();
        group_device_fd.files.insert(
            60,
            ProcFiles {
                vfio_group_device_fds: 1,
                ..ProcFiles::default()
            },
        );
        assert_eq!(rule_mappings_outlive_owner(&agg, &group_device_fd), []);

        // Nobody holds it, still attached, 16 KiB mapped: critical, naming the device.
        let f = rule_mappings_outlive_owner(&agg, &vfio_bound);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].rule, f[0].severity),
            (MAPPINGS_OUTLIVE_OWNER, Severity::Critical)
        );
        assert_eq!(f[0].devices, [EDU]);
        assert_contains(&f[0].subject, "0xffff888001000000");
        assert_contains(
            &f[0].evidence,
            "16.0 KiB more was mapped into it than unmapped",
        );
        assert_contains(&f[0].evidence, "by pid 50");
        assert_contains(&f[0].evidence, "bound to vfio-pci: 0000:00:0a.0");
        assert_eq!(exit_status(&evaluate(&agg, &vfio_bound)), EXIT_CRITICAL);
        // Another group on the domain, a bridge not bound to VFIO: still the VFIO device's
        // domain (and once the VFIO device's group is detached below, nobody's).
        let b = attach_event(AttachFn::AttachGroup, 50, D, 0xb0, 11);
        agg.observe(&Event::Attach(AttachFn::AttachGroup, b));
        agg.fill_group_devices(|_| Some(vec!["0000:00:1c.0".to_owned()]));
        assert_eq!(agg.domain_devices(D), [EDU, "0000:00:1c.0"]);
        assert_eq!(rule_mappings_outlive_owner(&agg, &vfio_bound).len(), 1);

        // Everything unmapped (by another process: net per domain): nothing.
        let u = unmap_event(UnmapFn::IommuUnmap, 51, D, 0x10_0000, 16384, 16384);
        agg.observe(&Event::Unmap(UnmapFn::IommuUnmap, u));
        assert_eq!(rule_mappings_outlive_owner(&agg, &vfio_bound), []);

        // Mapped again, then detached: the domain reaches no device any more.
        let m = map_event(MapFn::IommuMap, 50, 50, D, 0x30_0000, 4096, 0);
        agg.observe(&Event::Map(MapFn::IommuMap, m));
        assert_eq!(rule_mappings_outlive_owner(&agg, &vfio_bound).len(), 1);
        let d = attach_event(AttachFn::DetachGroup, 50, D, 0xa0, 10);
        agg.observe(&Event::Attach(AttachFn::DetachGroup, d));
        assert_eq!(rule_mappings_outlive_owner(&agg, &vfio_bound), []);
    }

    fn vmm_files(devices: &[&str], kvm_vfio_devices: u32) -> ProcFiles {
        ProcFiles {
            comm: "kvm-vfio-worklo".into(),
            devices: devices.iter().map(|d| (*d).to_owned()).collect(),
            kvm_vms: 1,
            kvm_vfio_devices,
            ..ProcFiles::default()
        }
    }

    #[test]
    fn wbinvd_looks_at_the_devices_the_vm_process_holds() {
        let mut agg = Aggregator::new();
        kvm(&mut agg, KvmOp::Register, 7);
        // Device 0 cannot issue no-snoop, device 1 can; pid 812 holds only device 0.
        let mut snap = snap_with(&[NoSnoop::ConventionalPci, NoSnoop::Enabled]);
        assert!(
            rule_unneeded_wbinvd(&agg, &snap).is_empty(),
            "heuristic: all of vfio-pci"
        );
        snap.files.insert(812, vmm_files(&["0000:00:00.0"], 1));
        let f = rule_unneeded_wbinvd(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].devices, ["0000:00:00.0"]);
        assert_contains(&f[0].evidence, "/proc/812/fd");
        // The test kernel's override says every device can: the exposure is needed.
        snap.no_snoop_override = Some(true);
        assert!(rule_unneeded_wbinvd(&agg, &snap).is_empty());
    }

    #[test]
    fn cannot_flush_fires_without_a_kvm_vfio_device() {
        let agg = Aggregator::new();
        let mut snap = snap_with(&[NoSnoop::Enabled]);
        snap.files.insert(812, vmm_files(&["0000:00:00.0"], 0));
        let f = rule_guest_cannot_flush(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, GUEST_CANNOT_FLUSH);
        // The devices may be the VMM's own: a warning.
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!((f[0].pid, f[0].kvm), (Some(812), None));
        assert_eq!(f[0].devices, ["0000:00:00.0"]);
        assert_contains(&f[0].evidence, "no KVM-VFIO device");
        assert_eq!(exit_status(&evaluate(&agg, &snap)), EXIT_WARNING);
    }

    #[test]
    fn cannot_flush_fires_when_kvm_was_last_told_coherent() {
        let mut agg = Aggregator::new();
        kvm(&mut agg, KvmOp::Register, 9);
        kvm(&mut agg, KvmOp::Unregister, 9);
        let mut snap = snap_with(&[NoSnoop::ConventionalPci]);
        snap.no_snoop_override = Some(true);
        snap.files.insert(812, vmm_files(&["0000:00:00.0"], 1));
        let f = rule_guest_cannot_flush(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kvm, Some(9));
        // KVM was told, and told wrong: critical.
        assert_eq!(f[0].severity, Severity::Critical);
        assert_contains(&f[0].evidence, "no_snoop_override");
        assert_contains(&f[0].evidence, "last seen unregistering");
    }

    #[test]
    fn cannot_flush_does_not_fire() {
        let mut agg = Aggregator::new();
        let told = vmm_files(&["0000:00:00.0"], 1);
        // The device cannot issue no-snoop, or nothing says.
        for devs in [NoSnoop::Disabled, NoSnoop::Unknown("x".into())] {
            let mut snap = snap_with(&[devs]);
            snap.files.insert(812, vmm_files(&["0000:00:00.0"], 0));
            assert!(rule_guest_cannot_flush(&agg, &snap).is_empty());
        }
        // The IOMMU enforces coherency, or is not known to let no-snoop through.
        for sc in [Some(true), None] {
            let mut snap = snap_with(&[NoSnoop::Enabled]);
            snap.vfio_pci[0].snoop_control = sc;
            snap.files.insert(812, vmm_files(&["0000:00:00.0"], 0));
            assert!(rule_guest_cannot_flush(&agg, &snap).is_empty(), "{sc:?}");
        }
        // Told (a KVM-VFIO device, no call seen: cannot know otherwise), or registered.
        let mut snap = snap_with(&[NoSnoop::Enabled]);
        snap.files.insert(812, told);
        assert!(rule_guest_cannot_flush(&agg, &snap).is_empty());
        kvm(&mut agg, KvmOp::Register, 9);
        assert!(rule_guest_cannot_flush(&agg, &snap).is_empty());
        // No VM in the process: not a guest.
        let mut no_vm = vmm_files(&["0000:00:00.0"], 0);
        no_vm.kvm_vms = 0;
        snap.files.insert(812, no_vm);
        assert!(rule_guest_cannot_flush(&agg, &snap).is_empty());
    }

    fn map(agg: &mut Aggregator, domain: u64, iova: u64, paddr: u64, size: u64) {
        let e = ioasid_ebpf_common::MapEvent {
            header: crate::event::tests::hdr(
                kind::IOMMU_MAP_NOSYNC,
                std::mem::size_of::<ioasid_ebpf_common::MapEvent>(),
                812,
                812,
                "vfio-double-map",
            ),
            domain,
            iova,
            paddr,
            size,
            prot: 3,
            gfp: 0,
            ret: 0,
            _pad: 0,
        };
        agg.observe(&Event::Map(crate::event::MapFn::IommuMapNosync, e));
    }

    /// pid 812 mapped 1 MiB at paddr 0x4000_0000 into domains 0xa and 0xb, and its VmPin
    /// went from `pin0` to `pin_now` pages.
    fn double_map(pin0: u64, pin_now: u64) -> (Aggregator, Snapshot) {
        let mut agg = Aggregator::new();
        agg.track_phys();
        map(&mut agg, 0xa, 0x10_0000, 0x4000_0000, 1 << 20);
        map(&mut agg, 0xb, 0x10_0000, 0x4000_0000, 1 << 20);
        let mut snap = Snapshot {
            page_size: 4096,
            ..Snapshot::default()
        };
        snap.procs.insert(812, proc_mem(0, pin_now, None));
        if pin0 > 0 {
            snap.charged_at_start.insert(812, (pin0, 0));
        }
        (agg, snap)
    }

    #[test]
    fn double_accounting_fires_when_every_copy_was_charged() {
        // 2 MiB mapped, 1 MiB distinct, 512 pages charged since attach.
        let (agg, snap) = double_map(100, 612);
        let f = rule_double_accounted(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, DOUBLE_ACCOUNTED);
        assert_eq!(f[0].pid, Some(812));
        assert_contains(&f[0].evidence, "2.0 MiB into 2 IOMMU domains");
        assert_contains(&f[0].evidence, "VmPin grew by 2.0 MiB");
        assert_eq!(exit_status(&evaluate(&agg, &snap)), EXIT_WARNING);
    }

    #[test]
    fn double_accounting_does_not_fire() {
        // Charged once (one IOAS in two domains, or /dev/ioasid), or the charge predates attach.
        for (pin0, pin_now) in [(0, 256), (556, 812)] {
            let (agg, snap) = double_map(pin0, pin_now);
            assert!(
                rule_double_accounted(&agg, &snap).is_empty(),
                "{pin0} {pin_now}"
            );
        }
        // Mapped once, charged once; or not tracked at all.
        let mut agg = Aggregator::new();
        agg.track_phys();
        map(&mut agg, 0xa, 0, 0x4000_0000, 1 << 20);
        let (_, snap) = double_map(0, 256);
        assert!(rule_double_accounted(&agg, &snap).is_empty());
        let (_, snap) = double_map(0, 512);
        assert!(rule_double_accounted(&Aggregator::new(), &snap).is_empty());
    }

    fn pins(longterm: u64, unpinned: u64, comm: &str) -> PinCounters {
        let mut c = PinCounters {
            longterm,
            pinned: longterm,
            unpinned,
            ..PinCounters::default()
        };
        c.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        c
    }

    #[test]
    fn pins_outlive_an_owner_whose_file_another_process_holds() {
        let mut agg = Aggregator::new();
        // 812 pinned 256 and exited; its child 813 holds the file.
        // A kworker dropped 500 short-term pins of others' I/O: not counted.
        agg.pins_mut().update(
            Default::default(),
            &[
                (813, pins(0, 0, "child")),
                (10, pins(0, 500, "kworker/u8:0")),
            ],
            &[(812, pins(256, 0, "orphaner"))],
        );
        let mut snap = Snapshot::default();
        snap.kernel_threads.insert(10);
        snap.files.insert(
            813,
            ProcFiles {
                comm: "child".into(),
                iommufd_files: 1,
                ..ProcFiles::default()
            },
        );
        let f = rule_pins_outlive_owner(&agg, &snap);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].rule, f[0].pid), (PINS_OUTLIVE_OWNER, Some(812)));
        assert_contains(&f[0].evidence, "256 of them are still held");
        assert_contains(&f[0].evidence, "pid 813 child");
        assert_eq!(exit_status(&evaluate(&agg, &snap)), EXIT_WARNING);
    }

    #[test]
    fn pins_do_not_outlive_an_owner_that_dropped_them_or_whose_holder_did() {
        let snap = Snapshot::default();
        // Nobody holds a VFIO or IOMMU file: what looks held was dropped by a kernel thread.
        let mut agg = Aggregator::new();
        agg.pins_mut()
            .update(Default::default(), &[], &[(812, pins(256, 0, "uring"))]);
        assert!(rule_pins_outlive_owner(&agg, &snap).is_empty());
        let mut snap = snap;
        snap.files.insert(
            813,
            ProcFiles {
                comm: "holder".into(),
                iommufd_files: 1,
                ..ProcFiles::default()
            },
        );
        for (live, exited) in [
            // Exited after dropping its pins (its files closed as it exited).
            (vec![], vec![(812, pins(256, 256, "w"))]),
            // Its child dropped them when it closed the file.
            (
                vec![(813, pins(0, 256, "child"))],
                vec![(812, pins(256, 0, "w"))],
            ),
            // Alive and holding: not an orphan.
            (vec![(812, pins(256, 0, "w"))], vec![]),
        ] {
            let mut agg = Aggregator::new();
            agg.pins_mut().update(Default::default(), &live, &exited);
            assert!(
                rule_pins_outlive_owner(&agg, &snap).is_empty(),
                "{live:?} {exited:?}"
            );
        }
    }

    fn proc_mem(lck_pages: u64, pin_pages: u64, soft: Option<u64>) -> ProcMem {
        ProcMem {
            comm: "vfio-edu-worklo".into(),
            vm_lck_pages: lck_pages,
            vm_pin_pages: pin_pages,
            memlock_soft: soft,
            memlock_hard: soft,
        }
    }

    #[test]
    fn memlock_fires_over_the_soft_limit() {
        for (lck, pin) in [(64, 0), (0, 17), (20, 20)] {
            let mut snap = Snapshot {
                page_size: 4096,
                ..Snapshot::default()
            };
            snap.procs.insert(42, proc_mem(lck, pin, Some(65536)));
            let f = rule_pins_over_memlock(&snap);
            assert_eq!(f.len(), 1, "{lck} {pin}");
            assert_eq!(f[0].rule, PINS_OVER_MEMLOCK);
            assert_eq!(f[0].pid, Some(42));
            assert!(f[0].evidence.contains("/proc/42/limits"));
            assert_contains(&f[0].evidence, "soft 64.0 KiB");
            assert_eq!(exit_status(&f), EXIT_WARNING);
        }
    }

    #[test]
    fn memlock_does_not_fire() {
        let mut snap = Snapshot {
            page_size: 4096,
            ..Snapshot::default()
        };
        // At the limit, under it, unlimited.
        snap.procs.insert(1, proc_mem(16, 16, Some(65536)));
        snap.procs.insert(2, proc_mem(1, 0, Some(8 << 20)));
        snap.procs.insert(3, proc_mem(1 << 20, 1 << 20, None));
        assert!(rule_pins_over_memlock(&snap).is_empty());
        assert_eq!(exit_status(&evaluate(&Aggregator::new(), &snap)), 0);
    }

    #[test]
    fn exit_status_is_the_worst_severity() {
        let mut snap = Snapshot {
            page_size: 4096,
            ..Snapshot::default()
        };
        snap.procs.insert(1, proc_mem(100, 0, Some(0)));
        let mut f = rule_pins_over_memlock(&snap);
        f[0].severity = Severity::Info;
        assert_eq!(exit_status(&f), 0);
        f.push(f[0].clone());
        f[1].severity = Severity::Critical;
        assert_eq!(exit_status(&f), EXIT_CRITICAL);
        assert_eq!(exit_status(&[]), 0);
    }

    #[test]
    fn snapshot_reads_sysfs_and_procfs() {
        let root = std::env::temp_dir().join(format!("ioasid-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let sys = root.join("sys");
        let proc_ = root.join("proc");
        let drv = sys.join("bus/pci/drivers/vfio-pci");
        fs::create_dir_all(drv.join("0000:00:03.0")).expect("mkdir");
        fs::write(drv.join("bind"), "").expect("write");
        let dev = sys.join("bus/pci/devices/0000:00:03.0");
        fs::create_dir_all(&dev).expect("mkdir");
        // QEMU's edu device: 1234:11e8, no capability list (conventional PCI).
        let mut edu_config = vec![0u8; 256];
        edu_config[0..4].copy_from_slice(&[0x34, 0x12, 0xe8, 0x11]);
        fs::write(dev.join("config"), &edu_config).expect("write");
        for (pid, lck) in [(7, 64), (8, 0)] {
            let d = proc_.join(pid.to_string());
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(
                d.join("status"),
                format!("Name:\tw{pid}\nVmPin:\t0 kB\nVmLck:\t{lck} kB\n"),
            )
            .expect("write");
            fs::write(
                d.join("limits"),
                "Max locked memory         65536                65536                bytes\n",
            )
            .expect("write");
        }
        // A device bound to no VFIO driver, in a domain of a kernel user of the IOMMU API,
        // behind an intel-iommu with snoop control.
        let own = sys.join("bus/pci/devices/0000:00:0a.0");
        fs::create_dir_all(&own).expect("mkdir");
        fs::write(own.join("config"), &edu_config).expect("write");
        let dmar = sys.join("devices/virtual/iommu/dmar0");
        fs::create_dir_all(dmar.join("intel-iommu")).expect("mkdir");
        fs::write(dmar.join("intel-iommu/ecap"), "f00fca\n").expect("write");
        std::os::unix::fs::symlink(&dmar, own.join("iommu")).expect("symlink");
        let in_domains = ["0000:00:03.0", "0000:00:0a.0"];
        let snap = read_snapshot(&sys, &proc_, &root.join("debug"), None, &in_domains, 4096)
            .expect("snapshot");
        let _ = fs::remove_dir_all(&root);
        assert_eq!(
            snap.vfio_pci,
            [PciDev {
                bdf: "0000:00:03.0".into(),
                no_snoop: NoSnoop::ConventionalPci,
                snoop_control: None,
            }]
        );
        // Not read twice: 0000:00:03.0 is vfio-pci's.
        assert_eq!(
            snap.in_domains,
            [PciDev {
                bdf: "0000:00:0a.0".into(),
                no_snoop: NoSnoop::ConventionalPci,
                snoop_control: Some(true),
            }]
        );
        assert_eq!(
            snap.pci("0000:00:0a.0").and_then(|d| d.snoop_control),
            Some(true)
        );
        assert_eq!(snap.procs.keys().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(snap.procs[&7].vm_lck_pages, 16);
        assert_eq!(snap.procs[&7].memlock_soft, Some(65536));
        assert!(rule_pins_over_memlock(&snap).is_empty(), "at the limit");
    }
}
