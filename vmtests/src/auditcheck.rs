//! Did `ioasid-top audit --once --json` report exactly the findings a scenario provokes?
//!
//! Input: its output (one final report block) and its exit status. The check is exact: the
//! `finding` lines of the final block name exactly the expected rules, each once (and, when
//! the expectation gives a pid, about that process); every finding has its severity, subject,
//! evidence, why and action; the exit status is that of the worst finding (0 none, 3 warning,
//! 4 critical, docs/json-lines.md); the six IOMMU/KVM probes attached (a clean audit by a
//! tracer that is not there proves nothing) and no event was lost.
//!
//! Per rule: `unneeded-wbinvd-exposure` names a KVM VM whose `kvm` line in the same block has
//! `noncoherent_dma: true`; `guest-cannot-flush` names no VM or one with `noncoherent_dma:
//! false`. Both name devices, and with a pid expected, their evidence says they are those
//! the process holds (`/proc/<pid>/fd`), not the vfio-pci heuristic.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The IOMMU and KVM functions whose probes must have attached.
pub const PROBES: [&str; 6] = [
    "iommu_map",
    "iommu_map_nosync",
    "iommu_unmap",
    "iommu_unmap_fast",
    crate::kvmcheck::REGISTER_FN,
    crate::kvmcheck::UNREGISTER_FN,
];

/// One expected finding: its rule id and, optionally, the pid it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub rule: String,
    pub pid: Option<u64>,
}

impl std::str::FromStr for Expected {
    type Err = anyhow::Error;
    /// `RULE` or `RULE@PID`.
    fn from_str(s: &str) -> Result<Self> {
        let (rule, pid) = match s.split_once('@') {
            Some((r, p)) => (r, Some(p.parse().with_context(|| format!("pid of {s:?}"))?)),
            None => (s, None),
        };
        ensure!(
            !rule.is_empty() && rule.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{s:?} is not a rule id"
        );
        Ok(Expected {
            rule: rule.to_owned(),
            pid,
        })
    }
}

/// The exit status `ioasid-top audit --once` gives for a worst severity.
pub fn status_for(worst: Option<&str>) -> Result<i32> {
    Ok(match worst {
        None | Some("info") => 0,
        Some("warning") => 3,
        Some("critical") => 4,
        Some(s) => bail!("unknown severity {s:?}"),
    })
}

