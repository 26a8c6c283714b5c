//! Does what ioasid-top reported about pinning match what a held workload really pinned?
//!
//! `ci/vm/top-sees-pins.sh` runs two ioasid-tops around `vfio-edu-workload --hold-until`:
//! the first attached before the workload starts (events), the second started while the
//! workload holds its maps (start-up state from /proc). The workload reports its pid, its maps
//! and its own `VmPin`/`VmLck` before, while and after mapping. With P = pages mapped:
//!
//! - events: the workload's process pinned exactly P pages (all long-term) and unpinned P,
//!   net 0, no events lost; the accounting calls seen are what the backend does: type1 charges
//!   P to the mm's `locked_vm` through `__account_locked_vm` and uncharges them; iommufd counts
//!   P in `iopt_pages_update_pinned` and uncounts them; /dev/ioasid calls neither (it charges
//!   `user->locked_vm` with atomics of its own, visible only in fdinfo).
//! - the workload's own counters: type1 raised `VmLck` by P pages and not `VmPin`; iommufd and
//!   /dev/ioasid raised `VmPin` by P and not `VmLck`; all back to where they were after unmap.
//! - start-up state: ioasid-top's `startup` line of the workload has the `VmPin`/`VmLck` the
//!   workload read while holding; for /dev/ioasid one file with P pinned pages, 0 charged (the
//!   test runs as root: `CAP_IPC_LOCK` pins are not charged) and exactly the workload's areas.

use crate::workload::{MapEntry, VmCounters};
use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::Value;

const PAGE: u64 = 4096;

#[derive(Deserialize)]
struct Final {
    backend: String,
    maps: Vec<MapEntry>,
    pid: u32,
    vm: VmCounters,
}

use crate::topcheck::top_lines as lines;

fn u(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("`{key}` is not an unsigned integer in {v}"))
}

fn i(v: &Value, key: &str) -> Result<i64> {
    v[key]
        .as_i64()
        .with_context(|| format!("`{key}` is not an integer in {v}"))
}

/// The final report's `pinned` line of `pid`, and the final summary.
fn final_pinned(all: &[Value], pid: u32) -> Result<(Value, Value)> {
    let summary = all
        .iter()
        .rev()
        .find(|v| v["type"] == "summary" && v["final"] == true)
        .context("ioasid-top printed no final summary line")?;
    // The last report block is the final one: take the last pinned line of the pid.
    let pinned = all
        .iter()
        .rev()
        .find(|v| v["type"] == "pinned" && v["pid"] == pid)
        .with_context(|| format!("ioasid-top printed no `pinned` line for pid {pid}"))?;
    Ok((pinned.clone(), summary.clone()))
}

