//! Did ioasid-top see KVM's non-coherent DMA (wbinvd) state of `kvm-vfio-workload`'s VM do
//! what the scenario says?
//!
//! Input: ioasid-top's `--json` output of a run around the workload, with periodic report
//! blocks (no `--once`, a short `--interval`) so that the state *while* the VM holds the
//! VFIO file is reported too, and the workload's summary line. The check is exact:
//!
//! * `flip`: the workload's process made exactly one `register` then one `unregister` call,
//!   for one `struct kvm *`; every report block between them shows that VM with
//!   `noncoherent_dma: true`, 1 register, 0 unregisters (at least one such block), none
//!   before shows it, and the final block shows it off with 1 and 1.
//! * `never`: no kvm call and no `kvm` line at all.
//!
//! Both: the two kvm probes attached (a "never" seen by a tracer that is not there proves
//! nothing), no lost events, no kvm calls by any other process (nothing else in the test VM
//! uses KVM), the workload added and removed the file, and its prediction from the IOMMU's
//! snoop control agrees with the scenario (so a VM booted with the wrong snoop-control fails
//! with that message rather than a confusing count).

use crate::kvm::{Backend, Summary};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

pub const REGISTER_FN: &str = "kvm_arch_register_noncoherent_dma";
pub const UNREGISTER_FN: &str = "kvm_arch_unregister_noncoherent_dma";

/// What the scenario says KVM does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Registers non-coherent DMA when the file is added, unregisters when it is removed.
    Flip,
    /// Never calls either function.
    Never,
    /// Registers during one step of the workload and unregisters during another, as many times
    /// as listed (`register@STEP,unregister@STEP[,register@STEP,unregister@STEP…]`, steps of
    /// [`Step`]): where vfio's recheck after an attach, a detach or a Device Control write, not
    /// the file's coming or going, must be what KVM acted on. Each element is a
    /// (register, unregister) pair of steps.
    During(Vec<(Step, Step)>),
}

/// A step of `kvm-vfio-workload` ([`crate::kvm::Steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FileAdd,
    Attach,
    Devctl,
    Detach,
    Remove,
}

impl Step {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "file_add" => Step::FileAdd,
            "attach" => Step::Attach,
            "devctl" => Step::Devctl,
            "detach" => Step::Detach,
            "remove" => Step::Remove,
            _ => bail!("unknown step {s:?}: file_add, attach, devctl, detach or remove"),
        })
    }

    /// The step's `[start, end]` in the workload's summary.
    fn window(self, w: &Summary) -> Option<[u64; 2]> {
        match self {
            Step::FileAdd => w.steps.file_add,
            Step::Attach => w.steps.attach,
            Step::Devctl => w.steps.devctl,
            Step::Detach => w.steps.detach,
            Step::Remove => w.steps.remove,
        }
    }
}

impl std::str::FromStr for Expect {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flip" => Ok(Expect::Flip),
            "never" => Ok(Expect::Never),
            _ => {
                let bad = || {
                    anyhow::anyhow!(
                        "expectation {s:?} is neither `flip`, `never` nor \
                         `register@STEP,unregister@STEP[,register@STEP,unregister@STEP…]`"
                    )
                };
                let parts: Vec<&str> = s.split(',').collect();
                if !parts.len().is_multiple_of(2) {
                    return Err(bad());
                }
                let mut pairs = Vec::new();
                for pair in parts.chunks(2) {
                    let register = pair[0].strip_prefix("register@").ok_or_else(bad)?;
                    let unregister = pair[1].strip_prefix("unregister@").ok_or_else(bad)?;
                    pairs.push((Step::parse(register)?, Step::parse(unregister)?));
                }
                Ok(Expect::During(pairs))
            }
        }
    }
}

/// The workload's summary: the last line of its output that parses as one.
pub fn workload_summary(text: &str) -> Result<Summary> {
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Summary>(l).ok())
        .context("kvm-vfio-workload printed no JSON summary")
}

/// One per-call `kvm_noncoherent_dma` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    op: String,
    kvm: String,
    pid: u64,
    /// `bpf_ktime_get_ns()` of the call: `CLOCK_MONOTONIC`, the workload's step clock.
    ts_ns: u64,
}

