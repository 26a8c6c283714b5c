//! Does what ioasid-top reported match what a workload really mapped?
//!
//! The workload prints the areas it mapped (its JSON summary); ioasid-top prints one `map` and
//! one `unmap` line per traced call (docs/json-lines.md). The check: restricted to the
//! workload's process name, the successful `iommu_map*` calls cover exactly the workload's
//! areas — every byte, nothing outside — in one IOMMU domain, and the `iommu_unmap` calls
//! took all of it down again. `iommu_map` may wrap `iommu_map_nosync` (two records for one
//! mapping) and the kernel may split an area into several calls, so coverage is compared as
//! a union of intervals, not call by call.

use crate::workload::MapEntry;
use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct WorkloadMaps {
    maps: Vec<MapEntry>,
}

/// The areas of the workload's JSON summary line (the last line that parses as one).
pub fn workload_areas(summary: &str) -> Result<Vec<(u64, u64)>> {
    let line = summary
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<WorkloadMaps>(l).ok())
        .context("the workload printed no JSON summary with `maps`")?;
    Ok(line
        .maps
        .iter()
        .map(|m| (m.iova, m.iova + m.size))
        .collect())
}

pub(crate) fn hex(v: &Value, key: &str) -> Result<u64> {
    let s = v[key]
        .as_str()
        .with_context(|| format!("`{key}` is not a string in {v}"))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("`{key}` = {s} is not hex"))
}

/// Sorted, merged union of half-open intervals.
pub fn union(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// What ioasid-top saw for one process name.
#[derive(Debug, Default)]
pub struct Seen {
    pub domains: Vec<String>,
    pub mapped: Vec<(u64, u64)>,
    pub unmapped: Vec<(u64, u64)>,
    pub map_calls: usize,
    pub lost_events: u64,
}

/// ioasid-top's JSON Lines, each checked to be JSON of the contract version this crate reads.
pub fn top_lines(jsonl: &str) -> Result<Vec<Value>> {
    jsonl
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("line {} is not JSON: {line}", n + 1))?;
            ensure!(
                v["v"] == crate::TOP_JSON_VERSION,
                "line {} is not of version {}: {line}",
                n + 1,
                crate::TOP_JSON_VERSION
            );
            Ok(v)
        })
        .collect()
}

pub fn seen_by_top(jsonl: &str, comm: &str) -> Result<Seen> {
    let mut seen = Seen::default();
    let mut mapped = Vec::new();
    let mut unmapped = Vec::new();
    let mut summary = false;
    for v in top_lines(jsonl)? {
        match v["type"].as_str() {
            Some("map") if v["comm"] == comm && v["ret"] == 0 => {
                let domain = v["domain"]
                    .as_str()
                    .context("map without domain")?
                    .to_owned();
                if !seen.domains.contains(&domain) {
                    seen.domains.push(domain);
                }
                let iova = hex(&v, "iova")?;
                let size = v["size"].as_u64().context("map without size")?;
                mapped.push((iova, iova + size));
                seen.map_calls += 1;
            }
            Some("unmap") if v["comm"] == comm => {
                let iova = hex(&v, "iova")?;
                let size = v["unmapped"].as_u64().context("unmap without unmapped")?;
                unmapped.push((iova, iova + size));
            }
            Some("summary") if v["final"] == true => {
                summary = true;
                seen.lost_events = v["lost_events"]
                    .as_u64()
                    .context("summary without lost_events")?;
            }
            _ => {}
        }
    }
    ensure!(summary, "ioasid-top printed no final summary line");
    seen.mapped = union(mapped);
    seen.unmapped = union(unmapped);
    Ok(seen)
}

