//! `ioasid-smoke [--dev /dev/ioasid] [--extended] [--accounting] [--devices]`: iommufd ABI
//! smoke checks; `--accounting` adds the pinning and RLIMIT_MEMLOCK checks of
//! `/dev/ioasid` (on a file of its own, whatever `--dev` says); `--devices` runs only the
//! checks of binding, HWPTs and attaching the edu device (vmtests/src/devices.rs).
//! Exit status: 0 all passed, 1 some check failed, 2 could not start.

use clap::Parser;
use ioasid_uapi::{DEV_IOASID, Iommufd};
use ioasid_vmtests::errno::describe_error;
use ioasid_vmtests::{accounting, devices, smoke};
use std::path::{Path, PathBuf};
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
    /// also run the /dev/ioasid pinning and accounting checks (fdinfo, VmPin,
    /// RLIMIT_MEMLOCK charged once per file)
    #[arg(long)]
    accounting: bool,
    /// run only the device checks: bind the edu device's VFIO cdev to --dev, HWPTs, attach,
    /// detach, and iommufd's errors for bad input (the edu device gets bound to vfio-pci)
    #[arg(long, conflicts_with_all = ["extended", "accounting"])]
    devices: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.devices {
        println!("# ioasid-smoke --devices against {}", args.dev.display());
        return match devices::run(
            &args.dev,
            Path::new("/sys"),
            Path::new("/dev"),
            std::io::stdout().lock(),
        ) {
            Ok(tap) if tap.all_passed() => ExitCode::SUCCESS,
            Ok(tap) => {
                eprintln!(
                    "ioasid-smoke: {} device check(s) failed against {}",
                    tap.failed(),
                    args.dev.display()
                );
                ExitCode::from(1)
            }
            Err(e) => {
                println!("Bail out! {e:#}");
                ExitCode::from(2)
            }
        };
    }
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
    let smoke_passed = match smoke::run(fd, args.extended, std::io::stdout().lock()) {
        Ok(tap) if tap.all_passed() => true,
        Ok(tap) => {
            eprintln!(
                "ioasid-smoke: {} check(s) failed against {}",
                tap.failed(),
                args.dev.display()
            );
            false
        }
        Err(e) => {
            eprintln!("ioasid-smoke: writing output: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.accounting {
        return if smoke_passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }

    let fd = match Iommufd::open(DEV_IOASID) {
        Ok(fd) => fd,
        Err(e) => {
            println!("Bail out! cannot open {DEV_IOASID}: {}", describe_error(&e));
            return ExitCode::from(2);
        }
    };
    println!("# ioasid-smoke --accounting against {DEV_IOASID}");
    match accounting::run(fd, std::io::stdout().lock()) {
        Ok(tap) if tap.all_passed() && smoke_passed => ExitCode::SUCCESS,
        Ok(tap) => {
            eprintln!("ioasid-smoke: {} accounting check(s) failed", tap.failed());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ioasid-smoke: accounting: {e}");
            ExitCode::from(2)
        }
    }
}
