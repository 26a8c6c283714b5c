//! Differential tester: the same ioctl sequences against mainline iommufd
//! (`/dev/iommu`, the *reference*) and `/dev/ioasid` (the *test* device),
//! in the same process, call by call, requiring identical return values,
//! errnos, written-back structures and IOVA range arrays, and pin accounting
//! as each device's design predicts.
//!
//! Each sequence (a fixed bad-input case or a seeded random sequence) runs on
//! freshly opened file descriptors of both devices. Object ids are compared
//! (they are output fields) and sequences name objects by allocation order
//! ([`call::Id::Obj`]), so each device is handed its own ids.
//!
//! Pin accounting: the observable is `VmPin` of `/proc/self/status`
//! (`mm->pinned_vm`). iommufd adds every page it pins to it whatever the
//! accounting mode (iopt_pages_update_pinned(), pages.c), while the
//! per-user `user->locked_vm` it charges by default is not visible in
//! procfs, and for root (CAP_IPC_LOCK) nothing is charged at all
//! (iopt_alloc_pages(): IOPT_PAGES_ACCOUNT_NONE). `VmLck` (`mm->locked_vm`)
//! is charged only in IOMMU_OPTION_RLIMIT_MODE=1 by tasks without
//! CAP_IPC_LOCK. Both are measured around every call. The devices count
//! differently by design — mainline every pin of each of its pages objects,
//! `/dev/ioasid` each distinct page once per open file — so the deltas are
//! not compared with each other: each device's is compared with what its
//! [`model::PinModel`] predicts from its own outcomes ([`model::PinRule`]),
//! and a deviation is reported as e.g. "VmPin: /dev/ioasid +8 kB, expected
//! +4 kB (distinct pages of the fd)".
//!
//! Leak checks, after every sequence that did not diverge: after destroying
//! every object, then after closing each device, the counters must be the
//! ones before the sequence plus what the models say the files still open
//! pin. A sequence that diverged (the devices, or a device and its model,
//! disagree: the sequence stops there) is only checked once both devices are
//! closed, where nothing may be left.
//!
//! Mainline pins nothing at IOAS_MAP time while no domain is attached to the
//! IOAS (iopt_fill_domains_pages() has nothing to fill), while `/dev/ioasid`
//! pins at map time as iommufd does with a domain. With `--mainline-domain`
//! (default when the edu device exists) every reference IOAS gets a real
//! domain for its whole life, so both pin at map time; see [`domain`] for
//! how, for the virtualised ids, and for the calls with domain-only
//! semantics (aperture, huge pages off) that are then not issued. Without
//! it, a bare mainline IOAS is the reference, predicted to pin nothing
//! ([`model::PinRule::Unpinned`]); map-time pinning then shows as behaviour
//! differences (EFAULT for read-only memory mapped writable).

pub mod call;
pub mod cases;
pub mod domain;
pub mod exec;
pub mod memlock;
pub mod model;
pub mod ops;
pub mod outcome;
pub mod prng;

use anyhow::{Context, Result};
use call::{Call, Cmd, Id};
use exec::{Device, MemCounters, Resources, execute};
use ioasid_uapi::Iommufd;
use ioasid_uapi::iommufd::{IommuIoasAlloc, IommuIoasIovaRanges};
use model::{Model, PinModel, PinRule};
use ops::{Op, OpSet};
use prng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Mainline iommufd (`/dev/iommu`).
    pub reference: PathBuf,
    /// The device under test (`/dev/ioasid`).
    pub test: PathBuf,
    pub seed: u64,
    /// Random sequences.
    pub sequences: u64,
    /// Calls per random sequence.
    pub calls: u64,
    /// Run exactly one random sequence with this sequence seed (as printed
    /// in a sequence's result line) instead of `sequences` derived from `seed`.
    pub replay: Option<u64>,
    pub ops: OpSet,
    /// Run the fixed bad-input cases.
    pub fixed: bool,
    /// Run the RLIMIT_MEMLOCK case (forks).
    pub memlock: bool,
    /// Compare per-call VmPin/VmLck deltas.
    pub pins: bool,
    /// Print every call (not only differences) with the reference's result
    /// (and the test device's VmPin/VmLck change where it differs).
    pub verbose: bool,
    /// `--mainline-domain`: the VFIO cdev of the device whose domains back
    /// every reference IOAS ([`domain`]); `None`: a bare mainline IOAS.
    pub mainline_domain: Option<PathBuf>,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub sequences: u64,
    pub calls: u64,
    /// Differing calls plus leak findings.
    pub differences: u64,
    /// Calls issued on neither device (domain-only semantics, [`domain`]).
    pub skipped: u64,
}

