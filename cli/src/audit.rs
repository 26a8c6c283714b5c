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
//! - [`PINS_OVER_MEMLOCK`]: a process holds more locked or pinned memory than its
//!   `RLIMIT_MEMLOCK`.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{aggregate::Aggregator, startstate, table::human_bytes};
use ioasid_uapi::pci::{NoSnoop, parse_pci_config};

/// Rule id: unneeded wbinvd exposure.
pub const UNNEEDED_WBINVD: &str = "unneeded-wbinvd-exposure";
/// Rule id: pinned or locked pages over `RLIMIT_MEMLOCK`.
pub const PINS_OVER_MEMLOCK: &str = "pins-over-memlock";

/// Exit status of `ioasid-top audit --once` when the worst finding is a warning.
pub const EXIT_WARNING: u8 = 3;
/// ... when the worst finding is critical.
pub const EXIT_CRITICAL: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    #[allow(dead_code, reason = "part of the contract; no rule reports it yet")]
    Info,
    Warning,
    #[allow(dead_code, reason = "part of the contract; no rule reports it yet")]
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

/// A device bound to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDev {
    pub bdf: String,
    pub no_snoop: NoSnoop,
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
    /// Processes with VmLck or VmPin non-zero.
    pub procs: BTreeMap<u32, ProcMem>,
    pub page_size: u64,
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
/// that process. Processes that vanish are skipped; other per-process errors are warned
/// about on stderr.
pub fn read_snapshot(
    sys_root: &Path,
    proc_root: &Path,
    pid: Option<u32>,
    page_size: u64,
) -> anyhow::Result<Snapshot> {
    let mut snap = Snapshot {
        page_size,
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
                let cfg_path: PathBuf = sys_root.join("bus/pci/devices").join(&name).join("config");
                let no_snoop = match fs::read(&cfg_path) {
                    Ok(b) => parse_pci_config(&b),
                    Err(err) => NoSnoop::Unknown(format!("reading {}: {err}", cfg_path.display())),
                };
                snap.vfio_pci.push(PciDev {
                    bdf: name,
                    no_snoop,
                });
            }
            snap.vfio_pci.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", drv.display())),
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

/// Rule [`UNNEEDED_WBINVD`].
pub fn rule_unneeded_wbinvd(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let devs = &snap.vfio_pci;
    // Nothing bound to vfio-pci: the VM's files are of another VFIO driver; cannot tell.
    if devs.is_empty() || !devs.iter().all(|d| d.no_snoop.cannot()) {
        return Vec::new();
    }
    let listed = devs
        .iter()
        .map(|d| format!("{}: {}", d.bdf, d.no_snoop.describe()))
        .collect::<Vec<_>>()
        .join("; ");
    agg.kvm_rows()
        .into_iter()
        .filter(|(_, vm)| vm.noncoherent)
        .map(|(kvm, vm)| Finding {
            rule: UNNEEDED_WBINVD,
            severity: Severity::Warning,
            title: "Unneeded wbinvd exposure",
            subject: format!("KVM VM {kvm:#x} (pid {} {})", vm.pid, vm.comm),
            pid: Some(vm.pid),
            kvm: Some(kvm),
            devices: devs.iter().map(|d| d.bdf.clone()).collect(),
            evidence: format!(
                "kvm_arch_register_noncoherent_dma seen for this VM ({} register, {} unregister: \
                 non-coherent DMA on, KVM honours the guest's WBINVD). Devices that could be \
                 behind it, by heuristic all those bound to vfio-pci (ioasid-top does not see \
                 which VFIO files the VM holds), from their PCI config space in sysfs: {listed}. \
                 None of them can issue no-snoop DMA.",
                vm.registers, vm.unregisters
            ),
            why: "KVM turned on WBINVD emulation because the IOMMU does not enforce cache \
                  coherency, not because a device needs it: none can issue no-snoop. A guest \
                  looping WBINVD then flushes the caches of every host CPU it ran on, slowing \
                  its neighbours, for no correctness gain.",
            action: "Assign the devices through an IOMMU that enforces cache coherency \
                     (Intel VT-d snoop control, ECAP.SC; a vIOMMU with snoop-control=on), or \
                     keep such VMs on dedicated CPUs. If a device can enable no-snoop later \
                     (PCIe, Enable No Snoop settable by the guest), the exposure is needed.",
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

/// Every rule; worst first, then by rule id and subject.
pub fn evaluate(agg: &Aggregator, snap: &Snapshot) -> Vec<Finding> {
    let mut f = rule_unneeded_wbinvd(agg, snap);
    f.extend(rule_pins_over_memlock(snap));
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
    use ioasid_ebpf_common::{KvmEvent, kind};

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
                })
                .collect(),
            procs: BTreeMap::new(),
            page_size: 4096,
        }
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
        assert!(f[0].evidence.contains("vfio-pci"), "{}", f[0].evidence);
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
            assert!(f[0].evidence.contains("soft 64.0 KiB"), "{}", f[0].evidence);
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
        fs::write(dev.join("config"), edu_config).expect("write");
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
        let snap = read_snapshot(&sys, &proc_, None, 4096).expect("snapshot");
        let _ = fs::remove_dir_all(&root);
        assert_eq!(
            snap.vfio_pci,
            [PciDev {
                bdf: "0000:00:03.0".into(),
                no_snoop: NoSnoop::ConventionalPci
            }]
        );
        assert_eq!(snap.procs.keys().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(snap.procs[&7].vm_lck_pages, 16);
        assert_eq!(snap.procs[&7].memlock_soft, Some(65536));
        assert!(rule_pins_over_memlock(&snap).is_empty(), "at the limit");
    }
}
