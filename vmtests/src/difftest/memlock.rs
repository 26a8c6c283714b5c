//! The RLIMIT_MEMLOCK case. For each device a forked child lowers
//! RLIMIT_MEMLOCK, drops CAP_IPC_LOCK from its effective set (with it,
//! iommufd does no rlimit accounting at all: iopt_alloc_pages() picks
//! IOPT_PAGES_ACCOUNT_NONE) and maps more than the limit, in the default
//! (per-user) and in the IOMMU_OPTION_RLIMIT_MODE=1 (per-mm, VmLck) mode.
//! The children's outcomes are compared line by line.
//!
//! Mainline iommufd only pins (and so only charges) pages when a domain is
//! attached to the IOAS or an in-kernel access pins them. The children open
//! the devices through the run's opener, so with `--mainline-domain` the
//! reference IOAS has a domain and charges at map time like `/dev/ioasid`;
//! without it no mainline map exceeds the limit.

use super::call::{Addr, Call, Cmd, FIXED_RW, Id};
use super::cases::IOVA_BASE;
use super::exec::{PAGE, Resources, execute};
use super::model::{PinModel, PinRule};
use super::ops::{Op, OpSet};
use super::outcome::{describe_result, pin_deviations};
use super::{Config, Opener, Rules};
use anyhow::{Context, Result, bail};
use ioasid_uapi::iommufd::*;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// The limit set in the children.
pub const LIMIT_PAGES: u64 = 16;
/// `CAP_IPC_LOCK` (include/uapi/linux/capability.h)
const CAP_IPC_LOCK: u32 = 14;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` (not an ioctl structure).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The ops the case issues.
pub fn ops() -> OpSet {
    OpSet::of(&[Op::Alloc, Op::Destroy, Op::Map, Op::Unmap, Op::Option])
}

pub fn enabled(ops_allowed: OpSet) -> bool {
    ops_allowed.contains_all(ops())
}

fn map(iova: u64, pages: u64) -> Call {
    Call::new(Cmd::Map {
        ioas: Id::Obj(0),
        flags: FIXED_RW,
        reserved: 0,
        user_va: Addr::Arena(0),
        length: pages * PAGE,
        iova,
    })
}

fn rlimit_mode(val: u64) -> Call {
    Call::new(Cmd::Option {
        option_id: IOMMU_OPTION_RLIMIT_MODE,
        op: IOMMU_OPTION_OP_SET,
        reserved: 0,
        object: Id::Raw(0),
        val64: val,
    })
}

/// The calls each child makes (object 0 is the child's first IOAS, object
/// 1 the one allocated after switching to per-mm accounting).
pub fn calls() -> Vec<Call> {
    let unmap_all = |k| {
        Call::new(Cmd::Unmap {
            ioas: Id::Obj(k),
            iova: 0,
            length: u64::MAX,
        })
    };
    let map1 = |iova, pages| {
        let mut c = map(iova, pages);
        if let Cmd::Map { ioas, .. } = &mut c.cmd {
            *ioas = Id::Obj(1);
        }
        c
    };
    vec![
        Call::new(Cmd::Alloc { flags: 0 }),
        map(IOVA_BASE, LIMIT_PAGES / 2),
        map(IOVA_BASE + 0x10_0000, LIMIT_PAGES * 4),
        map(IOVA_BASE + 0x20_0000, LIMIT_PAGES * 4),
        rlimit_mode(1),
        unmap_all(0),
        Call::new(Cmd::Destroy { id: Id::Obj(0) }),
        rlimit_mode(1),
        Call::new(Cmd::Alloc { flags: 0 }),
        map1(IOVA_BASE, LIMIT_PAGES / 2),
        map1(IOVA_BASE + 0x10_0000, LIMIT_PAGES * 4),
        unmap_all(1),
        Call::new(Cmd::Destroy { id: Id::Obj(1) }),
        rlimit_mode(0),
    ]
}

fn capget() -> Result<(CapHeader, [CapData; 2])> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and a 2-element data array.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    Ok((hdr, data))
}

/// Is CAP_IPC_LOCK in the effective set? With it neither device charges
/// anything to `VmLck` (iommufd: IOPT_PAGES_ACCOUNT_NONE).
pub fn ipc_lock_effective() -> Result<bool> {
    let (_, data) = capget()?;
    Ok(data[0].effective & (1 << CAP_IPC_LOCK) != 0)
}

fn drop_ipc_lock() -> Result<()> {
    let (mut hdr, mut data) = capget()?;
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; only the effective set shrinks.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    Ok(())
}

/// Separates a child's result line from its findings.
const SEP: char = '\t';

/// What one child does; returns one line per call: the result as both
/// devices must answer it ([`describe_result`]), then, after [`SEP`], the
/// VmPin/VmLck change and any deviation from `rule`'s prediction; and a
/// last line for the leak check after closing the device.
fn child_body(
    dev: &Path,
    opener: Opener<'_>,
    res: &Resources,
    rule: PinRule,
) -> Result<Vec<String>> {
    let lim = libc::rlimit {
        rlim_cur: LIMIT_PAGES * PAGE,
        rlim_max: LIMIT_PAGES * PAGE,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_MEMLOCK)");
    }
    drop_ipc_lock()?;
    let base = res.counters()?;
    let mut pins = PinModel::new(rule, !ipc_lock_effective()?);
    let name = dev.display().to_string();
    let fd = opener(dev)?;
    let mut ids: Vec<u32> = Vec::new();
    let mut lines = Vec::new();
    for call in calls() {
        let id = |i: Id| match i {
            Id::Obj(k) => ids.get(k).copied().unwrap_or(0x7fff_fff1),
            Id::Raw(v) => v,
        };
        let o = execute(fd.as_ref(), &call, res, &id, true)?;
        let expected = pins.apply(&call, &o, &id);
        if o.ok() && matches!(call.cmd, Cmd::Alloc { .. }) {
            ids.push(o.decode::<IommuIoasAlloc>().out_ioas_id);
        }
        let mut findings = vec![format!(
            "VmPin{:+}kB VmLck{:+}kB",
            o.pinned_kb.unwrap_or(0),
            o.locked_kb.unwrap_or(0)
        )];
        findings.extend(pin_deviations(&name, &o, expected, rule.describe()));
        lines.push(format!(
            "{}{SEP}{}",
            describe_result(call.op(), &o),
            findings.join(" | ")
        ));
    }
    drop(fd);
    pins.close();
    let after = res.counters()?;
    let leak = (after != base).then(|| {
        format!(
            "leak: after closing {name}: VmPin {} kB -> {} kB, VmLck {} kB -> {} kB",
            base.pin_kb, after.pin_kb, base.lck_kb, after.lck_kb
        )
    });
    lines.push(format!("after close{SEP}{}", leak.unwrap_or_default()));
    Ok(lines)
}

/// Fork, run [`child_body`] in the child, collect its lines.
fn in_child(dev: &Path, opener: Opener<'_>, res: &Resources, rule: PinRule) -> Result<Vec<String>> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: pipe2 into a 2-element array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: this program is single-threaded; the child only makes
    // syscalls, allocates, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        drop(rd);
        let text = match child_body(dev, opener, res, rule) {
            Ok(lines) => lines.join("\n"),
            Err(e) => format!("child error: {e:#}"),
        };
        let mut f = std::fs::File::from(wr);
        let ok = std::io::Write::write_all(&mut f, text.as_bytes()).is_ok();
        drop(f);
        // SAFETY: terminate the child without running the parent's atexit/drop logic.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(wr);
    let mut text = String::new();
    let read = std::fs::File::from(rd).read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("waitpid");
    }
    read.context("reading the child's results")?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "memlock child for {} failed (status {status:#x})",
            dev.display()
        );
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Result of the case: calls compared and problems found.
pub struct MemlockResult {
    pub calls: u64,
    pub problems: Vec<String>,
}

/// Split a child's line into its result and its findings.
fn split(line: &str) -> (&str, &str) {
    line.split_once(SEP).unwrap_or((line, ""))
}

/// Run the case on both devices: the results must be identical, and each
/// device's VmPin/VmLck changes those its rule in `rules` predicts.
pub fn run(
    cfg: &Config,
    opener: Opener<'_>,
    res: &Resources,
    rules: Rules,
) -> Result<MemlockResult> {
    let a = in_child(&cfg.reference, opener, res, rules.reference)?;
    let b = in_child(&cfg.test, opener, res, rules.test)?;
    Ok(compare(&a, &b))
}

/// The problems of two children's lines (reference, test).
fn compare(a: &[String], b: &[String]) -> MemlockResult {
    let calls = calls();
    let mut problems = Vec::new();
    if let Some(e) = a
        .iter()
        .chain(b.iter())
        .find(|l| l.starts_with("child error"))
    {
        problems.push(e.clone());
        return MemlockResult {
            calls: calls.len() as u64,
            problems,
        };
    }
    let what = |i: usize| {
        calls.get(i).map_or_else(
            || "after closing".to_string(),
            |c| format!("call {}: {c}", i + 1),
        )
    };
    let n = a.len().max(b.len());
    for i in 0..n {
        let (ra, fa) = a.get(i).map_or(("(missing)", ""), |l| split(l));
        let (rb, fb) = b.get(i).map_or(("(missing)", ""), |l| split(l));
        // The first field of the findings is the measured change; the rest
        // are deviations from the model.
        let devs: Vec<&str> = [fa, fb]
            .iter()
            .flat_map(|f| f.split(" | ").skip(usize::from(i < calls.len())))
            .filter(|d| !d.is_empty())
            .collect();
        if ra != rb || !devs.is_empty() {
            let mut p = format!(
                "{}\n#   reference: {ra} {}\n#   test:      {rb} {}",
                what(i),
                fa.split(" | ").next().unwrap_or(""),
                fb.split(" | ").next().unwrap_or("")
            );
            for d in devs {
                p.push_str("\n#   ");
                p.push_str(d);
            }
            problems.push(p);
            break;
        }
    }
    MemlockResult {
        calls: calls.len() as u64,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_uses_only_its_ops() {
        for c in calls() {
            assert!(ops().contains(c.op()), "{c}");
        }
        assert!(enabled(OpSet::all()));
        assert!(!enabled(OpSet::parse("alloc,destroy").unwrap()));
    }

    /// The fork/pipe plumbing, against /dev/null (every ioctl ENOTTY).
    /// Lowering RLIMIT_MEMLOCK and dropping a capability only affect the child.
    #[test]
    fn child_against_dev_null() {
        let res = Resources::new().unwrap();
        let lines = in_child(
            Path::new("/dev/null"),
            &super::super::open_device,
            &res,
            PinRule::DistinctPerFile,
        )
        .unwrap();
        assert_eq!(lines.len(), calls().len() + 1, "{lines:?}");
        assert!(lines[0].starts_with("ENOTTY (25)"), "{lines:?}");
        assert_eq!(split(&lines[0]).1, "VmPin+0kB VmLck+0kB", "{lines:?}");
        assert_eq!(lines.last().unwrap(), &format!("after close{SEP}"));
        let r = compare(&lines, &lines);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// Results compared across the devices, pin changes against each
    /// device's model, the leak check after closing reported.
    #[test]
    fn compare_reports_results_deviations_and_leaks() {
        let n = calls().len();
        let line = |r: &str, f: &str| format!("{r}{SEP}{f}");
        let mut a: Vec<String> = (0..n)
            .map(|_| line("ok (0) X", "VmPin+0kB VmLck+0kB"))
            .collect();
        a.push(line("after close", ""));
        assert!(compare(&a, &a).problems.is_empty());

        let mut b = a.clone();
        b[1] = line(
            "ok (0) X",
            "VmPin+8kB VmLck+0kB | VmPin: /dev/ioasid +8 kB, expected +4 kB (distinct pages of the fd)",
        );
        let p = compare(&a, &b).problems;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("call 2: IOMMU_IOAS_MAP("), "{}", p[0]);
        assert!(
            p[0].contains("#   test:      ok (0) X VmPin+8kB VmLck+0kB\n"),
            "{}",
            p[0]
        );
        assert!(
            p[0].ends_with(
                "#   VmPin: /dev/ioasid +8 kB, expected +4 kB (distinct pages of the fd)"
            ),
            "{}",
            p[0]
        );

        let mut b = a.clone();
        b[4] = line("EBUSY (16) X", "VmPin+0kB VmLck+0kB");
        let p = compare(&a, &b).problems;
        assert!(p[0].starts_with("call 5: IOMMU_OPTION("), "{}", p[0]);
        assert!(p[0].contains("test:      EBUSY (16) X"), "{}", p[0]);

        let mut b = a.clone();
        b[n] = line("after close", "leak: after closing t: VmPin 0 kB -> 4 kB");
        let p = compare(&a, &b).problems;
        assert!(p[0].starts_with("after closing\n"), "{}", p[0]);
        assert!(
            p[0].ends_with("#   leak: after closing t: VmPin 0 kB -> 4 kB"),
            "{}",
            p[0]
        );
    }
}
