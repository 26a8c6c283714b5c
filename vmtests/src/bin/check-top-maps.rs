//! `check-top-maps TOP.jsonl WORKLOAD.json COMM`: exits 0 when ioasid-top's report covers
//! exactly the areas the workload mapped (see `ioasid_vmtests::topcheck`).
//!
//! `check-top-maps --pins EVENTS.jsonl START.jsonl WORKLOAD.json`: exits 0 when the pinned
//! pages ioasid-top reported, from events and from the start-up state, are exactly what the
//! held workload pinned (see `ioasid_vmtests::pincheck`).
//!
//! `check-top-maps --domain-view held|exited TOP.jsonl WORKLOAD.json COMM`: exits 0 when
//! `ioasid-top domain --json` showed exactly the workload's maps as merged ranges while it
//! held them (`held`), or its domain empty again after it exited (`exited`); see
//! `ioasid_vmtests::domaincheck`.
//!
//! `check-top-maps --attach held|exited TOP.jsonl WORKLOAD.json GROUP`: exits 0 when the same
//! reports tie the workload's domain to its device's IOMMU group GROUP (held) and show it
//! detached (exited); see `ioasid_vmtests::attachcheck`.

use anyhow::{Context, Result};
use ioasid_vmtests::topcheck::{compare, seen_by_top, workload_areas};

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, events, start, workload] = args.as_slice()
        && flag == "--pins"
    {
        let verdict =
            ioasid_vmtests::pincheck::check(&read(events)?, &read(start)?, &read(workload)?)?;
        println!("ok - ioasid-top saw the pins: {verdict}");
        return Ok(());
    }
    if let [flag, phase, top, workload, comm] = args.as_slice()
        && flag == "--domain-view"
    {
        let phase = ioasid_vmtests::domaincheck::Phase::parse(phase)?;
        let verdict =
            ioasid_vmtests::domaincheck::check(phase, &read(top)?, &read(workload)?, comm)?;
        println!("ok - ioasid-top domain saw {verdict}");
        return Ok(());
    }
    if let [flag, phase, top, workload, group] = args.as_slice()
        && flag == "--attach"
    {
        let phase = ioasid_vmtests::domaincheck::Phase::parse(phase)?;
        let group: u64 = group
            .parse()
            .with_context(|| format!("IOMMU group {group:?} is not a number"))?;
        let verdict =
            ioasid_vmtests::attachcheck::check(phase, &read(top)?, &read(workload)?, group)?;
        println!("ok - ioasid-top tied {verdict}");
        return Ok(());
    }
    let [top, workload, comm] = args.as_slice() else {
        anyhow::bail!(
            "usage: check-top-maps TOP.jsonl WORKLOAD.json COMM\n       check-top-maps --pins EVENTS.jsonl START.jsonl WORKLOAD.json\n       check-top-maps --domain-view held|exited TOP.jsonl WORKLOAD.json COMM\n       check-top-maps --attach held|exited TOP.jsonl WORKLOAD.json GROUP"
        );
    };
    let seen = seen_by_top(&read(top)?, comm)?;
    let verdict = compare(&workload_areas(&read(workload)?)?, &seen)?;
    println!("ok - ioasid-top saw {verdict}");
    Ok(())
}
