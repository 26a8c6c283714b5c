//! Human output: a comfy-table of the per (process, domain) aggregate with a
//! short status header.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, Width, presets};

use crate::{
    aggregate::{Aggregator, Lost},
    args::SortKey,
    audit::Finding,
    event::KvmOp,
    jsonl::Summary,
    loader::ProbeReport,
    ranges::{RangeTracker, prot_letters},
    startstate::StartState,
};

pub const COLUMNS: [&str; 8] = [
    "PID", "COMM", "DOMAIN", "DEVICES", "MAPS", "UNMAPS", "MAPPED", "FAILED",
];

/// Bytes in binary units, one decimal above 1 KiB: "512 B", "-4.0 KiB".
pub fn human_bytes(n: i128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let sign = if n < 0 { "-" } else { "" };
    let abs = n.unsigned_abs();
    if abs < 1024 {
        return format!("{sign}{abs} B");
    }
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut v = abs as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{sign}{v:.1} {unit}")
}

/// A table of `header` in this tool's style, fitted to `width` columns when known.
fn new_table(header: &[&str], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY);
    if let Some(w) = width {
        t.set_width(w);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    t.set_header(header.to_vec());
    t
}

/// The aggregate table. `width`: terminal columns, if known.
pub fn render_table(agg: &Aggregator, sort: Option<SortKey>, width: Option<u16>) -> String {
    let mut t = new_table(&COLUMNS, width);
    let rows = agg.domain_rows_by(sort);
    for (key, d) in &rows {
        t.add_row(vec![
            key.pid.to_string(),
            d.comm.clone(),
            format!("{:#x}", key.domain),
            // Attached before ioasid-top started, or detached since: not known.
            match agg.domain_devices(key.domain) {
                devices if devices.is_empty() => "-".to_owned(),
                devices => devices.join(" "),
            },
            d.maps.to_string(),
            d.unmaps.to_string(),
            human_bytes(d.net_bytes()),
            d.failed_maps.to_string(),
        ]);
    }
    for i in [0, 4, 5, 6, 7] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut s = t.to_string();
    if rows.is_empty() {
        s.push_str("\n(no iommu_map/iommu_unmap calls seen yet)");
    }
    s
}

pub const KVM_COLUMNS: [&str; 6] = ["PID", "COMM", "KVM", "NONCOHERENT DMA", "REG", "UNREG"];

/// One row per KVM VM whose non-coherent DMA state changed while tracing, or None when
/// there is none (most hosts: the table would only take room).
pub fn render_kvm_table(
    agg: &Aggregator,
    sort: Option<SortKey>,
    width: Option<u16>,
) -> Option<String> {
    let rows = agg.kvm_rows_by(sort);
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&KVM_COLUMNS, width);
    for (kvm, vm) in rows {
        t.add_row(vec![
            vm.pid.to_string(),
            vm.comm.clone(),
            format!("{kvm:#x}"),
            // What it means for the guest: from register to unregister KVM honours WBINVD.
            if vm.noncoherent {
                "on (wbinvd)".to_owned()
            } else {
                "off".to_owned()
            },
            vm.registers.to_string(),
            vm.unregisters.to_string(),
        ]);
    }
    for i in [0, 4, 5] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    Some(t.to_string())
}

/// The tables: IOMMU domains, then KVM VMs when there are any.
pub fn render_tables(agg: &Aggregator, sort: Option<SortKey>, width: Option<u16>) -> String {
    let mut s = render_table(agg, sort, width);
    if let Some(k) = render_kvm_table(agg, sort, width) {
        s.push('\n');
        s.push_str(&k);
    }
    s
}

/// Columns of the pinning table: pages, from events since attach, then the
/// start-up state (what /proc said when ioasid-top started).
pub const PIN_COLUMNS: [&str; 9] = [
    "PID",
    "COMM",
    "PINNED (ev)",
    "PINS",
    "UNPINS",
    "LOCKED_VM (ev)",
    "IOMMUFD (ev)",
    "VmPin/VmLck (start)",
    "IOASID pin/charged (start)",
];

