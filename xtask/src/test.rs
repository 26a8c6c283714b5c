//! `cargo xtask test`: host unit tests and lints, the patch checks, the kernel build, then
//! every in-VM scenario of ci/vm/scenarios.toml, each in a freshly booted guest.

use crate::util::{Paths, run, step};
use crate::vm::{GuestHung, SnoopControl, VmOpts, kernel_bug_lines, run_in_vm};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Scenarios {
    #[serde(rename = "scenario")]
    scenarios: Vec<Scenario>,
}

/// What a scenario's run must show.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Expect {
    /// Exit status 0 and a clean dmesg.
    Pass,
    /// A non-zero exit status (and a clean dmesg).
    Fail,
    /// The guest kernel reports a bug (WARN, BUG, Oops…): the runner must catch it.
    KernelBug,
    /// The command never ends: the runner must give up, twice (it runs a hung guest once
    /// more), and leave what the guest was doing: the command among its processes, and the
    /// blocked tasks' stacks.
    Hang,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    #[serde(default = "default_snoop")]
    snoop_control: String,
    command: Vec<String>,
    #[serde(default = "default_expect")]
    expect: Expect,
    #[serde(default = "default_timeout")]
    timeout_s: u64,
    /// Guest memory (virtme-ng's --memory).
    #[serde(default = "default_memory")]
    memory: String,
    /// Also an igb NIC behind a PCIe root port (see `VmOpts::pcie_nic`).
    #[serde(default)]
    pcie_nic: bool,
}

fn default_snoop() -> String {
    "off".into()
}
fn default_expect() -> Expect {
    Expect::Pass
}
fn default_timeout() -> u64 {
    300
}
fn default_memory() -> String {
    crate::vm::DEFAULT_MEMORY.into()
}

pub struct TestOpts {
    pub host_only: bool,
    pub filter: Option<String>,
}