/// The verdict: Ok with a one-line description, or what differs.
pub fn compare(areas: &[(u64, u64)], seen: &Seen) -> Result<String> {
    let want = union(areas.to_vec());
    ensure!(
        seen.lost_events == 0,
        "ioasid-top lost {} events",
        seen.lost_events
    );
    ensure!(
        seen.map_calls > 0,
        "ioasid-top saw no successful iommu_map call of the workload"
    );
    ensure!(
        seen.domains.len() == 1,
        "the workload's maps went to {} domains ({:?}), expected one",
        seen.domains.len(),
        seen.domains
    );
    if seen.mapped != want {
        bail!(
            "mapped areas differ: workload {:x?}, ioasid-top {:x?}",
            want,
            seen.mapped
        );
    }
    if seen.unmapped != want {
        bail!(
            "unmapped areas differ: workload {:x?}, ioasid-top {:x?}",
            want,
            seen.unmapped
        );
    }
    let bytes: u64 = want.iter().map(|(s, e)| e - s).sum();
    Ok(format!(
        "{} area(s), {bytes} bytes in domain {} seen mapped ({} calls) and unmapped",
        areas.len(),
        seen.domains[0],
        seen.map_calls
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &str = r#"{"v":2,"type":"probe","fn":"iommu_map","attach":"fexit","error":null}
{"v":2,"type":"map","fn":"iommu_map_nosync","comm":"vfio-edu-worklo","domain":"0xffff1","iova":"0x100000","size":4096,"ret":0}
{"v":2,"type":"map","fn":"iommu_map","comm":"vfio-edu-worklo","domain":"0xffff1","iova":"0x100000","size":4096,"ret":0}
{"v":2,"type":"map","fn":"iommu_map_nosync","comm":"vfio-edu-worklo","domain":"0xffff1","iova":"0x101000","size":4096,"ret":0}
{"v":2,"type":"map","fn":"iommu_map_nosync","comm":"other","domain":"0xffff2","iova":"0x900000","size":4096,"ret":0}
{"v":2,"type":"unmap","fn":"iommu_unmap","comm":"vfio-edu-worklo","domain":"0xffff1","iova":"0x100000","size":8192,"unmapped":8192}
{"v":2,"type":"summary","final":true,"lost_events":0}
"#;
    const WORKLOAD: &str = r#"{"backend":"iommufd","bdf":"0000:00:03.0","maps":[{"iova":1048576,"size":8192}],"dma_ok":true}"#;

    #[test]
    fn exact_coverage_passes() {
        let seen = seen_by_top(TOP, "vfio-edu-worklo").unwrap();
        let areas = workload_areas(WORKLOAD).unwrap();
        let verdict = compare(&areas, &seen).unwrap();
        assert!(verdict.contains("8192 bytes"), "{verdict}");
    }

    #[test]
    fn a_missing_page_fails() {
        let top = TOP.replace("\"iova\":\"0x101000\"", "\"iova\":\"0x102000\"");
        let seen = seen_by_top(&top, "vfio-edu-worklo").unwrap();
        let err = compare(&workload_areas(WORKLOAD).unwrap(), &seen).unwrap_err();
        assert!(err.to_string().contains("mapped areas differ"), "{err}");
    }

    #[test]
    fn nothing_seen_fails() {
        let seen = seen_by_top(TOP, "nobody").unwrap();
        assert!(compare(&workload_areas(WORKLOAD).unwrap(), &seen).is_err());
    }

    #[test]
    fn lost_events_fail_and_missing_summary_is_an_error() {
        let top = TOP.replace("\"lost_events\":0", "\"lost_events\":3");
        let seen = seen_by_top(&top, "vfio-edu-worklo").unwrap();
        assert!(compare(&workload_areas(WORKLOAD).unwrap(), &seen).is_err());
        let truncated: String = TOP.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert!(seen_by_top(&truncated, "vfio-edu-worklo").is_err());
    }

    #[test]
    fn union_merges_adjacent_and_overlapping() {
        assert_eq!(union(vec![(5, 6), (0, 2), (2, 4), (3, 5)]), vec![(0, 6)]);
        assert_eq!(union(vec![(0, 1), (2, 3)]), vec![(0, 1), (2, 3)]);
    }
}