/// Per process pinned pages: events (net and gross) and the start-up state.
pub fn render_pin_table(
    agg: &Aggregator,
    start: &StartState,
    sort: Option<SortKey>,
    width: Option<u16>,
) -> String {
    let mut t = new_table(&PIN_COLUMNS, width);
    let rows = crate::pins::pin_rows(agg, start, sort);
    for r in &rows {
        let (e, s) = (&r.events, r.start);
        t.add_row(vec![
            r.pid.to_string(),
            r.comm.clone(),
            e.net_pinned().to_string(),
            e.pinned.to_string(),
            e.unpinned.to_string(),
            e.net_locked_vm().to_string(),
            e.net_iommufd().to_string(),
            s.map_or("-".into(), |s| {
                format!("{}/{}", s.vm_pin_pages, s.vm_lck_pages)
            }),
            match s {
                Some(s) if !s.ioasid_files.is_empty() => format!(
                    "{}/{} ({} files)",
                    s.ioasid_pinned_pages(),
                    s.ioasid_charged_pages(),
                    s.ioasid_files.len()
                ),
                _ => "-".into(),
            },
        ]);
    }
    for i in [0, 2, 3, 4, 5, 6, 7, 8] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = t.to_string();
    if rows.is_empty() {
        out.push_str("\n(no pins seen yet, none at start-up)");
    }
    out.push_str(
        "\n(pages; \"ev\": from events since attach, \"start\": /proc when ioasid-top started)",
    );
    out
}

pub const RANGE_COLUMNS: [&str; 6] = ["IOVA", "END (excl.)", "SIZE", "PROT", "PID", "COMM"];

/// `ioasid-top domain`: per tracked domain a line of totals and a table of its ranges.
pub fn render_domain_view(t: &RangeTracker, width: Option<u16>) -> String {
    let mut out = String::new();
    for (domain, d) in t.domains() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "domain {domain:#x}: {} range(s), {} mapped ({} maps, {} unmaps seen",
            d.len(),
            human_bytes(i128::from(d.bytes())),
            d.maps,
            d.unmaps
        ));
        if d.unmapped_untracked_bytes > 0 {
            out.push_str(&format!(
                "; {} unmapped that was not seen mapped",
                human_bytes(i128::from(d.unmapped_untracked_bytes))
            ));
        }
        out.push(')');
        if d.truncated {
            out.push_str(&format!(
                "\nTRUNCATED at {} ranges: {} map(s) and {} not tracked; the list below is incomplete",
                t.cap(),
                d.dropped_maps,
                human_bytes(i128::from(d.dropped_bytes))
            ));
        }
        if d.len() == 0 {
            continue;
        }
        let mut tab = new_table(&RANGE_COLUMNS, width);
        for r in d.ranges() {
            tab.add_row(vec![
                format!("{:#x}", r.start),
                format!("{:#x}", r.end),
                human_bytes(i128::from(r.bytes())),
                prot_letters(r.prot),
                r.pid.to_string(),
                r.comm.clone(),
            ]);
        }
        for i in [0, 1, 2, 4] {
            if let Some(c) = tab.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        out.push('\n');
        out.push_str(&tab.to_string());
    }
    if out.is_empty() {
        out.push_str("(no domain mapped into yet)");
    }
    out.push_str("\n(ranges mapped now, from the iommu_map/iommu_unmap calls seen since attach; PROT: R read, W write, C cache-coherent)");
    out
}

pub const FINDING_COLUMNS: [&str; 6] = [
    "SEVERITY",
    "FINDING",
    "SUBJECT",
    "EVIDENCE",
    "WHY IT MATTERS",
    "WHAT TO DO",
];

/// The findings of `ioasid-top audit`, worst first (as given).
pub fn render_findings(findings: &[Finding], width: Option<u16>) -> String {
    if findings.is_empty() {
        return "audit: no findings".to_owned();
    }
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY);
    // Evidence runs to hundreds of characters: wrap at 120 columns when the width is unknown.
    t.set_width(width.unwrap_or(120));
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(FINDING_COLUMNS.to_vec());
    for f in findings {
        let mut subject = f.subject.clone();
        if !f.devices.is_empty() {
            subject.push_str(&format!("\ndevices {}", f.devices.join(" ")));
        }
        t.add_row(vec![
            f.severity.name().to_uppercase(),
            format!("{}\n[{}]", f.title, f.rule),
            subject,
            f.evidence.clone(),
            f.why.to_owned(),
            f.action.to_owned(),
        ]);
    }
    // Keep rule ids whole: they are what scripts and people grep for. The width counts the
    // brackets and the cell's padding.
    let id_width = findings.iter().map(|f| f.rule.len() + 4).max().unwrap_or(0);
    if let (Some(c), Ok(w)) = (t.column_mut(1), u16::try_from(id_width)) {
        c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
    }
    format!("audit: {} finding(s)\n{t}", findings.len())
}

