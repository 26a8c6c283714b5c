//! `vfio-edu-workload --backend iommufd|type1|ioasid [--maps N --size BYTES]`:
//! real DMA through QEMU's edu device; prints one JSON summary line.
//! Exit status: 0 DMA verified, 1 otherwise.

use anyhow::Result;
use clap::Parser;
use ioasid_vmtests::workload::{Args, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match go(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vfio-edu-workload: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn go(args: &Args) -> Result<bool> {
    let summary = run(args)?;
    println!("{}", summary.to_json_line()?);
    if !summary.dma_ok {
        eprintln!("vfio-edu-workload: DMA data mismatch");
    }
    Ok(summary.dma_ok)
}
