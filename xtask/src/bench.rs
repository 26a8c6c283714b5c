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
        if self.quick { "bench-quick" } else { "bench" }
    }

    /// The command the guest runs.
    pub fn guest_command(&self) -> Vec<String> {
        let mut cmd = vec!["ioasid-bench".to_string()];
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
    let produced = out.dir.join("bench.json");
    let json = std::fs::read_to_string(&produced)
        .with_context(|| format!("ioasid-bench left no report at {}", produced.display()))?;
    let n = check_report(&json).with_context(|| format!("checking {}", produced.display()))?;
    let keep_dir = paths.repo.join("target/bench");
    std::fs::create_dir_all(&keep_dir)
        .with_context(|| format!("cannot create {}", keep_dir.display()))?;
    let kept: PathBuf = keep_dir.join(format!("{name}.json"));
    std::fs::write(&kept, json).with_context(|| format!("writing {}", kept.display()))?;
    step(format!("{n} measurements; report in {}", kept.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(quick: bool) -> BenchOpts {
        BenchOpts {
            quick,
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
