//! `ioasid-bench [--quick] [--reps N] [--backends …]`: MAP+UNMAP and COPY timings of
//! /dev/ioasid and mainline iommufd (each with and without a domain) and VFIO type1 in one run;
//! the logic is in `ioasid_vmtests::bench`. `--overhead`: the cost of tracing `iommu_map` (bare,
//! under ioasid-top with and without its pinning probes, under bpftrace, under empty fexit
//! programs; `ioasid_vmtests::overhead`). Exit status: 0 done, 1 a backend failed or a result
//! did not verify (no timing is ever asserted).

use clap::Parser;
use ioasid_vmtests::bench::{Args, main_with};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match main_with(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ioasid-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
