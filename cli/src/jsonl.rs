//! JSON Lines output: the ONLY place that decides what `--json` prints.
//!
//! The contract is docs/json-lines.md; keep the two in step (the tests below
//! parse every kind of line back and check it against the documented fields).
//!
//! Every line is one JSON object with `"v"` (contract version, [`VERSION`])
//! and `"type"`. Kernel addresses and IOVAs/physical addresses are hex
//! strings (`"0x..."`, they do not fit a double); sizes and counters are
//! unsigned integers.

use std::{io, io::Write, time::Duration};

use serde::Serialize;

use crate::{
    aggregate::{Aggregator, Lost},
    audit::Finding,
    event::{Event, comm_str, via},
    loader::ProbeReport,
    pins,
    ranges::RangeTracker,
    startstate::StartState,
};

/// Version of the JSON Lines contract. Bump on incompatible changes only;
/// adding fields or line types is compatible (consumers ignore unknown ones).
/// 2: no per-call `pin`, `unpin` and `account` lines (pinning is counted in the
/// kernel); `lost_events` includes `lost_pin_map_full`.
pub const VERSION: u32 = 2;

/// `prot` bits and their names, as printed in `prot_flags`.
const PROT_NAMES: [(i32, &str); 6] = [
    (ioasid_ebpf_common::prot::IOMMU_READ, "read"),
    (ioasid_ebpf_common::prot::IOMMU_WRITE, "write"),
    (ioasid_ebpf_common::prot::IOMMU_CACHE, "cache"),
    (ioasid_ebpf_common::prot::IOMMU_NOEXEC, "noexec"),
    (ioasid_ebpf_common::prot::IOMMU_MMIO, "mmio"),
    (ioasid_ebpf_common::prot::IOMMU_PRIV, "priv"),
];

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    v: u32,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(flatten)]
    body: T,
}

