//! `kvm-vfio-workload --backend type1|iommufd [--remove del|close] [--hold-ms N | --hold-until
//! FILE]`: gives the edu device's VFIO file to a KVM VM (KVM-VFIO device) and takes it back;
//! prints one JSON summary line (see `ioasid_vmtests::kvm`), after a `{"held":true,...}` line
//! with `--hold-until`. Exit status: 0 when every step succeeded.

use clap::Parser;
use ioasid_vmtests::kvm::{Args, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).and_then(|s| s.to_json_line()) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvm-vfio-workload: {e:#}");
            ExitCode::from(1)
        }
    }
}