/// Status lines above the table (also printed after `--once`).
pub fn render_status(agg: &Aggregator, s: &Summary<'_>, probes: &[ProbeReport]) -> String {
    let Lost {
        ringbuf,
        no_entry,
        pin_map_full,
    } = s.lost;
    let mut out = format!(
        "ioasid-top  {:.0}s  events {}  lost {} (ring buffer full {}, kretprobe without entry {}, pin map full {})",
        s.elapsed.as_secs_f64(),
        agg.events(),
        s.lost.total(),
        ringbuf,
        no_entry,
        pin_map_full
    );
    if let Some(pid) = s.pid_filter {
        out.push_str(&format!("  pid {pid}"));
    }
    if let Some(comm) = s.comm_filter {
        out.push_str(&format!("  comm ~ {comm:?}"));
    }
    let reg = agg.kvm_calls(KvmOp::Register);
    let unreg = agg.kvm_calls(KvmOp::Unregister);
    if reg + unreg > 0 {
        let vms = agg.kvm_rows();
        let on = vms.iter().filter(|(_, vm)| vm.noncoherent).count();
        out.push_str(&format!(
            "\nkvm non-coherent DMA: {reg} register, {unreg} unregister; {on} of {} VM(s) with wbinvd now",
            vms.len()
        ));
    }
    out.push_str("\nprobes:");
    for p in probes {
        out.push_str(&format!(" {}={}", p.function, p.attach.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{
            Event, MapFn,
            tests::{hdr, map_event},
        },
        loader::Attach,
    };
    use ioasid_ebpf_common::{KvmEvent, kind};
    use std::{mem::size_of, time::Duration};

    #[test]
    fn findings_table() {
        assert_eq!(render_findings(&[], Some(80)), "audit: no findings");
        let mut snap = crate::audit::Snapshot {
            page_size: 4096,
            ..crate::audit::Snapshot::default()
        };
        snap.procs.insert(
            9,
            crate::audit::ProcMem {
                comm: "wl".into(),
                vm_lck_pages: 64,
                vm_pin_pages: 0,
                memlock_soft: Some(4096),
                memlock_hard: None,
            },
        );
        let f = crate::audit::rule_pins_over_memlock(&snap);
        let s = render_findings(&f, None);
        assert!(s.starts_with("audit: 1 finding(s)"), "{s}");
        for col in FINDING_COLUMNS {
            assert!(s.contains(col), "{col} in {s}");
        }
        assert!(
            s.contains("WARNING") && s.contains("[pins-over-memlock]") && s.contains("pid 9 wl")
        );
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(-4096), "-4.0 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(human_bytes(i128::from(u64::MAX)), "16.0 EiB");
    }

    #[test]
    fn table_has_header_and_rows() {
        let mut agg = Aggregator::new();
        agg.observe(&Event::Map(
            MapFn::IommuMap,
            map_event(
                MapFn::IommuMap,
                321,
                321,
                0xffff_8880_0000_1000,
                0,
                2 << 20,
                0,
            ),
        ));
        let t = render_table(&agg, None, Some(100));
        for c in COLUMNS {
            assert!(t.contains(c), "missing column {c}:\n{t}");
        }
        assert!(t.contains("321"));
        assert!(t.contains("qemu-system-x86"));
        assert!(t.contains("0xffff888000001000"));
        assert!(t.contains("2.0 MiB"));

        let empty = render_table(&Aggregator::new(), None, None);
        assert!(empty.contains("no iommu_map"));
    }

    #[test]
    fn sort_orders_the_table_rows() {
        let mut agg = Aggregator::new();
        for (pid, size) in [(5, 4096), (9, 1 << 20), (7, 8192)] {
            agg.observe(&Event::Map(
                MapFn::IommuMap,
                map_event(MapFn::IommuMap, pid, pid, 0xffff_8880_0000_1000, 0, size, 0),
            ));
        }
        let order = |t: &str| -> Vec<String> {
            t.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| w.parse::<u32>().is_ok())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(order(&render_table(&agg, None, None)), ["9", "7", "5"]);
        assert_eq!(
            order(&render_table(&agg, Some(SortKey::Pid), None)),
            ["5", "7", "9"]
        );
    }

    #[test]
    fn domain_view_lists_ranges_and_says_when_truncated() {
        use crate::ranges::RangeTracker;
        let mut t = RangeTracker::new(None, 1);
        assert!(render_domain_view(&t, None).contains("no domain mapped into yet"));
        t.map(
            0xffff_8880_0000_1000,
            0x10_0000,
            4 << 16,
            0b011,
            77,
            "vfio-edu-worklo",
        );
        let v = render_domain_view(&t, Some(120));
        for c in RANGE_COLUMNS {
            assert!(v.contains(c), "missing column {c}:\n{v}");
        }
        assert!(
            v.contains(
                "domain 0xffff888000001000: 1 range(s), 256.0 KiB mapped (1 maps, 0 unmaps seen)"
            ),
            "{v}"
        );
        assert!(
            v.contains("0x100000") && v.contains("0x140000") && v.contains("RW-"),
            "{v}"
        );
        assert!(
            v.contains("vfio-edu-worklo") && !v.contains("TRUNCATED"),
            "{v}"
        );
        t.map(
            0xffff_8880_0000_1000,
            0x80_0000,
            4096,
            0b011,
            77,
            "vfio-edu-worklo",
        );
        t.unmap(0xffff_8880_0000_1000, 0x90_0000, 4096);
        let v = render_domain_view(&t, None);
        assert!(
            v.contains("TRUNCATED at 1 ranges: 1 map(s) and 4.0 KiB not tracked"),
            "{v}"
        );
        assert!(
            v.contains("4.0 KiB unmapped that was not seen mapped"),
            "{v}"
        );
    }

    #[test]
    fn pin_table_shows_events_and_start_state() {
        use crate::startstate::{IoasidFile, ProcStart};
        let mut agg = Aggregator::new();
        let mut c = crate::pins::tests::counters("vfio-edu-worklo");
        (c.pin_calls, c.pinned, c.longterm) = (1, 16, 16);
        agg.pins_mut().update(Default::default(), &[(77, c)], &[]);
        let mut start = StartState::default();
        let info = ioasid_uapi::fdinfo::IoasidFdinfo {
            account_mode: "user".into(),
            pinned_pages: 48,
            charged_pages: 0,
            ..Default::default()
        };
        start.procs.insert(
            88,
            ProcStart {
                comm: "holder".into(),
                vm_pin_pages: 48,
                vm_lck_pages: 0,
                ioasid_files: vec![IoasidFile { fd: 3, info }],
            },
        );
        let t = render_pin_table(&agg, &start, None, Some(160));
        for c in PIN_COLUMNS {
            assert!(t.contains(c), "missing column {c}:\n{t}");
        }
        assert!(t.contains("vfio-edu-worklo"), "{t}");
        assert!(t.contains("holder"), "{t}");
        assert!(t.contains("48/0 (1 files)"), "{t}");
        let empty = render_pin_table(&Aggregator::new(), &StartState::default(), None, None);
        assert!(empty.contains("no pins seen"));
    }

    #[test]
    fn kvm_table_shows_the_state_per_vm() {
        let mut agg = Aggregator::new();
        assert!(render_kvm_table(&agg, None, None).is_none());
        assert!(!render_tables(&agg, None, None).contains("NONCOHERENT"));
        let ev = |op, k, vm| {
            Event::Kvm(
                op,
                KvmEvent {
                    header: hdr(k, size_of::<KvmEvent>(), 812, 812, "qemu-system-x86"),
                    kvm: vm,
                },
            )
        };
        agg.observe(&ev(
            KvmOp::Register,
            kind::KVM_REGISTER_NONCOHERENT_DMA,
            0xffff_c900_0001_0000,
        ));
        let t = render_kvm_table(&agg, None, Some(100)).expect("a VM row");
        for c in KVM_COLUMNS {
            assert!(t.contains(c), "missing column {c}:\n{t}");
        }
        assert!(t.contains("812"));
        assert!(t.contains("0xffffc90000010000"));
        assert!(t.contains("on (wbinvd)"), "{t}");
        agg.observe(&ev(
            KvmOp::Unregister,
            kind::KVM_UNREGISTER_NONCOHERENT_DMA,
            0xffff_c900_0001_0000,
        ));
        let t = render_tables(&agg, None, None);
        assert!(!t.contains("wbinvd"), "{t}");
        assert!(t.contains("off"), "{t}");
        assert!(t.contains("no iommu_map"), "{t}");
    }

    #[test]
    fn status_mentions_lost_and_probes() {
        let s = Summary {
            is_final: false,
            elapsed: Duration::from_secs(4),
            lost: Lost {
                ringbuf: 2,
                no_entry: 1,
                pin_map_full: 4,
            },
            pid_filter: Some(9),
            comm_filter: None,
        };
        let probes = [
            ProbeReport {
                function: "iommu_map",
                attach: Attach::Fexit,
                error: None,
            },
            ProbeReport {
                function: "iommu_unmap",
                attach: Attach::Kprobe,
                error: Some("x".into()),
            },
        ];
        let st = render_status(&Aggregator::new(), &s, &probes);
        assert!(st.contains("lost 7"), "{st}");
        assert!(st.contains("pin map full 4"), "{st}");
        assert!(st.contains("iommu_map=fexit"));
        assert!(st.contains("iommu_unmap=kprobe"));
        assert!(st.contains("pid 9"));
    }
}