fn write_line<W: Write, T: Serialize>(w: &mut W, ty: &str, body: T) -> io::Result<()> {
    serde_json::to_writer(
        &mut *w,
        &Line {
            v: VERSION,
            ty,
            body,
        },
    )
    .map_err(io::Error::from)?;
    w.write_all(b"\n")
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

pub fn prot_flags(prot: i32) -> Vec<&'static str> {
    PROT_NAMES
        .iter()
        .filter(|(bit, _)| prot & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `{"type":"probe"}`: how one kernel function is traced.
pub fn write_probe<W: Write>(w: &mut W, p: &ProbeReport) -> io::Result<()> {
    #[derive(Serialize)]
    struct Probe<'a> {
        #[serde(rename = "fn")]
        function: &'a str,
        attach: &'a str,
        error: Option<&'a str>,
    }
    write_line(
        w,
        "probe",
        Probe {
            function: p.function,
            attach: p.attach.name(),
            error: p.error.as_deref(),
        },
    )
}

#[derive(Serialize)]
struct Common {
    ts_ns: u64,
    #[serde(rename = "fn")]
    function: &'static str,
    pid: u32,
    tid: u32,
    comm: String,
    via: &'static str,
}

/// One line per traced call: `map`, `unmap` or `kvm_noncoherent_dma`.
/// `wraps_nosync`: see `crate::aggregate::Observed`.
pub fn write_event<W: Write>(w: &mut W, ev: &Event, wraps_nosync: bool) -> io::Result<()> {
    let h = ev.header();
    let function = match ev {
        Event::Map(f, _) => f.name(),
        Event::Unmap(f, _) => f.name(),
        Event::Kvm(op, _) => op.function(),
        Event::Attach(f, _) => f.name(),
    };
    let common = Common {
        ts_ns: h.ts_ns,
        function,
        pid: h.tgid,
        tid: h.tid,
        comm: comm_str(&h.comm),
        via: via(h),
    };
    match ev {
        Event::Map(_, m) => {
            #[derive(Serialize)]
            struct Map {
                #[serde(flatten)]
                common: Common,
                domain: String,
                iova: String,
                paddr: String,
                size: u64,
                prot: i32,
                prot_flags: Vec<&'static str>,
                gfp: u32,
                ret: i32,
                wraps_nosync: bool,
            }
            write_line(
                w,
                "map",
                Map {
                    common,
                    domain: hex(m.domain),
                    iova: hex(m.iova),
                    paddr: hex(m.paddr),
                    size: m.size,
                    prot: m.prot,
                    prot_flags: prot_flags(m.prot),
                    gfp: m.gfp,
                    ret: m.ret,
                    wraps_nosync,
                },
            )
        }
        Event::Unmap(_, u) => {
            #[derive(Serialize)]
            struct Unmap {
                #[serde(flatten)]
                common: Common,
                domain: String,
                iova: String,
                size: u64,
                unmapped: u64,
            }
            write_line(
                w,
                "unmap",
                Unmap {
                    common,
                    domain: hex(u.domain),
                    iova: hex(u.iova),
                    size: u.size,
                    unmapped: u.unmapped,
                },
            )
        }
        Event::Kvm(op, k) => {
            #[derive(Serialize)]
            struct Kvm {
                #[serde(flatten)]
                common: Common,
                op: &'static str,
                kvm: String,
            }
            write_line(
                w,
                "kvm_noncoherent_dma",
                Kvm {
                    common,
                    op: op.name(),
                    kvm: hex(k.kvm),
                },
            )
        }
        Event::Attach(f, a) => {
            #[derive(Serialize)]
            struct Attach {
                #[serde(flatten)]
                common: Common,
                op: &'static str,
                domain: String,
                group: String,
                group_id: Option<i32>,
                ret: i32,
            }
            write_line(
                w,
                "attach",
                Attach {
                    common,
                    op: f.op().name(),
                    domain: hex(a.domain),
                    group: hex(a.group),
                    group_id: (a.group_id >= 0).then_some(a.group_id),
                    ret: a.ret,
                },
            )
        }
    }
}

/// `{"type":"startup"}`: one line per process with pinned or locked memory or
/// an open /dev/ioasid file when ioasid-top started (read from /proc).
pub fn write_startup<W: Write>(w: &mut W, state: &StartState) -> io::Result<()> {
    #[derive(Serialize)]
    struct AreaOut<'a> {
        ioas: u32,
        iova: String,
        length: u64,
        prot: &'a str,
    }
    #[derive(Serialize)]
    struct FileOut<'a> {
        fd: u32,
        account_mode: &'a str,
        pinned_pages: u64,
        charged_pages: u64,
        areas: Vec<AreaOut<'a>>,
    }
    #[derive(Serialize)]
    struct Startup<'a> {
        pid: u32,
        comm: &'a str,
        vm_pin_pages: u64,
        vm_lck_pages: u64,
        ioasid_files: Vec<FileOut<'a>>,
    }
    for (pid, p) in &state.procs {
        let files = p
            .ioasid_files
            .iter()
            .map(|f| FileOut {
                fd: f.fd,
                account_mode: &f.info.account_mode,
                pinned_pages: f.info.pinned_pages,
                charged_pages: f.info.charged_pages,
                areas: f
                    .info
                    .areas
                    .iter()
                    .map(|a| AreaOut {
                        ioas: a.ioas,
                        iova: hex(a.iova),
                        length: a.length,
                        prot: &a.prot,
                    })
                    .collect(),
            })
            .collect();
        write_line(
            w,
            "startup",
            Startup {
                pid: *pid,
                comm: &p.comm,
                vm_pin_pages: p.vm_pin_pages,
                vm_lck_pages: p.vm_lck_pages,
                ioasid_files: files,
            },
        )?;
    }
    Ok(())
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The pinning part of a report block: one `pin_kind` line per pinning
/// function, then one `pinned` line per process seen pinning or present in the
/// start-up state.
fn write_pin_report<W: Write>(w: &mut W, agg: &Aggregator, start: &StartState) -> io::Result<()> {
    #[derive(Serialize)]
    struct PinKind {
        #[serde(rename = "fn")]
        function: &'static str,
        calls: u64,
        failed: u64,
        pages: u64,
    }
    for (function, k) in agg.pins().kind_rows() {
        write_line(
            w,
            "pin_kind",
            PinKind {
                function,
                calls: k.calls,
                failed: k.failed,
                pages: k.pages,
            },
        )?;
    }
    #[derive(Serialize)]
    struct Pinned<'a> {
        pid: u32,
        comm: &'a str,
        pinned_pages: i64,
        gross_pinned_pages: u64,
        longterm_pinned_pages: u64,
        gross_unpinned_pages: u64,
        unpinned_inside_pin_pages: u64,
        pin_calls: u64,
        failed_pins: u64,
        locked_vm_pages: i64,
        iommufd_pinned_pages: i64,
        locked_vm_charged_pages: u64,
        locked_vm_uncharged_pages: u64,
        iommufd_added_pages: u64,
        iommufd_removed_pages: u64,
        start_vm_pin_pages: Option<u64>,
        start_vm_lck_pages: Option<u64>,
        start_ioasid_pinned_pages: Option<u64>,
        start_ioasid_charged_pages: Option<u64>,
    }
    for r in pins::pin_rows(agg, start, None) {
        let (pid, e, s) = (r.pid, &r.events, r.start);
        let has_ioasid = s.is_some_and(|s| !s.ioasid_files.is_empty());
        write_line(
            w,
            "pinned",
            Pinned {
                pid,
                comm: &r.comm,
                pinned_pages: clamp_i64(e.net_pinned()),
                gross_pinned_pages: e.pinned,
                longterm_pinned_pages: e.longterm,
                gross_unpinned_pages: e.unpinned,
                unpinned_inside_pin_pages: e.unpinned_inside_pin,
                pin_calls: e.pin_calls,
                failed_pins: e.failed_pins,
                locked_vm_pages: clamp_i64(e.net_locked_vm()),
                iommufd_pinned_pages: clamp_i64(e.net_iommufd()),
                locked_vm_charged_pages: e.locked_vm_charged,
                locked_vm_uncharged_pages: e.locked_vm_uncharged,
                iommufd_added_pages: e.iommufd_added,
                iommufd_removed_pages: e.iommufd_removed,
                start_vm_pin_pages: s.map(|s| s.vm_pin_pages),
                start_vm_lck_pages: s.map(|s| s.vm_lck_pages),
                start_ioasid_pinned_pages: has_ioasid
                    .then(|| s.map_or(0, |s| s.ioasid_pinned_pages())),
                start_ioasid_charged_pages: has_ioasid
                    .then(|| s.map_or(0, |s| s.ioasid_charged_pages())),
            },
        )?;
    }
    Ok(())
}

/// Run-wide facts for the `summary` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary<'a> {
    /// Last summary of the run (exit or Ctrl-C) rather than a periodic one.
    pub is_final: bool,
    pub elapsed: Duration,
    pub lost: Lost,
    pub pid_filter: Option<u32>,
    /// The `--comm` value.
    pub comm_filter: Option<&'a str>,
}

/// The aggregate block: one `kind` line per traced function, one `domain`
/// line per (process, domain), one `kvm` line per KVM VM seen, the pinning
/// lines (one `pin_kind` line per pinning function, one `pinned` line per
/// process), then one `summary` line. (The program writes [`write_audit_report`] without
/// findings for the live view.)
#[cfg(test)]
pub fn write_report<W: Write>(
    w: &mut W,
    agg: &Aggregator,
    start: &StartState,
    s: &Summary,
) -> io::Result<()> {
    write_audit_report(w, agg, start, s, &[])
}

