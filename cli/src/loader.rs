//! Loads the eBPF object and attaches one probe per traced kernel function:
//! fexit first, kprobe (+ kretprobe) as the fallback, skipped with a report
//! when neither attaches.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe},
};
use ioasid_ebpf_common::{ElidedMaps, PinCounters, PinKindCounters};

use crate::{
    aggregate::Lost,
    pins::{PIN_FUNCTIONS, PinAggregator, PinKindStats},
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ioasid-ebpf"));

/// How a function ended up being traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    Fexit,
    Kprobe,
    None,
}

impl Attach {
    pub fn name(self) -> &'static str {
        match self {
            Attach::Fexit => "fexit",
            Attach::Kprobe => "kprobe",
            Attach::None => "none",
        }
    }
}

/// Outcome of attaching to one kernel function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub function: &'static str,
    pub attach: Attach,
    /// Why fexit was not used (when the kprobe fallback was), or why nothing
    /// could attach.
    pub error: Option<String>,
}

struct Target {
    function: &'static str,
    fexit: &'static str,
    kprobe: &'static str,
    /// None: the function returns void, the entry kprobe has everything.
    kretprobe: Option<&'static str>,
    /// Tracing is pointless without at least one of the required targets.
    required: bool,
}

/// Program names are those of ebpf/ioasid-ebpf/src/main.rs.
const TARGETS: [Target; 11] = [
    Target {
        function: "iommu_map",
        fexit: "iommu_map_fexit",
        kprobe: "iommu_map_kprobe",
        kretprobe: Some("iommu_map_kretprobe"),
        required: true,
    },
    Target {
        function: "iommu_map_nosync",
        fexit: "iommu_map_nosync_fexit",
        kprobe: "iommu_map_nosync_kprobe",
        kretprobe: Some("iommu_map_nosync_kretprobe"),
        required: true,
    },
    Target {
        function: "iommu_unmap",
        fexit: "iommu_unmap_fexit",
        kprobe: "iommu_unmap_kprobe",
        kretprobe: Some("iommu_unmap_kretprobe"),
        required: true,
    },
    // VFIO type1 unmaps through this one, not iommu_unmap.
    Target {
        function: "iommu_unmap_fast",
        fexit: "iommu_unmap_fast_fexit",
        kprobe: "iommu_unmap_fast_kprobe",
        kretprobe: Some("iommu_unmap_fast_kretprobe"),
        required: true,
    },
    Target {
        function: "kvm_arch_register_noncoherent_dma",
        fexit: "kvm_register_ncdma_fexit",
        kprobe: "kvm_register_ncdma_kprobe",
        kretprobe: None,
        required: false,
    },
    Target {
        function: "kvm_arch_unregister_noncoherent_dma",
        fexit: "kvm_unregister_ncdma_fexit",
        kprobe: "kvm_unregister_ncdma_kprobe",
        kretprobe: None,
        required: false,
    },
    // Attach and detach tie domains to devices; optional like the kvm probes.
    Target {
        function: "iommu_attach_group",
        fexit: "iommu_attach_group_fexit",
        kprobe: "iommu_attach_group_kprobe",
        kretprobe: Some("iommu_attach_group_kretprobe"),
        required: false,
    },
    Target {
        function: "iommu_detach_group",
        fexit: "iommu_detach_group_fexit",
        kprobe: "iommu_detach_group_kprobe",
        kretprobe: None,
        required: false,
    },
    Target {
        function: "iommu_attach_group_handle",
        fexit: "iommu_attach_group_handle_fexit",
        kprobe: "iommu_attach_group_handle_kprobe",
        kretprobe: Some("iommu_attach_group_handle_kretprobe"),
        required: false,
    },
    Target {
        function: "iommu_detach_group_handle",
        fexit: "iommu_detach_group_handle_fexit",
        kprobe: "iommu_detach_group_handle_kprobe",
        kretprobe: None,
        required: false,
    },
    Target {
        function: "iommu_replace_group_handle",
        fexit: "iommu_replace_group_handle_fexit",
        kprobe: "iommu_replace_group_handle_kprobe",
        kretprobe: Some("iommu_replace_group_handle_kretprobe"),
        required: false,
    },
];

/// A pinning function: a [`Target`] plus, for the pin functions, an fentry
/// program that marks the thread as inside the call (and saves the arguments)
/// for the unpins GUP makes inside it. None for the unpins and the accounting
/// functions (their fexit has all it needs).
struct PinTarget {
    target: Target,
    fentry: Option<&'static str>,
}

