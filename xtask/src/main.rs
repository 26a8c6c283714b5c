//! `cargo xtask`: the project's developer and CI commands.

mod bench;
mod kernel;
mod patches;
mod selftests;
mod series_build;
mod setup;
mod test;
mod testmod;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ioasid: setup, kernel, test VM, patches, tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks and fetch the Linux source (idempotent).
    Setup,
    /// Apply patches/ to a pristine tree, configure from ci/kernel/, build with ccache.
    Kernel {
        /// Parallel make jobs (default: number of CPUs).
        #[arg(long)]
        jobs: Option<usize>,
        /// Build after every patch of the series, then with the component =n, =m and =y, with
        /// clippy and rustfmt on the series' Rust files (see series_build.rs).
        #[arg(long)]
        each_patch: bool,
    },
    /// Boot the built kernel under TCG and run CMD as root; exits with CMD's status.
    Vm {
        /// intel-iommu's snoop-control property (ECAP.SC).
        #[arg(long, value_enum, default_value = "off")]
        snoop_control: vm::SnoopControl,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Show the guest console.
        #[arg(long, short)]
        verbose: bool,
        /// Name of the run directory, target/vm-run/NAME/ (stdout, stderr, status, dmesg).
        #[arg(long, default_value = "manual")]
        name: String,
        /// Guest memory (virtme-ng's --memory: 2G, 4096M…).
        #[arg(long, default_value = vm::DEFAULT_MEMORY)]
        memory: String,
        /// Also an igb NIC behind a PCIe root port (a PCI Express function, unlike edu).
        #[arg(long)]
        pcie_nic: bool,
        /// The command to run in the guest.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Regenerate patches/ from kernel-rust/ (or, with --check, fail when it is stale).
    Patches {
        #[arg(long)]
        check: bool,
        /// Write the edited commits of the scratch tree back to kernel-rust/ (see patches.rs).
        #[arg(long, conflicts_with = "check")]
        import: bool,
    },
    /// Host tests and lints, then the in-VM scenarios of ci/vm/scenarios.toml.
    Test {
        /// Only the host part (no kernel, no VM).
        #[arg(long)]
        host_only: bool,
        /// Only VM scenarios whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Build the kselftests the guest runs (target/selftests/) against the built kernel's headers.
    Selftests,
    /// Set up everything, build the kernel, and boot it running the main demo.
    Demo,
    /// MAP+UNMAP and COPY benchmark in one VM run: /dev/ioasid (+domain, bare) vs iommufd
    /// (+domain, bare) vs VFIO type1; prints the table and ratios, keeps the JSON in
    /// target/bench/.
    Bench {
        /// Small sizes (what the bench-quick CI scenario runs).
        #[arg(long)]
        quick: bool,
        /// Instead: the cost of tracing iommu_map — a 4 KiB MAP+UNMAP loop bare, under
        /// ioasid-top and under an equivalent bpftrace program (target/bench/overhead.json).
        #[arg(long, conflicts_with = "backends")]
        overhead: bool,
        /// Repetitions of each measurement (ioasid-bench's default: 5, with --quick 2).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        reps: Option<u32>,
        /// Only these backends, comma-separated: ioasid+domain, ioasid, iommufd+domain, iommufd,
        /// type1.
        #[arg(long)]
        backends: Option<String>,
        /// Guest memory (the full run pins a 1 GiB buffer).
        #[arg(long, default_value = bench::BENCH_MEMORY)]
        memory: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Boot the kernel built now; do not run `cargo xtask kernel` first.
        #[arg(long)]
        no_kernel_build: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let paths = util::Paths::new()?;
    match cli.command {
        Cmd::Setup => setup::setup(&paths),
        Cmd::Kernel { jobs, each_patch } => {
            if each_patch {
                series_build::each_patch(&paths, jobs.unwrap_or_else(util::nproc))
            } else {
                kernel::kernel(&paths, &kernel::KernelOpts { jobs }).map(|_| ())
            }
        }
        Cmd::Vm {
            snoop_control,
            timeout,
            verbose,
            name,
            memory,
            pcie_nic,
            cmd,
        } => {
            let opts = vm::VmOpts {
                snoop_control,
                timeout: Duration::from_secs(timeout),
                name,
                verbose,
                memory,
                pcie_nic,
            };
            let status = vm::vm_command(&paths, &opts, &cmd)?;
            std::process::exit(status.clamp(0, 255));
        }
        Cmd::Patches { check, import } => {
            if import {
                patches::import(&paths)
            } else {
                patches::patches(&paths, check)
            }
        }
        Cmd::Selftests => selftests::build(&paths).map(|p| println!("{}", p.display())),
        Cmd::Test { host_only, filter } => {
            setup::setup(&paths)?;
            test::test(&paths, &test::TestOpts { host_only, filter })
        }
        Cmd::Demo => {
            setup::setup(&paths)?;
            demo(&paths)
        }
        Cmd::Bench {
            quick,
            overhead,
            reps,
            backends,
            memory,
            timeout,
            no_kernel_build,
        } => bench::bench(
            &paths,
            &bench::BenchOpts {
                quick,
                overhead,
                reps,
                backends,
                memory,
                timeout: Duration::from_secs(timeout),
                no_kernel_build,
            },
        ),
    }
}

/// The main job: a real VFIO workload in the booted, patched kernel, watched by ioasid-top.
fn demo(paths: &util::Paths) -> Result<()> {
    util::run(
        std::process::Command::new("cargo")
            .current_dir(&paths.repo)
            .args(["build", "--workspace", "--release", "--bins"]),
    )?;
    kernel::kernel(paths, &kernel::KernelOpts { jobs: None })?;
    let opts = vm::VmOpts {
        snoop_control: vm::SnoopControl::Off,
        timeout: Duration::from_secs(600),
        name: "demo".into(),
        verbose: false,
        memory: vm::DEFAULT_MEMORY.into(),
        pcie_nic: false,
    };
    let status = vm::vm_command(paths, &opts, &["sh".into(), "ci/vm/demo.sh".into()])?;
    std::process::exit(status.clamp(0, 255));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_options_are_refused_with_usage() {
        let err = Cli::try_parse_from(["xtask", "kernel", "--frobnicate"])
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("--frobnicate"), "{err}");
        assert!(
            Cli::try_parse_from(["xtask", "vm", "--snoop-control", "maybe", "--", "true"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["xtask", "vm"]).is_err(),
            "vm needs a command"
        );
        assert!(
            Cli::try_parse_from(["xtask", "vm", "--snoop-control", "on", "--", "true"]).is_ok()
        );
    }

    /// `(quick, reps, memory, no_kernel_build)` of a `bench` command line.
    fn bench_opts(args: &[&str]) -> (bool, Option<u32>, String, bool) {
        let cli = Cli::try_parse_from(args).expect("bench options parse");
        let Cmd::Bench {
            quick,
            reps,
            memory,
            no_kernel_build,
            ..
        } = cli.command
        else {
            panic!("not the bench command");
        };
        (quick, reps, memory, no_kernel_build)
    }

    #[test]
    fn bench_options() {
        assert_eq!(
            bench_opts(&["xtask", "bench"]),
            (false, None, "4G".to_string(), false)
        );
        assert_eq!(
            bench_opts(&[
                "xtask",
                "bench",
                "--quick",
                "--reps",
                "3",
                "--memory",
                "6G",
                "--no-kernel-build",
            ]),
            (true, Some(3), "6G".to_string(), true)
        );
        assert!(Cli::try_parse_from(["xtask", "bench", "--reps", "0"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "bench", "--overhead", "--quick"])
            .expect("--overhead parses");
        assert!(matches!(
            cli.command,
            Cmd::Bench {
                overhead: true,
                quick: true,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["xtask", "bench", "--overhead", "--backends", "type1"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["xtask", "vm", "--name", "x", "--memory", "4G", "--", "true"])
                .is_ok()
        );
    }
}
