//! Does `ioasid-top domain --json` show exactly the IOVA ranges a workload has mapped?
//!
//! Two runs of `ioasid-top domain --comm COMM --once --json`, both attached before the
//! workload (`vfio-edu-workload --hold-until`): one stopped while the workload holds its
//! maps ([`Phase::Held`]), one after it has unmapped and exited ([`Phase::Exited`]). The final
//! report block's `domain_ranges`/`domain_range` lines (docs/json-lines.md) must show, held:
//! in one domain, the union of the workload's maps as merged ranges — exactly, range by
//! range — mapped by the workload's pid with read and write, nothing truncated, nothing
//! unaccounted; exited: that domain empty again.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::topcheck::{hex, top_lines, union, workload_areas};

/// When the report was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// While the workload held everything mapped.
    Held,
    /// After the workload unmapped everything and exited.
    Exited,
}

impl Phase {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "held" => Ok(Phase::Held),
            "exited" => Ok(Phase::Exited),
            _ => bail!("phase `{s}`: expected held or exited"),
        }
    }
}

/// The final report block's domain view: (`domain_ranges` lines, `domain_range` lines).
fn final_view(jsonl: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut totals, mut ranges) = (Vec::new(), Vec::new());
    for v in top_lines(jsonl)? {
        match v["type"].as_str() {
            Some("domain_ranges") => totals.push(v),
            Some("domain_range") => ranges.push(v),
            Some("summary") if v["final"] == true => {
                ensure!(
                    v["lost_events"] == 0,
                    "ioasid-top lost {} events",
                    v["lost_events"]
                );
                return Ok((totals, ranges));
            }
            // A periodic report: the next block starts afresh.
            Some("summary") => (totals, ranges) = (Vec::new(), Vec::new()),
            _ => {}
        }
    }
    bail!("ioasid-top printed no final summary line")
}

/// The workload's pid, from its `held` line.
fn workload_pid(workload: &str) -> Result<u64> {
    workload
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["held"] == true)
        .and_then(|v| v["pid"].as_u64())
        .context("the workload printed no `held` line with its pid (run it with --hold-until)")
}