const fn pin_target(
    function: &'static str,
    fentry: Option<&'static str>,
    fexit: &'static str,
    kprobe: &'static str,
    kretprobe: Option<&'static str>,
) -> PinTarget {
    PinTarget {
        target: Target {
            function,
            fexit,
            kprobe,
            kretprobe,
            // Pinning probes are optional: any may be missing (not built, inlined, renamed);
            // the others still count, and the probe lines say which are missing.
            required: false,
        },
        fentry,
    }
}

/// In `crate::pins::PIN_FUNCTIONS` order; program names are those of the eBPF crate.
const PIN_TARGETS: [PinTarget; 15] = [
    pin_target(
        "pin_user_pages_fast",
        Some("pup_fast_fentry"),
        "pup_fast_fexit",
        "pup_fast_kprobe",
        Some("pup_fast_kretprobe"),
    ),
    pin_target(
        "pin_user_pages_remote",
        Some("pup_remote_fentry"),
        "pup_remote_fexit",
        "pup_remote_kprobe",
        Some("pup_remote_kretprobe"),
    ),
    pin_target(
        "pin_user_pages",
        Some("pup_fentry"),
        "pup_fexit",
        "pup_kprobe",
        Some("pup_kretprobe"),
    ),
    pin_target(
        "pin_user_pages_unlocked",
        Some("pup_unlocked_fentry"),
        "pup_unlocked_fexit",
        "pup_unlocked_kprobe",
        Some("pup_unlocked_kretprobe"),
    ),
    pin_target(
        "memfd_pin_folios",
        Some("memfd_pin_fentry"),
        "memfd_pin_fexit",
        "memfd_pin_kprobe",
        Some("memfd_pin_kretprobe"),
    ),
    pin_target(
        "folio_add_pins",
        Some("add_pins_fentry"),
        "add_pins_fexit",
        "add_pins_kprobe",
        Some("add_pins_kretprobe"),
    ),
    pin_target(
        "unpin_user_page",
        None,
        "unpin_page_fexit",
        "unpin_page_kprobe",
        None,
    ),
    pin_target(
        "unpin_folio",
        None,
        "unpin_folio_fexit",
        "unpin_folio_kprobe",
        None,
    ),
    pin_target(
        "unpin_user_pages",
        None,
        "unpin_pages_fexit",
        "unpin_pages_kprobe",
        None,
    ),
    pin_target(
        "unpin_user_pages_dirty_lock",
        None,
        "unpin_pages_dirty_fexit",
        "unpin_pages_dirty_kprobe",
        None,
    ),
    pin_target(
        "unpin_user_page_range_dirty_lock",
        None,
        "unpin_range_dirty_fexit",
        "unpin_range_dirty_kprobe",
        None,
    ),
    pin_target(
        "unpin_user_folio",
        None,
        "unpin_user_folio_fexit",
        "unpin_user_folio_kprobe",
        None,
    ),
    pin_target(
        "unpin_folios",
        None,
        "unpin_folios_fexit",
        "unpin_folios_kprobe",
        None,
    ),
    // The accounting functions mark nothing: no fentry. Their kprobe fallback saves the
    // arguments in maps of their own (one may call the other), not in the pin map.
    pin_target(
        "__account_locked_vm",
        None,
        "acct_fexit",
        "acct_kprobe",
        Some("acct_kretprobe"),
    ),
    pin_target(
        "iopt_pages_update_pinned",
        None,
        "iopt_fexit",
        "iopt_kprobe",
        Some("iopt_kretprobe"),
    ),
];

/// The reason in the probe report of a pinning function under `--no-pins`.
pub const NOT_ASKED: &str = "not asked for (--no-pins)";

/// Loaded object with its probes attached. Dropping it detaches everything.
pub struct Session {
    ebpf: Ebpf,
    pub probes: Vec<ProbeReport>,
    /// Where `struct iommu_group::id` is, or why it is not known (group numbers are then -1).
    pub group_id_offset: Result<u32, String>,
}

/// Finds `struct iommu_group::id` in the running kernel's BTF.
fn iommu_group_id_offset() -> Result<u32, String> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
    let btf = crate::btf::Btf::parse(&data).map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))?;
    match btf.int_member("iommu_group", "id")? {
        (off, 4) => Ok(off),
        (_, size) => Err(format!("iommu_group.id is {size} bytes, not an int")),
    }
}

/// `{err:#}` of an error, on one line.
fn one_line<E: std::fmt::Display + ?Sized>(err: &E) -> String {
    format!("{err:#}").replace('\n', " ")
}