/// Result of one sequence.
#[derive(Debug, Default)]
struct SeqResult {
    calls: u64,
    skipped: u64,
    /// Problems found, each a multi-line text (first line is the headline).
    problems: Vec<String>,
}

/// An id that no sequence allocates: used for an object the device did not create.
const UNRESOLVED: u32 = 0x7fff_fff1;

/// Opens a device by path (the real one opens the character device).
pub type Opener<'a> = &'a dyn Fn(&Path) -> Result<Box<dyn Device>>;

/// Open the character device at `path`.
pub fn open_device(path: &Path) -> Result<Box<dyn Device>> {
    let fd = Iommufd::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(fd))
}

struct Pair {
    reference: Box<dyn Device>,
    test: Box<dyn Device>,
}

fn open(cfg: &Config, opener: Opener<'_>) -> Result<Pair> {
    Ok(Pair {
        reference: opener(&cfg.reference)?,
        test: opener(&cfg.test)?,
    })
}

/// The [`PinRule`] of each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub reference: PinRule,
    pub test: PinRule,
}

impl Rules {
    /// Mainline iommufd (per pages object with a domain, nothing without)
    /// against `/dev/ioasid` (distinct pages per file).
    pub fn for_config(cfg: &Config) -> Self {
        Self {
            reference: if cfg.mainline_domain.is_some() {
                PinRule::PagesObject
            } else {
                PinRule::Unpinned
            },
            test: PinRule::DistinctPerFile,
        }
    }
}

/// `VmPin`/`VmLck` must be `base` plus what the models say the files still
/// pin (`held`): a finding if not.
fn leak_check(
    what: &str,
    res: &Resources,
    base: MemCounters,
    held: &[&PinModel],
) -> Result<Option<String>> {
    let now = res.counters()?;
    let mut want = base;
    for m in held {
        let c = m.counters();
        want.pin_kb += c.pin_kb;
        want.lck_kb += c.lck_kb;
    }
    Ok((now != want).then(|| {
        format!(
            "leak: {what}: VmPin {} kB -> {} kB (expected {} kB), VmLck {} kB -> {} kB (expected {} kB)",
            base.pin_kb, now.pin_kb, want.pin_kb, base.lck_kb, now.lck_kb, want.lck_kb
        )
    }))
}

