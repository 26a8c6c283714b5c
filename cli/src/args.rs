//! Command line.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

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

    /// Only report calls (and pinning rows) of tasks whose name (`comm`, at most 15 bytes)
    /// contains SUBSTRING (case-sensitive). With --pid, both must match.
    #[arg(long, global = true, value_name = "SUBSTRING", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Order of the table rows (not of --json lines, whose order docs/json-lines.md fixes).
    /// pid, comm: every table; mapped (the domain table's default), maps, unmaps, failed,
    /// domain: the domain table; pinned, pins, unpins: the pinning table. A table the key
    /// does not name keeps its default order (domains by mapped bytes, KVM VMs by address,
    /// pinning by pid). Counts sort most first, pid/comm/domain ascending.
    #[arg(long, global = true, value_name = "KEY", value_enum)]
    pub sort: Option<SortKey>,

    /// Attach kprobes/kretprobes only, never fexit: what a kernel without BTF (or one that
    /// refuses fexit on a function) gets. For comparing the two and testing the fallback.
    #[arg(long, global = true)]
    pub kprobes_only: bool,

    /// Do not trace the pinning functions (GUP pins and unpins, memfd folio pins,
    /// __account_locked_vm, iommufd's iopt_pages_update_pinned): mappings only, at the least
    /// cost to the processes that map. The pinning table then shows only what /proc said at
    /// start-up. Not with `audit`, whose pinning findings need those counts.
    #[arg(long, global = true)]
    pub no_pins: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Findings instead of numbers: each with a severity, its subject, the evidence, why it
    /// matters and what to do. With --once the exit status is the worst finding's: 0 when
    /// none is at warning or above, 3 for a warning, 4 for a critical one.
    Audit,
    /// The IOVA ranges mapped now in IOMMU domains, from the events since attach: each
    /// `iommu_map` adds its range, each `iommu_unmap` removes what it unmapped; adjacent
    /// ranges of one process with the same prot are merged. Without ADDR every domain the
    /// (filtered) processes map into; with ADDR that domain only.
    Domain {
        /// `struct iommu_domain *` in hex (as printed in the DOMAIN column), or omit for all.
        #[arg(value_name = "ADDR", value_parser = parse_domain)]
        addr: Option<u64>,
    },
}

/// `--sort` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// Every table: by process id.
    Pid,
    /// Every table: by task name, then process id.
    Comm,
    /// Domain table: net mapped bytes, most first (its default).
    Mapped,
    /// Domain table: successful map calls, most first.
    Maps,
    /// Domain table: unmap calls, most first.
    Unmaps,
    /// Domain table: failed map calls, most first.
    Failed,
    /// Domain table: by domain address.
    Domain,
    /// Pinning table: net long-term pinned pages (PINNED), most first.
    Pinned,
    /// Pinning table: pins taken (PINS), most first.
    Pins,
    /// Pinning table: pins dropped (UNPINS), most first.
    Unpins,
}

impl Args {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }

    pub fn audit(&self) -> bool {
        self.command == Some(Command::Audit)
    }

    /// Why these options cannot go together, if they cannot (clap cannot express a global
    /// flag that one subcommand refuses).
    pub fn conflict(&self) -> Option<&'static str> {
        (self.audit() && self.no_pins).then_some(
            "`audit` needs the pinning probes (pins over RLIMIT_MEMLOCK, double accounting, pins \
             that outlive their owner): run it without --no-pins",
        )
    }

    /// `ioasid-top domain [ADDR]`: Some(the domain, or None for all of them).
    pub fn domain_view(&self) -> Option<Option<u64>> {
        match self.command {
            Some(Command::Domain { addr }) => Some(addr),
            _ => None,
        }
    }
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("--comm needs a non-empty substring".into());
    }
    Ok(s.to_owned())
}

fn parse_domain(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    match u64::from_str_radix(digits, 16) {
        Ok(0) => Err("the domain address cannot be 0".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!(
            "`{s}` is not a domain address in hex (like 0xff11000003002a00)"
        )),
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
        assert!(!a.no_pins);
        assert!(!a.audit());
        assert_eq!(a.conflict(), None);
        assert_eq!(a.domain_view(), None);
        assert_eq!((a.comm, a.sort), (None, None));
    }

    #[test]
    fn sort_and_comm() {
        let a = parse(&["--sort", "pinned", "--comm", "qemu"]).expect("parses");
        assert_eq!(a.sort, Some(SortKey::Pinned));
        assert_eq!(a.comm.as_deref(), Some("qemu"));
        for (name, key) in [
            ("pid", SortKey::Pid),
            ("comm", SortKey::Comm),
            ("mapped", SortKey::Mapped),
            ("maps", SortKey::Maps),
            ("unmaps", SortKey::Unmaps),
            ("failed", SortKey::Failed),
            ("domain", SortKey::Domain),
            ("pins", SortKey::Pins),
            ("unpins", SortKey::Unpins),
        ] {
            assert_eq!(parse(&["--sort", name]).expect(name).sort, Some(key));
        }
        assert!(parse(&["--sort", "size"]).is_err());
        assert!(parse(&["--comm", ""]).is_err());
    }

    #[test]
    fn domain_subcommand() {
        let a = parse(&["domain", "--once", "--json", "--comm", "vfio-edu-worklo"])
            .expect("domain parses");
        assert_eq!(a.domain_view(), Some(None));
        assert!(a.once && a.json && !a.audit());
        assert_eq!(a.comm.as_deref(), Some("vfio-edu-worklo"));
        for addr in [
            "0xff11000003002a00",
            "ff11000003002A00",
            "0XFF11000003002A00",
        ] {
            let a = parse(&["--pid", "7", "domain", addr, "--interval", "1"]).expect(addr);
            assert_eq!(a.domain_view(), Some(Some(0xff11_0000_0300_2a00)), "{addr}");
            assert_eq!(a.pid, Some(7));
        }
        for bad in ["0", "0x", "xyz", "0x1ffffffffffffffff", "-1"] {
            assert!(parse(&["domain", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["domain", "0x1", "0x2"]).is_err());
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
    fn no_pins_is_for_the_views_not_the_audit() {
        for argv in [
            &["--no-pins"][..],
            &["--no-pins", "--json"],
            &["domain", "--no-pins"],
        ] {
            let a = parse(argv).expect("--no-pins parses");
            assert!(a.no_pins, "{argv:?}");
            assert_eq!(a.conflict(), None, "{argv:?}");
        }
        for argv in [
            &["--no-pins", "audit"][..],
            &["audit", "--once", "--no-pins"],
        ] {
            let a = parse(argv).expect("parses; refused by conflict()");
            assert!(
                a.conflict()
                    .is_some_and(|why| why.contains("without --no-pins")),
                "{argv:?}"
            );
        }
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