impl Session {
    /// Loads the object, sets the pid filter and attaches every probe it can.
    /// With `kprobes_only`, fexit is not tried; without `pins`, the pinning functions are not
    /// traced (their probe reports say so). With `elide_wrapped_maps`, an `iommu_map` around a
    /// reported `iommu_map_nosync` is counted in the kernel instead of reported
    /// ([`Self::elided_maps`]); only when every call is reported anyway (no `--comm`).
    pub fn load(
        pid_filter: Option<u32>,
        kprobes_only: bool,
        pins: bool,
        elide_wrapped_maps: bool,
    ) -> anyhow::Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild without it"
            );
        }
        raise_memlock_limit();

        let filter: u32 = pid_filter.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .override_global("FILTER_TGID", &filter, true)
            .override_global("SELF_TGID", &std::process::id(), true)
            .override_global("ELIDE_WRAPPED_MAPS", &u32::from(elide_wrapped_maps), true)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (creating maps)")?;

        // Before any program runs: where the programs read the group number.
        let group_id_offset = iommu_group_id_offset();
        {
            let map = ebpf
                .map_mut("OFFSETS")
                .ok_or_else(|| anyhow!("eBPF object has no OFFSETS map"))?;
            let mut offsets: Array<_, u32> =
                Array::try_from(map).context("opening the OFFSETS array")?;
            let value = *group_id_offset
                .as_ref()
                .unwrap_or(&ioasid_ebpf_common::offsets::UNKNOWN);
            offsets
                .set(ioasid_ebpf_common::offsets::IOMMU_GROUP_ID, value, 0)
                .context("writing OFFSETS")?;
        }

        // Without kernel BTF there is no fexit: go straight to kprobes. The error says why
        // fexit was not used.
        let btf: Result<Btf, String> = if kprobes_only {
            Err("not tried (--kprobes-only)".to_owned())
        } else {
            Btf::from_sys_fs().map_err(|e| format!("no kernel BTF ({})", one_line(&e)))
        };
        let btf_error = btf.as_ref().err().cloned();

        let mut probes = Vec::with_capacity(TARGETS.len());
        for t in &TARGETS {
            let fexit_error = match &btf {
                Ok(btf) => match attach_fexit(&mut ebpf, t, btf) {
                    Ok(()) => {
                        probes.push(ProbeReport {
                            function: t.function,
                            attach: Attach::Fexit,
                            error: None,
                        });
                        continue;
                    }
                    Err(e) => one_line(&e),
                },
                Err(why) => why.clone(),
            };
            match attach_kprobes(&mut ebpf, t) {
                Ok(()) => probes.push(ProbeReport {
                    function: t.function,
                    attach: Attach::Kprobe,
                    error: Some(format!("fexit: {fexit_error}")),
                }),
                Err(e) => probes.push(ProbeReport {
                    function: t.function,
                    attach: Attach::None,
                    error: Some(format!("fexit: {fexit_error}; kprobe: {}", one_line(&e))),
                }),
            }
        }

        for pt in &PIN_TARGETS {
            if !pins {
                probes.push(ProbeReport {
                    function: pt.target.function,
                    attach: Attach::None,
                    error: Some(NOT_ASKED.to_owned()),
                });
                continue;
            }
            probes.push(attach_pin(
                &mut ebpf,
                pt,
                btf.as_ref().ok(),
                btf_error.as_deref(),
            ));
        }

        Ok(Session {
            ebpf,
            probes,
            group_id_offset,
        })
    }

    /// Whether at least one of iommu_map, iommu_map_nosync, iommu_unmap,
    /// iommu_unmap_fast is traced (the kvm probes are optional).
    pub fn tracing_iommu(&self) -> bool {
        self.probes
            .iter()
            .zip(TARGETS.iter())
            .any(|(p, t)| t.required && p.attach != Attach::None)
    }

    /// Takes the event ring buffer (once).
    pub fn ring_buffer(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("eBPF object has no EVENTS map (or it was taken already)"))?;
        RingBuf::try_from(map).context("opening the EVENTS ring buffer")
    }

    /// The per-CPU array map `name` of the object.
    fn per_cpu_array<V: aya::Pod>(&self, name: &str) -> anyhow::Result<PerCpuArray<&MapData, V>> {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("eBPF object has no {name} map"))?;
        PerCpuArray::try_from(map).with_context(|| format!("opening the {name} per-CPU array"))
    }

    /// Reads the per-CPU lost-event counters, summed over CPUs.
    pub fn lost(&self) -> anyhow::Result<Lost> {
        let arr = self.per_cpu_array::<u64>("LOST")?;
        let read = |slot: u32| -> anyhow::Result<u64> {
            let values = arr
                .get(&slot, 0)
                .with_context(|| format!("reading LOST[{slot}]"))?;
            Ok(values.iter().fold(0u64, |a, v| a.saturating_add(*v)))
        };
        Ok(Lost {
            ringbuf: read(ioasid_ebpf_common::lost::RINGBUF_FULL)?,
            no_entry: read(ioasid_ebpf_common::lost::NO_ENTRY)?,
            pin_map_full: read(ioasid_ebpf_common::lost::PIN_MAP_FULL)?,
        })
    }

    /// The `iommu_map` calls counted in the kernel without a record (`ELIDED_MAPS`, summed
    /// over CPUs): calls and bytes since attach.
    pub fn elided_maps(&self) -> anyhow::Result<(u64, u64)> {
        let arr = self.per_cpu_array::<ElidedMaps>("ELIDED_MAPS")?;
        let values = arr.get(&0, 0).context("reading ELIDED_MAPS[0]")?;
        Ok(values.iter().fold((0u64, 0u64), |(c, b), v| {
            (c.saturating_add(v.calls), b.saturating_add(v.bytes))
        }))
    }

    /// Reads the kernel's pinning counters into `pins`: `PIN_KINDS` summed over
    /// CPUs, and every `PINS` entry. The entries of processes gone from `proc_root`
    /// are removed from the map (bounded: `PINS_MAX_ENTRIES`) and kept in `pins`.
    pub fn read_pins(&mut self, pins: &mut PinAggregator, proc_root: &Path) -> anyhow::Result<()> {
        let mut kinds = [PinKindStats::default(); PIN_FUNCTIONS.len()];
        {
            let arr = self.per_cpu_array::<PinKindCounters>("PIN_KINDS")?;
            for (k, (name, index, _)) in kinds.iter_mut().zip(PIN_FUNCTIONS) {
                let values = arr
                    .get(&index, 0)
                    .with_context(|| format!("reading PIN_KINDS[{index}] ({name})"))?;
                *k = PinKindStats::sum(values.iter());
            }
        }
        let map = self
            .ebpf
            .map_mut("PINS")
            .ok_or_else(|| anyhow!("eBPF object has no PINS map"))?;
        let mut procs: HashMap<_, u32, PinCounters> =
            HashMap::try_from(map).context("opening the PINS hash map")?;
        let entries = procs
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context("reading the PINS hash map")?;
        let (mut live, mut removed) = (Vec::new(), Vec::new());
        for (tgid, counters) in entries {
            // A process that cannot be looked up is kept: removing a live one's entry
            // could lose the counts it adds meanwhile.
            let gone = !proc_root
                .join(tgid.to_string())
                .try_exists()
                .unwrap_or(true);
            if gone {
                // Read again now that the process is gone: the first read may miss what
                // it counted while it exited.
                let last = procs
                    .get(&tgid, 0)
                    .with_context(|| format!("reading PINS entry of exited process {tgid}"))?;
                procs
                    .remove(&tgid)
                    .with_context(|| format!("removing PINS entry of exited process {tgid}"))?;
                removed.push((tgid, last));
            } else {
                live.push((tgid, counters));
            }
        }
        pins.update(kinds, &live, &removed);
        Ok(())
    }
}