/// Run one sequence: `next` yields the calls (given the model so far).
///
/// Every call's results must be identical on both devices, and each
/// device's VmPin/VmLck change must be the one its [`PinModel`] predicts.
/// The sequence stops at the first call where either fails (it has
/// *diverged*: the devices, or a device and its model, no longer agree on
/// what is mapped). Leak checks: without a divergence, after destroying
/// every object (when DESTROY is allowed) and after closing each device,
/// the counters must be what the models say the still open files pin;
/// after a divergence only once both devices are closed, against the
/// counters before the sequence.
fn run_sequence<W: Write>(
    cfg: &Config,
    opener: Opener<'_>,
    res: &Resources,
    rules: Rules,
    window: Option<domain::Window>,
    next: &mut dyn FnMut(&Model) -> Option<Call>,
    out: &mut W,
) -> Result<SeqResult> {
    let base = res.counters()?;
    let pair = open(cfg, opener)?;
    let mut model = Model::default();
    let charges_mm = !memlock::ipc_lock_effective()?;
    let mut rpins = PinModel::new(rules.reference, charges_mm);
    let mut tpins = PinModel::new(rules.test, charges_mm);
    // Per logical object: (reference id, test id).
    let mut ids: Vec<(u32, u32)> = Vec::new();
    let mut r = SeqResult::default();
    let mut diverged = false;
    let rname = cfg.reference.display().to_string();
    let tname = cfg.test.display().to_string();

    let step = |call: &Call,
                model: &mut Model,
                rpins: &mut PinModel,
                tpins: &mut PinModel,
                ids: &mut Vec<(u32, u32)>,
                r: &mut SeqResult,
                out: &mut W|
     -> Result<bool> {
        if !cfg.ops.contains(call.op()) {
            // Never issue an ioctl outside --ops (generators do not produce them).
            return Ok(true);
        }
        if let Some(w) = window
            && let Some(why) = domain::domain_only(w, call, model)
        {
            r.skipped += 1;
            if cfg.verbose {
                writeln!(out, "#   {call} -> not issued ({why})")?;
            }
            return Ok(true);
        }
        let rid = |i: Id| match i {
            Id::Obj(k) => ids.get(k).map_or(UNRESOLVED, |p| p.0),
            Id::Raw(v) => v,
        };
        let tid = |i: Id| match i {
            Id::Obj(k) => ids.get(k).map_or(UNRESOLVED, |p| p.1),
            Id::Raw(v) => v,
        };
        let a = execute(pair.reference.as_ref(), call, res, &rid, cfg.pins)
            .with_context(|| format!("{} on {}", call, cfg.reference.display()))?;
        let mut b = execute(pair.test.as_ref(), call, res, &tid, cfg.pins)
            .with_context(|| format!("{} on {}", call, cfg.test.display()))?;
        if let (Some(w), Cmd::IovaRanges { num_iovas, .. }) = (window, &call.cmd)
            && matches!(b.ret, Ok(_) | Err(libc::EMSGSIZE))
            && b.bytes.len() >= std::mem::size_of::<IommuIoasIovaRanges>()
        {
            // /dev/ioasid has no aperture: its answer with the domain's
            // aperture reserved, as mainline's is.
            let out: IommuIoasIovaRanges = b.decode();
            let n = out.num_iovas.min(*num_iovas) as usize;
            domain::clip_ranges(&mut b.ranges, n, w);
        }
        r.calls += 1;
        if cfg.verbose {
            write!(out, "#   {call} -> {}", outcome::describe(call.op(), &a))?;
            if let (Some(p), Some(l)) = (b.pinned_kb, b.locked_kb)
                && (b.pinned_kb, b.locked_kb) != (a.pinned_kb, a.locked_kb)
            {
                write!(out, " (test: VmPin{p:+}kB VmLck{l:+}kB)")?;
            }
            writeln!(out)?;
        }
        // Each device's pin accounting against its own model, from its own
        // outcome (also when the outcomes differ).
        let mut deviations = outcome::pin_deviations(
            &rname,
            &a,
            rpins.apply(call, &a, &rid),
            rpins.rule().describe(),
        );
        deviations.extend(outcome::pin_deviations(
            &tname,
            &b,
            tpins.apply(call, &b, &tid),
            tpins.rule().describe(),
        ));
        let diff = outcome::difference(call, &a, &b);
        if diff.is_some() || !deviations.is_empty() {
            let op = call.op();
            let mut p = match diff {
                Some(d) => format!("call {}: {d}", r.calls),
                None => format!(
                    "call {}: pin accounting deviates from the model in {call}\n#   reference: {}\n#   test:      {}",
                    r.calls,
                    outcome::describe(op, &a),
                    outcome::describe(op, &b)
                ),
            };
            for d in deviations {
                p.push_str("\n#   ");
                p.push_str(&d);
            }
            r.problems.push(p);
            return Ok(false);
        }
        if a.ok() && matches!(call.cmd, Cmd::Alloc { .. }) {
            let ra: IommuIoasAlloc = a.decode();
            let rb: IommuIoasAlloc = b.decode();
            ids.push((ra.out_ioas_id, rb.out_ioas_id));
        }
        model.apply(call, &a);
        Ok(true)
    };

    while let Some(call) = next(&model) {
        if !step(
            &call, &mut model, &mut rpins, &mut tpins, &mut ids, &mut r, out,
        )? {
            diverged = true;
            break;
        }
    }
    // Tear down through the ABI (when allowed), then check accounting.
    if !diverged && cfg.ops.contains(Op::Destroy) {
        for k in model.alive() {
            let c = Call::new(Cmd::Destroy { id: Id::Obj(k) });
            if !step(
                &c, &mut model, &mut rpins, &mut tpins, &mut ids, &mut r, out,
            )? {
                diverged = true;
                break;
            }
        }
        if !diverged
            && let Some(l) = leak_check(
                "after destroying every object",
                res,
                base,
                &[&rpins, &tpins],
            )?
        {
            r.problems.push(l);
        }
    }
    let Pair { reference, test } = pair;
    drop(reference);
    rpins.close();
    if !diverged
        && let Some(l) = leak_check(&format!("after closing {rname}"), res, base, &[&tpins])?
    {
        r.problems.push(l);
    }
    drop(test);
    tpins.close();
    let what = if diverged {
        format!("after closing {rname} and {tname} (the sequence diverged)")
    } else {
        format!("after closing {tname}")
    };
    if let Some(l) = leak_check(&what, res, base, &[])? {
        r.problems.push(l);
    }
    Ok(r)
}