/// One report block (the lines up to and including a `summary` line).
#[derive(Debug, Default)]
struct Block {
    /// Number of the workload's per-call lines printed before this block.
    phase: usize,
    is_final: bool,
    kvm_lines: Vec<Value>,
    register_calls: Option<u64>,
    unregister_calls: Option<u64>,
    lost_events: u64,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .with_context(|| format!("`{key}` is not a string in {v}"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("`{key}` is not an unsigned integer in {v}"))
}

struct Parsed {
    probes: Vec<(String, String, Option<String>)>,
    calls: Vec<Call>,
    blocks: Vec<Block>,
}

fn parse(top: &str, pid: u64) -> Result<Parsed> {
    let mut p = Parsed {
        probes: Vec::new(),
        calls: Vec::new(),
        blocks: Vec::new(),
    };
    let mut block: Option<Block> = None;
    let mut workload_calls = 0;
    for v in crate::topcheck::top_lines(top)? {
        let ty = str_field(&v, "type")?;
        match ty {
            "probe" => p.probes.push((
                str_field(&v, "fn")?.to_owned(),
                str_field(&v, "attach")?.to_owned(),
                v["error"].as_str().map(str::to_owned),
            )),
            "kvm_noncoherent_dma" => {
                let call = Call {
                    op: str_field(&v, "op")?.to_owned(),
                    kvm: str_field(&v, "kvm")?.to_owned(),
                    pid: u64_field(&v, "pid")?,
                    ts_ns: u64_field(&v, "ts_ns")?,
                };
                if call.pid == pid {
                    workload_calls += 1;
                }
                p.calls.push(call);
            }
            "kind" | "domain" | "kvm" | "summary" => {
                let b = block.get_or_insert_with(|| Block {
                    phase: workload_calls,
                    ..Block::default()
                });
                match ty {
                    "kind" => match str_field(&v, "fn")? {
                        REGISTER_FN => b.register_calls = Some(u64_field(&v, "calls")?),
                        UNREGISTER_FN => b.unregister_calls = Some(u64_field(&v, "calls")?),
                        _ => {}
                    },
                    "kvm" => b.kvm_lines.push(v.clone()),
                    "summary" => {
                        b.is_final = v["final"]
                            .as_bool()
                            .with_context(|| format!("`final` is not a boolean in {v}"))?;
                        b.lost_events = u64_field(&v, "lost_events")?;
                        if let Some(done) = block.take() {
                            p.blocks.push(done);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    ensure!(
        block.is_none(),
        "ioasid-top's last report block has no summary line (output cut short?)"
    );
    Ok(p)
}

/// The kvm line of VM `kvm` in a block, checked against the expected state.
fn check_vm_line(
    b: &Block,
    kvm: &str,
    pid: u64,
    (on, registers, unregisters): (bool, u64, u64),
    what: &str,
) -> Result<()> {
    let lines: Vec<&Value> = b.kvm_lines.iter().filter(|l| l["kvm"] == kvm).collect();
    let [l] = lines.as_slice() else {
        bail!(
            "{what}: {} `kvm` lines for {kvm}, expected one (block: {:?})",
            lines.len(),
            b.kvm_lines
        );
    };
    let got = (
        l["noncoherent_dma"].as_bool(),
        l["registers"].as_u64(),
        l["unregisters"].as_u64(),
        l["pid"].as_u64(),
        l["last_op"].as_str(),
    );
    let want = (
        Some(on),
        Some(registers),
        Some(unregisters),
        Some(pid),
        Some(if on { "register" } else { "unregister" }),
    );
    ensure!(
        got == want,
        "{what}: the `kvm` line says (noncoherent_dma, registers, unregisters, pid, last_op) = {got:?}, expected {want:?}: {l}"
    );
    Ok(())
}

/// Why the workload predicts what it does: the IOMMU's snoop control, and for /dev/ioasid
/// whether the device can issue no-snoop at all.
fn why(w: &Summary) -> String {
    let iommu = format!(
        "IOMMU {} ecap {} has snoop control {}",
        w.iommu,
        w.iommu_ecap.as_deref().unwrap_or("?"),
        match w.snoop_control {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        }
    );
    let source = match w.no_snoop_override.as_deref() {
        Some(v @ ("0" | "1")) => format!(" (test hook no_snoop_override={v})"),
        _ => String::new(),
    };
    match (w.backend, w.expect_noncoherent, w.snoop_control) {
        (Backend::Ioasid, Some(false), Some(false)) => format!(
            "{iommu}, but the device cannot issue no-snoop{source} and /dev/ioasid asks both \
             (is the guest booted with snoop-control=off?)"
        ),
        (Backend::Ioasid, Some(true), _) => format!(
            "{iommu} and the device can issue no-snoop{source} (is the guest booted with \
             snoop-control=off?)"
        ),
        _ => format!("{iommu} (is the guest booted with the scenario's snoop-control?)"),
    }
}

/// The calls must be one register then one unregister, of one VM: returns the VM.
fn register_then_unregister(calls: &[Call]) -> Result<&str> {
    alternating(calls, 1)
}

/// The VM of `calls` when they are `pairs` register-then-unregister pairs for one VM.
fn alternating(calls: &[Call], pairs: usize) -> Result<&str> {
    let ops: Vec<&str> = calls.iter().map(|c| c.op.as_str()).collect();
    let want: Vec<&str> = ["register", "unregister"].repeat(pairs);
    ensure!(
        ops == want,
        "the workload's kvm calls were {ops:?}, expected {want:?}: {calls:?}"
    );
    let kvm = calls[0].kvm.as_str();
    if let Some(other) = calls.iter().find(|c| c.kvm != kvm) {
        bail!("calls for {kvm} and for {}", other.kvm);
    }
    Ok(kvm)
}

/// The verdict: Ok with a one-line description, or what differs.
pub fn check(top: &str, w: &Summary, expect: Expect) -> Result<String> {
    ensure!(
        w.added && w.removed,
        "the workload did not both add and remove its VFIO file: {w:?}"
    );
    let predicted = w.expect_noncoherent.with_context(|| {
        format!(
            "the workload could not tell whether the IOMMU {} enforces snooping (not intel-iommu?)",
            w.iommu
        )
    })?;
    // The steady state the workload predicts; `During` asserts the moments instead.
    ensure!(
        matches!(expect, Expect::During(_)) || predicted == (expect == Expect::Flip),
        "the scenario expects {expect:?}, but the workload predicts {} for {}: {}",
        if predicted { "Flip" } else { "Never" },
        w.bdf,
        why(w),
    );

    let pid = u64::from(w.pid);
    let p = parse(top, pid)?;
    for f in [REGISTER_FN, UNREGISTER_FN] {
        let (_, attach, error) = p
            .probes
            .iter()
            .find(|(name, _, _)| name == f)
            .with_context(|| format!("ioasid-top printed no `probe` line for {f}"))?;
        ensure!(
            attach != "none",
            "ioasid-top did not trace {f} ({}): it could not have seen the state change",
            error.as_deref().unwrap_or("no reason given")
        );
    }
    let last = p
        .blocks
        .last()
        .context("ioasid-top printed no report block")?;
    ensure!(last.is_final, "ioasid-top's last report is not final");
    ensure!(
        last.lost_events == 0,
        "ioasid-top lost {} events",
        last.lost_events
    );
    let others: Vec<&Call> = p.calls.iter().filter(|c| c.pid != pid).collect();
    ensure!(
        others.is_empty(),
        "kvm calls by processes other than the workload (pid {pid}): {others:?}"
    );

    match expect {
        Expect::Never => {
            ensure!(
                p.calls.is_empty(),
                "KVM changed the non-coherent DMA state although {}: {:?}",
                why(w),
                p.calls
            );
            if let Some(b) = p.blocks.iter().find(|b| !b.kvm_lines.is_empty()) {
                bail!("a report block shows KVM VMs: {:?}", b.kvm_lines);
            }
            ensure!(
                (last.register_calls, last.unregister_calls) == (Some(0), Some(0)),
                "final kind lines count {:?} register and {:?} unregister calls, expected 0 and 0",
                last.register_calls,
                last.unregister_calls
            );
            Ok(format!(
                "no register/unregister of non-coherent DMA for pid {pid}'s VM ({}) in {} report \
                 blocks",
                why(w),
                p.blocks.len()
            ))
        }
        Expect::During(pairs) => {
            let kvm = alternating(&p.calls, pairs.len())?;
            let steps: Vec<Step> = pairs.iter().flat_map(|&(r, u)| [r, u]).collect();
            for (call, &step) in p.calls.iter().zip(&steps) {
                let [start, end] = step
                    .window(w)
                    .with_context(|| format!("the workload did not run step {step:?}"))?;
                ensure!(
                    (start..=end).contains(&call.ts_ns),
                    "{} at {} ns, not during {step:?} [{start}, {end}] (the workload's steps: {:?})",
                    call.op,
                    call.ts_ns,
                    w.steps
                );
            }
            let n = Some(pairs.len() as u64);
            ensure!(
                (last.register_calls, last.unregister_calls) == (n, n),
                "final kind lines count {:?} register and {:?} unregister calls, expected {} and {}",
                last.register_calls,
                last.unregister_calls,
                pairs.len(),
                pairs.len()
            );
            let described: Vec<String> = pairs
                .iter()
                .map(|(r, u)| format!("register during {r:?}, unregister during {u:?}"))
                .collect();
            Ok(format!(
                "VM {kvm} of pid {pid}: {} ({})",
                described.join(", then "),
                why(w)
            ))
        }
        Expect::Flip => {
            let kvm = register_then_unregister(&p.calls)?;
            let mut live = 0;
            for b in &p.blocks {
                match b.phase {
                    0 => ensure!(
                        b.kvm_lines.is_empty(),
                        "a report block before the register shows KVM VMs: {:?}",
                        b.kvm_lines
                    ),
                    1 => {
                        check_vm_line(
                            b,
                            kvm,
                            pid,
                            (true, 1, 0),
                            "report while the VM holds the file",
                        )?;
                        live += 1;
                    }
                    _ => check_vm_line(
                        b,
                        kvm,
                        pid,
                        (false, 1, 1),
                        "report after the file left the VM",
                    )?,
                }
            }
            ensure!(
                live > 0,
                "no report block fell between the register and the unregister: hold the file \
                 longer than ioasid-top's --interval"
            );
            ensure!(
                last.phase == 2,
                "the final report came before the unregister"
            );
            ensure!(
                (last.register_calls, last.unregister_calls) == (Some(1), Some(1)),
                "final kind lines count {:?} register and {:?} unregister calls, expected 1 and 1",
                last.register_calls,
                last.unregister_calls
            );
            Ok(format!(
                "VM {kvm} of pid {pid}: register (noncoherent_dma on in {live} live report(s)), \
                 then unregister (off in the final report: registers 1, unregisters 1); {} file \
                 {}, removed by {:?}",
                w.vfio_file_kind, w.vfio_file, w.remove
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::{Backend, Remove};

    fn workload(expect_noncoherent: bool) -> Summary {
        Summary {
            pid: 70,
            backend: Backend::Type1,
            bdf: "0000:00:0a.0".into(),
            vfio_file: "/dev/vfio/9".into(),
            vfio_file_kind: "group".into(),
            iommufd: None,
            iommu: "dmar0".into(),
            iommu_ecap: Some(
                if expect_noncoherent {
                    "0xf00f4a"
                } else {
                    "0xf00fca"
                }
                .into(),
            ),
            snoop_control: Some(!expect_noncoherent),
            no_snoop_override: None,
            expect_noncoherent: Some(expect_noncoherent),
            vm_fd: 4,
            vm_debugfs: None,
            kvm_vfio_fd: 5,
            steps: crate::kvm::Steps::default(),
            added: true,
            remove: Remove::Del,
            removed: true,
            hold_ms: 1000,
        }
    }

    const PROBES: &str = r#"{"v":2,"type":"probe","fn":"iommu_map","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"kvm_arch_register_noncoherent_dma","attach":"fexit","error":null}
{"v":2,"type":"probe","fn":"kvm_arch_unregister_noncoherent_dma","attach":"fexit","error":null}
"#;

    fn block(reg: u64, unreg: u64, kvm: Option<(bool, u64, u64)>, is_final: bool) -> String {
        let mut s = format!(
            "{{\"v\":2,\"type\":\"kind\",\"fn\":\"kvm_arch_register_noncoherent_dma\",\"calls\":{reg},\"failed\":0,\"bytes\":0}}\n\
             {{\"v\":2,\"type\":\"kind\",\"fn\":\"kvm_arch_unregister_noncoherent_dma\",\"calls\":{unreg},\"failed\":0,\"bytes\":0}}\n"
        );
        if let Some((on, r, u)) = kvm {
            let op = if on { "register" } else { "unregister" };
            s.push_str(&format!(
                "{{\"v\":2,\"type\":\"kvm\",\"kvm\":\"0xffffc90000a41000\",\"pid\":70,\"comm\":\"kvm-vfio-worklo\",\"noncoherent_dma\":{on},\"registers\":{r},\"unregisters\":{u},\"last_op\":\"{op}\",\"last_ts_ns\":5}}\n"
            ));
        }
        s.push_str(&format!(
            "{{\"v\":2,\"type\":\"summary\",\"final\":{is_final},\"lost_events\":0}}\n"
        ));
        s
    }

    /// A traced call; registers at 100 ns, unregisters at 200 ns.
    fn call(op: &str, pid: u32) -> String {
        let ts = if op == "register" { 100 } else { 200 };
        format!(
            "{{\"v\":2,\"type\":\"kvm_noncoherent_dma\",\"ts_ns\":{ts},\"fn\":\"kvm_arch_{op}_noncoherent_dma\",\"pid\":{pid},\"op\":\"{op}\",\"kvm\":\"0xffffc90000a41000\"}}\n"
        )
    }

    fn flip_run() -> String {
        [
            PROBES.to_owned(),
            block(0, 0, None, false),
            call("register", 70),
            block(1, 0, Some((true, 1, 0)), false),
            block(1, 0, Some((true, 1, 0)), false),
            call("unregister", 70),
            block(1, 1, Some((false, 1, 1)), false),
            block(1, 1, Some((false, 1, 1)), true),
        ]
        .concat()
    }

    fn never_run() -> String {
        [
            PROBES.to_owned(),
            block(0, 0, None, false),
            block(0, 0, None, true),
        ]
        .concat()
    }

    #[test]
    fn a_clean_flip_passes() {
        let v = check(&flip_run(), &workload(true), Expect::Flip).unwrap();
        assert!(v.contains("2 live report(s)"), "{v}");
    }

    #[test]
    fn a_clean_never_passes() {
        check(&never_run(), &workload(false), Expect::Never).unwrap();
    }

    #[test]
    fn a_flip_where_none_was_expected_fails() {
        // The scenario says snoop control is on but the workload's IOMMU says off.
        let e = check(&flip_run(), &workload(true), Expect::Never).unwrap_err();
        assert!(
            e.to_string().contains("predicts Flip") && e.to_string().contains("snoop control off"),
            "{e}"
        );
        // And with a consistent prediction, the calls themselves fail it.
        let e = check(&flip_run(), &workload(false), Expect::Never).unwrap_err();
        assert!(
            e.to_string()
                .contains("KVM changed the non-coherent DMA state although"),
            "{e}"
        );
    }

    #[test]
    fn calls_must_fall_in_the_steps_named() {
        let mut w = workload(true);
        w.steps.file_add = Some([50, 150]);
        w.steps.attach = Some([160, 250]);
        w.steps.remove = Some([300, 400]);
        let during = |s: &str| s.parse::<Expect>().unwrap();
        check(
            &flip_run(),
            &w,
            during("register@file_add,unregister@attach"),
        )
        .unwrap();
        // The unregister came during the attach, not when the file left the VM.
        let e = check(
            &flip_run(),
            &w,
            during("register@file_add,unregister@remove"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("unregister at 200 ns, not during Remove"),
            "{e}"
        );
        // A step the workload did not run.
        w.steps.attach = None;
        let e = check(
            &flip_run(),
            &w,
            during("register@file_add,unregister@attach"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not run step Attach"), "{e}");
        assert!(
            "register@file_add,unregister@later"
                .parse::<Expect>()
                .is_err()
        );
        assert!("sometimes".parse::<Expect>().is_err());
    }

    #[test]
    fn ioasid_never_with_snoop_control_off_is_explained_by_the_device() {
        // /dev/ioasid with snoop control off: no-snoop is let through, but the device cannot
        // issue it, so the workload predicts no registration.
        let mut w = workload(false);
        w.backend = Backend::Ioasid;
        w.snoop_control = Some(false);
        let ok = check(&never_run(), &w, Expect::Never).unwrap();
        assert!(ok.contains("cannot issue no-snoop"), "{ok}");
        // A registration there is a failure, with the same reason.
        let e = check(&flip_run(), &w, Expect::Never).unwrap_err();
        assert!(e.to_string().contains("cannot issue no-snoop"), "{e}");
    }

    #[test]
    fn a_sequence_of_rechecks_parses_and_must_alternate() {
        use std::str::FromStr as _;
        let e = Expect::from_str(
            "register@file_add,unregister@attach,register@devctl,unregister@detach",
        )
        .unwrap();
        assert_eq!(
            e,
            Expect::During(vec![
                (Step::FileAdd, Step::Attach),
                (Step::Devctl, Step::Detach)
            ])
        );
        for bad in [
            "register@file_add",
            "register@file_add,unregister@attach,register@devctl",
            "unregister@attach,register@file_add",
            "register@file_add,unregister@later",
        ] {
            assert!(Expect::from_str(bad).is_err(), "{bad}");
        }
        let call = |op: &str, kvm: &str| Call {
            op: op.into(),
            kvm: kvm.into(),
            pid: 1,
            ts_ns: 0,
        };
        let four = [
            call("register", "a"),
            call("unregister", "a"),
            call("register", "a"),
            call("unregister", "a"),
        ];
        assert_eq!(alternating(&four, 2).unwrap(), "a");
        assert!(alternating(&four, 1).is_err());
        let mut other_vm = four.clone();
        other_vm[2].kvm = "b".into();
        assert!(alternating(&other_vm, 2).is_err());
    }

    #[test]
    fn no_flip_where_one_was_expected_fails() {
        let e = check(&never_run(), &workload(true), Expect::Flip).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"expected ["register", "unregister"]"#),
            "{e}"
        );
    }

    #[test]
    fn a_missing_unregister_fails() {
        let run = [
            PROBES.to_owned(),
            call("register", 70),
            block(1, 0, Some((true, 1, 0)), true),
        ]
        .concat();
        let e = check(&run, &workload(true), Expect::Flip).unwrap_err();
        assert!(e.to_string().contains("[\"register\"]"), "{e}");
    }

    #[test]
    fn a_wrong_live_state_fails() {
        let run = flip_run().replacen("\"noncoherent_dma\":true", "\"noncoherent_dma\":false", 1);
        let e = check(&run, &workload(true), Expect::Flip).unwrap_err();
        assert!(e.to_string().contains("while the VM holds"), "{e}");
    }

    #[test]
    fn a_wrong_final_count_fails() {
        let run = flip_run().replace(
            "\"registers\":1,\"unregisters\":1",
            "\"registers\":2,\"unregisters\":1",
        );
        let e = check(&run, &workload(true), Expect::Flip).unwrap_err();
        assert!(e.to_string().contains("after the file left"), "{e}");
    }

    #[test]
    fn no_live_report_fails() {
        let run = [
            PROBES.to_owned(),
            call("register", 70),
            call("unregister", 70),
            block(1, 1, Some((false, 1, 1)), true),
        ]
        .concat();
        let e = check(&run, &workload(true), Expect::Flip).unwrap_err();
        assert!(
            e.to_string().contains("no report block fell between"),
            "{e}"
        );
    }

    #[test]
    fn untraced_kvm_functions_fail_even_never() {
        let run = never_run().replace(
            r#""fn":"kvm_arch_register_noncoherent_dma","attach":"fexit","error":null"#,
            r#""fn":"kvm_arch_register_noncoherent_dma","attach":"none","error":"no BTF""#,
        );
        let e = check(&run, &workload(false), Expect::Never).unwrap_err();
        assert!(e.to_string().contains("did not trace"), "{e}");
        assert!(e.to_string().contains("no BTF"), "{e}");
    }

    #[test]
    fn other_processes_and_lost_events_fail() {
        let run = flip_run().replacen(&call("register", 70), &call("register", 71), 1);
        assert!(check(&run, &workload(true), Expect::Flip).is_err());
        let run = flip_run().replace(
            "\"final\":true,\"lost_events\":0",
            "\"final\":true,\"lost_events\":1",
        );
        let e = check(&run, &workload(true), Expect::Flip).unwrap_err();
        assert!(e.to_string().contains("lost 1"), "{e}");
    }

    #[test]
    fn cut_output_and_incomplete_workload_fail() {
        let cut: String = flip_run()
            .lines()
            .take(6)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(check(&cut, &workload(true), Expect::Flip).is_err());
        let mut w = workload(true);
        w.removed = false;
        assert!(check(&flip_run(), &w, Expect::Flip).is_err());
    }

    #[test]
    fn expectations_and_summary_parse() {
        assert_eq!("flip".parse::<Expect>().unwrap(), Expect::Flip);
        assert_eq!("never".parse::<Expect>().unwrap(), Expect::Never);
        assert!("sometimes".parse::<Expect>().is_err());
        let w = workload(true);
        let text = format!("noise\n{}\n", w.to_json_line().unwrap());
        assert_eq!(workload_summary(&text).unwrap(), w);
        assert!(workload_summary("{}\n").is_err());
    }
}