/// `ioasid-top domain`: per tracked domain (by address) a `domain_ranges` line with its
/// totals, then one `domain_range` line per merged range, by IOVA.
fn write_domain_view<W: Write>(w: &mut W, t: &RangeTracker) -> io::Result<()> {
    #[derive(Serialize)]
    struct Totals {
        domain: String,
        ranges: usize,
        bytes: u64,
        maps: u64,
        unmaps: u64,
        unmapped_untracked_bytes: u64,
        remapped_bytes: u64,
        truncated: bool,
        cap: usize,
        dropped_maps: u64,
        dropped_bytes: u64,
    }
    #[derive(Serialize)]
    struct RangeLine<'a> {
        domain: String,
        iova: String,
        end: String,
        size: u64,
        prot: i32,
        prot_flags: Vec<&'static str>,
        pid: u32,
        comm: &'a str,
    }
    for (domain, d) in t.domains() {
        write_line(
            w,
            "domain_ranges",
            Totals {
                domain: hex(domain),
                ranges: d.len(),
                bytes: d.bytes(),
                maps: d.maps,
                unmaps: d.unmaps,
                unmapped_untracked_bytes: d.unmapped_untracked_bytes,
                remapped_bytes: d.remapped_bytes,
                truncated: d.truncated,
                cap: t.cap(),
                dropped_maps: d.dropped_maps,
                dropped_bytes: d.dropped_bytes,
            },
        )?;
        for r in d.ranges() {
            write_line(
                w,
                "domain_range",
                RangeLine {
                    domain: hex(domain),
                    iova: hex(r.start),
                    end: hex(r.end),
                    size: r.bytes(),
                    prot: r.prot,
                    prot_flags: prot_flags(r.prot),
                    pid: r.pid,
                    comm: &r.comm,
                },
            )?;
        }
    }
    Ok(())
}

/// One `finding` line.
pub fn write_finding<W: Write>(w: &mut W, f: &Finding) -> io::Result<()> {
    #[derive(Serialize)]
    struct Line<'a> {
        rule: &'static str,
        severity: &'static str,
        title: &'static str,
        subject: &'a str,
        pid: Option<u32>,
        kvm: Option<String>,
        devices: &'a [String],
        evidence: &'a str,
        why: &'static str,
        action: &'static str,
    }
    write_line(
        w,
        "finding",
        Line {
            rule: f.rule,
            severity: f.severity.name(),
            title: f.title,
            subject: &f.subject,
            pid: f.pid,
            kvm: f.kvm.map(hex),
            devices: &f.devices,
            evidence: &f.evidence,
            why: f.why,
            action: f.action,
        },
    )
}

