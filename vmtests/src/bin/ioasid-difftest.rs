//! `ioasid-difftest`: run the same iommufd ioctl sequences against
//! `/dev/iommu` (mainline) and `/dev/ioasid`, compare every result.
//! Exit status: 0 no difference, 1 some difference, 2 could not run.

use clap::Parser;
use ioasid_uapi::{DEV_IOASID, DEV_IOMMU};
use ioasid_vmtests::difftest::ops::OpSet;
use ioasid_vmtests::difftest::prng::seed_from_time;
use ioasid_vmtests::difftest::{Config, domain, run};
use std::path::PathBuf;
use std::process::ExitCode;

/// Differential test of /dev/ioasid against mainline iommufd (TAP-like output).
#[derive(Debug, Parser)]
#[command(name = "ioasid-difftest", version)]
struct Args {
    /// the reference device (mainline iommufd)
    #[arg(long, default_value = DEV_IOMMU)]
    reference: PathBuf,
    /// the device under test
    #[arg(long, default_value = DEV_IOASID)]
    dev: PathBuf,
    /// seed of the random sequences (default: from the clock; always printed)
    #[arg(long, value_parser = parse_u64)]
    seed: Option<u64>,
    /// number of random sequences
    #[arg(long, default_value_t = 20)]
    sequences: u64,
    /// calls per random sequence
    #[arg(long, default_value_t = 60)]
    calls: u64,
    /// run only the random sequence with this sequence seed (printed on each
    /// sequence's result line)
    #[arg(long, value_parser = parse_u64)]
    replay: Option<u64>,
    /// comma separated ioctls to use (others are never issued): all, or of
    /// destroy, alloc, iova_ranges, allow_iovas, map, map_file, unmap, copy, option
    #[arg(long, default_value = "all")]
    ops: String,
    /// skip the fixed bad-input cases
    #[arg(long)]
    no_fixed: bool,
    /// skip the RLIMIT_MEMLOCK case (forked children)
    #[arg(long)]
    no_memlock: bool,
    /// do not compare per-call VmPin/VmLck changes (leaks are still checked)
    #[arg(long)]
    no_pin_compare: bool,
    /// give every mainline IOAS a real IOMMU domain (a HWPT allocated for the
    /// edu device 1234:11e8, bound to vfio-pci and to /dev/iommu), so that
    /// mainline pins at map time like /dev/ioasid: auto (on when an edu
    /// device exists), on (fail without one), off (a bare mainline IOAS)
    #[arg(long, value_enum, default_value_t = DomainMode::Auto, num_args = 0..=1, default_missing_value = "on")]
    mainline_domain: DomainMode,
    /// PCI address of the edu device (default: the first 1234:11e8 found)
    #[arg(long)]
    bdf: Option<String>,
    /// sysfs root
    #[arg(long, default_value = "/sys", hide = true)]
    sysfs: PathBuf,
    /// devfs root
    #[arg(long, default_value = "/dev", hide = true)]
    devfs: PathBuf,
    /// print every call with its reference result (and the test device's
    /// VmPin/VmLck change where it differs)
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DomainMode {
    Auto,
    On,
    Off,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ops = match OpSet::parse(&args.ops) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ioasid-difftest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mainline_domain = match args.mainline_domain {
        DomainMode::Off => None,
        mode => match domain::edu_cdev(&args.sysfs, &args.devfs, args.bdf.as_deref()) {
            Ok(cdev) => Some(cdev),
            Err(e) if mode == DomainMode::Auto => {
                eprintln!(
                    "ioasid-difftest: no mainline domain ({e:#}); comparing against a bare \
                     mainline IOAS, which pins nothing at map time: /dev/ioasid's map-time \
                     pinning shows up as differences (use --mainline-domain=off to silence this)"
                );
                None
            }
            Err(e) => {
                eprintln!("ioasid-difftest: --mainline-domain=on: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let cfg = Config {
        reference: args.reference,
        test: args.dev,
        seed: args.seed.unwrap_or_else(seed_from_time),
        sequences: args.sequences,
        calls: args.calls,
        replay: args.replay,
        ops,
        fixed: !args.no_fixed,
        memlock: !args.no_memlock,
        pins: !args.no_pin_compare,
        verbose: args.verbose,
        mainline_domain,
    };
    let mut out = std::io::stdout().lock();
    match run(&cfg, &mut out) {
        Ok(s) if s.differences == 0 => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!(
                "ioasid-difftest: {} difference(s); reproduce with --seed {:#x} --mainline-domain={} --ops {}",
                s.differences,
                cfg.seed,
                if cfg.mainline_domain.is_some() {
                    "on"
                } else {
                    "off"
                },
                if cfg.ops == OpSet::all() {
                    "all".to_string()
                } else {
                    cfg.ops.to_string()
                }
            );
            ExitCode::from(1)
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(out, "Bail out! {e:#}");
            eprintln!("ioasid-difftest: {e:#}");
            ExitCode::from(2)
        }
    }
}