/// Attaches one pinning function: fentry + fexit, else kprobe (+ kretprobe).
/// Never fails: what did not attach is in the report.
fn attach_pin(
    ebpf: &mut Ebpf,
    pt: &PinTarget,
    btf: Option<&Btf>,
    btf_error: Option<&str>,
) -> ProbeReport {
    let t = &pt.target;
    let fexit_error = match btf {
        Some(btf) => {
            // fentry first, so that no pin call runs without its mark while the
            // fexit is attached; a missing fentry costs only that mark.
            let fentry_error = pt.fentry.and_then(|name| {
                attach_fentry(ebpf, name, t.function, btf)
                    .err()
                    .map(|e| one_line(&e))
            });
            match attach_fexit(ebpf, t, btf) {
                Ok(()) => {
                    return ProbeReport {
                        function: t.function,
                        attach: Attach::Fexit,
                        error: fentry_error.map(|e| {
                            format!("fentry: {e} (unpins inside this call are not recognised)")
                        }),
                    };
                }
                Err(e) => one_line(&e),
            }
        }
        None => btf_error.unwrap_or("no kernel BTF").to_owned(),
    };
    match attach_kprobes(ebpf, t) {
        Ok(()) => ProbeReport {
            function: t.function,
            attach: Attach::Kprobe,
            error: Some(format!("fexit: {fexit_error}")),
        },
        Err(e) => {
            eprintln!(
                "ioasid-top: warning: {}: not traced, pin counts miss its calls",
                t.function
            );
            ProbeReport {
                function: t.function,
                attach: Attach::None,
                error: Some(format!("fexit: {fexit_error}; kprobe: {}", one_line(&e))),
            }
        }
    }
}