/// The verdict: Ok with a one-line description, or what differs.
pub fn check(phase: Phase, top: &str, workload: &str, comm: &str) -> Result<String> {
    let want = union(workload_areas(workload)?);
    let want_bytes: u64 = want.iter().map(|(s, e)| e - s).sum();
    let pid = workload_pid(workload)?;
    let (totals, ranges) = final_view(top)?;
    // The domains the workload mapped into.
    let used: Vec<&Value> = totals.iter().filter(|t| t["maps"] != 0).collect();
    ensure!(
        used.len() == 1,
        "expected the workload's maps in one domain, ioasid-top shows {} with maps: {:?}",
        used.len(),
        totals
    );
    let t = used[0];
    let domain = t["domain"]
        .as_str()
        .context("domain_ranges without domain")?;
    ensure!(t["truncated"] == false, "truncated is set: {t}");
    for key in [
        "dropped_maps",
        "dropped_bytes",
        "remapped_bytes",
        "unmapped_untracked_bytes",
    ] {
        ensure!(t[key] == 0, "{key} is not 0: {t}");
    }
    let mine: Vec<&Value> = ranges.iter().filter(|r| r["domain"] == domain).collect();
    ensure!(
        ranges.len() == mine.len(),
        "ranges outside domain {domain}: {ranges:?}"
    );
    ensure!(
        t["ranges"] == mine.len() as u64,
        "domain_ranges says {} ranges, {} domain_range lines follow",
        t["ranges"],
        mine.len()
    );
    match phase {
        Phase::Held => {
            let mut got = Vec::new();
            for r in &mine {
                ensure!(r["comm"] == comm, "a range of another process: {r}");
                ensure!(r["pid"] == pid, "a range not mapped by pid {pid}: {r}");
                let flags = r["prot_flags"].as_array().context("no prot_flags")?;
                for f in ["read", "write"] {
                    ensure!(flags.iter().any(|x| x == f), "range without {f}: {r}");
                }
                let (start, end) = (hex(r, "iova")?, hex(r, "end")?);
                ensure!(r["size"] == end - start, "size is not end - iova: {r}");
                got.push((start, end));
            }
            if got != want {
                bail!(
                    "ranges differ: workload (merged) {:x?}, ioasid-top {:x?}",
                    want,
                    got
                );
            }
            ensure!(
                t["bytes"] == want_bytes,
                "bytes {} != {want_bytes}",
                t["bytes"]
            );
            Ok(format!(
                "{} range(s), {want_bytes} bytes mapped by pid {pid} in domain {domain}, as the workload mapped them",
                want.len()
            ))
        }
        Phase::Exited => {
            ensure!(
                mine.is_empty() && t["bytes"] == 0,
                "ranges left after the workload unmapped everything: {t} {mine:?}"
            );
            ensure!(t["unmaps"] != 0, "no unmap seen: {t}");
            Ok(format!(
                "domain {domain} empty again after {} maps and {} unmaps",
                t["maps"], t["unmaps"]
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKLOAD: &str = r#"{"held":true,"pid":42,"maps":[{"iova":1048576,"size":65536},{"iova":1114112,"size":65536}]}
{"backend":"iommufd","bdf":"0000:00:0a.0","maps":[{"iova":1048576,"size":65536},{"iova":1114112,"size":65536}],"dma_ok":true,"pid":42}"#;

    fn top(ranges: &str, totals: &str) -> String {
        format!(
            r#"{{"v":2,"type":"probe","fn":"iommu_map","attach":"fexit","error":null}}
{{"v":2,"type":"summary","final":false,"lost_events":0}}
{{"v":2,"type":"domain_ranges","domain":"0xffff1","ranges":{ranges},{totals},"truncated":false,"cap":65536,"dropped_maps":0,"dropped_bytes":0,"remapped_bytes":0,"unmapped_untracked_bytes":0}}
{{"v":2,"type":"domain_range","domain":"0xffff1","iova":"0x100000","end":"0x120000","size":131072,"prot":3,"prot_flags":["read","write"],"pid":42,"comm":"vfio-edu-worklo"}}
{{"v":2,"type":"summary","final":true,"lost_events":0}}
"#
        )
    }

    fn held() -> String {
        top("1", r#""bytes":131072,"maps":2,"unmaps":0"#)
    }

    #[test]
    fn the_merged_maps_pass() {
        let v = check(Phase::Held, &held(), WORKLOAD, "vfio-edu-worklo").unwrap();
        assert!(
            v.contains("1 range(s), 131072 bytes mapped by pid 42"),
            "{v}"
        );
    }

    #[test]
    fn a_missing_or_extra_piece_fails() {
        let short = held()
            .replace(
                r#""end":"0x120000","size":131072"#,
                r#""end":"0x110000","size":65536"#,
            )
            .replace(r#""bytes":131072"#, r#""bytes":65536"#);
        let err = check(Phase::Held, &short, WORKLOAD, "vfio-edu-worklo").unwrap_err();
        assert!(err.to_string().contains("ranges differ"), "{err}");
        // Two unmerged ranges are not what the view promises either.
        let split = held().replace(
            r#"{"v":2,"type":"summary","final":true"#,
            r#"{"v":2,"type":"domain_range","domain":"0xffff1","iova":"0x120000","end":"0x121000","size":4096,"prot":3,"prot_flags":["read","write"],"pid":42,"comm":"vfio-edu-worklo"}
{"v":2,"type":"summary","final":true"#,
        );
        assert!(check(Phase::Held, &split, WORKLOAD, "vfio-edu-worklo").is_err());
    }

    #[test]
    fn wrong_pid_prot_truncation_or_losses_fail() {
        for (from, to) in [
            (r#""pid":42"#, r#""pid":43"#),
            (r#"["read","write"]"#, r#"["read"]"#),
            (r#""truncated":false"#, r#""truncated":true"#),
            (r#""dropped_maps":0"#, r#""dropped_maps":1"#),
            (
                r#""final":true,"lost_events":0"#,
                r#""final":true,"lost_events":2"#,
            ),
            (r#""ranges":1"#, r#""ranges":2"#),
        ] {
            let bad = held().replace(from, to);
            assert!(
                check(Phase::Held, &bad, WORKLOAD, "vfio-edu-worklo").is_err(),
                "{to} passed"
            );
        }
        // Only the final block counts; no final summary is an error.
        let no_final = held().replace(r#""final":true"#, r#""final":false"#);
        assert!(check(Phase::Held, &no_final, WORKLOAD, "vfio-edu-worklo").is_err());
        assert!(check(Phase::Held, &held(), "{}", "vfio-edu-worklo").is_err());
    }

    #[test]
    fn exited_wants_the_domain_empty() {
        let exited = top("0", r#""bytes":0,"maps":2,"unmaps":2"#).replace(
            r#"{"v":2,"type":"domain_range","domain":"0xffff1","iova":"0x100000","end":"0x120000","size":131072,"prot":3,"prot_flags":["read","write"],"pid":42,"comm":"vfio-edu-worklo"}
"#,
            "",
        );
        let v = check(Phase::Exited, &exited, WORKLOAD, "vfio-edu-worklo").unwrap();
        assert!(v.contains("empty again after 2 maps and 2 unmaps"), "{v}");
        // A range left behind fails.
        let left = top("1", r#""bytes":131072,"maps":2,"unmaps":2"#);
        assert!(check(Phase::Exited, &left, WORKLOAD, "vfio-edu-worklo").is_err());
        assert!(Phase::parse("later").is_err());
    }
}
