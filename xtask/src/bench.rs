//! `cargo xtask bench`: builds `ioasid-bench` (and, unless told not to, the kernel), boots the
//! kernel with enough memory for the 1 GiB workload, runs the benchmark, prints its table and
//! keeps its JSON report in target/bench/. Timings are reported, never asserted.

use crate::util::{Paths, run, step};
use crate::vm::{SnoopControl, VmOpts, kernel_bug_lines, run_in_vm};
use anyhow::{Context, Result, bail, ensure};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Guest memory of a benchmark run: the full run pins a 1 GiB buffer while the guest kernel,
/// /dev/ioasid's pfn table and the second IOAS of COPY need room beside it.
pub const BENCH_MEMORY: &str = "4G";

pub struct BenchOpts {
    pub quick: bool,
    /// `ioasid-bench --overhead`: the cost of tracing (bare, ioasid-top with and without its
    /// pinning probes, bpftrace, the fexit floor).
    pub overhead: bool,
    pub reps: Option<u32>,
    /// Comma-separated backend names, passed to ioasid-bench as they are.
    pub backends: Option<String>,
    pub memory: String,
    pub timeout: Duration,
    /// Use the kernel built now instead of running `cargo xtask kernel` first.
    pub no_kernel_build: bool,
}

impl BenchOpts {
    /// The run's name: its directory under target/vm-run/ and its report under target/bench/.
    pub fn run_name(&self) -> &'static str {
        match (self.overhead, self.quick) {
            (false, false) => "bench",
            (false, true) => "bench-quick",
            (true, false) => "overhead",
            (true, true) => "overhead-quick",
        }
    }

    /// The report ioasid-bench writes into the run directory.
    pub fn report_file(&self) -> &'static str {
        if self.overhead {
            "overhead.json"
        } else {
            "bench.json"
        }
    }

    /// The command the guest runs.
    pub fn guest_command(&self) -> Vec<String> {
        let mut cmd = vec!["ioasid-bench".to_string()];
        if self.overhead {
            cmd.push("--overhead".into());
        }
        if self.quick {
            cmd.push("--quick".into());
        }
        if let Some(reps) = self.reps {
            cmd.extend(["--reps".into(), reps.to_string()]);
        }
        if let Some(b) = &self.backends {
            cmd.extend(["--backends".into(), b.clone()]);
        }
        cmd
    }
}

/// Checks that `json` is an `ioasid-bench --overhead` report: its six modes and a verdict;
/// returns the number of timed loops.
pub fn check_overhead_report(json: &str) -> Result<usize> {
    let v: serde_json::Value = serde_json::from_str(json).context("overhead.json is not JSON")?;
    let modes = v
        .get("modes")
        .and_then(|m| m.as_array())
        .context("overhead.json has no modes array")?;
    let names: Vec<&str> = modes
        .iter()
        .filter_map(|m| m.get("mode").and_then(|n| n.as_str()))
        .collect();
    ensure!(
        names
            == [
                "bare",
                "ioasid-top",
                "ioasid-top-pins",
                "bpftrace",
                "fexit-floor",
                "counts-floor"
            ],
        "overhead.json has the modes {names:?}, not bare, ioasid-top, ioasid-top-pins, bpftrace, \
         fexit-floor and counts-floor"
    );
    ensure!(
        v.get("verdict").is_some_and(|x| x.is_object()),
        "overhead.json has no verdict"
    );
    let loops = v
        .get("round_results")
        .and_then(|r| r.as_array())
        .context("overhead.json has no round_results")?
        .iter()
        .filter_map(|r| r.get("loops_ns")?.as_array().map(Vec::len))
        .sum();
    Ok(loops)
}

/// Checks that `json` is an ioasid-bench report with results; returns how many.
pub fn check_report(json: &str) -> Result<usize> {
    let v: serde_json::Value = serde_json::from_str(json).context("bench.json is not JSON")?;
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .context("bench.json has no results array")?;
    ensure!(!results.is_empty(), "bench.json has no results");
    Ok(results.len())
}

