//! `vfio-failed-map --backend type1|iommufd|ioasid --hold-until FILE`: maps 64 KiB for edu, then
//! a second 64 KiB that fail_page_alloc makes `iommu_map` fail, checks the ENOMEM and that
//! nothing stayed pinned or charged, and holds (see `ioasid_vmtests::failmap`).

use clap::Parser;
use ioasid_vmtests::failmap::{Args, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfio-failed-map: {e:#}");
            ExitCode::from(1)
        }
    }
}