pub fn test(paths: &Paths, opts: &TestOpts) -> Result<()> {
    let start = Instant::now();
    step("host: cargo fmt --check");
    run(Command::new("cargo")
        .current_dir(&paths.repo)
        .args(["fmt", "--all", "--check"]))?;
    step("host: cargo test (workspace, release profile shared with the VM binaries)");
    run(Command::new("cargo")
        .current_dir(&paths.repo)
        .args(["test", "--workspace", "--release"]))?;
    step("host: cargo clippy -D warnings");
    run(Command::new("cargo").current_dir(&paths.repo).args([
        "clippy",
        "--workspace",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    if opts.host_only {
        return Ok(());
    }
    step("building the binaries the guest runs");
    run(Command::new("cargo").current_dir(&paths.repo).args([
        "build",
        "--workspace",
        "--release",
        "--bins",
    ]))?;
    crate::patches::patches(paths, true)?;
    if crate::series_build::verified(paths)? {
        crate::kernel::kernel(paths, &crate::kernel::KernelOpts { jobs: None })?;
    } else {
        // A series or config not walked yet: build after every patch (and =n, =m), which also
        // leaves the kernel the VM boots.
        crate::series_build::each_patch(paths, crate::util::nproc())?;
    }
    crate::selftests::build(paths)?;
    crate::testmod::build(paths)?;

    let file = paths.repo.join("ci/vm/scenarios.toml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let all: Scenarios =
        toml::from_str(&text).with_context(|| format!("{} is invalid", file.display()))?;
    let chosen: Vec<&Scenario> = all
        .scenarios
        .iter()
        .filter(|s| {
            opts.filter
                .as_ref()
                .is_none_or(|f| s.name.contains(f.as_str()))
        })
        .collect();
    if chosen.is_empty() {
        bail!("no VM scenario matches {:?}", opts.filter);
    }
    let (mut passed, mut failed) = (0, Vec::new());
    let mut hung_once: Vec<String> = Vec::new();
    let vm_start = Instant::now();
    for s in chosen {
        let snoop = match s.snoop_control.as_str() {
            "on" => SnoopControl::On,
            "off" => SnoopControl::Off,
            other => bail!(
                "scenario {}: snoop_control must be on or off, not {other}",
                s.name
            ),
        };
        step(format!(
            "vm: {} (snoop-control={}, expect {:?})",
            s.name, s.snoop_control, s.expect
        ));
        let mut vm = VmOpts {
            snoop_control: snoop,
            timeout: Duration::from_secs(s.timeout_s),
            name: s.name.clone(),
            verbose: false,
            memory: s.memory.clone(),
            pcie_nic: s.pcie_nic,
        };
        let mut outcome = run_in_vm(paths, &vm, &s.command);
        // A guest that hangs is run once more: under TCG a vCPU can lose an IPI and stall the
        // guest for good, whatever it runs. What it was doing is printed above; a second hang
        // fails, and the summary names every scenario that needed the second run. Not when a
        // task is blocked in vfio, KVM, the IOMMU layer or /dev/ioasid: that is a deadlock.
        let deadlock = outcome
            .as_ref()
            .err()
            .filter(|e| e.downcast_ref::<GuestHung>().is_some())
            .and_then(|_| {
                crate::vm::blocked_in_code_under_test(
                    &paths.repo.join("target/vm-run").join(&vm.name),
                )
            });
        if let Some(line) = &deadlock {
            eprintln!(
                "    HUNG in the code under test (a task blocked in `{line}`): not run again"
            );
        } else if let Err(e) = &outcome
            && e.downcast_ref::<GuestHung>().is_some()
        {
            eprintln!("    HUNG: {}: {e:#}; running it once more", s.name);
            if s.expect != Expect::Hang {
                hung_once.push(s.name.clone());
            }
            vm.name = format!("{}-after-hang", s.name);
            outcome = run_in_vm(paths, &vm, &s.command);
        }
        let verdict = match outcome {
            Err(e) if s.expect == Expect::Hang && e.downcast_ref::<GuestHung>().is_some() => {
                hang_recorded(paths, &vm.name, &s.command)
            }
            Err(e) => Err(format!("{e:#}")),
            Ok(out) => {
                let bugs = kernel_bug_lines(&out.dmesg);
                let shown = format!("{}{}", out.stdout, out.stderr);
                for l in shown.lines() {
                    eprintln!("    | {l}");
                }
                match (s.expect, out.status, bugs.is_empty()) {
                    (Expect::Pass, 0, true)
                    | (Expect::Fail, 1.., true)
                    | (Expect::Fail, ..=-1, true) => Ok(()),
                    (Expect::KernelBug, _, false) => Ok(()),
                    (_, status, clean) => Err(format!(
                        "exit status {status}, dmesg {} (results in {})",
                        if clean {
                            "clean".to_owned()
                        } else {
                            format!("has: {}", bugs.join(" / "))
                        },
                        out.dir.display()
                    )),
                }
            }
        };
        match verdict {
            Ok(()) => {
                eprintln!("    ok: {}", s.name);
                passed += 1;
            }
            Err(why) => {
                eprintln!("    FAILED: {}: {why}", s.name);
                failed.push(s.name.clone());
            }
        }
    }
    eprintln!(
        "in-VM scenarios took {:.0} s; the whole test {:.0} s",
        vm_start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    println!("vm: {passed} passed, {} failed", failed.len());
    if !hung_once.is_empty() {
        println!(
            "vm: hung once and ran again (diagnostics in the log above): {}",
            hung_once.join(", ")
        );
    }
    if !failed.is_empty() {
        bail!("failed VM scenarios: {}", failed.join(", "));
    }
    Ok(())
}

/// Whether the guest of run `name` left, at its hang, `command` among its processes and the
/// SysRq dump of the blocked tasks in dmesg.
fn hang_recorded(paths: &Paths, name: &str, command: &[String]) -> Result<(), String> {
    let dir = paths.repo.join("target/vm-run").join(name);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let wanted = command.join(" ");
    if !read(crate::vm::HANG_PROCS).contains(&wanted) {
        return Err(format!(
            "the hang left no process list with `{wanted}` in {}",
            dir.display()
        ));
    }
    if !read(crate::vm::HANG_DMESG).contains("sysrq: Show Blocked State") {
        return Err(format!(
            "the hang left no SysRq dump in {}",
            dir.join(crate::vm::HANG_DMESG).display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenarios_file_parses_with_defaults() {
        let all: Scenarios = toml::from_str(include_str!("../../ci/vm/scenarios.toml"))
            .expect("ci/vm/scenarios.toml parses");
        let bench = all
            .scenarios
            .iter()
            .find(|s| s.name == "bench-quick")
            .expect("the bench-quick scenario exists");
        assert_eq!(bench.command, ["ioasid-bench", "--quick"]);
        assert_eq!(bench.memory, crate::vm::DEFAULT_MEMORY);
        assert_eq!(bench.expect, Expect::Pass);
        let overhead = all
            .scenarios
            .iter()
            .find(|s| s.name == "bench-overhead-quick")
            .expect("the bench-overhead-quick scenario exists");
        assert_eq!(overhead.command, ["ioasid-bench", "--overhead", "--quick"]);
        assert_eq!(overhead.expect, Expect::Pass);
        let custom: Scenarios =
            toml::from_str("[[scenario]]\nname = \"x\"\ncommand = [\"true\"]\nmemory = \"4G\"\n")
                .expect("memory key parses");
        assert_eq!(custom.scenarios[0].memory, "4G");
    }
}
