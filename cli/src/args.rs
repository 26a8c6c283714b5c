//! Command line.

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Show what is mapped into the IOMMU: iommu_map/iommu_unmap calls per
/// process and IOMMU domain, traced with eBPF.
///
/// Needs root, or CAP_BPF + CAP_PERFMON.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "ioasid-top", version, about, long_about = None)]
pub struct Args {
    /// Collect for --interval seconds, print once and exit.
    #[arg(long, global = true)]
    pub once: bool,

    /// Print JSON Lines (contract: docs/json-lines.md) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds between refreshes (or to collect for, with --once).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Only report calls made by this process (thread group id).
    #[arg(long, global = true, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Attach kprobes/kretprobes only, never fexit: what a kernel without BTF (or one that
    /// refuses fexit on a function) gets. For comparing the two and testing the fallback.
    #[arg(long, global = true)]
    pub kprobes_only: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Findings instead of numbers: each with a severity, its subject, the evidence, why it
    /// matters and what to do. With --once the exit status is the worst finding's: 0 when
    /// none is at warning or above, 3 for a warning, 4 for a critical one.
    Audit,
}

impl Args {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }

    pub fn audit(&self) -> bool {
        self.command == Some(Command::Audit)
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
        assert!(!a.audit());
    }

    #[test]
    fn audit_takes_the_live_view_options() {
        for argv in [
            &[
                "audit",
                "--once",
                "--json",
                "--interval",
                "0.5",
                "--kprobes-only",
            ][..],
            &[
                "--once",
                "--json",
                "--kprobes-only",
                "audit",
                "--interval",
                "0.5",
            ],
        ] {
            let a = parse(argv).expect("audit parses");
            assert!(a.audit(), "{argv:?}");
            assert!(a.once && a.json && a.kprobes_only, "{argv:?}");
            assert_eq!(a.interval(), Duration::from_millis(500));
        }
        assert!(parse(&["audit", "--bogus"]).is_err());
        assert!(parse(&["audits"]).is_err());
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
