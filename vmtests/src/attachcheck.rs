//! Does ioasid-top tie the workload's domain to its device?
//!
//! The two runs of `ioasid-top domain --comm COMM --once --json` of the domain-view scenario
//! ([`crate::domaincheck`]) also carry the attach and detach calls (docs/json-lines.md:
//! `attach`, `group`, `domain.devices`). Held (stopped while the workload holds its maps): the
//! domain with the workload's maps has, in the final report, a `group` line for the device's
//! IOMMU group (its number read in the kernel, the same as sysfs's) listing the device, by the
//! workload's pid, and its `domain` line lists the device; an `attach` call of that domain and
//! group, by the workload, succeeded. Exited (stopped after the workload detached and exited):
//! a `detach` call of that domain and group followed, and no `group` line is left for it.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::domaincheck::Phase;
use crate::topcheck::top_lines;

/// The workload's pid and device, from its `held` line and its summary.
fn workload_pid_and_bdf(workload: &str) -> Result<(u64, String)> {
    let lines: Vec<Value> = workload
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let pid = lines
        .iter()
        .find(|v| v["held"] == true)
        .and_then(|v| v["pid"].as_u64())
        .context("the workload printed no `held` line with its pid")?;
    let bdf = lines
        .iter()
        .find_map(|v| v["bdf"].as_str())
        .context("the workload printed no summary with its bdf")?;
    Ok((pid, bdf.to_owned()))
}

/// The verdict: Ok with a one-line description, or what is missing.
pub fn check(phase: Phase, top: &str, workload: &str, group_id: u64) -> Result<String> {
    let (pid, bdf) = workload_pid_and_bdf(workload)?;
    let lines = top_lines(top)?;
    // The domain of the workload's maps.
    let mut domains: Vec<&str> = lines
        .iter()
        .filter(|v| v["type"] == "map" && v["pid"] == pid && v["ret"] == 0)
        .filter_map(|v| v["domain"].as_str())
        .collect();
    domains.sort_unstable();
    domains.dedup();
    ensure!(
        domains.len() == 1,
        "expected the workload's maps in one domain, saw {domains:?}"
    );
    let domain = domains[0];
    let calls = |op: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|v| {
                v["type"] == "attach"
                    && v["domain"] == domain
                    && v["group_id"] == group_id
                    && v["ret"] == 0
                    && (v["op"] == op || (op == "attach" && v["op"] == "replace"))
            })
            .collect()
    };
    let attaches = calls("attach");
    ensure!(
        attaches.iter().any(|v| v["pid"] == pid),
        "no successful attach of domain {domain} to group {group_id} by pid {pid}: {:?}",
        lines
            .iter()
            .filter(|v| v["type"] == "attach")
            .collect::<Vec<_>>()
    );
    let fun = attaches[0]["fn"].as_str().unwrap_or("?").to_owned();
    // The final block's group lines.
    let last_summary = lines
        .iter()
        .rposition(|v| v["type"] == "summary" && v["final"] == true)
        .context("ioasid-top printed no final summary line")?;
    let block_start = lines[..last_summary]
        .iter()
        .rposition(|v| v["type"] == "summary")
        .map_or(0, |i| i + 1);
    let block = &lines[block_start..last_summary];
    let groups: Vec<&Value> = block
        .iter()
        .filter(|v| v["type"] == "group" && v["group_id"] == group_id)
        .collect();
    match phase {
        Phase::Held => {
            ensure!(
                groups.len() == 1,
                "expected one group line for group {group_id}, got {groups:?}"
            );
            let g = groups[0];
            ensure!(
                g["domain"] == domain && g["pid"] == pid,
                "group {group_id} is not shown attached to {domain} by pid {pid}: {g}"
            );
            ensure!(
                g["devices"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == bdf.as_str())),
                "group {group_id} does not list {bdf}: {g}"
            );
            let d = block
                .iter()
                .find(|v| v["type"] == "domain" && v["domain"] == domain && v["pid"] == pid)
                .with_context(|| format!("no domain line for {domain} of pid {pid}"))?;
            ensure!(
                d["devices"] == serde_json::json!([bdf]),
                "the domain line does not list exactly {bdf}: {d}"
            );
            Ok(format!(
                "domain {domain} attached to group {group_id} ({bdf}) by pid {pid} through {fun}"
            ))
        }
        Phase::Exited => {
            let detach = calls("detach");
            ensure!(
                !detach.is_empty(),
                "no detach of domain {domain} from group {group_id}"
            );
            ensure!(
                groups.is_empty(),
                "group {group_id} is still shown attached after the detach: {groups:?}"
            );
            Ok(format!(
                "domain {domain} attached to and detached from group {group_id} ({} then {})",
                fun,
                detach[0]["fn"].as_str().unwrap_or("?")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: &str = r#"{"held":true,"pid":42,"maps":[]}
{"backend":"type1","bdf":"0000:00:0a.0","maps":[],"dma_ok":true,"pid":42}"#;
    const CALLS: &str = r#"{"v":2,"type":"attach","fn":"iommu_attach_group","pid":42,"op":"attach","domain":"0xd1","group":"0x91","group_id":3,"ret":0}
{"v":2,"type":"map","pid":42,"domain":"0xd1","ret":0}
"#;
    const HELD: &str = r#"{"v":2,"type":"domain","pid":42,"domain":"0xd1","devices":["0000:00:0a.0"]}
{"v":2,"type":"group","group":"0x91","group_id":3,"domain":"0xd1","devices":["0000:00:0a.0"],"pid":42,"comm":"w"}
{"v":2,"type":"summary","final":true}
"#;
    const EXITED: &str = r#"{"v":2,"type":"attach","fn":"iommu_detach_group","pid":42,"op":"detach","domain":"0xd1","group":"0x91","group_id":3,"ret":0}
{"v":2,"type":"domain","pid":42,"domain":"0xd1","devices":[]}
{"v":2,"type":"summary","final":true}
"#;

    #[test]
    fn held_and_exited_pass() {
        let v = check(Phase::Held, &format!("{CALLS}{HELD}"), WORKLOAD, 3).unwrap();
        assert!(v.contains("group 3 (0000:00:0a.0) by pid 42"), "{v}");
        check(Phase::Exited, &format!("{CALLS}{EXITED}"), WORKLOAD, 3).unwrap();
    }

    #[test]
    fn what_is_missing_fails() {
        // Another group number than sysfs's, no device listed, no attach, no detach, a group
        // line left after the detach.
        assert!(check(Phase::Held, &format!("{CALLS}{HELD}"), WORKLOAD, 4).is_err());
        let no_dev = HELD.replace(r#""devices":["0000:00:0a.0"]}"#, r#""devices":[]}"#);
        assert!(check(Phase::Held, &format!("{CALLS}{no_dev}"), WORKLOAD, 3).is_err());
        let no_attach = CALLS.lines().nth(1).unwrap().to_owned() + "\n";
        assert!(check(Phase::Held, &format!("{no_attach}{HELD}"), WORKLOAD, 3).is_err());
        assert!(check(Phase::Exited, &format!("{CALLS}{HELD}"), WORKLOAD, 3).is_err());
        let left = EXITED.replace(
            r#"{"v":2,"type":"summary","final":true}"#,
            r#"{"v":2,"type":"group","group":"0x91","group_id":3,"domain":"0xd1","devices":[],"pid":42,"comm":"w"}
{"v":2,"type":"summary","final":true}"#,
        );
        assert!(check(Phase::Exited, &format!("{CALLS}{left}"), WORKLOAD, 3).is_err());
    }
}