/// Checks both ioasid-top outputs against the workload's. Ok: a description of what matched.
pub fn check(events_jsonl: &str, start_jsonl: &str, workload: &str) -> Result<String> {
    let fin: Final = workload
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context(
            "the workload printed no final summary with pid and vm (run it with --hold-until)",
        )?;
    let pages: u64 = fin.maps.iter().map(|m| m.size / PAGE).sum();
    let kib = pages * PAGE / 1024;
    let pid = fin.pid;
    let mut report = Vec::new();

    // What the kernel really did, by the workload's own /proc/self/status.
    let vm = fin.vm;
    let (want_pin, want_lck) = match fin.backend.as_str() {
        "type1" => (0, kib),
        "iommufd" | "ioasid" => (kib, 0),
        other => anyhow::bail!("unknown backend {other}"),
    };
    ensure!(
        vm.pin_held - vm.pin_before == want_pin && vm.lck_held - vm.lck_before == want_lck,
        "{}: the workload's VmPin/VmLck rose by {}/{} KiB while mapped, expected {want_pin}/{want_lck} KiB ({vm:?})",
        fin.backend,
        vm.pin_held.wrapping_sub(vm.pin_before),
        vm.lck_held.wrapping_sub(vm.lck_before)
    );
    ensure!(
        vm.pin_after == vm.pin_before && vm.lck_after == vm.lck_before,
        "VmPin/VmLck did not return after unmap: {vm:?}"
    );
    report.push(format!(
        "workload: {pages} pages mapped, VmPin +{want_pin} KiB, VmLck +{want_lck} KiB"
    ));

    // Events.
    let ev = lines(events_jsonl)?;
    let (p, summary) = final_pinned(&ev, pid)?;
    ensure!(
        u(&summary, "lost_events")? == 0,
        "ioasid-top lost {} events",
        summary["lost_events"]
    );
    // gross_pinned_pages also has the short-term pins of the workload's file I/O (9p), which
    // kworkers unpin: only the long-term ones are the workload's maps.
    for (key, want) in [
        ("longterm_pinned_pages", pages),
        ("gross_unpinned_pages", pages),
        ("failed_pins", 0),
    ] {
        ensure!(
            u(&p, key)? == want,
            "events: {key} is {}, expected {want}: {p}",
            p[key]
        );
    }
    ensure!(
        i(&p, "pinned_pages")? == 0,
        "events: net pinned_pages is not 0: {p}"
    );
    // The accounting calls of the workload's process, gross: what was charged and uncharged.
    let (want_locked, want_iommufd) = match fin.backend.as_str() {
        "type1" => (pages, 0),
        "iommufd" => (0, pages),
        _ => (0, 0),
    };
    for (target, up, down, want) in [
        (
            "locked_vm",
            "locked_vm_charged_pages",
            "locked_vm_uncharged_pages",
            want_locked,
        ),
        (
            "iommufd_pinned",
            "iommufd_added_pages",
            "iommufd_removed_pages",
            want_iommufd,
        ),
    ] {
        let (up, down) = (u(&p, up)?, u(&p, down)?);
        ensure!(
            up == want && down == want,
            "events: {target} accounted +{up} -{down} pages, expected +{want} -{want}: {p}"
        );
    }
    ensure!(
        i(&p, "locked_vm_pages")? == 0 && i(&p, "iommufd_pinned_pages")? == 0,
        "events: accounting does not net to 0: {p}"
    );
    report.push(format!(
        "events: pinned {pages} unpinned {pages} (net 0), locked_vm +/-{want_locked}, iommufd_pinned +/-{want_iommufd}"
    ));

    // Start-up state.
    let st = lines(start_jsonl)?;
    let s = st
        .iter()
        .find(|v| v["type"] == "startup" && v["pid"] == pid)
        .with_context(|| {
            format!("the second ioasid-top printed no `startup` line for pid {pid}")
        })?;
    let (pin_pages, lck_pages) = (vm.pin_held * 1024 / PAGE, vm.lck_held * 1024 / PAGE);
    ensure!(
        u(s, "vm_pin_pages")? == pin_pages && u(s, "vm_lck_pages")? == lck_pages,
        "start-up state: VmPin/VmLck {}/{} pages, the workload read {pin_pages}/{lck_pages}: {s}",
        s["vm_pin_pages"],
        s["vm_lck_pages"]
    );
    let files = s["ioasid_files"]
        .as_array()
        .context("startup line without ioasid_files")?;
    if fin.backend == "ioasid" {
        ensure!(
            files.len() == 1,
            "start-up state: {} /dev/ioasid files, expected 1: {s}",
            files.len()
        );
        let f = &files[0];
        ensure!(
            u(f, "pinned_pages")? == pages && u(f, "charged_pages")? == 0,
            "start-up state: fdinfo pinned/charged {}/{}, expected {pages}/0 (root has CAP_IPC_LOCK): {f}",
            f["pinned_pages"],
            f["charged_pages"]
        );
        let mut areas: Vec<(u64, u64)> = f["areas"]
            .as_array()
            .context("file without areas")?
            .iter()
            .map(|a| {
                let iova = a["iova"].as_str().context("area iova is not a string")?;
                let iova = u64::from_str_radix(iova.trim_start_matches("0x"), 16)
                    .with_context(|| format!("area iova {iova} is not hex"))?;
                Ok((iova, u(a, "length")?))
            })
            .collect::<Result<_>>()?;
        areas.sort_unstable();
        let want: Vec<(u64, u64)> = fin.maps.iter().map(|m| (m.iova, m.size)).collect();
        ensure!(
            areas == want,
            "start-up state: areas {areas:x?}, the workload mapped {want:x?}"
        );
        report.push(format!(
            "start-up: fdinfo {pages} pinned, 0 charged, {} areas as mapped",
            want.len()
        ));
    } else {
        ensure!(
            files.is_empty(),
            "start-up state: /dev/ioasid files for a {} workload: {s}",
            fin.backend
        );
    }
    let (sp, _) = final_pinned(&st, pid)?;
    ensure!(
        sp["start_vm_pin_pages"] == pin_pages && sp["start_vm_lck_pages"] == lck_pages,
        "the second ioasid-top's `pinned` line does not carry the start-up state: {sp}"
    );
    report.push(format!(
        "start-up: VmPin {pin_pages} VmLck {lck_pages} pages"
    ));
    Ok(format!("{}: {}", fin.backend, report.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(backend: &str, vm: &str) -> String {
        format!(
            r#"{{"held":true,"pid":42}}
{{"backend":"{backend}","bdf":"","maps":[{{"iova":1048576,"size":65536}},{{"iova":1114112,"size":65536}}],"dma_ok":true,"pid":42,"vm":{vm}}}"#
        )
    }

    const PINNED: &str = r#"{"v":2,"type":"pinned","pid":42,"comm":"vfio-edu-worklo","pinned_pages":0,"gross_pinned_pages":32,"longterm_pinned_pages":32,"gross_unpinned_pages":32,"failed_pins":0,"locked_vm_pages":0,"iommufd_pinned_pages":0,"locked_vm_charged_pages":0,"locked_vm_uncharged_pages":0,"iommufd_added_pages":0,"iommufd_removed_pages":0,"start_vm_pin_pages":null,"start_vm_lck_pages":null}"#;
    const SUMMARY: &str = r#"{"v":2,"type":"summary","final":true,"lost_events":0}"#;

    /// ioasid-top's events output: the workload's `pinned` line with 32 pages charged and
    /// uncharged through `target` (`locked_vm`, `iommufd_pinned`, or none for "").
    fn events(target: &str) -> String {
        let pinned = match target {
            "locked_vm" => PINNED
                .replace(
                    "\"locked_vm_charged_pages\":0",
                    "\"locked_vm_charged_pages\":32",
                )
                .replace(
                    "\"locked_vm_uncharged_pages\":0",
                    "\"locked_vm_uncharged_pages\":32",
                ),
            "iommufd_pinned" => PINNED
                .replace("\"iommufd_added_pages\":0", "\"iommufd_added_pages\":32")
                .replace(
                    "\"iommufd_removed_pages\":0",
                    "\"iommufd_removed_pages\":32",
                ),
            _ => PINNED.to_owned(),
        };
        format!("{pinned}\n{SUMMARY}\n")
    }

    fn start(pin: u64, lck: u64, files: &str) -> String {
        format!(
            r#"{{"v":2,"type":"startup","pid":42,"comm":"vfio-edu-worklo","vm_pin_pages":{pin},"vm_lck_pages":{lck},"ioasid_files":{files}}}
{{"v":2,"type":"pinned","pid":42,"start_vm_pin_pages":{pin},"start_vm_lck_pages":{lck}}}
{SUMMARY}
"#
        )
    }

    const TYPE1_VM: &str = r#"{"pin_before":0,"lck_before":0,"pin_held":0,"lck_held":128,"pin_after":0,"lck_after":0}"#;
    const PIN_VM: &str = r#"{"pin_before":0,"lck_before":0,"pin_held":128,"lck_held":0,"pin_after":0,"lck_after":0}"#;
    const IOASID_FILE: &str = r#"[{"fd":3,"account_mode":"user","pinned_pages":32,"charged_pages":0,"areas":[{"ioas":1,"iova":"0x110000","length":65536,"prot":"rw"},{"ioas":1,"iova":"0x100000","length":65536,"prot":"rw"}]}]"#;

    #[test]
    fn type1_iommufd_and_ioasid_pass() {
        let v = check(
            &events("locked_vm"),
            &start(0, 32, "[]"),
            &workload("type1", TYPE1_VM),
        )
        .unwrap();
        assert!(v.contains("locked_vm +/-32"), "{v}");
        check(
            &events("iommufd_pinned"),
            &start(32, 0, "[]"),
            &workload("iommufd", PIN_VM),
        )
        .unwrap();
        let v = check(
            &events(""),
            &start(32, 0, IOASID_FILE),
            &workload("ioasid", PIN_VM),
        )
        .unwrap();
        assert!(v.contains("2 areas"), "{v}");
    }

    #[test]
    fn wrong_numbers_fail() {
        // type1 without its locked_vm charges.
        assert!(
            check(
                &events(""),
                &start(0, 32, "[]"),
                &workload("type1", TYPE1_VM)
            )
            .is_err()
        );
        // One pin too many.
        let extra = events("").replace(
            "\"longterm_pinned_pages\":32",
            "\"longterm_pinned_pages\":33",
        );
        assert!(
            check(
                &extra,
                &start(32, 0, IOASID_FILE),
                &workload("ioasid", PIN_VM)
            )
            .is_err()
        );
        // Start-up state that does not match the workload's VmPin.
        assert!(
            check(
                &events(""),
                &start(31, 0, IOASID_FILE),
                &workload("ioasid", PIN_VM)
            )
            .is_err()
        );
        // fdinfo with an area missing.
        let one_area = IOASID_FILE.replace(
            r#",{"ioas":1,"iova":"0x100000","length":65536,"prot":"rw"}"#,
            "",
        );
        assert!(
            check(
                &events(""),
                &start(32, 0, &one_area),
                &workload("ioasid", PIN_VM)
            )
            .is_err()
        );
        // Charged but never uncharged.
        let kept = events("locked_vm").replace(
            "\"locked_vm_uncharged_pages\":32",
            "\"locked_vm_uncharged_pages\":0",
        );
        assert!(check(&kept, &start(0, 32, "[]"), &workload("type1", TYPE1_VM)).is_err());
        // The kernel charged what the test did not expect (VmLck for iommufd).
        let lck = PIN_VM.replace("\"lck_held\":0", "\"lck_held\":128");
        assert!(
            check(
                &events("iommufd_pinned"),
                &start(32, 32, "[]"),
                &workload("iommufd", &lck)
            )
            .is_err()
        );
        // Lost events.
        let lost = events("").replace("\"lost_events\":0", "\"lost_events\":1");
        assert!(
            check(
                &lost,
                &start(32, 0, IOASID_FILE),
                &workload("ioasid", PIN_VM)
            )
            .is_err()
        );
    }
}
