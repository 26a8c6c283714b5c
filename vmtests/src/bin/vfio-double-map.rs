//! `vfio-double-map --backend type1|iommufd|ioasid [--size BYTES] [--hold-until FILE]`: one
//! buffer mapped for edu and igb through two containers or two IOASes; prints one JSON
//! summary line (see `ioasid_vmtests::doublemap`).

use clap::Parser;
use ioasid_vmtests::doublemap::{Args, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).and_then(|s| Ok(serde_json::to_string(&s)?)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vfio-double-map: {e:#}");
            ExitCode::from(1)
        }
    }
}
