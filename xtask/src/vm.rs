//! `cargo xtask vm`: boots the built kernel with virtme-ng under TCG and runs one command.
//!
//! virtme-ng cannot hand back the guest command's output or exit status on a host without
//! udev, so the command runs inside a wrapper that writes stdout, stderr, the exit status and
//! dmesg into a per-run directory shared read-write with the guest. The host then reads them:
//! a missing status file means the guest never finished (panic, hang, timeout). The guest
//! mounts its own /tmp, so everything the guest runs lives under the repository.

use crate::util::{Paths, note, step};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SnoopControl {
    On,
    Off,
}

pub struct VmOpts {
    pub snoop_control: SnoopControl,
    pub timeout: Duration,
    /// Name of the run directory under target/vm-run/.
    pub name: String,
    /// Echo the guest console to stderr while it runs.
    pub verbose: bool,
    /// Guest memory, as virtme-ng's `--memory` takes it (e.g. `2G`).
    pub memory: String,
    /// Also an `igb` NIC behind a PCIe root port: a PCI Express function, with the Device
    /// Control register (Enable No Snoop) that `edu`, conventional PCI, lacks.
    pub pcie_nic: bool,
}

/// Guest memory of test runs: enough for the scenarios, small enough for a 2-core CI machine.
pub const DEFAULT_MEMORY: &str = "2G";

pub struct VmOutcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub dmesg: String,
    pub dir: PathBuf,
}

/// Lines that mean the guest kernel reported a bug. A test run fails on any of them.
const KERNEL_BUG_MARKERS: &[&str] = &[
    "------------[ cut here ]------------",
    "WARNING:",
    "BUG:",
    "Oops:",
    "KASAN:",
    "UBSAN:",
    "Kernel panic",
    "general protection fault",
    "rust_panic",
];

pub fn kernel_bug_lines(dmesg: &str) -> Vec<&str> {
    dmesg
        .lines()
        .filter(|l| KERNEL_BUG_MARKERS.iter().any(|m| l.contains(m)))
        .collect()
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub fn qemu_opts(snoop: SnoopControl, pcie_nic: bool) -> String {
    let sc = match snoop {
        SnoopControl::On => "on",
        SnoopControl::Off => "off",
    };
    // -cpu max gives nested SVM under TCG; split irqchip is what intremap=on requires.
    let mut opts = format!(
        "-machine q35,kernel-irqchip=split -cpu max \
         -device intel-iommu,intremap=on,caching-mode=on,snoop-control={sc} -device edu"
    );
    if pcie_nic {
        // Behind a root port, so that it is a PCI Express endpoint in an IOMMU group of its own.
        opts.push_str(" -device pcie-root-port,id=rp1,chassis=1 -device igb,bus=rp1");
    }
    opts
}

/// The guest did not finish in time: hung, or too slow. What it was doing is printed already
/// ([`report_hang`]).
#[derive(Debug)]
pub struct GuestHung {
    pub timeout: Duration,
    pub console: PathBuf,
}

impl std::fmt::Display for GuestHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest did not finish within {:?}; console: {}",
            self.timeout,
            self.console.display()
        )
    }
}

impl std::error::Error for GuestHung {}

