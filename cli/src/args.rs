//! Command line.

use std::time::Duration;

use clap::Parser;

/// Show what is mapped into the IOMMU: iommu_map/iommu_unmap calls per
/// process and IOMMU domain, traced with eBPF.
///
/// Needs root, or CAP_BPF + CAP_PERFMON.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "ioasid-top", version, about, long_about = None)]
pub struct Args {
    /// Collect for --interval seconds, print once and exit.
    #[arg(long)]
    pub once: bool,

    /// Print JSON Lines (contract: docs/json-lines.md) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Seconds between refreshes (or to collect for, with --once).
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Only report calls made by this process (thread group id).
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Attach kprobes/kretprobes only, never fexit: what a kernel without BTF (or one that
    /// refuses fexit on a function) gets. For comparing the two and testing the fallback.
    #[arg(long)]
    pub kprobes_only: bool,
}

impl Args {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("interval must be > 0 seconds, got {s}"));
    }
    if v > 86_400.0 {
        return Err(format!("interval must be at most 86400 seconds, got {s}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("ioasid-top").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("no args parse");
        assert!(!a.once);
        assert!(!a.json);
        assert_eq!(a.interval(), Duration::from_secs(2));
        assert_eq!(a.pid, None);
        assert!(!a.kprobes_only);
    }

    #[test]
    fn all_options() {
        let a = parse(&[
            "--once",
            "--json",
            "--interval",
            "0.5",
            "--pid",
            "1234",
            "--kprobes-only",
        ])
        .expect("options parse");
        assert!(a.kprobes_only);
        assert!(a.once);
        assert!(a.json);
        assert_eq!(a.interval(), Duration::from_millis(500));
        assert_eq!(a.pid, Some(1234));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["--interval", "0"][..],
            &["--interval", "-1"],
            &["--interval", "abc"],
            &["--interval", "NaN"],
            &["--interval", "1e9"],
            &["--pid", "0"],
            &["--pid", "-3"],
            &["--pid", "x"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
