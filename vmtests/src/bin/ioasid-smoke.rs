//! `ioasid-smoke [--dev /dev/ioasid] [--extended]`: iommufd ABI smoke checks.
//! Exit status: 0 all passed, 1 some check failed, 2 could not start.

use clap::Parser;
use ioasid_uapi::{DEV_IOASID, Iommufd};
use ioasid_vmtests::errno::describe_error;
use ioasid_vmtests::smoke;
use std::path::PathBuf;
use std::process::ExitCode;

/// iommufd ABI smoke checks (TAP-like output).
#[derive(Debug, Parser)]
#[command(name = "ioasid-smoke", version)]
struct Args {
    /// device to test: /dev/ioasid (this project) or /dev/iommu (mainline)
    #[arg(long, default_value = DEV_IOASID)]
    dev: PathBuf,
    /// also run the map/unmap/copy/ranges/option checks
    #[arg(long)]
    extended: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let fd = match Iommufd::open(&args.dev) {
        Ok(fd) => fd,
        Err(e) => {
            println!("1..0");
            println!(
                "Bail out! cannot open {}: {}",
                args.dev.display(),
                describe_error(&e)
            );
            return ExitCode::from(2);
        }
    };
    println!("# ioasid-smoke against {}", args.dev.display());
    match smoke::run(fd, args.extended, std::io::stdout().lock()) {
        Ok(tap) if tap.all_passed() => ExitCode::SUCCESS,
        Ok(tap) => {
            eprintln!(
                "ioasid-smoke: {} check(s) failed against {}",
                tap.failed(),
                args.dev.display()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ioasid-smoke: writing output: {e}");
            ExitCode::from(2)
        }
    }
}