fn attach_fentry(ebpf: &mut Ebpf, name: &str, function: &str, btf: &Btf) -> anyhow::Result<()> {
    let prog: &mut FEntry = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not fentry"))?;
    prog.load(function, btf)
        .with_context(|| format!("loading fentry program for {function}"))?;
    prog.attach()
        .with_context(|| format!("attaching fentry to {function}"))?;
    Ok(())
}

fn attach_fexit(ebpf: &mut Ebpf, t: &Target, btf: &Btf) -> anyhow::Result<()> {
    let prog: &mut FExit = ebpf
        .program_mut(t.fexit)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", t.fexit))?
        .try_into()
        .with_context(|| format!("program {} is not fexit", t.fexit))?;
    prog.load(t.function, btf)
        .with_context(|| format!("loading fexit program for {}", t.function))?;
    prog.attach()
        .with_context(|| format!("attaching fexit to {}", t.function))?;
    Ok(())
}

fn attach_kprobes(ebpf: &mut Ebpf, t: &Target) -> anyhow::Result<()> {
    let entry_link = {
        let prog: &mut KProbe = ebpf
            .program_mut(t.kprobe)
            .ok_or_else(|| anyhow!("program {} missing from the eBPF object", t.kprobe))?
            .try_into()
            .with_context(|| format!("program {} is not a kprobe", t.kprobe))?;
        prog.load()
            .with_context(|| format!("loading kprobe program for {}", t.function))?;
        prog.attach(t.function, 0)
            .with_context(|| format!("attaching kprobe to {}", t.function))?
    };
    let Some(ret_name) = t.kretprobe else {
        return Ok(());
    };
    let ret_result = (|| -> anyhow::Result<()> {
        let prog: &mut KProbe = ebpf
            .program_mut(ret_name)
            .ok_or_else(|| anyhow!("program {ret_name} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {ret_name} is not a kretprobe"))?;
        prog.load()
            .with_context(|| format!("loading kretprobe program for {}", t.function))?;
        prog.attach(t.function, 0)
            .with_context(|| format!("attaching kretprobe to {}", t.function))?;
        Ok(())
    })();
    if let Err(e) = ret_result {
        // An entry probe without its return probe would only fill the map.
        if let Some(prog) = ebpf.program_mut(t.kprobe) {
            let kp: Result<&mut KProbe, _> = prog.try_into();
            if let Ok(kp) = kp {
                let _ = kp.detach(entry_link);
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it. Failure
/// is ignored: newer kernels use memcg accounting, and on an old one the map
/// creation error that follows says what went wrong.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One probe per function of the aggregate, in the same order, and
    /// program names that follow the eBPF crate's naming.
    #[test]
    fn targets_match_aggregated_functions() {
        let functions: Vec<&str> = TARGETS.iter().map(|t| t.function).collect();
        assert_eq!(functions, crate::aggregate::FUNCTIONS);
        let unmap_fast = TARGETS
            .iter()
            .find(|t| t.function == "iommu_unmap_fast")
            .expect("iommu_unmap_fast is traced");
        assert_eq!(unmap_fast.fexit, "iommu_unmap_fast_fexit");
        assert_eq!(unmap_fast.kprobe, "iommu_unmap_fast_kprobe");
        assert_eq!(unmap_fast.kretprobe, Some("iommu_unmap_fast_kretprobe"));
        assert!(unmap_fast.required);
    }

    #[test]
    fn pin_targets_match_pin_functions() {
        let names: Vec<&str> = PIN_TARGETS.iter().map(|t| t.target.function).collect();
        let want: Vec<&str> = crate::pins::PIN_FUNCTIONS.iter().map(|f| f.0).collect();
        assert_eq!(names, want);
        for pt in &PIN_TARGETS {
            let class = crate::pins::function_of_name(pt.target.function);
            // Void unpins have no kretprobe; only pins have an fentry (the inside-pin mark).
            let void = class == Some(crate::pins::Class::Unpin);
            let pin = class == Some(crate::pins::Class::Pin);
            assert_eq!(pt.fentry.is_some(), pin, "{}", pt.target.function);
            assert_eq!(
                pt.target.kretprobe.is_none(),
                void,
                "{}",
                pt.target.function
            );
            assert!(!pt.target.required);
        }
    }
}