/// The report block of `ioasid-top audit`: [`write_report`]'s lines with one `finding` line
/// per finding before the `summary` line.
pub fn write_audit_report<W: Write>(
    w: &mut W,
    agg: &Aggregator,
    start: &StartState,
    s: &Summary,
    findings: &[Finding],
) -> io::Result<()> {
    #[derive(Serialize)]
    struct Kind {
        #[serde(rename = "fn")]
        function: &'static str,
        calls: u64,
        failed: u64,
        bytes: u64,
    }
    for (function, k) in agg.kind_rows() {
        write_line(
            w,
            "kind",
            Kind {
                function,
                calls: k.calls,
                failed: k.failed,
                bytes: k.bytes,
            },
        )?;
    }

    #[derive(Serialize)]
    struct Domain<'a> {
        pid: u32,
        comm: &'a str,
        domain: String,
        maps: u64,
        unmaps: u64,
        mapped_bytes: i64,
        failed_maps: u64,
        gross_mapped_bytes: u64,
        gross_unmapped_bytes: u64,
        coherent_maps: u64,
        noncoherent_maps: u64,
        devices: Vec<&'a str>,
    }
    for (key, d) in agg.domain_rows() {
        let net = d.net_bytes();
        write_line(
            w,
            "domain",
            Domain {
                pid: key.pid,
                comm: &d.comm,
                domain: hex(key.domain),
                maps: d.maps,
                unmaps: d.unmaps,
                mapped_bytes: i64::try_from(net).unwrap_or(if net < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                }),
                failed_maps: d.failed_maps,
                gross_mapped_bytes: d.mapped_bytes,
                gross_unmapped_bytes: d.unmapped_bytes,
                coherent_maps: d.coherent_maps,
                noncoherent_maps: d.noncoherent_maps,
                devices: agg.domain_devices(key.domain),
            },
        )?;
    }

    #[derive(Serialize)]
    struct Group<'a> {
        group: String,
        group_id: Option<i32>,
        domain: String,
        devices: Option<&'a [String]>,
        pid: u32,
        comm: &'a str,
    }
    for (group, g) in agg.groups() {
        write_line(
            w,
            "group",
            Group {
                group: hex(*group),
                group_id: (g.id >= 0).then_some(g.id),
                domain: hex(g.domain),
                devices: g.devices.as_deref(),
                pid: g.pid,
                comm: &g.comm,
            },
        )?;
    }

    #[derive(Serialize)]
    struct Kvm<'a> {
        kvm: String,
        pid: u32,
        comm: &'a str,
        noncoherent_dma: bool,
        registers: u64,
        unregisters: u64,
        last_op: &'static str,
        last_ts_ns: u64,
    }
    for (kvm, vm) in agg.kvm_rows() {
        write_line(
            w,
            "kvm",
            Kvm {
                kvm: hex(kvm),
                pid: vm.pid,
                comm: &vm.comm,
                noncoherent_dma: vm.noncoherent,
                registers: vm.registers,
                unregisters: vm.unregisters,
                last_op: vm.last_op().name(),
                last_ts_ns: vm.last_ts_ns,
            },
        )?;
    }

    write_pin_report(w, agg, start)?;

    if let Some(r) = agg.ranges() {
        write_domain_view(w, r)?;
    }

    for f in findings {
        write_finding(w, f)?;
    }

    #[derive(Serialize)]
    struct SummaryLine<'a> {
        #[serde(rename = "final")]
        is_final: bool,
        elapsed_s: f64,
        events: u64,
        elided_maps: u64,
        lost_events: u64,
        lost_ringbuf: u64,
        lost_no_entry: u64,
        lost_pin_map_full: u64,
        undecodable: u64,
        startup_unreadable: u64,
        pid_filter: Option<u32>,
        comm_filter: Option<&'a str>,
    }
    write_line(
        w,
        "summary",
        SummaryLine {
            is_final: s.is_final,
            elapsed_s: (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            events: agg.events(),
            elided_maps: agg.elided_maps().0,
            lost_events: s.lost.total(),
            lost_ringbuf: s.lost.ringbuf,
            lost_no_entry: s.lost.no_entry,
            lost_pin_map_full: s.lost.pin_map_full,
            undecodable: agg.undecodable_records(),
            startup_unreadable: start.unreadable,
            pid_filter: s.pid_filter,
            comm_filter: s.comm_filter,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startstate::StartState;
    use crate::{
        event::{
            AttachFn, KvmOp, MapFn, UnmapFn,
            tests::{attach_event, hdr, map_event, unmap_event},
        },
        loader::{Attach, ProbeReport},
    };
    use ioasid_ebpf_common::{KvmEvent, flags, kind};
    use serde_json::Value;
    use std::mem::size_of;

    const PIN_KINDS: usize = crate::pins::PIN_FUNCTIONS.len();
    const KINDS: usize = crate::aggregate::FUNCTIONS.len();

    fn lines(buf: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(buf).expect("output is UTF-8");
        assert!(text.ends_with('\n'), "every line ends with a newline");
        text.lines()
            .map(|l| {
                assert!(!l.is_empty());
                serde_json::from_str(l).expect("each line is one JSON value")
            })
            .collect()
    }

    /// Every line: an object with v == VERSION (2) and a string type.
    fn check_envelope(v: &Value, ty: &str) {
        let o = v.as_object().expect("line is an object");
        assert_eq!(o["v"], 2);
        assert_eq!(o["type"], ty);
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        k.sort_unstable();
        k
    }

    #[test]
    fn map_line_matches_contract() {
        let mut m = map_event(
            MapFn::IommuMap,
            4242,
            4243,
            0xffff_8881_0abc_d000,
            0xfee0_0000,
            4096,
            0,
        );
        m.prot = ioasid_ebpf_common::prot::IOMMU_READ
            | ioasid_ebpf_common::prot::IOMMU_WRITE
            | ioasid_ebpf_common::prot::IOMMU_CACHE;
        let mut out = Vec::new();
        write_event(&mut out, &Event::Map(MapFn::IommuMap, m), true).expect("write");
        let l = lines(&out);
        assert_eq!(l.len(), 1);
        let v = &l[0];
        check_envelope(v, "map");
        assert_eq!(
            keys(v),
            [
                "comm",
                "domain",
                "fn",
                "gfp",
                "iova",
                "paddr",
                "pid",
                "prot",
                "prot_flags",
                "ret",
                "size",
                "tid",
                "ts_ns",
                "type",
                "v",
                "via",
                "wraps_nosync"
            ]
        );
        assert_eq!(v["fn"], "iommu_map");
        assert_eq!(v["domain"], "0xffff88810abcd000");
        assert_eq!(v["iova"], "0xfee00000");
        assert_eq!(v["paddr"], "0x1fee00000");
        assert_eq!(v["size"], 4096);
        assert_eq!(v["prot"], 7);
        assert_eq!(
            v["prot_flags"],
            serde_json::json!(["read", "write", "cache"])
        );
        assert_eq!(v["gfp"], 0xcc0);
        assert_eq!(v["ret"], 0);
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["tid"], 4243);
        assert_eq!(v["comm"], "qemu-system-x86");
        assert_eq!(v["via"], "fexit");
        assert_eq!(v["wraps_nosync"], true);
        assert_eq!(v["ts_ns"], 1000);
    }

    #[test]
    fn failed_nosync_map_line() {
        let mut m = map_event(MapFn::IommuMapNosync, 1, 1, 0x10, 0x0, 8192, -12);
        m.header.flags = flags::VIA_KPROBE;
        m.prot = 0;
        let mut out = Vec::new();
        write_event(&mut out, &Event::Map(MapFn::IommuMapNosync, m), false).expect("write");
        let v = &lines(&out)[0];
        assert_eq!(v["fn"], "iommu_map_nosync");
        assert_eq!(v["ret"], -12);
        assert_eq!(v["via"], "kprobe");
        assert_eq!(v["prot_flags"], serde_json::json!([]));
        assert_eq!(v["wraps_nosync"], false);
    }

    #[test]
    fn unmap_and_kvm_lines() {
        let mut out = Vec::new();
        let u = unmap_event(UnmapFn::IommuUnmap, 9, 0xabc, 0x2000, 8192, 4096);
        write_event(&mut out, &Event::Unmap(UnmapFn::IommuUnmap, u), false).expect("write");
        let k = KvmEvent {
            header: hdr(kind::KVM_REGISTER_NONCOHERENT_DMA, 48, 9, 10, "qemu"),
            kvm: 0xffff_c900_1234_0000,
        };
        write_event(&mut out, &Event::Kvm(KvmOp::Register, k), false).expect("write");
        let l = lines(&out);
        check_envelope(&l[0], "unmap");
        assert_eq!(l[0]["fn"], "iommu_unmap");
        assert_eq!(l[0]["domain"], "0xabc");
        assert_eq!(l[0]["iova"], "0x2000");
        assert_eq!(l[0]["size"], 8192);
        assert_eq!(l[0]["unmapped"], 4096);
        check_envelope(&l[1], "kvm_noncoherent_dma");
        assert_eq!(l[1]["fn"], "kvm_arch_register_noncoherent_dma");
        assert_eq!(l[1]["op"], "register");
        assert_eq!(l[1]["kvm"], "0xffffc90012340000");
        assert_eq!(l[1]["pid"], 9);
        assert_eq!(l[1]["tid"], 10);
    }

    #[test]
    fn unmap_fast_line_is_an_unmap_line() {
        let mut u = unmap_event(
            UnmapFn::IommuUnmapFast,
            77,
            0xffff_8881_0abc_d000,
            0x1_0000_0000,
            1 << 21,
            1 << 21,
        );
        u.header.tid = 78;
        u.header.flags = flags::VIA_KPROBE;
        let mut out = Vec::new();
        write_event(&mut out, &Event::Unmap(UnmapFn::IommuUnmapFast, u), false).expect("write");
        let mut plain = Vec::new();
        let p = unmap_event(UnmapFn::IommuUnmap, 77, 1, 1, 1, 1);
        write_event(&mut plain, &Event::Unmap(UnmapFn::IommuUnmap, p), false).expect("write");
        let l = lines(&out);
        assert_eq!(l.len(), 1);
        let v = &l[0];
        check_envelope(v, "unmap");
        // Exactly the fields of an iommu_unmap line.
        assert_eq!(keys(v), keys(&lines(&plain)[0]));
        assert_eq!(
            keys(v),
            [
                "comm", "domain", "fn", "iova", "pid", "size", "tid", "ts_ns", "type", "unmapped",
                "v", "via"
            ]
        );
        assert_eq!(v["fn"], "iommu_unmap_fast");
        assert_eq!(v["domain"], "0xffff88810abcd000");
        assert_eq!(v["iova"], "0x100000000");
        assert_eq!(v["size"], 1 << 21);
        assert_eq!(v["unmapped"], 1 << 21);
        assert_eq!(v["pid"], 77);
        assert_eq!(v["tid"], 78);
        assert_eq!(v["comm"], "qemu-system-x86");
        assert_eq!(v["via"], "kprobe");
        assert_eq!(v["ts_ns"], 1000);
    }

    #[test]
    fn probe_lines() {
        let mut out = Vec::new();
        write_probe(
            &mut out,
            &ProbeReport {
                function: "iommu_map",
                attach: Attach::Fexit,
                error: None,
            },
        )
        .expect("write");
        write_probe(
            &mut out,
            &ProbeReport {
                function: "kvm_arch_register_noncoherent_dma",
                attach: Attach::None,
                error: Some("no such symbol \"quoted\"".into()),
            },
        )
        .expect("write");
        let l = lines(&out);
        check_envelope(&l[0], "probe");
        assert_eq!(l[0]["fn"], "iommu_map");
        assert_eq!(l[0]["attach"], "fexit");
        assert_eq!(l[0]["error"], Value::Null);
        assert_eq!(l[1]["attach"], "none");
        assert_eq!(l[1]["error"], "no such symbol \"quoted\"");
    }

    #[test]
    fn report_block_matches_contract() {
        let mut agg = Aggregator::new();
        let d = 0xffff_8880_dead_0000;
        agg.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 50, 50, d, 0, 1 << 20, 0),
        ));
        agg.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 50, 50, d, 1 << 20, 4096, -22),
        ));
        agg.observe(&Event::Unmap(
            UnmapFn::IommuUnmap,
            unmap_event(UnmapFn::IommuUnmap, 50, d, 0, 4096, 4096),
        ));
        agg.observe(&Event::Unmap(
            UnmapFn::IommuUnmapFast,
            unmap_event(UnmapFn::IommuUnmapFast, 50, d, 4096, 8192, 8192),
        ));
        agg.undecodable();
        // Two wrapping iommu_map calls of 8 KiB each that the kernel counted without a record.
        agg.set_elided_maps(2, 16384);
        let mut out = Vec::new();
        write_report(
            &mut out,
            &agg,
            &StartState::default(),
            &Summary {
                is_final: true,
                elapsed: Duration::from_millis(2004),
                lost: Lost {
                    ringbuf: 3,
                    no_entry: 1,
                    pin_map_full: 2,
                },
                pid_filter: Some(50),
                comm_filter: None,
            },
        )
        .expect("write");
        let l = lines(&out);
        // The kind lines, 1 domain line, the pin_kind lines, 1 summary line.
        assert_eq!(l.len(), KINDS + 2 + PIN_KINDS);
        for (i, f) in crate::aggregate::FUNCTIONS.iter().enumerate() {
            check_envelope(&l[i], "kind");
            assert_eq!(l[i]["fn"], *f);
            assert_eq!(keys(&l[i]), ["bytes", "calls", "failed", "fn", "type", "v"]);
        }
        assert_eq!(l[0]["calls"], 2 + 2);
        assert_eq!(l[0]["failed"], 1);
        assert_eq!(l[0]["bytes"], (1 << 20) + 16384);
        assert_eq!(l[1]["calls"], 0);
        assert_eq!((&l[2]["calls"], &l[2]["bytes"]), (&1.into(), &4096.into()));
        assert_eq!(l[3]["fn"], "iommu_unmap_fast");
        assert_eq!(l[3]["calls"], 1);
        assert_eq!(l[3]["failed"], 0);
        assert_eq!(l[3]["bytes"], 8192);
        assert_eq!(l[4]["calls"], 0);

        let dom = &l[KINDS];
        check_envelope(dom, "domain");
        assert_eq!(dom["devices"], serde_json::json!([]));
        assert_eq!(dom["pid"], 50);
        assert_eq!(dom["comm"], "qemu-system-x86");
        assert_eq!(dom["domain"], "0xffff8880dead0000");
        assert_eq!(dom["maps"], 1);
        assert_eq!(dom["unmaps"], 2);
        assert_eq!(dom["failed_maps"], 1);
        assert_eq!(dom["mapped_bytes"], (1 << 20) - 4096 - 8192);
        assert_eq!(dom["gross_mapped_bytes"], 1 << 20);
        assert_eq!(dom["gross_unmapped_bytes"], 4096 + 8192);
        // The one successful map has prot 0b111: read, write, cache.
        assert_eq!(
            (&dom["coherent_maps"], &dom["noncoherent_maps"]),
            (&1.into(), &0.into())
        );

        for (i, f) in crate::pins::PIN_FUNCTIONS.iter().enumerate() {
            check_envelope(&l[KINDS + 1 + i], "pin_kind");
            assert_eq!(l[KINDS + 1 + i]["fn"], f.0);
        }
        let s = &l[KINDS + 1 + PIN_KINDS];
        check_envelope(s, "summary");
        assert_eq!(s["final"], true);
        assert_eq!(s["elapsed_s"], 2.004);
        assert_eq!(s["events"], 4);
        assert_eq!(s["elided_maps"], 2);
        assert_eq!(s["lost_events"], 6);
        assert_eq!(s["lost_ringbuf"], 3);
        assert_eq!(s["lost_no_entry"], 1);
        assert_eq!(s["lost_pin_map_full"], 2);
        assert_eq!(s["undecodable"], 1);
        assert_eq!(s["pid_filter"], 50);
    }

    fn kvm_event(op: KvmOp, pid: u32, vm: u64, ts_ns: u64) -> Event {
        let k = match op {
            KvmOp::Register => kind::KVM_REGISTER_NONCOHERENT_DMA,
            KvmOp::Unregister => kind::KVM_UNREGISTER_NONCOHERENT_DMA,
        };
        let mut header = hdr(k, size_of::<KvmEvent>(), pid, pid, "kvm-vfio-worklo");
        header.ts_ns = ts_ns;
        Event::Kvm(op, KvmEvent { header, kvm: vm })
    }

    /// A periodic summary with nothing lost.
    fn periodic(comm_filter: Option<&str>) -> Summary<'_> {
        Summary {
            is_final: false,
            elapsed: Duration::ZERO,
            lost: Lost::default(),
            pid_filter: None,
            comm_filter,
        }
    }

    fn report(agg: &Aggregator) -> Vec<Value> {
        let mut out = Vec::new();
        write_report(&mut out, agg, &StartState::default(), &periodic(None)).expect("write");
        lines(&out)
    }

    /// `ioasid-top domain --json`: per domain a `domain_ranges` line, then its merged
    /// ranges by IOVA, after the `pinned` lines and before the summary; truncation is
    /// explicit; a domain asked for by address is reported even when nothing was seen in it.
    #[test]
    fn domain_view_lines() {
        use crate::{aggregate::Filter, ranges::RangeTracker};
        const D: u64 = 0xffff_8880_0000_1000;
        let mut agg = Aggregator::with(Filter::default(), Some(RangeTracker::new(None, 2)));
        let mut map = |f, iova, size| {
            agg.observe(&Event::Map(f, map_event(f, 812, 812, D, iova, size, 0)));
        };
        for i in 0..4u64 {
            // Nested: counted once.
            map(MapFn::IommuMapNosync, 0x10_0000 + (i << 16), 1 << 16);
            map(MapFn::IommuMap, 0x10_0000 + (i << 16), 1 << 16);
        }
        map(MapFn::IommuMap, 0x80_0000, 4096);
        map(MapFn::IommuMap, 0x90_0000, 4096);
        agg.observe(&Event::Unmap(
            UnmapFn::IommuUnmap,
            unmap_event(UnmapFn::IommuUnmap, 812, D, 0x13_0000, 1 << 16, 1 << 16),
        ));
        let got = report(&agg);
        let types: Vec<&str> = got.iter().filter_map(|l| l["type"].as_str()).collect();
        let at = |ty: &str| types.iter().position(|t| *t == ty).expect(ty);
        assert!(at("domain") < at("domain_ranges") && at("pin_kind") < at("domain_ranges"));
        assert_eq!(
            types[at("domain_ranges") + 1..],
            ["domain_range", "domain_range", "summary"]
        );
        let totals = &got[at("domain_ranges")];
        check_envelope(totals, "domain_ranges");
        assert_eq!(totals["domain"], "0xffff888000001000");
        assert_eq!(
            (
                &totals["ranges"],
                &totals["bytes"],
                &totals["maps"],
                &totals["unmaps"]
            ),
            (
                &Value::from(2),
                &Value::from((3 << 16) + 4096),
                &Value::from(6),
                &Value::from(1)
            )
        );
        assert_eq!(totals["truncated"], true);
        assert_eq!(totals["cap"], 2);
        assert_eq!(
            (&totals["dropped_maps"], &totals["dropped_bytes"]),
            (&Value::from(1), &Value::from(4096))
        );
        assert_eq!(totals["unmapped_untracked_bytes"], 0);
        assert_eq!(totals["remapped_bytes"], 0);
        let r = &got[at("domain_ranges") + 1];
        check_envelope(r, "domain_range");
        assert_eq!(
            keys(r),
            [
                "comm",
                "domain",
                "end",
                "iova",
                "pid",
                "prot",
                "prot_flags",
                "size",
                "type",
                "v"
            ]
        );
        assert_eq!(
            (&r["iova"], &r["end"]),
            (&Value::from("0x100000"), &Value::from("0x130000"))
        );
        assert_eq!(r["size"], 3 << 16);
        assert_eq!(r["prot"], 7);
        assert_eq!(
            r["prot_flags"],
            serde_json::json!(["read", "write", "cache"])
        );
        assert_eq!(
            (&r["pid"], &r["comm"]),
            (&Value::from(812), &Value::from("qemu-system-x86"))
        );
        let r2 = &got[at("domain_ranges") + 2];
        assert_eq!(
            (&r2["iova"], &r2["size"]),
            (&Value::from("0x800000"), &Value::from(4096))
        );

        // Asked for by address, seen nowhere: a line of zeros, no ranges.
        let only = Aggregator::with(Filter::default(), Some(RangeTracker::new(Some(D), 8)));
        let got = report(&only);
        let t: Vec<_> = got
            .iter()
            .filter(|l| l["type"] == "domain_ranges")
            .collect();
        assert_eq!(t.len(), 1);
        assert_eq!(
            (&t[0]["ranges"], &t[0]["truncated"]),
            (&Value::from(0), &Value::Bool(false))
        );
        assert!(!got.iter().any(|l| l["type"] == "domain_range"));
        // Not in the other views.
        assert!(
            !report(&Aggregator::new())
                .iter()
                .any(|l| l["type"] == "domain_ranges")
        );
    }

    /// The `kvm` lines of a report: one per VM, after the domain lines, before the summary;
    /// the state flips on at register and off at unregister.
    #[test]
    fn kvm_report_lines_follow_the_state() {
        let vm = 0xffff_c900_0abc_0000;
        let mut agg = Aggregator::new();
        agg.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(MapFn::IommuMap, 50, 50, 0xd0, 0, 4096, 0),
        ));
        agg.observe(&kvm_event(KvmOp::Register, 61, vm, 5_000));
        let l = report(&agg);
        // Found by type and fn, not by position: the number of kind lines grows with the
        // traced functions.
        let types: Vec<&str> = l.iter().filter_map(|v| v["type"].as_str()).collect();
        let kinds = types.iter().filter(|t| **t == "kind").count();
        assert_eq!(kinds, crate::aggregate::FUNCTIONS.len());
        // ... then the domain line, the kvm line, the pinning functions' lines (no process
        // pinned: no `pinned` line), the summary.
        let mut after_kinds = vec!["domain", "kvm"];
        after_kinds.extend(["pin_kind"; PIN_KINDS]);
        after_kinds.push("summary");
        assert_eq!(types[kinds..], after_kinds);
        let summary = |l: &[Value]| {
            l.iter()
                .find(|v| v["type"] == "summary")
                .cloned()
                .expect("a summary line")
        };
        let kind_calls = |l: &[Value], f: &str| {
            l.iter()
                .find(|v| v["type"] == "kind" && v["fn"] == f)
                .map(|v| (v["calls"].clone(), v["failed"].clone(), v["bytes"].clone()))
                .expect("a kind line per function")
        };
        let k = &l[kinds + 1];
        check_envelope(k, "kvm");
        assert_eq!(
            keys(k),
            [
                "comm",
                "kvm",
                "last_op",
                "last_ts_ns",
                "noncoherent_dma",
                "pid",
                "registers",
                "type",
                "unregisters",
                "v"
            ]
        );
        assert_eq!(k["kvm"], "0xffffc9000abc0000");
        assert_eq!(k["pid"], 61);
        assert_eq!(k["comm"], "kvm-vfio-worklo");
        assert_eq!(k["noncoherent_dma"], true);
        assert_eq!((&k["registers"], &k["unregisters"]), (&1.into(), &0.into()));
        assert_eq!(k["last_op"], "register");
        assert_eq!(k["last_ts_ns"], 5_000);
        assert_eq!(summary(&l)["events"], 2);
        assert_eq!(
            kind_calls(&l, "kvm_arch_register_noncoherent_dma"),
            (1.into(), 0.into(), 0.into())
        );

        agg.observe(&kvm_event(KvmOp::Unregister, 61, vm, 6_000));
        let l = report(&agg);
        let k = &l[kinds + 1];
        check_envelope(k, "kvm");
        assert_eq!(k["noncoherent_dma"], false);
        assert_eq!((&k["registers"], &k["unregisters"]), (&1.into(), &1.into()));
        assert_eq!(k["last_op"], "unregister");
        assert_eq!(k["last_ts_ns"], 6_000);
        assert_eq!(
            kind_calls(&l, "kvm_arch_unregister_noncoherent_dma"),
            (1.into(), 0.into(), 0.into())
        );
    }

    #[test]
    fn empty_report_still_has_kinds_and_summary() {
        let agg = Aggregator::new();
        let mut out = Vec::new();
        write_report(
            &mut out,
            &agg,
            &StartState::default(),
            &Summary {
                is_final: false,
                elapsed: Duration::ZERO,
                lost: Lost::default(),
                pid_filter: None,
                comm_filter: None,
            },
        )
        .expect("write");
        let l = lines(&out);
        assert_eq!(l.len(), KINDS + 1 + PIN_KINDS);
        let s = &l[KINDS + PIN_KINDS];
        check_envelope(s, "summary");
        assert_eq!(s["final"], false);
        assert_eq!(s["lost_events"], 0);
        assert_eq!(s["pid_filter"], Value::Null);
    }

    /// Every line type and field the code prints is documented in
    /// docs/json-lines.md (a `### \`type\`` heading and a `| \`field\``
    /// table row), so the contract cannot silently drift from the code.
    #[test]
    fn every_printed_field_is_in_the_contract() {
        let doc = include_str!("../../docs/json-lines.md");
        assert!(
            doc.contains(&format!("version {VERSION}")),
            "doc names the contract version"
        );

        let mut out = Vec::new();
        let m = map_event(MapFn::IommuMap, 1, 1, 1, 1, 1, 0);
        write_event(&mut out, &Event::Map(MapFn::IommuMap, m), false).expect("write");
        for f in [UnmapFn::IommuUnmap, UnmapFn::IommuUnmapFast] {
            write_event(
                &mut out,
                &Event::Unmap(f, unmap_event(f, 1, 1, 1, 1, 1)),
                false,
            )
            .expect("write");
        }
        let k = KvmEvent {
            header: hdr(kind::KVM_REGISTER_NONCOHERENT_DMA, 48, 1, 1, "q"),
            kvm: 1,
        };
        write_event(&mut out, &Event::Kvm(KvmOp::Register, k), false).expect("write");
        let a = attach_event(AttachFn::AttachGroupHandle, 1, 1, 0x88, 5);
        write_event(
            &mut out,
            &Event::Attach(AttachFn::AttachGroupHandle, a),
            false,
        )
        .expect("write");
        write_probe(
            &mut out,
            &ProbeReport {
                function: "iommu_map",
                attach: Attach::Kprobe,
                error: Some("e".into()),
            },
        )
        .expect("write");
        let mut agg = Aggregator::new();
        agg.observe(&Event::Map(MapFn::IommuMap, m));
        agg.observe(&Event::Kvm(KvmOp::Register, k));
        agg.observe(&Event::Attach(AttachFn::AttachGroupHandle, a));
        agg.fill_group_devices(|_| Some(vec!["0000:00:03.0".into()]));
        // A process's pinning counters, a start-up line and their `pinned` lines.
        agg.pins_mut().update(
            Default::default(),
            &[(1, crate::pins::tests::counters("p"))],
            &[],
        );
        let mut start = StartState::default();
        start.procs.insert(
            2,
            crate::startstate::ProcStart {
                comm: "q".into(),
                vm_pin_pages: 1,
                vm_lck_pages: 0,
                ioasid_files: vec![crate::startstate::IoasidFile {
                    fd: 3,
                    info: ioasid_uapi::fdinfo::parse(
                        "ioasid-account-mode:\tuser\nioasid-pinned-pages:\t1\nioasid-charged-pages:\t0\nioasid-area:\t1 0x1000 0x1000 rw\n",
                    )
                    .expect("fdinfo"),
                }],
            },
        );
        write_startup(&mut out, &start).expect("write");
        // A finding of each rule.
        let mut snap = crate::audit::Snapshot {
            page_size: 4096,
            ..crate::audit::Snapshot::default()
        };
        snap.vfio_pci.push(crate::audit::PciDev {
            bdf: "0000:00:03.0".into(),
            no_snoop: ioasid_uapi::pci::NoSnoop::ConventionalPci,
            snoop_control: Some(false),
        });
        snap.procs.insert(
            2,
            crate::audit::ProcMem {
                comm: "q".into(),
                vm_lck_pages: 100,
                vm_pin_pages: 0,
                memlock_soft: Some(4096),
                memlock_hard: None,
            },
        );
        let findings = crate::audit::evaluate(&agg, &snap);
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            [
                crate::audit::MAPPINGS_OUTLIVE_OWNER,
                crate::audit::PINS_OVER_MEMLOCK,
                crate::audit::UNNEEDED_WBINVD
            ]
        );
        // The domain view's lines.
        let mut ranges = crate::ranges::RangeTracker::new(None, 4);
        ranges.map(1, 0x1000, 0x1000, 3, 1, "p");
        let mut view = Aggregator::with(crate::aggregate::Filter::default(), Some(ranges));
        view.observe(&Event::Map(MapFn::IommuMap, m));
        write_report(
            &mut out,
            &view,
            &StartState::default(),
            &periodic(Some("p")),
        )
        .expect("write");
        write_audit_report(
            &mut out,
            &agg,
            &start,
            &Summary {
                is_final: true,
                elapsed: Duration::ZERO,
                lost: Lost::default(),
                pid_filter: None,
                comm_filter: None,
            },
            &findings,
        )
        .expect("write");

        let mut types = std::collections::BTreeSet::new();
        for line in lines(&out) {
            let ty = line["type"].as_str().expect("type is a string").to_owned();
            // Every traced function (per-call and kind lines) is named in the
            // contract's fn list and has its own `kind` line.
            if let Some(f) = line["fn"].as_str() {
                assert!(doc.contains(&format!("`{f}`")), "fn {f} undocumented");
            }
            assert!(
                doc.contains(&format!("### `{ty}`")),
                "type {ty} undocumented"
            );
            for key in keys(&line) {
                if key == "v" || key == "type" {
                    continue;
                }
                assert!(
                    doc.contains(&format!("| `{key}`")),
                    "field {key} of {ty} lines undocumented"
                );
            }
            types.insert(ty);
        }
        assert_eq!(
            types.into_iter().collect::<Vec<_>>(),
            [
                "attach",
                "domain",
                "domain_range",
                "domain_ranges",
                "finding",
                "group",
                "kind",
                "kvm",
                "kvm_noncoherent_dma",
                "map",
                "pin_kind",
                "pinned",
                "probe",
                "startup",
                "summary",
                "unmap"
            ]
        );
    }

    /// A `pinned` line carries the kernel's counters of the process: gross and net, of a
    /// process that exited (folded) and of a live one.
    #[test]
    fn pinned_lines_carry_the_kernel_counters() {
        let mut agg = Aggregator::new();
        let mut gone = crate::pins::tests::counters("vfio-edu-worklo");
        (gone.pin_calls, gone.pinned, gone.longterm, gone.unpinned) = (3, 72, 64, 64);
        (gone.locked_vm_charged, gone.locked_vm_uncharged) = (64, 60);
        (gone.iommufd_added, gone.iommufd_removed) = (8, 16);
        let mut live = crate::pins::tests::counters("kworker/u8:0");
        live.unpinned = 40;
        agg.pins_mut()
            .update(Default::default(), &[(10, live)], &[(77, gone)]);
        let l = report(&agg);
        let pinned: Vec<&Value> = l.iter().filter(|v| v["type"] == "pinned").collect();
        assert_eq!(pinned.len(), 2);
        let (k, w) = (pinned[0], pinned[1]);
        check_envelope(w, "pinned");
        assert_eq!((&k["pid"], &k["pinned_pages"]), (&10.into(), &(-40).into()));
        assert_eq!(k["comm"], "kworker/u8:0");
        assert_eq!(w["pid"], 77);
        assert_eq!(w["comm"], "vfio-edu-worklo");
        for (key, want) in [
            ("pinned_pages", 0),
            ("gross_pinned_pages", 72),
            ("longterm_pinned_pages", 64),
            ("gross_unpinned_pages", 64),
            ("pin_calls", 3),
            ("locked_vm_pages", 4),
            ("iommufd_pinned_pages", -8),
            ("locked_vm_charged_pages", 64),
            ("locked_vm_uncharged_pages", 60),
            ("iommufd_added_pages", 8),
            ("iommufd_removed_pages", 16),
        ] {
            assert_eq!(w[key], want, "{key}: {w}");
        }
    }

    #[test]
    fn finding_lines_close_the_audit_block() {
        let mut snap = crate::audit::Snapshot {
            page_size: 4096,
            ..crate::audit::Snapshot::default()
        };
        snap.procs.insert(
            9,
            crate::audit::ProcMem {
                comm: "w".into(),
                vm_lck_pages: 64,
                vm_pin_pages: 0,
                memlock_soft: Some(65536),
                memlock_hard: Some(65536),
            },
        );
        let agg = Aggregator::new();
        let findings = crate::audit::evaluate(&agg, &snap);
        let mut out = Vec::new();
        write_audit_report(
            &mut out,
            &agg,
            &StartState::default(),
            &Summary {
                is_final: true,
                elapsed: Duration::ZERO,
                lost: Lost::default(),
                pid_filter: None,
                comm_filter: None,
            },
            &findings,
        )
        .expect("write");
        let l = lines(&out);
        // The kind lines, the pin_kind lines, 1 finding, 1 summary.
        assert_eq!(l.len(), KINDS + 2 + PIN_KINDS);
        let f = &l[l.len() - 2];
        check_envelope(f, "finding");
        check_envelope(&l[l.len() - 1], "summary");
        assert_eq!(
            keys(f),
            [
                "action", "devices", "evidence", "kvm", "pid", "rule", "severity", "subject",
                "title", "type", "v", "why"
            ]
        );
        assert_eq!(f["rule"], "pins-over-memlock");
        assert_eq!(f["severity"], "warning");
        assert_eq!(f["pid"], 9);
        assert_eq!(f["kvm"], Value::Null);
        assert_eq!(f["devices"], serde_json::json!([]));
    }

    #[test]
    fn prot_flag_names() {
        assert_eq!(
            prot_flags(0x3f),
            ["read", "write", "cache", "noexec", "mmio", "priv"]
        );
        assert!(prot_flags(0).is_empty());
        assert_eq!(prot_flags(0x40 | 0x4), ["cache"]);
    }
}