/// Boots the kernel, runs `cmd` (argv) as root with the repository as working directory.
pub fn run_in_vm(paths: &Paths, opts: &VmOpts, cmd: &[String]) -> Result<VmOutcome> {
    if cmd.is_empty() {
        bail!("no command given: use `cargo xtask vm -- CMD [ARGS…]`");
    }
    let image = paths.bzimage();
    if !image.exists() {
        bail!(
            "no kernel at {}: run `cargo xtask kernel` first",
            image.display()
        );
    }
    if !paths.vng().exists() {
        bail!("virtme-ng is not installed: run `cargo xtask setup` first");
    }
    let dir = paths.repo.join("target/vm-run").join(&opts.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let d = shell_quote(&dir.to_string_lossy());
    let command_line: Vec<String> = cmd.iter().map(|a| shell_quote(a)).collect();
    let script = format!(
        "#!/bin/sh\n\
         # Written by cargo xtask vm: runs the command and leaves its results for the host.\n\
         cd {repo} || exit 1\n\
         export PATH={repo}/target/release:$PATH\n\
         export IOASID_VM_OUT={d}\n\
         mount -t debugfs none /sys/kernel/debug 2>/dev/null\n\
         ( sleep {watch_s}\n\
           echo 'cargo xtask vm: the command is still running after {watch_s} s' > /dev/kmsg\n\
           for p in /proc/[0-9]*; do\n\
             cmd=$(tr '\\0' ' ' < $p/cmdline)\n\
             [ -n \"$cmd\" ] || continue\n\
             echo \"${{p#/proc/}} $(cut -d' ' -f3 $p/stat) $(cat $p/wchan) $cmd\"\n\
           done > {d}/{HANG_PROCS} 2>/dev/null\n\
           echo w > /proc/sysrq-trigger\n\
           echo l > /proc/sysrq-trigger\n\
           dmesg > {d}/{HANG_DMESG} ) &\n\
         watchdog=$!\n\
         ( {cmdline} ) > {d}/stdout 2> {d}/stderr < /dev/null\n\
         echo $? > {d}/status.tmp\n\
         kill $watchdog 2>/dev/null\n\
         dmesg > {d}/dmesg\n\
         mv {d}/status.tmp {d}/status\n\
         sync\n",
        repo = shell_quote(&paths.repo.to_string_lossy()),
        cmdline = command_line.join(" "),
        watch_s = hang_watch(opts.timeout).as_secs(),
    );
    let script_path = dir.join("run.sh");
    std::fs::write(&script_path, script)?;

    let console = dir.join("console.log");
    let console_file = std::fs::File::create(&console)?;
    let mut vng = Command::new(paths.vng());
    // vng starts `virtme-run` by name from its own venv.
    vng.current_dir(&paths.repo)
        .env("PATH", crate::util::path_with(&paths.venv().join("bin")))
        .arg("--run")
        .arg(&image)
        .args([
            "--disable-kvm",
            "--disable-microvm",
            "--force-9p",
            "--user",
            "root",
        ])
        .args(["--cpus", "2", "--memory", opts.memory.as_str(), "--verbose"])
        .arg(format!("--rwdir={}", dir.display()))
        // `=`: argparse takes a separate value that starts with `-` for an option.
        .arg(format!(
            "--qemu-opts={}",
            qemu_opts(opts.snoop_control, opts.pcie_nic)
        ))
        .arg("--append=intel_iommu=on iommu.strict=1")
        .arg("--exec")
        .arg(format!("sh {}", script_path.display()))
        .stdin(Stdio::null())
        .stdout(console_file.try_clone()?)
        .stderr(console_file)
        // A group of its own, so that giving up kills qemu too, not only vng.
        .process_group(0);
    let start = Instant::now();
    forward_interrupts_to_guest();
    let mut child = vng.spawn().context("cannot start virtme-ng (vng)")?;
    GUEST_PGID.store(
        libc::pid_t::try_from(child.id()).unwrap_or(0),
        Ordering::SeqCst,
    );
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > opts.timeout {
            timed_out = true;
            kill_group(&mut child);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    GUEST_PGID.store(0, Ordering::SeqCst);
    let console_text = read_lossy(&console);
    if opts.verbose {
        eprint!("{console_text}");
    }
    let status_text = std::fs::read_to_string(dir.join("status")).ok();
    let Some(status_text) = status_text else {
        let tail: Vec<&str> = console_text.lines().rev().take(30).collect();
        for l in tail.iter().rev() {
            eprintln!("    | {l}");
        }
        if timed_out {
            report_hang(&dir);
            return Err(GuestHung {
                timeout: opts.timeout,
                console,
            }
            .into());
        }
        bail!(
            "the guest stopped before the command finished (panic?); console: {}",
            console.display()
        );
    };
    let status: i32 = status_text
        .trim()
        .parse()
        .context("unreadable guest status file")?;
    note(format!(
        "guest run `{}` took {:.1} s",
        cmd.join(" "),
        start.elapsed().as_secs_f64()
    ));
    Ok(VmOutcome {
        status,
        stdout: read_lossy(&dir.join("stdout")),
        stderr: read_lossy(&dir.join("stderr")),
        dmesg: read_lossy(&dir.join("dmesg")),
        dir,
    })
}

/// What the guest leaves when its command outlives [`hang_watch`]: every user process with its state
/// and wait channel, and dmesg with the kernel stacks of the blocked (D state) tasks (SysRq w)
/// and of what every CPU is running (SysRq l), for a task spinning with the other CPU's answer
/// lost.
pub const HANG_PROCS: &str = "procs-at-hang";
pub const HANG_DMESG: &str = "dmesg-at-hang";

/// When the guest records what a command that may hang is doing: early enough that the host's
/// timeout, which also covers the boot, does not kill the guest first.
fn hang_watch(timeout: Duration) -> Duration {
    timeout
        .saturating_sub(Duration::from_secs(60))
        .max(timeout / 2)
}

/// The first line of the blocked tasks' stacks a hung guest left (SysRq w) that is in the code
/// under test (vfio, KVM, the IOMMU layer, /dev/ioasid): a deadlock there, not a stalled vCPU.
pub fn blocked_in_code_under_test(dir: &Path) -> Option<String> {
    let dmesg = read_lossy(&dir.join(HANG_DMESG));
    let from = dmesg.find("sysrq: Show Blocked State")?;
    let blocked = &dmesg[from..];
    let end = blocked
        .find("sysrq: Show backtrace of all active CPUs")
        .unwrap_or(blocked.len());
    // Stack frames only: a task's own name (`task:kvm-vfio-worklo`) says nothing.
    blocked[..end]
        .lines()
        .filter(|l| !l.contains("task:"))
        .find(|l| {
            ["vfio", "kvm", "iommu", "ioasid"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(|l| l.trim().to_owned())
}

/// Prints what a guest that ran out of time was doing: the command's output so far, its
/// processes, and the blocked tasks' kernel stacks, so that a hang in CI can be diagnosed from
/// the log alone.
fn report_hang(dir: &Path) {
    let show = |title: &str, text: &str, keep: usize| {
        if text.trim().is_empty() {
            return;
        }
        eprintln!("    {title}:");
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(keep)..] {
            eprintln!("    | {l}");
        }
    };
    show("stdout (tail)", &read_lossy(&dir.join("stdout")), 40);
    show("stderr (tail)", &read_lossy(&dir.join("stderr")), 40);
    show(
        "user processes (pid state wchan command)",
        &read_lossy(&dir.join(HANG_PROCS)),
        200,
    );
    let dmesg = read_lossy(&dir.join(HANG_DMESG));
    let marker = "cargo xtask vm: the command is still running";
    let from = dmesg.find(marker).unwrap_or(0);
    show(
        "dmesg from the hang on (SysRq w: blocked tasks; SysRq l: every CPU)",
        &dmesg[from..],
        400,
    );
}

/// The process group of the guest running now (0: none), for the interrupt handler.
static GUEST_PGID: AtomicI32 = AtomicI32::new(0);

/// Ctrl-C or SIGTERM while a guest runs: the guest is in a process group of its own, which the
/// terminal's signal does not reach, so kill it, then die of the signal as we would have.
extern "C" fn kill_guest_and_die(sig: libc::c_int) {
    let pgid = GUEST_PGID.load(Ordering::SeqCst);
    // SAFETY: kill(2), signal(2) and raise(3) are async-signal-safe; no memory is passed.
    unsafe {
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs [`kill_guest_and_die`] for SIGINT and SIGTERM (once).
fn forward_interrupts_to_guest() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only does async-signal-safe calls on an atomic it reads.
            unsafe { libc::signal(sig, kill_guest_and_die as *const () as libc::sighandler_t) };
        }
    });
}

/// Kills vng and everything it started (virtme-run, qemu): the group `process_group(0)` made.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) of a process group we created; no memory is passed.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `cargo xtask vm`: prints the command's output and returns its status; a kernel bug
/// report in dmesg turns success into failure.
pub fn vm_command(paths: &Paths, opts: &VmOpts, cmd: &[String]) -> Result<i32> {
    step(format!(
        "booting {} (snoop-control={:?})",
        paths.bzimage().display(),
        opts.snoop_control
    ));
    let out = run_in_vm(paths, opts, cmd)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let bugs = kernel_bug_lines(&out.dmesg);
    if !bugs.is_empty() {
        eprintln!(
            "guest kernel reported a bug (dmesg in {}):",
            out.dir.display()
        );
        for l in &bugs {
            eprintln!("    | {l}");
        }
        return Ok(if out.status == 0 { 1 } else { out.status });
    }
    Ok(out.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn warn_and_oops_are_bugs_but_normal_boot_is_not() {
        let clean =
            "[    0.1] DMAR: IOMMU enabled\n[    0.2] vfio-pci 0000:00:03.0: enabling device\n";
        assert!(kernel_bug_lines(clean).is_empty());
        let warn =
            "[ 1.0] ------------[ cut here ]------------\n[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1\n";
        assert_eq!(kernel_bug_lines(warn).len(), 2);
        assert_eq!(
            kernel_bug_lines("[ 2.0] BUG: kernel NULL pointer dereference").len(),
            1
        );
    }

    #[test]
    fn a_task_blocked_in_vfio_is_a_deadlock_but_an_idle_guest_is_not() {
        let dir = std::env::temp_dir().join(format!("xtask-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dump = |blocked: &str| {
            format!(
                "[1.0] sysrq: Show Blocked State\n{blocked}[1.1] sysrq: Show backtrace of all \
                 active CPUs\n[1.2]  ? kvm_arch_vcpu_ioctl_run+0x1/0x2\n"
            )
        };
        std::fs::write(dir.join(HANG_DMESG), dump("")).unwrap();
        assert_eq!(
            blocked_in_code_under_test(&dir),
            None,
            "a CPU in KVM is not blocked"
        );
        std::fs::write(
            dir.join(HANG_DMESG),
            dump("[1.0] task:kvm-vfio-worklo state:D\n[1.0]  vfio_df_ioctl_attach_pt+0x4/0x8\n"),
        )
        .unwrap();
        assert!(blocked_in_code_under_test(&dir).is_some_and(|l| l.contains("vfio_df_ioctl")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_guest_records_a_hang_before_the_host_gives_up() {
        assert_eq!(
            hang_watch(Duration::from_secs(300)),
            Duration::from_secs(240)
        );
        assert_eq!(hang_watch(Duration::from_secs(60)), Duration::from_secs(30));
    }

    #[test]
    fn snoop_control_reaches_qemu() {
        assert!(qemu_opts(SnoopControl::On, false).contains("snoop-control=on"));
        assert!(qemu_opts(SnoopControl::Off, false).contains("snoop-control=off"));
        assert!(!qemu_opts(SnoopControl::Off, false).contains("igb"));
        assert!(qemu_opts(SnoopControl::Off, true).contains("-device igb,bus=rp1"));
    }
}
