//! `vfio-orphan-pins --backend type1|iommufd|ioasid --hold-until FILE`: maps 1 MiB for edu,
//! forks and exits, the child holding the pins until FILE exists (see
//! `ioasid_vmtests::orphan`).

use clap::Parser;
use ioasid_vmtests::orphan::{Args, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Err(e) => {
            eprintln!("vfio-orphan-pins: {e:#}");
            ExitCode::from(1)
        }
    }
}