fn rank(sev: &str) -> u8 {
    match sev {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// Checks; returns a one-line verdict.
pub fn check(jsonl: &str, status: i32, expected: &[Expected]) -> Result<String> {
    let lines: Vec<Value> = jsonl
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: {l}", i + 1)))
        .collect::<Result<_>>()?;
    let ty = |v: &Value| v["type"].as_str().unwrap_or("").to_owned();

    for f in PROBES {
        let p = lines
            .iter()
            .find(|l| ty(l) == "probe" && l["fn"] == f)
            .with_context(|| format!("no probe line for {f}"))?;
        ensure!(p["attach"] != "none", "{f} was not traced: {p}");
    }

    let summaries: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| ty(l) == "summary")
        .map(|(i, _)| i)
        .collect();
    let [end] = summaries.as_slice() else {
        bail!(
            "expected one report block (--once), found {} summary lines",
            summaries.len()
        );
    };
    let last = &lines[*end];
    ensure!(last["final"] == true, "the summary is not final: {last}");
    ensure!(last["lost_events"] == 0, "events were lost: {last}");
    // The block starts at its first `kind` line.
    let start = lines
        .iter()
        .position(|l| ty(l) == "kind")
        .context("no kind line")?;
    let block = &lines[start..*end];

    let findings: Vec<&Value> = block.iter().filter(|l| ty(l) == "finding").collect();
    let mut worst: Option<&str> = None;
    for f in &findings {
        let sev = f["severity"]
            .as_str()
            .with_context(|| format!("finding without severity: {f}"))?;
        status_for(Some(sev))?;
        for field in ["rule", "title", "subject", "evidence", "why", "action"] {
            ensure!(
                f[field].as_str().is_some_and(|s| !s.is_empty()),
                "finding without {field}: {f}"
            );
        }
        if worst.is_none_or(|w| rank(sev) > rank(w)) {
            worst = Some(sev);
        }
    }

    let mut got: Vec<&str> = findings.iter().filter_map(|f| f["rule"].as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|e| e.rule.as_str()).collect();
    want.sort_unstable();
    ensure!(
        got == want,
        "findings {got:?}, expected exactly {want:?}:\n{}",
        findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );

    for e in expected {
        let f = findings
            .iter()
            .find(|f| f["rule"] == e.rule.as_str())
            .context("checked above")?;
        if let Some(pid) = e.pid {
            ensure!(f["pid"] == pid, "{} is not about pid {pid}: {f}", e.rule);
        }
        let wants_noncoherent = match e.rule.as_str() {
            "unneeded-wbinvd-exposure" => Some(true),
            "guest-cannot-flush" => Some(false),
            _ => None,
        };
        if let Some(noncoherent) = wants_noncoherent {
            match f["kvm"].as_str() {
                Some(kvm) => {
                    let vm = block
                        .iter()
                        .find(|l| ty(l) == "kvm" && l["kvm"] == kvm)
                        .with_context(|| format!("no kvm line for {kvm} in the block"))?;
                    ensure!(
                        vm["noncoherent_dma"] == noncoherent,
                        "VM {kvm} does not have noncoherent_dma {noncoherent}: {vm}"
                    );
                }
                None => ensure!(!noncoherent, "{} names no KVM VM: {f}", e.rule),
            }
            ensure!(
                f["devices"].as_array().is_some_and(|d| !d.is_empty()),
                "no devices in {f}"
            );
            if let Some(pid) = e.pid {
                let source = format!("/proc/{pid}/fd");
                ensure!(
                    f["evidence"].as_str().is_some_and(|s| s.contains(&source)),
                    "the evidence does not say the devices are those {source} holds: {f}"
                );
            }
        }
    }

    let want_status = status_for(worst)?;
    ensure!(
        status == want_status,
        "exit status {status}, expected {want_status} for the worst finding {worst:?}"
    );
    Ok(if want.is_empty() {
        format!("no findings, exit status {status}")
    } else {
        format!("exactly {want:?}, exit status {status}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_LINES: &str = r#"{"v":2,"type":"probe","fn":"iommu_map","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"iommu_map_nosync","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"iommu_unmap","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"iommu_unmap_fast","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"kvm_arch_register_noncoherent_dma","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"kvm_arch_unregister_noncoherent_dma","attach":"fexit","error":null}
{"v":2,"type":"kind","fn":"iommu_map","calls":0,"failed":0,"bytes":0}
"#;
    const KVM_ON: &str = r#"{"v":2,"type":"kvm","kvm":"0xffffc90000a41000","pid":77,"comm":"kvm-vfio-worklo","noncoherent_dma":true,"registers":1,"unregisters":0,"last_op":"register","last_ts_ns":1}
"#;
    const WBINVD: &str = r#"{"v":2,"type":"finding","rule":"unneeded-wbinvd-exposure","severity":"warning","title":"t","subject":"s","pid":77,"kvm":"0xffffc90000a41000","devices":["0000:00:03.0"],"evidence":"the VFIO devices pid 77 holds (from /proc/77/fd)","why":"w","action":"a"}
"#;
    const MEMLOCK: &str = r#"{"v":2,"type":"finding","rule":"pins-over-memlock","severity":"warning","title":"t","subject":"s","pid":88,"kvm":null,"devices":[],"evidence":"e","why":"w","action":"a"}
"#;
    const CANNOT_FLUSH: &str = r#"{"v":2,"type":"finding","rule":"guest-cannot-flush","severity":"critical","title":"t","subject":"s","pid":77,"kvm":null,"devices":["0000:00:03.0"],"evidence":"pid 77 holds 1 KVM VM(s) and VFIO devices (from /proc/77/fd)","why":"w","action":"a"}
"#;
    const SUMMARY: &str = r#"{"v":2,"type":"summary","final":true,"elapsed_s":1.0,"events":2,"lost_events":0}
"#;

    fn out(parts: &[&str]) -> String {
        parts.concat()
    }

    fn exp(s: &str) -> Expected {
        s.parse().expect("expectation parses")
    }

    #[test]
    fn exact_findings_pass() {
        let o = out(&[PROBE_LINES, KVM_ON, WBINVD, SUMMARY]);
        check(&o, 3, &[exp("unneeded-wbinvd-exposure@77")]).expect("wbinvd");
        let o = out(&[PROBE_LINES, MEMLOCK, SUMMARY]);
        check(&o, 3, &[exp("pins-over-memlock@88")]).expect("memlock");
        check(&out(&[PROBE_LINES, SUMMARY]), 0, &[]).expect("clean");
        let o = out(&[PROBE_LINES, CANNOT_FLUSH, SUMMARY]);
        check(&o, 4, &[exp("guest-cannot-flush@77")]).expect("cannot flush");
    }

    #[test]
    fn a_vm_finding_must_name_the_processs_devices_and_the_right_vm_state() {
        // Critical is 4, not 3.
        let o = out(&[PROBE_LINES, CANNOT_FLUSH, SUMMARY]);
        assert!(check(&o, 3, &[exp("guest-cannot-flush@77")]).is_err());
        // The vfio-pci heuristic is not the devices of the process.
        let heuristic = WBINVD.replace(
            "the VFIO devices pid 77 holds (from /proc/77/fd)",
            "by heuristic all the devices bound to vfio-pci",
        );
        let o = out(&[PROBE_LINES, KVM_ON, &heuristic, SUMMARY]);
        assert!(check(&o, 3, &[exp("unneeded-wbinvd-exposure@77")]).is_err());
        // Cannot flush about a VM that KVM shows non-coherent.
        let with_vm = CANNOT_FLUSH.replace("\"kvm\":null", "\"kvm\":\"0xffffc90000a41000\"");
        let o = out(&[PROBE_LINES, KVM_ON, &with_vm, SUMMARY]);
        assert!(check(&o, 4, &[exp("guest-cannot-flush@77")]).is_err());
        let off = KVM_ON.replace("\"noncoherent_dma\":true", "\"noncoherent_dma\":false");
        let o = out(&[PROBE_LINES, &off, &with_vm, SUMMARY]);
        check(&o, 4, &[exp("guest-cannot-flush@77")]).expect("VM shown coherent");
    }

    #[test]
    fn anything_else_fails() {
        let both = out(&[PROBE_LINES, KVM_ON, WBINVD, MEMLOCK, SUMMARY]);
        // An extra finding, a missing one, the wrong pid, the wrong status.
        assert!(check(&both, 3, &[exp("unneeded-wbinvd-exposure")]).is_err());
        assert!(
            check(
                &out(&[PROBE_LINES, SUMMARY]),
                0,
                &[exp("pins-over-memlock")]
            )
            .is_err()
        );
        let m = out(&[PROBE_LINES, MEMLOCK, SUMMARY]);
        assert!(check(&m, 3, &[exp("pins-over-memlock@89")]).is_err());
        assert!(check(&m, 0, &[exp("pins-over-memlock")]).is_err());
        assert!(check(&out(&[PROBE_LINES, SUMMARY]), 3, &[]).is_err());
        // A wbinvd finding whose VM is not shown non-coherent.
        let off = KVM_ON.replace("\"noncoherent_dma\":true", "\"noncoherent_dma\":false");
        assert!(
            check(
                &out(&[PROBE_LINES, &off, WBINVD, SUMMARY]),
                3,
                &[exp("unneeded-wbinvd-exposure")]
            )
            .is_err()
        );
        // The kvm probes not attached, lost events, two blocks.
        let none = PROBE_LINES.replace(
            "\"fn\":\"kvm_arch_register_noncoherent_dma\",\"attach\":\"fexit\"",
            "\"fn\":\"kvm_arch_register_noncoherent_dma\",\"attach\":\"none\"",
        );
        assert!(check(&out(&[&none, SUMMARY]), 0, &[]).is_err());
        let lost = SUMMARY.replace("\"lost_events\":0", "\"lost_events\":1");
        assert!(check(&out(&[PROBE_LINES, &lost]), 0, &[]).is_err());
        assert!(check(&out(&[PROBE_LINES, SUMMARY, SUMMARY]), 0, &[]).is_err());
        // A finding without its action.
        let bare = MEMLOCK.replace("\"action\":\"a\"", "\"action\":\"\"");
        assert!(
            check(
                &out(&[PROBE_LINES, &bare, SUMMARY]),
                3,
                &[exp("pins-over-memlock")]
            )
            .is_err()
        );
    }

    #[test]
    fn expectations_parse() {
        assert_eq!(
            exp("pins-over-memlock@12"),
            Expected {
                rule: "pins-over-memlock".into(),
                pid: Some(12)
            }
        );
        assert_eq!(exp("x-y").pid, None);
        assert!("".parse::<Expected>().is_err());
        assert!("rule@x".parse::<Expected>().is_err());
        assert!("Rule".parse::<Expected>().is_err());
        assert_eq!(status_for(Some("critical")).expect("known"), 4);
        assert!(status_for(Some("fatal")).is_err());
    }
}