fn report<W: Write>(
    out: &mut W,
    n: u64,
    name: &str,
    r: &SeqResult,
    sum: &mut Summary,
) -> Result<()> {
    sum.sequences += 1;
    sum.calls += r.calls;
    sum.differences += r.problems.len() as u64;
    sum.skipped += r.skipped;
    if r.problems.is_empty() {
        writeln!(out, "ok {n} - {name} ({} calls)", r.calls)?;
    } else {
        writeln!(out, "not ok {n} - {name} ({} calls)", r.calls)?;
        for p in &r.problems {
            for line in p.lines() {
                let line = line.trim_start_matches('#').trim_start();
                writeln!(out, "#   {line}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Run everything `cfg` asks for, streaming TAP-like lines to `out`.
pub fn run<W: Write>(cfg: &Config, out: &mut W) -> Result<Summary> {
    match &cfg.mainline_domain {
        None => run_with(cfg, &open_device, out),
        Some(cdev) => {
            let opener = |p: &Path| {
                if p == cfg.reference {
                    domain::open_shadowed(p, cdev)
                } else {
                    open_device(p)
                }
            };
            run_with(cfg, &opener, out)
        }
    }
}

/// [`run`] with devices opened by `opener`.
pub fn run_with<W: Write>(cfg: &Config, opener: Opener<'_>, out: &mut W) -> Result<Summary> {
    let res = Resources::new()?;
    run_full(cfg, opener, &res, Rules::for_config(cfg), out)
}

/// [`run_with`] on `res`, each device's pins predicted by its rule in `rules`.
pub fn run_full<W: Write>(
    cfg: &Config,
    opener: Opener<'_>,
    res: &Resources,
    rules: Rules,
    out: &mut W,
) -> Result<Summary> {
    let window = match &cfg.mainline_domain {
        Some(cdev) => {
            let dev = opener(&cfg.reference)?;
            let w = domain::probe_window(dev.as_ref()).with_context(|| {
                format!(
                    "probing the IOVA window of a domain from {}",
                    cdev.display()
                )
            })?;
            Some(w)
        }
        None => None,
    };
    let cases = if cfg.fixed {
        cases::fixed_cases_for(cfg.ops)
    } else {
        Vec::new()
    };
    let memlock = cfg.memlock && memlock::enabled(cfg.ops);
    let random = if cfg.replay.is_some() {
        1
    } else {
        cfg.sequences
    };
    let planned = cases.len() as u64 + u64::from(memlock) + random;
    writeln!(out, "1..{planned}")?;
    writeln!(
        out,
        "# reference {} vs test {}; ops {}; seed {:#x}; {} random sequences of {} calls",
        cfg.reference.display(),
        cfg.test.display(),
        cfg.ops,
        cfg.seed,
        random,
        cfg.calls
    )?;
    match (&cfg.mainline_domain, window) {
        (Some(cdev), Some(w)) => writeln!(
            out,
            "# mainline domain: every reference IOAS has a HWPT of {}; aperture {:#x}..={:#x}",
            cdev.display(),
            w.0,
            w.1
        )?,
        _ => writeln!(
            out,
            "# mainline domain: none (a bare mainline IOAS pins nothing at map time)"
        )?,
    }
    let mut sum = Summary::default();
    let mut n = 0;
    for case in &cases {
        n += 1;
        let mut it = case.calls.iter();
        let r = run_sequence(
            cfg,
            opener,
            res,
            rules,
            window,
            &mut |_| it.next().cloned(),
            out,
        )?;
        report(out, n, &format!("fixed: {}", case.name), &r, &mut sum)?;
    }
    if memlock {
        n += 1;
        let r = memlock::run(cfg, opener, res, rules)?;
        let r = SeqResult {
            calls: r.calls,
            skipped: 0,
            problems: r.problems,
        };
        report(
            out,
            n,
            "memlock: RLIMIT_MEMLOCK low, CAP_IPC_LOCK dropped (forked children)",
            &r,
            &mut sum,
        )?;
    }
    let seeds: Vec<u64> = match cfg.replay {
        Some(s) => vec![s],
        None => (0..cfg.sequences)
            .map(|i| Rng::sequence_seed(cfg.seed, i))
            .collect(),
    };
    for (i, seed) in seeds.into_iter().enumerate() {
        n += 1;
        let mut rng = Rng::new(seed);
        let mut left = cfg.calls;
        let ops = cfg.ops;
        let r = run_sequence(
            cfg,
            opener,
            res,
            rules,
            window,
            &mut |m| {
                if left == 0 {
                    return None;
                }
                left -= 1;
                cases::random_call(&mut rng, m, ops)
            },
            out,
        )?;
        report(
            out,
            n,
            &format!(
                "random sequence {i} (seed {:#x}; replay alone with --replay {seed:#x})",
                cfg.seed
            ),
            &r,
            &mut sum,
        )?;
    }
    writeln!(
        out,
        "compared {} sequences, {} calls: {} differences",
        sum.sequences, sum.calls, sum.differences
    )?;
    if sum.skipped > 0 {
        writeln!(
            out,
            "# {} calls not issued (domain-only semantics; --verbose lists them)",
            sum.skipped
        )?;
    }
    out.flush()?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(test: &str) -> Config {
        Config {
            reference: "/dev/null".into(),
            test: test.into(),
            seed: 1,
            sequences: 3,
            calls: 20,
            replay: None,
            ops: OpSet::all(),
            fixed: true,
            memlock: false,
            pins: true,
            verbose: false,
            mainline_domain: None,
        }
    }

    /// /dev/null against itself: every ioctl is ENOTTY on both, so no differences.
    #[test]
    fn null_vs_null_has_no_differences() {
        let c = cfg("/dev/null");
        let mut out = Vec::new();
        let s = run(&c, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(s.differences, 0, "{text}");
        assert_eq!(s.sequences, cases::fixed_cases().len() as u64 + 3);
        assert!(s.calls > 100);
        assert!(text.starts_with(&format!("1..{}\n", s.sequences)), "{text}");
        assert!(
            text.trim_end().ends_with(&format!(
                "compared {} sequences, {} calls: 0 differences",
                s.sequences, s.calls
            )),
            "{text}"
        );
    }

    /// `--ops alloc,destroy`: no other ioctl is issued.
    #[test]
    fn restricted_ops_only_issue_those() {
        let mut c = cfg("/dev/null");
        c.ops = OpSet::parse("alloc,destroy").unwrap();
        c.verbose = true;
        let mut out = Vec::new();
        run(&c, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for l in text.lines().filter(|l| l.starts_with("#   IOMMU_")) {
            assert!(
                l.starts_with("#   IOMMU_IOAS_ALLOC(") || l.starts_with("#   IOMMU_DESTROY("),
                "{l}"
            );
        }
        assert!(text.contains("#   IOMMU_IOAS_ALLOC("));
    }

    /// `--replay` runs exactly the sequence a run printed.
    #[test]
    fn replay_runs_one_sequence() {
        // The calls printed (verbose) before each result line, per sequence.
        fn blocks(text: &str) -> Vec<(String, Vec<String>)> {
            let mut out = Vec::new();
            let mut calls = Vec::new();
            for l in text.lines() {
                if l.starts_with("#   IOMMU_") {
                    calls.push(l.to_string());
                } else if l.starts_with("ok ") || l.starts_with("not ok ") {
                    out.push((l.to_string(), std::mem::take(&mut calls)));
                }
            }
            out
        }
        let mut c = cfg("/dev/null");
        c.fixed = false;
        c.memlock = false;
        c.verbose = true;
        c.sequences = 2;
        let mut out = Vec::new();
        run(&c, &mut out).unwrap();
        let first = blocks(&String::from_utf8(out).unwrap());
        assert_eq!(first.len(), 2);
        let (line, calls) = &first[1];
        let seed = line.split("--replay 0x").nth(1).unwrap();
        let seed = seed.split(')').next().unwrap();
        c.replay = Some(u64::from_str_radix(seed, 16).unwrap());
        let mut out = Vec::new();
        let s = run(&c, &mut out).unwrap();
        assert_eq!(s.sequences, 1);
        let again = blocks(&String::from_utf8(out).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0].1, calls);
        assert_eq!(calls.len(), 20);
    }

    /// A device that cannot be opened is an error (exit 2), not a difference.
    #[test]
    fn open_failure_is_an_error() {
        let c = cfg("/nonexistent/ioasid");
        let mut out = Vec::new();
        let e = run(&c, &mut out).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot open /nonexistent/ioasid"),
            "{e:#}"
        );
    }

    /// A toy iommufd with IOAS_ALLOC and DESTROY only (lowest free id,
    /// iommufd's size and flag rules); `skew` makes it hand out wrong ids.
    struct Fake {
        live: std::cell::RefCell<std::collections::BTreeSet<u32>>,
        skew: u32,
    }

    impl Device for Fake {
        unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int> {
            use ioasid_uapi::iommufd::{IOMMU_DESTROY, IOMMU_IOAS_ALLOC};
            let err = |e| Err(std::io::Error::from_raw_os_error(e));
            let u32_at =
                |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let size = u32_at(buf, 0) as usize;
            let (min, full) = match nr {
                IOMMU_IOAS_ALLOC => (12, 12),
                IOMMU_DESTROY => (8, 8),
                _ => return err(libc::ENOTTY),
            };
            if size < min {
                return err(libc::EINVAL);
            }
            if buf[full.min(size)..size].iter().any(|b| *b != 0) {
                return err(libc::E2BIG);
            }
            let mut live = self.live.borrow_mut();
            if nr == IOMMU_DESTROY {
                return if live.remove(&u32_at(buf, 4)) {
                    Ok(0)
                } else {
                    err(libc::ENOENT)
                };
            }
            if u32_at(buf, 4) != 0 {
                return err(libc::EOPNOTSUPP);
            }
            let id = (1..).find(|i| !live.contains(i)).unwrap_or(1) + self.skew;
            live.insert(id);
            buf[8..12].copy_from_slice(&id.to_ne_bytes());
            Ok(0)
        }
    }

    fn fake_run(skew: u32) -> (Summary, String) {
        let mut c = cfg("test");
        c.reference = "reference".into();
        c.ops = OpSet::parse("alloc,destroy").unwrap();
        c.sequences = 4;
        let opener = move |p: &Path| -> Result<Box<dyn Device>> {
            Ok(Box::new(Fake {
                live: Default::default(),
                skew: if p == Path::new("test") { skew } else { 0 },
            }))
        };
        let mut out = Vec::new();
        let s = run_with(&c, &opener, &mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    /// Two identical implementations: every call compared, no difference.
    #[test]
    fn identical_fakes_agree() {
        let (s, text) = fake_run(0);
        assert_eq!(s.differences, 0, "{text}");
        assert!(s.calls > 4 * 20, "{text}");
        assert!(!text.contains("not ok"), "{text}");
    }

    /// Wrong ids are reported with both results; each sequence stops at its
    /// first difference and the total is on the last line.
    #[test]
    fn wrong_ids_are_reported() {
        let (s, text) = fake_run(1);
        let n_seq = cases::fixed_cases_for(OpSet::parse("alloc,destroy").unwrap()).len() + 4;
        assert_eq!(s.sequences, n_seq as u64);
        assert!(s.differences >= 4, "{text}");
        let first = text.find("not ok 1 - fixed: alloc/destroy").expect(&text);
        let detail = &text[first..];
        assert!(
            detail
                .contains("#   call 1: output structure differ(s) in IOMMU_IOAS_ALLOC(flags=0x0)"),
            "{text}"
        );
        assert!(
            detail.contains(
                "#   reference: ok (0) IommuIoasAlloc { size: c, flags: 0, out_ioas_id: 1 }"
            ),
            "{text}"
        );
        assert!(
            detail.contains(
                "#   test:      ok (0) IommuIoasAlloc { size: c, flags: 0, out_ioas_id: 2 }"
            ),
            "{text}"
        );
        // Stopped at the first difference: the fixed case has 11 calls.
        assert!(text.contains("not ok 1 - fixed: alloc/destroy: ids, reuse of the lowest free id, ENOENT (1 calls)"), "{text}");
        assert!(
            text.trim_end().ends_with(&format!(
                "compared {} sequences, {} calls: {} differences",
                s.sequences, s.calls, s.differences
            )),
            "{text}"
        );
    }

    /// How the fake /dev/ioasid below misbehaves.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Bug {
        None,
        /// Counts every pin like mainline instead of distinct pages.
        CountEveryPin,
        /// DESTROY forgets the IOAS's areas without unpinning them.
        LeakOnDestroy,
        /// Closing the file does not unpin.
        LeakOnClose,
    }

    #[derive(Default)]
    struct PinState {
        ioas: std::collections::BTreeSet<u32>,
        /// (ioas, iova, length, user_va)
        areas: Vec<(u32, u64, u64, u64)>,
        leaked_kb: i64,
        /// What this fake has added to the meter.
        counted_kb: i64,
        next_auto: u64,
    }

    /// A toy iommufd with IOAS_ALLOC, DESTROY, MAP and UNMAP that pins
    /// arena pages into a shared fake `VmPin`: like mainline with a domain
    /// (`distinct` false: every map's pages) or like /dev/ioasid (distinct
    /// pages of the file).
    struct PinFake {
        distinct: bool,
        bug: Bug,
        meter: Rc<Cell<MemCounters>>,
        arena: (u64, u64),
        st: RefCell<PinState>,
    }

    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    impl PinFake {
        fn pinned_kb(&self, st: &PinState) -> i64 {
            let pages = if self.distinct && self.bug != Bug::CountEveryPin {
                let set: std::collections::BTreeSet<u64> = st
                    .areas
                    .iter()
                    .flat_map(|&(_, _, len, va)| {
                        (0..len / exec::PAGE).map(move |i| va / exec::PAGE + i)
                    })
                    .collect();
                set.len() as u64
            } else {
                st.areas.iter().map(|a| a.2 / exec::PAGE).sum()
            };
            (pages * exec::PAGE / 1024) as i64 + st.leaked_kb
        }

        fn recount(&self, st: &mut PinState) {
            let now = self.pinned_kb(st);
            let mut m = self.meter.get();
            m.pin_kb += now - st.counted_kb;
            self.meter.set(m);
            st.counted_kb = now;
        }
    }

    impl Drop for PinFake {
        fn drop(&mut self) {
            if self.bug != Bug::LeakOnClose {
                // What LeakOnDestroy leaked stays leaked.
                let st = self.st.borrow();
                let mut m = self.meter.get();
                m.pin_kb -= st.counted_kb - st.leaked_kb;
                self.meter.set(m);
            }
        }
    }

    impl Device for PinFake {
        unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int> {
            use ioasid_uapi::iommufd::*;
            use std::mem::{offset_of, size_of};
            let err = |e| Err(std::io::Error::from_raw_os_error(e));
            let u32_at = |b: &[u8], o: usize| {
                b.get(o..o + 4)
                    .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
            };
            let u64_at = |b: &[u8], o: usize| {
                b.get(o..o + 8).map_or(0, |s| {
                    u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
                })
            };
            let full = match nr {
                IOMMU_IOAS_ALLOC => size_of::<IommuIoasAlloc>(),
                IOMMU_DESTROY => size_of::<IommuDestroy>(),
                IOMMU_IOAS_MAP => size_of::<IommuIoasMap>(),
                IOMMU_IOAS_UNMAP => size_of::<IommuIoasUnmap>(),
                _ => return err(libc::ENOTTY),
            };
            let size = u32_at(buf, 0) as usize;
            if size < full || size > buf.len() {
                return err(libc::EINVAL);
            }
            if buf[full..size].iter().any(|b| *b != 0) {
                return err(libc::E2BIG);
            }
            let mut st = self.st.borrow_mut();
            match nr {
                IOMMU_IOAS_ALLOC => {
                    if u32_at(buf, 4) != 0 {
                        return err(libc::EOPNOTSUPP);
                    }
                    let id = (1..).find(|i| !st.ioas.contains(i)).unwrap_or(1);
                    st.ioas.insert(id);
                    buf[8..12].copy_from_slice(&id.to_ne_bytes());
                }
                IOMMU_DESTROY => {
                    let id = u32_at(buf, 4);
                    if !st.ioas.remove(&id) {
                        return err(libc::ENOENT);
                    }
                    let before = self.pinned_kb(&st);
                    st.areas.retain(|a| a.0 != id);
                    if self.bug == Bug::LeakOnDestroy {
                        st.leaked_kb += before - self.pinned_kb(&st);
                    }
                }
                IOMMU_IOAS_MAP => {
                    let flags = u32_at(buf, offset_of!(IommuIoasMap, flags));
                    let id = u32_at(buf, offset_of!(IommuIoasMap, ioas_id));
                    let va = u64_at(buf, offset_of!(IommuIoasMap, user_va));
                    let len = u64_at(buf, offset_of!(IommuIoasMap, length));
                    let mut iova = u64_at(buf, offset_of!(IommuIoasMap, iova));
                    if flags & !7 != 0 || u32_at(buf, offset_of!(IommuIoasMap, __reserved)) != 0 {
                        return err(libc::EOPNOTSUPP);
                    }
                    if !st.ioas.contains(&id) {
                        return err(libc::ENOENT);
                    }
                    if flags & 6 == 0 || len == 0 || (va | len | iova) % exec::PAGE != 0 {
                        return err(libc::EINVAL);
                    }
                    if va < self.arena.0 || va.saturating_add(len) > self.arena.1 {
                        return err(libc::EFAULT);
                    }
                    if flags & IOMMU_IOAS_MAP_FIXED_IOVA == 0 {
                        st.next_auto += 1;
                        iova = st.next_auto << 32;
                    }
                    let Some(last) = iova.checked_add(len - 1) else {
                        return err(libc::EOVERFLOW);
                    };
                    if st
                        .areas
                        .iter()
                        .any(|a| a.0 == id && a.1 <= last && iova <= a.1 + (a.2 - 1))
                    {
                        return err(libc::EEXIST);
                    }
                    st.areas.push((id, iova, len, va));
                    let o = offset_of!(IommuIoasMap, iova);
                    buf[o..o + 8].copy_from_slice(&iova.to_ne_bytes());
                }
                _ => {
                    let id = u32_at(buf, offset_of!(IommuIoasUnmap, ioas_id));
                    let iova = u64_at(buf, offset_of!(IommuIoasUnmap, iova));
                    let len = u64_at(buf, offset_of!(IommuIoasUnmap, length));
                    if !st.ioas.contains(&id) {
                        return err(libc::ENOENT);
                    }
                    let mine: Vec<(u64, u64)> = st
                        .areas
                        .iter()
                        .filter(|a| a.0 == id)
                        .map(|a| (a.1, a.2))
                        .collect();
                    let gone = model::unmapped(&mine, |a| *a, iova, len);
                    st.areas.retain(|a| a.0 != id || !gone.contains(&a.1));
                    self.recount(&mut st);
                    if gone.is_empty() {
                        return err(libc::ENOENT);
                    }
                }
            }
            self.recount(&mut st);
            Ok(0)
        }
    }

    /// A run of mainline-like against /dev/ioasid-like fakes sharing one
    /// fake `VmPin`.
    fn pin_run(bug: Bug, ops: &str) -> (Summary, String) {
        let meter = Rc::new(Cell::new(MemCounters::default()));
        let m = meter.clone();
        let res = Resources::with_meter(Box::new(move || Ok(m.get()))).unwrap();
        let arena = res.env().arena;
        let arena = (arena, arena + exec::ARENA_PAGES * exec::PAGE);
        let mut c = cfg("test");
        c.reference = "reference".into();
        c.ops = OpSet::parse(ops).unwrap();
        c.sequences = 8;
        c.verbose = true;
        let opener = |p: &Path| -> Result<Box<dyn Device>> {
            let test = p == Path::new("test");
            Ok(Box::new(PinFake {
                distinct: test,
                bug: if test { bug } else { Bug::None },
                meter: meter.clone(),
                arena,
                st: RefCell::default(),
            }))
        };
        let rules = Rules {
            reference: PinRule::PagesObject,
            test: PinRule::DistinctPerFile,
        };
        let mut out = Vec::new();
        let s = run_full(&c, &opener, &res, rules, &mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    /// Mainline counting every pin and /dev/ioasid counting distinct pages
    /// both match their models: no difference, though their VmPin deltas
    /// differ; and no leak is reported when DESTROY is not in the ops.
    #[test]
    fn each_device_matches_its_pin_rule() {
        for ops in [
            "alloc,destroy,map,unmap,iova_ranges",
            "alloc,map,unmap,iova_ranges",
        ] {
            let (s, text) = pin_run(Bug::None, ops);
            assert_eq!(s.differences, 0, "{ops}: {text}");
            assert!(s.calls > 8 * 20, "{text}");
            // The fixed overlap case maps arena pages 0..4 twice: +16 kB on
            // the reference, +0 on the test device.
            assert!(
                text.lines().any(|l| l.starts_with("#   IOMMU_IOAS_MAP(ioas=obj#0 flags=0x6 reserved=0x0 user_va=Arena(0) length=0x4000 iova=0x0) -> ok (0)")
                    && l.ends_with(" VmPin+16kB VmLck+0kB (test: VmPin+0kB VmLck+0kB)")),
                "{text}"
            );
        }
    }

    /// A /dev/ioasid that counts every pin is reported against the model,
    /// with no leak after the divergence (both files are closed first).
    #[test]
    fn counting_every_pin_is_reported() {
        let (s, text) = pin_run(Bug::CountEveryPin, "alloc,destroy,map,unmap,iova_ranges");
        assert!(s.differences > 0, "{text}");
        assert!(
            text.contains(
                "#   call 9: pin accounting deviates from the model in IOMMU_IOAS_MAP(ioas=obj#0 flags=0x6 reserved=0x0 user_va=Arena(0) length=0x4000 iova=0x0)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("#   VmPin: test +16 kB, expected +0 kB (distinct pages of the fd)\n"),
            "{text}"
        );
        assert!(!text.contains("leak:"), "{text}");
    }

    /// Real leaks are reported: after a divergence once both are closed,
    /// otherwise after closing the leaking device.
    #[test]
    fn leaks_are_reported() {
        let (s, text) = pin_run(Bug::LeakOnDestroy, "alloc,destroy,map,unmap");
        assert!(s.differences > 0, "{text}");
        assert!(
            text.contains("pin accounting deviates from the model in IOMMU_DESTROY("),
            "{text}"
        );
        assert!(
            text.contains(
                "#   leak: after closing reference and test (the sequence diverged): VmPin 0 kB -> 8 kB (expected 0 kB)"
            ),
            "{text}"
        );
        let (s, text) = pin_run(Bug::LeakOnClose, "alloc,map,unmap");
        assert!(s.differences > 0, "{text}");
        assert!(!text.contains("deviates"), "{text}");
        assert!(!text.contains("leak: after closing reference:"), "{text}");
        // Each later sequence starts from the leaked pins of the earlier ones.
        assert!(
            text.lines().any(
                |l| l.starts_with("#   leak: after closing test: VmPin 0 kB -> ")
                    && l.contains(" kB (expected 0 kB), VmLck 0 kB -> 0 kB (expected 0 kB)")
            ),
            "{text}"
        );
    }
}
