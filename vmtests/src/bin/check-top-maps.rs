//! `check-top-maps TOP.jsonl WORKLOAD.json COMM`: exits 0 when ioasid-top's report covers
//! exactly the areas the workload mapped (see `ioasid_vmtests::topcheck`).

use anyhow::{Context, Result};
use ioasid_vmtests::topcheck::{compare, seen_by_top, workload_areas};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [top, workload, comm] = args.as_slice() else {
        anyhow::bail!("usage: check-top-maps TOP.jsonl WORKLOAD.json COMM");
    };
    let top_text = std::fs::read_to_string(top).with_context(|| format!("cannot read {top}"))?;
    let workload_text =
        std::fs::read_to_string(workload).with_context(|| format!("cannot read {workload}"))?;
    let seen = seen_by_top(&top_text, comm)?;
    let verdict = compare(&workload_areas(&workload_text)?, &seen)?;
    println!("ok - ioasid-top saw {verdict}");
    Ok(())
}