pub fn bench(paths: &Paths, opts: &BenchOpts) -> Result<()> {
    step("building ioasid-bench");
    run(Command::new("cargo").current_dir(&paths.repo).args([
        "build",
        "--release",
        "-p",
        "ioasid-vmtests",
        "--bin",
        "ioasid-bench",
    ]))?;
    if opts.overhead {
        // The guest shares the host's root filesystem: the host's bpftrace is the guest's.
        ensure!(
            crate::util::have("bpftrace"),
            "bpftrace is not installed: run `cargo xtask setup` (or apt-get install bpftrace)"
        );
        step("building ioasid-top");
        run(Command::new("cargo").current_dir(&paths.repo).args([
            "build",
            "--release",
            "-p",
            "ioasid-top",
        ]))?;
    }
    if opts.no_kernel_build {
        step(format!(
            "using the kernel built now: {}",
            paths.bzimage().display()
        ));
    } else {
        crate::kernel::kernel(paths, &crate::kernel::KernelOpts { jobs: None })?;
    }
    let name = opts.run_name();
    let vm = VmOpts {
        snoop_control: SnoopControl::Off,
        timeout: opts.timeout,
        name: name.into(),
        verbose: false,
        memory: opts.memory.clone(),
        pcie_nic: false,
    };
    let cmd = opts.guest_command();
    step(format!(
        "vm ({} memory, TCG): {}",
        opts.memory,
        cmd.join(" ")
    ));
    let out = run_in_vm(paths, &vm, &cmd)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let bugs = kernel_bug_lines(&out.dmesg);
    if !bugs.is_empty() {
        bail!(
            "the guest kernel reported a bug during the benchmark (dmesg in {}): {}",
            out.dir.display(),
            bugs.join(" / ")
        );
    }
    if out.status != 0 {
        bail!(
            "ioasid-bench exited with status {} (results in {})",
            out.status,
            out.dir.display()
        );
    }
    let produced = out.dir.join(opts.report_file());
    let json = std::fs::read_to_string(&produced)
        .with_context(|| format!("ioasid-bench left no report at {}", produced.display()))?;
    let n = if opts.overhead {
        check_overhead_report(&json)
    } else {
        check_report(&json)
    }
    .with_context(|| format!("checking {}", produced.display()))?;
    let keep_dir = paths.repo.join("target/bench");
    std::fs::create_dir_all(&keep_dir)
        .with_context(|| format!("cannot create {}", keep_dir.display()))?;
    let kept: PathBuf = keep_dir.join(format!("{name}.json"));
    std::fs::write(&kept, json).with_context(|| format!("writing {}", kept.display()))?;
    step(format!(
        "{n} {}; report in {}",
        if opts.overhead {
            "timed loops"
        } else {
            "measurements"
        },
        kept.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(quick: bool) -> BenchOpts {
        BenchOpts {
            quick,
            overhead: false,
            reps: None,
            backends: None,
            memory: BENCH_MEMORY.into(),
            timeout: Duration::from_secs(1),
            no_kernel_build: true,
        }
    }

    #[test]
    fn guest_command_carries_the_options() {
        assert_eq!(opts(false).guest_command(), ["ioasid-bench"]);
        assert_eq!(opts(false).run_name(), "bench");
        let mut o = opts(true);
        o.reps = Some(3);
        o.backends = Some("ioasid,type1".into());
        assert_eq!(
            o.guest_command(),
            [
                "ioasid-bench",
                "--quick",
                "--reps",
                "3",
                "--backends",
                "ioasid,type1"
            ]
        );
        assert_eq!(o.run_name(), "bench-quick");
        assert_eq!(o.report_file(), "bench.json");
        let mut o = opts(false);
        o.overhead = true;
        assert_eq!(o.guest_command(), ["ioasid-bench", "--overhead"]);
        assert_eq!(
            (o.run_name(), o.report_file()),
            ("overhead", "overhead.json")
        );
        o.quick = true;
        assert_eq!(o.run_name(), "overhead-quick");
    }

    #[test]
    fn an_overhead_report_needs_its_six_modes_and_a_verdict() {
        const MODES: &str = r#"[{"mode":"bare"},{"mode":"ioasid-top"},{"mode":"ioasid-top-pins"},
            {"mode":"bpftrace"},{"mode":"fexit-floor"},{"mode":"counts-floor"}]"#;
        let ok = format!(
            r#"{{"modes":{MODES},"verdict":{{"top_over_bare":1.0}},
            "round_results":[{{"loops_ns":[[1,2],[3,4]]}},{{"loops_ns":[[1,2]]}}]}}"#
        );
        assert_eq!(check_overhead_report(&ok).unwrap(), 3);
        let four = r#"{"modes":[{"mode":"bare"},{"mode":"ioasid-top"},{"mode":"bpftrace"},
            {"mode":"fexit-floor"}],"verdict":{},"round_results":[]}"#;
        assert!(check_overhead_report(four).is_err(), "no ioasid-top-pins");
        let no_verdict = format!(r#"{{"modes":{MODES},"round_results":[]}}"#);
        assert!(check_overhead_report(&no_verdict).is_err());
        assert!(check_overhead_report("nope").is_err());
    }

    #[test]
    fn a_report_needs_results() {
        assert_eq!(
            check_report(r#"{"results":[{"workload":"map 4K x 1024"}]}"#).unwrap(),
            1
        );
        assert!(check_report(r#"{"results":[]}"#).is_err());
        assert!(check_report(r#"{"kernel":"7.3.4"}"#).is_err());
        assert!(check_report("ioasid-bench: error").is_err());
    }
}
