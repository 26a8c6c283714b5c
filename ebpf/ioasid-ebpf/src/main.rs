//! eBPF programs of ioasid-top.
//!
//! For every traced kernel function there is an fexit program (sees the
//! arguments and the return value in one place) and a kprobe/kretprobe pair
//! used as a fallback when fentry/fexit cannot attach (no BTF for the target,
//! function in a module, kernel without trampolines, ...). The kprobe stores
//! the arguments per thread in a hash map; the kretprobe emits the record.
//!
//! Rust eBPF has no CO-RE: these programs read function arguments and return
//! values, and one kernel struct member, `iommu_group::id`, at the offset
//! userspace found in the running kernel's BTF and wrote into `OFFSETS`
//! (`cli/src/btf.rs`); no offset is compiled in.
//!
//! Program names are part of the contract with the loader in
//! `cli/src/loader.rs`.
#![no_std]
#![no_main]
// Atomic add (BPF_ATOMIC | BPF_ADD) on map memory: core has no fetch_add for the bpf target
// (no compare-and-swap), so the intrinsic is used directly. This crate is built with
// RUSTC_BOOTSTRAP=1 anyway (-Z build-std, see cli/build.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, generated},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use ioasid_ebpf_common::{
    AttachArgs, AttachEvent, COMM_LEN, ElidedMaps, EventHeader, FOLL_LONGTERM, KvmEvent, MapArgs,
    MapEvent, NosyncCall, PINS_MAX_ENTRIES, PinArgs, PinCounters, PinKindCounters, UnmapArgs,
    UnmapEvent, UnpinPair, flags, kind, lost, offsets, pin_fn,
};

/// Records for userspace. 4 MiB holds ~47k map records (88 bytes + 8 of ring
/// buffer header each); overflow is counted in LOST, never silent.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU counters of dropped records, indexed by `ioasid_ebpf_common::lost`.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

/// kprobe fallback: arguments saved at entry, keyed by pid_tgid.
#[map]
static MAP_ARGS: HashMap<u64, MapArgs> = HashMap::with_max_entries(10240, 0);
#[map]
static MAP_NOSYNC_ARGS: HashMap<u64, MapArgs> = HashMap::with_max_entries(10240, 0);
#[map]
static UNMAP_ARGS: HashMap<u64, UnmapArgs> = HashMap::with_max_entries(10240, 0);
#[map]
static UNMAP_FAST_ARGS: HashMap<u64, UnmapArgs> = HashMap::with_max_entries(10240, 0);

#[map]
static ATTACH_ARGS: HashMap<u64, AttachArgs> = HashMap::with_max_entries(1024, 0);
#[map]
static ATTACH_HANDLE_ARGS: HashMap<u64, AttachArgs> = HashMap::with_max_entries(1024, 0);
#[map]
static REPLACE_ARGS: HashMap<u64, AttachArgs> = HashMap::with_max_entries(1024, 0);

/// Byte offsets of kernel struct members, indexed by `ioasid_ebpf_common::offsets`; written by
/// the loader from the kernel's BTF before any program attaches.
#[map]
static OFFSETS: Array<u32> = Array::with_max_entries(offsets::SLOTS, 0);

/// The last successful `iommu_map_nosync` of each CPU, for the `iommu_map` around it.
#[map]
static NOSYNC_LAST: PerCpuArray<NosyncCall> = PerCpuArray::with_max_entries(1, 0);

/// Counts of the `iommu_map` calls left without a record of their own.
#[map]
static ELIDED_MAPS: PerCpuArray<ElidedMaps> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero: an `iommu_map` whose inner `iommu_map_nosync` was reported, on the same thread
/// with the same arguments, and that succeeded like it, gets no record (its counts go to
/// `ELIDED_MAPS`). A record costs the mapping task more than the rest of the tracing, and
/// this one says nothing the inner record did not. Set by the loader; left 0 when userspace
/// filters what the kernel cannot (`--comm`), since the counts here are not filtered.
#[unsafe(no_mangle)]
static ELIDE_WRAPPED_MAPS: u32 = 0;

/// Only report this thread group (process) when non-zero. Set by the loader.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;

/// ioasid-top's own process, never reported: its writes pin pages (9p,
/// FUSE, O_DIRECT), and reporting those would make more writes, without end.
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;

/// Adds `n` to the counter at `p` atomically: correct with several CPUs on one
/// shared value, and on a per-CPU value when a program is preempted by another
/// on the same CPU (tracing programs run with migration, not preemption, disabled).
///
/// # Safety
/// `p` must point to a `u64` in map memory.
#[inline(always)]
unsafe fn add(p: *mut u64, n: u64) {
    // SAFETY: per the caller; the result is unused, so this is BPF's plain atomic add.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // SAFETY: p points to this CPU's slot of the LOST array.
        unsafe { add(p, 1) };
    }
}

/// Whether the current task passes the `--pid` filter.
#[inline(always)]
fn wanted(pid_tgid: u64) -> bool {
    // SAFETY: plain read of a global the loader may have rewritten; volatile
    // so the compiler does not fold the initial value.
    let filter = unsafe { core::ptr::read_volatile(&raw const FILTER_TGID) };
    // SAFETY: as above.
    let own = unsafe { core::ptr::read_volatile(&raw const SELF_TGID) };
    let tgid = (pid_tgid >> 32) as u32;
    tgid != own && (filter == 0 || filter == tgid)
}

/// Fills the common header in place (in ring buffer memory: no stack copy,
/// no memcpy/memset calls in the object).
///
/// # Safety
/// `h` must point to writable memory for an `EventHeader`.
#[inline(always)]
unsafe fn fill_header(h: *mut EventHeader, kind: u16, size: usize, flags: u32, pid_tgid: u64) {
    unsafe {
        (*h).kind = kind;
        (*h).size = size as u16;
        (*h).flags = flags;
        (*h).ts_ns = bpf_ktime_get_ns();
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        // On failure the kernel zeroes the buffer, so comm is always initialised.
        generated::bpf_get_current_comm((&raw mut (*h).comm).cast(), COMM_LEN as u32);
    }
}

/// Returns whether the record was submitted (false: the ring was full, counted in `LOST`).
#[inline(always)]
fn emit_map(kind: u16, flags: u32, pid_tgid: u64, args: &MapArgs, ret: i32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<MapEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return false;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: p points to a reserved, writable MapEvent; every field is written.
    unsafe {
        fill_header(
            &raw mut (*p).header,
            kind,
            size_of::<MapEvent>(),
            flags,
            pid_tgid,
        );
        (*p).domain = args.domain;
        (*p).iova = args.iova;
        (*p).paddr = args.paddr;
        (*p).size = args.size;
        (*p).prot = args.prot;
        (*p).gfp = args.gfp;
        (*p).ret = ret;
        (*p)._pad = 0;
    }
    entry.submit(0);
    true
}

#[inline(always)]
fn emit_unmap(kind: u16, flags: u32, pid_tgid: u64, args: &UnmapArgs, unmapped: u64) {
    let Some(mut entry) = EVENTS.reserve::<UnmapEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: as in emit_map.
    unsafe {
        fill_header(
            &raw mut (*p).header,
            kind,
            size_of::<UnmapEvent>(),
            flags,
            pid_tgid,
        );
        (*p).domain = args.domain;
        (*p).iova = args.iova;
        (*p).size = args.size;
        (*p).unmapped = unmapped;
    }
    entry.submit(0);
}

#[inline(always)]
fn emit_kvm(kind: u16, flags: u32, pid_tgid: u64, kvm: u64) {
    let Some(mut entry) = EVENTS.reserve::<KvmEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: as in emit_map.
    unsafe {
        fill_header(
            &raw mut (*p).header,
            kind,
            size_of::<KvmEvent>(),
            flags,
            pid_tgid,
        );
        (*p).kvm = kvm;
    }
    entry.submit(0);
}

// ---------------------------------------------------------------- fexit ----

// int iommu_map{,_nosync}(struct iommu_domain *domain, unsigned long iova,
//                         phys_addr_t paddr, size_t size, int prot, gfp_t gfp)
#[inline(always)]
fn map_fexit(ctx: &FExitContext, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let args = MapArgs {
        domain: ctx.arg::<u64>(0),
        iova: ctx.arg::<u64>(1),
        paddr: ctx.arg::<u64>(2),
        size: ctx.arg::<u64>(3),
        prot: ctx.arg::<u64>(4) as i32,
        gfp: ctx.arg::<u64>(5) as u32,
    };
    // For fexit, the slot after the last argument holds the return value.
    let ret = ctx.arg::<u64>(6) as i32;
    // SAFETY: plain read of a global the loader may have rewritten (see `wanted`).
    let elide = unsafe { core::ptr::read_volatile(&raw const ELIDE_WRAPPED_MAPS) } != 0;
    if elide && kind == kind::IOMMU_MAP && elided_wrapper(pid_tgid, &args, ret) {
        return;
    }
    let reported = emit_map(kind, 0, pid_tgid, &args, ret);
    if elide && kind == kind::IOMMU_MAP_NOSYNC {
        remember_nosync(pid_tgid, &args, ret == 0 && reported);
    }
}

/// Remembers in `NOSYNC_LAST` an `iommu_map_nosync` that succeeded and whose record was
/// submitted (`wrappable`), or forgets the last one: only a wrapper around a mapping that
/// userspace has can go without a record.
#[inline(always)]
fn remember_nosync(pid_tgid: u64, args: &MapArgs, wrappable: bool) {
    let Some(last) = NOSYNC_LAST.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `last` points to this CPU's slot of NOSYNC_LAST; a task that preempts this
    // program can only write the same slot, which at worst makes a wrapper not match.
    unsafe {
        (*last).pid_tgid = if wrappable { pid_tgid } else { 0 };
        (*last).domain = args.domain;
        (*last).iova = args.iova;
        (*last).paddr = args.paddr;
        (*last).size = args.size;
    }
}

/// For a successful `iommu_map` that wraps the call remembered in `NOSYNC_LAST` (same thread
/// and arguments): counts it in `ELIDED_MAPS`, forgets the call and returns true, and the
/// `iommu_map` gets no record. The thread may have moved to another CPU between the two, or
/// another task may have used the slot meanwhile: then nothing matches and the `iommu_map` is
/// reported as before, its line marked `wraps_nosync` by userspace.
#[inline(always)]
fn elided_wrapper(pid_tgid: u64, args: &MapArgs, ret: i32) -> bool {
    let (Some(last), Some(elided)) = (NOSYNC_LAST.get_ptr_mut(0), ELIDED_MAPS.get_ptr_mut(0))
    else {
        return false;
    };
    // SAFETY: as in `remember_nosync`; `elided` points to this CPU's ELIDED_MAPS slot.
    unsafe {
        let wraps = ret == 0
            && (*last).pid_tgid == pid_tgid
            && (*last).domain == args.domain
            && (*last).iova == args.iova
            && (*last).paddr == args.paddr
            && (*last).size == args.size;
        if !wraps {
            return false;
        }
        (*last).pid_tgid = 0;
        add(&raw mut (*elided).calls, 1);
        add(&raw mut (*elided).bytes, args.size);
    }
    true
}

#[fexit(function = "iommu_map")]
pub fn iommu_map_fexit(ctx: FExitContext) -> i32 {
    map_fexit(&ctx, kind::IOMMU_MAP);
    0
}

#[fexit(function = "iommu_map_nosync")]
pub fn iommu_map_nosync_fexit(ctx: FExitContext) -> i32 {
    map_fexit(&ctx, kind::IOMMU_MAP_NOSYNC);
    0
}

// size_t iommu_unmap(struct iommu_domain *domain, unsigned long iova, size_t size)
// size_t iommu_unmap_fast(struct iommu_domain *domain, unsigned long iova,
//                         size_t size, struct iommu_iotlb_gather *iotlb_gather)
// `nargs`: number of arguments; the return value is in the slot after them.
#[inline(always)]
fn unmap_fexit(ctx: &FExitContext, kind: u16, nargs: usize) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let args = UnmapArgs {
        domain: ctx.arg::<u64>(0),
        iova: ctx.arg::<u64>(1),
        size: ctx.arg::<u64>(2),
    };
    let unmapped = ctx.arg::<u64>(nargs);
    emit_unmap(kind, 0, pid_tgid, &args, unmapped);
}

#[fexit(function = "iommu_unmap")]
pub fn iommu_unmap_fexit(ctx: FExitContext) -> i32 {
    unmap_fexit(&ctx, kind::IOMMU_UNMAP, 3);
    0
}

#[fexit(function = "iommu_unmap_fast")]
pub fn iommu_unmap_fast_fexit(ctx: FExitContext) -> i32 {
    unmap_fexit(&ctx, kind::IOMMU_UNMAP_FAST, 4);
    0
}

// void kvm_arch_{,un}register_noncoherent_dma(struct kvm *kvm)
#[fexit(function = "kvm_arch_register_noncoherent_dma")]
pub fn kvm_register_ncdma_fexit(ctx: FExitContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        emit_kvm(
            kind::KVM_REGISTER_NONCOHERENT_DMA,
            0,
            pid_tgid,
            ctx.arg::<u64>(0),
        );
    }
    0
}

#[fexit(function = "kvm_arch_unregister_noncoherent_dma")]
pub fn kvm_unregister_ncdma_fexit(ctx: FExitContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        emit_kvm(
            kind::KVM_UNREGISTER_NONCOHERENT_DMA,
            0,
            pid_tgid,
            ctx.arg::<u64>(0),
        );
    }
    0
}

// -------------------------------------------------------- attach/detach ----

/// `group->id`, or -1 when its offset is unknown or the read fails.
#[inline(always)]
fn group_id(group: u64) -> i32 {
    let off = match OFFSETS.get(offsets::IOMMU_GROUP_ID) {
        Some(off) if *off != offsets::UNKNOWN && group != 0 => *off,
        _ => return -1,
    };
    // SAFETY: the helper reads kernel memory checked: a bad address is an error, not a fault.
    unsafe { bpf_probe_read_kernel((group + u64::from(off)) as *const i32) }.unwrap_or(-1)
}

#[inline(always)]
fn emit_attach(kind: u16, flags: u32, pid_tgid: u64, args: &AttachArgs, ret: i32) {
    let id = group_id(args.group);
    let Some(mut entry) = EVENTS.reserve::<AttachEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: as in emit_map.
    unsafe {
        fill_header(
            &raw mut (*p).header,
            kind,
            size_of::<AttachEvent>(),
            flags,
            pid_tgid,
        );
        (*p).domain = args.domain;
        (*p).group = args.group;
        (*p).group_id = id;
        (*p).ret = ret;
    }
    entry.submit(0);
}

/// fexit of an attach or detach: the domain and the group are arguments `domain_arg` and
/// `group_arg`; `ret_slot` is the slot of the return value (None: the function is void).
#[inline(always)]
fn attach_fexit(
    ctx: &FExitContext,
    kind: u16,
    domain_arg: usize,
    group_arg: usize,
    ret_slot: Option<usize>,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let args = AttachArgs {
        domain: ctx.arg::<u64>(domain_arg),
        group: ctx.arg::<u64>(group_arg),
    };
    let ret = ret_slot.map_or(0, |slot| ctx.arg::<u64>(slot) as i32);
    emit_attach(kind, 0, pid_tgid, &args, ret);
}

// int iommu_attach_group(struct iommu_domain *domain, struct iommu_group *group)
#[fexit(function = "iommu_attach_group")]
pub fn iommu_attach_group_fexit(ctx: FExitContext) -> i32 {
    attach_fexit(&ctx, kind::IOMMU_ATTACH_GROUP, 0, 1, Some(2));
    0
}

// void iommu_detach_group(struct iommu_domain *domain, struct iommu_group *group)
#[fexit(function = "iommu_detach_group")]
pub fn iommu_detach_group_fexit(ctx: FExitContext) -> i32 {
    attach_fexit(&ctx, kind::IOMMU_DETACH_GROUP, 0, 1, None);
    0
}

// int iommu_attach_group_handle(struct iommu_domain *domain, struct iommu_group *group,
//                               struct iommu_attach_handle *handle)
#[fexit(function = "iommu_attach_group_handle")]
pub fn iommu_attach_group_handle_fexit(ctx: FExitContext) -> i32 {
    attach_fexit(&ctx, kind::IOMMU_ATTACH_GROUP_HANDLE, 0, 1, Some(3));
    0
}

// void iommu_detach_group_handle(struct iommu_domain *domain, struct iommu_group *group)
#[fexit(function = "iommu_detach_group_handle")]
pub fn iommu_detach_group_handle_fexit(ctx: FExitContext) -> i32 {
    attach_fexit(&ctx, kind::IOMMU_DETACH_GROUP_HANDLE, 0, 1, None);
    0
}

// int iommu_replace_group_handle(struct iommu_group *group, struct iommu_domain *new_domain,
//                                struct iommu_attach_handle *handle)
#[fexit(function = "iommu_replace_group_handle")]
pub fn iommu_replace_group_handle_fexit(ctx: FExitContext) -> i32 {
    attach_fexit(&ctx, kind::IOMMU_REPLACE_GROUP_HANDLE, 1, 0, Some(3));
    0
}

// ------------------------------------------------- kprobe/kretprobe fallback ----

#[inline(always)]
fn map_kprobe(ctx: &ProbeContext, args_map: &HashMap<u64, MapArgs>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let args = MapArgs {
        domain: ctx.arg::<u64>(0).unwrap_or(0),
        iova: ctx.arg::<u64>(1).unwrap_or(0),
        paddr: ctx.arg::<u64>(2).unwrap_or(0),
        size: ctx.arg::<u64>(3).unwrap_or(0),
        prot: ctx.arg::<u64>(4).unwrap_or(0) as i32,
        gfp: ctx.arg::<u64>(5).unwrap_or(0) as u32,
    };
    // A failed insert (map full) shows up as lost::NO_ENTRY at return.
    let _ = args_map.insert(pid_tgid, args, 0);
}

/// The arguments the entry kprobe saved for this thread, taken out of `args_map`. None, counted
/// as a lost event, when there are none (the kprobe's insert failed or it missed the entry).
#[inline(always)]
fn take_saved<T: Copy>(args_map: &HashMap<u64, T>, pid_tgid: u64) -> Option<T> {
    let Some(p) = args_map.get_ptr(pid_tgid) else {
        count_lost(lost::NO_ENTRY);
        return None;
    };
    // SAFETY: p points to a value of this map; only this thread uses its key.
    let args = unsafe { *p };
    let _ = args_map.remove(pid_tgid);
    Some(args)
}

#[inline(always)]
fn map_kretprobe(ctx: &RetProbeContext, args_map: &HashMap<u64, MapArgs>, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let Some(args) = take_saved(args_map, pid_tgid) else {
        return;
    };
    let ret = ctx.ret::<u64>() as i32;
    emit_map(kind, flags::VIA_KPROBE, pid_tgid, &args, ret);
}

#[kprobe]
pub fn iommu_map_kprobe(ctx: ProbeContext) -> u32 {
    map_kprobe(&ctx, &MAP_ARGS);
    0
}

#[kretprobe]
pub fn iommu_map_kretprobe(ctx: RetProbeContext) -> u32 {
    map_kretprobe(&ctx, &MAP_ARGS, kind::IOMMU_MAP);
    0
}

#[kprobe]
pub fn iommu_map_nosync_kprobe(ctx: ProbeContext) -> u32 {
    map_kprobe(&ctx, &MAP_NOSYNC_ARGS);
    0
}

#[kretprobe]
pub fn iommu_map_nosync_kretprobe(ctx: RetProbeContext) -> u32 {
    map_kretprobe(&ctx, &MAP_NOSYNC_ARGS, kind::IOMMU_MAP_NOSYNC);
    0
}

#[inline(always)]
fn unmap_kprobe(ctx: &ProbeContext, args_map: &HashMap<u64, UnmapArgs>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let args = UnmapArgs {
        domain: ctx.arg::<u64>(0).unwrap_or(0),
        iova: ctx.arg::<u64>(1).unwrap_or(0),
        size: ctx.arg::<u64>(2).unwrap_or(0),
    };
    // A failed insert (map full) shows up as lost::NO_ENTRY at return.
    let _ = args_map.insert(pid_tgid, args, 0);
}

#[inline(always)]
fn unmap_kretprobe(ctx: &RetProbeContext, args_map: &HashMap<u64, UnmapArgs>, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let Some(args) = take_saved(args_map, pid_tgid) else {
        return;
    };
    emit_unmap(kind, flags::VIA_KPROBE, pid_tgid, &args, ctx.ret::<u64>());
}

#[kprobe]
pub fn iommu_unmap_kprobe(ctx: ProbeContext) -> u32 {
    unmap_kprobe(&ctx, &UNMAP_ARGS);
    0
}

#[kretprobe]
pub fn iommu_unmap_kretprobe(ctx: RetProbeContext) -> u32 {
    unmap_kretprobe(&ctx, &UNMAP_ARGS, kind::IOMMU_UNMAP);
    0
}

#[kprobe]
pub fn iommu_unmap_fast_kprobe(ctx: ProbeContext) -> u32 {
    unmap_kprobe(&ctx, &UNMAP_FAST_ARGS);
    0
}

#[kretprobe]
pub fn iommu_unmap_fast_kretprobe(ctx: RetProbeContext) -> u32 {
    unmap_kretprobe(&ctx, &UNMAP_FAST_ARGS, kind::IOMMU_UNMAP_FAST);
    0
}

// The kvm functions return void: the entry kprobe has everything.
#[kprobe]
pub fn kvm_register_ncdma_kprobe(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        emit_kvm(
            kind::KVM_REGISTER_NONCOHERENT_DMA,
            flags::VIA_KPROBE,
            pid_tgid,
            ctx.arg::<u64>(0).unwrap_or(0),
        );
    }
    0
}

#[kprobe]
pub fn kvm_unregister_ncdma_kprobe(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        emit_kvm(
            kind::KVM_UNREGISTER_NONCOHERENT_DMA,
            flags::VIA_KPROBE,
            pid_tgid,
            ctx.arg::<u64>(0).unwrap_or(0),
        );
    }
    0
}

#[inline(always)]
fn attach_args(ctx: &ProbeContext, domain_arg: usize, group_arg: usize) -> AttachArgs {
    AttachArgs {
        domain: ctx.arg::<u64>(domain_arg).unwrap_or(0),
        group: ctx.arg::<u64>(group_arg).unwrap_or(0),
    }
}

/// Entry of an attach that returns a value: saves the arguments for the kretprobe.
#[inline(always)]
fn attach_kprobe(ctx: &ProbeContext, args_map: &HashMap<u64, AttachArgs>, d: usize, g: usize) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        let _ = args_map.insert(pid_tgid, attach_args(ctx, d, g), 0);
    }
}

#[inline(always)]
fn attach_kretprobe(ctx: &RetProbeContext, args_map: &HashMap<u64, AttachArgs>, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    if let Some(args) = take_saved(args_map, pid_tgid) {
        emit_attach(kind, flags::VIA_KPROBE, pid_tgid, &args, ctx.ret::<u64>() as i32);
    }
}

/// A void detach: the entry kprobe has everything.
#[inline(always)]
fn detach_kprobe(ctx: &ProbeContext, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        emit_attach(kind, flags::VIA_KPROBE, pid_tgid, &attach_args(ctx, 0, 1), 0);
    }
}

#[kprobe]
pub fn iommu_attach_group_kprobe(ctx: ProbeContext) -> u32 {
    attach_kprobe(&ctx, &ATTACH_ARGS, 0, 1);
    0
}

#[kretprobe]
pub fn iommu_attach_group_kretprobe(ctx: RetProbeContext) -> u32 {
    attach_kretprobe(&ctx, &ATTACH_ARGS, kind::IOMMU_ATTACH_GROUP);
    0
}

#[kprobe]
pub fn iommu_detach_group_kprobe(ctx: ProbeContext) -> u32 {
    detach_kprobe(&ctx, kind::IOMMU_DETACH_GROUP);
    0
}

#[kprobe]
pub fn iommu_attach_group_handle_kprobe(ctx: ProbeContext) -> u32 {
    attach_kprobe(&ctx, &ATTACH_HANDLE_ARGS, 0, 1);
    0
}

#[kretprobe]
pub fn iommu_attach_group_handle_kretprobe(ctx: RetProbeContext) -> u32 {
    attach_kretprobe(&ctx, &ATTACH_HANDLE_ARGS, kind::IOMMU_ATTACH_GROUP_HANDLE);
    0
}

#[kprobe]
pub fn iommu_detach_group_handle_kprobe(ctx: ProbeContext) -> u32 {
    detach_kprobe(&ctx, kind::IOMMU_DETACH_GROUP_HANDLE);
    0
}

#[kprobe]
pub fn iommu_replace_group_handle_kprobe(ctx: ProbeContext) -> u32 {
    attach_kprobe(&ctx, &REPLACE_ARGS, 1, 0);
    0
}

#[kretprobe]
pub fn iommu_replace_group_handle_kretprobe(ctx: RetProbeContext) -> u32 {
    attach_kretprobe(&ctx, &REPLACE_ARGS, kind::IOMMU_REPLACE_GROUP_HANDLE);
    0
}

// ------------------------------------------------------ pinning ----
//
// Pinning calls are counted here, not sent: one ring buffer record per pin and
// unpin made ioasid-top lose events at 4 KiB map rates (issue 5). Per process
// (tgid) PINS holds `PinCounters`, per function the per-CPU PIN_KINDS array holds
// `PinKindCounters`; userspace reads both at each report.
//
// Pin functions: fentry stores the arguments per thread in PIN_ARGS (which
// also marks the thread as inside a pin call), fexit counts the call with the
// return value and clears the mark. The kprobe/kretprobe fallback does the
// same with the entry probe's saved arguments (none: lost::NO_ENTRY). Pin
// functions do not call each other, so one slot per thread is enough; GUP may
// unpin inside them (pages it migrates before a long-term pin), and those
// unpins count as `unpinned_inside_pin`, not `unpinned`.
//
// Unpin functions return void: one program (fexit, or kprobe fallback) counts.
// unpin_user_pages_dirty_lock(make_dirty = false) calls unpin_user_pages()
// with the same arguments: UNPIN_PAIR makes the pair count once.
//
// Accounting functions: counted at return like pins; only the kprobe fallback
// needs their arguments saved, in maps of their own, since
// iopt_pages_update_pinned() may call __account_locked_vm().

#[map]
static PIN_ARGS: HashMap<u64, PinArgs> = HashMap::with_max_entries(10240, 0);
#[map]
static ACCT_ARGS: HashMap<u64, PinArgs> = HashMap::with_max_entries(10240, 0);
#[map]
static IOPT_ARGS: HashMap<u64, PinArgs> = HashMap::with_max_entries(10240, 0);

/// Per-process counters, key tgid. Bounded: userspace removes exited processes.
#[map]
static PINS: HashMap<u32, PinCounters> = HashMap::with_max_entries(PINS_MAX_ENTRIES, 0);

/// Per-function counters, indexed by `pin_fn`.
#[map]
static PIN_KINDS: PerCpuArray<PinKindCounters> = PerCpuArray::with_max_entries(pin_fn::COUNT, 0);

/// Per thread: which call of an unpin_user_pages_dirty_lock → unpin_user_pages
/// pair was counted. LRU: entries of threads that never make the other call
/// (direct unpin_user_pages) are evicted, never fill the map.
#[map]
static UNPIN_PAIR: LruHashMap<u64, UnpinPair> = LruHashMap::with_max_entries(10240, 0);

/// What a new PINS entry starts from (in .rodata: no stack copy).
static ZERO_COUNTERS: PinCounters = PinCounters {
    pin_calls: 0,
    failed_pins: 0,
    pinned: 0,
    longterm: 0,
    unpinned: 0,
    unpinned_inside_pin: 0,
    locked_vm_charged: 0,
    locked_vm_uncharged: 0,
    iommufd_added: 0,
    iommufd_removed: 0,
    comm: [0; COMM_LEN],
};

/// What a function does to the counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Takes `ret` pins (when >= 0); `folio_add_pins` takes `count` when `ret` is 0.
    Pin,
    /// Drops `count` pins.
    Unpin,
    /// Charges (flags = inc) or uncharges `count` pages when `ret` is 0.
    Account,
}

/// Where a function keeps what is counted: argument positions (`NONE`: not an
/// argument, read as 0) and how wide some of them are.
#[derive(Clone, Copy)]
struct Spec {
    /// Index in PIN_KINDS (`pin_fn`).
    func: u32,
    class: Class,
    obj: usize,
    start: usize,
    count: usize,
    /// `count` is an `int` (upper half of its register undefined).
    count_int: bool,
    flags: usize,
    /// `flags` is a `bool` (only the low byte is defined).
    flags_bool: bool,
    /// Number of arguments: for fexit the return value is in the next slot.
    nargs: usize,
    /// Return type is `int`; otherwise `long` (or void: 0).
    ret_int: bool,
    /// A void function that drops exactly one pin (no count argument).
    one: bool,
}

const NONE: usize = usize::MAX;

const fn spec(
    func: u32,
    class: Class,
    obj: usize,
    start: usize,
    count: usize,
    flags: usize,
    nargs: usize,
) -> Spec {
    Spec {
        func,
        class,
        obj,
        start,
        count,
        count_int: false,
        flags,
        flags_bool: false,
        nargs,
        ret_int: false,
        one: false,
    }
}

// int pin_user_pages_fast(unsigned long start, int nr_pages, unsigned int gup_flags, struct page **pages)
const PIN_FAST: Spec = Spec {
    count_int: true,
    ret_int: true,
    ..spec(pin_fn::PIN_USER_PAGES_FAST, Class::Pin, NONE, 0, 1, 2, 4)
};
// long pin_user_pages_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
//                            unsigned int gup_flags, struct page **pages, int *locked)
const PIN_REMOTE: Spec = spec(pin_fn::PIN_USER_PAGES_REMOTE, Class::Pin, 0, 1, 2, 3, 6);
// long pin_user_pages(unsigned long start, unsigned long nr_pages, unsigned int gup_flags, struct page **pages)
const PIN: Spec = spec(pin_fn::PIN_USER_PAGES, Class::Pin, NONE, 0, 1, 2, 4);
// long pin_user_pages_unlocked(unsigned long start, unsigned long nr_pages, struct page **pages, unsigned int gup_flags)
const PIN_UNLOCKED: Spec = spec(
    pin_fn::PIN_USER_PAGES_UNLOCKED,
    Class::Pin,
    NONE,
    0,
    1,
    3,
    4,
);
// long memfd_pin_folios(struct file *memfd, loff_t start, loff_t end, struct folio **folios,
//                       unsigned int max_folios, pgoff_t *offset)
const MEMFD_PIN: Spec = spec(pin_fn::MEMFD_PIN_FOLIOS, Class::Pin, 0, 1, 4, NONE, 6);
// int folio_add_pins(struct folio *folio, unsigned int pins)
const FOLIO_ADD_PINS: Spec = Spec {
    ret_int: true,
    ..spec(pin_fn::FOLIO_ADD_PINS, Class::Pin, 0, NONE, 1, NONE, 2)
};
// void unpin_user_page(struct page *page), void unpin_folio(struct folio *folio)
const fn unpin_one(func: u32) -> Spec {
    Spec {
        one: true,
        ..spec(func, Class::Unpin, 0, NONE, NONE, NONE, 1)
    }
}
// void unpin_user_pages(struct page **pages, unsigned long npages),
// void unpin_user_folio(struct folio *folio, unsigned long npages),
// void unpin_folios(struct folio **folios, unsigned long nfolios)
const fn unpin_n(func: u32) -> Spec {
    spec(func, Class::Unpin, 0, NONE, 1, NONE, 2)
}
// void unpin_user_pages_dirty_lock(struct page **pages, unsigned long npages, bool make_dirty),
// void unpin_user_page_range_dirty_lock(struct page *page, unsigned long npages, bool make_dirty)
const fn unpin_dirty(func: u32) -> Spec {
    Spec {
        flags_bool: true,
        ..spec(func, Class::Unpin, 0, NONE, 1, 2, 3)
    }
}
// int __account_locked_vm(struct mm_struct *mm, unsigned long pages, bool inc,
//                         const struct task_struct *task, bool bypass_rlim)
const ACCOUNT: Spec = Spec {
    flags_bool: true,
    ret_int: true,
    ..spec(pin_fn::ACCOUNT_LOCKED_VM, Class::Account, 0, NONE, 1, 2, 5)
};
// int iopt_pages_update_pinned(struct iopt_pages *pages, unsigned long npages, bool inc,
//                              struct pfn_reader_user *user)
const IOPT_UPDATE: Spec = Spec {
    flags_bool: true,
    ret_int: true,
    ..spec(
        pin_fn::IOPT_PAGES_UPDATE_PINNED,
        Class::Account,
        0,
        NONE,
        1,
        2,
        4,
    )
};

/// Builds the arguments of a record from a reader of argument `n`.
#[inline(always)]
fn pin_args(s: Spec, arg: impl Fn(usize) -> u64) -> PinArgs {
    let get = |n: usize| if n == NONE { 0 } else { arg(n) };
    let mut count = get(s.count);
    if s.count_int {
        count = count as u32 as u64;
    }
    if s.one {
        count = 1;
    }
    let mut fl = get(s.flags) as u32;
    if s.flags_bool {
        fl &= 0xff;
    }
    PinArgs {
        obj: get(s.obj),
        start: get(s.start),
        count,
        flags: fl,
        _pad: 0,
    }
}

#[inline(always)]
fn ret_value(s: Spec, raw: u64) -> i64 {
    if s.ret_int {
        raw as u32 as i32 as i64
    } else {
        raw as i64
    }
}

/// This process's PINS entry, created on its first call with the task's name (taken once:
/// a helper call on every pin and unpin is a cost the mapping process pays). None (counted
/// in lost::PIN_MAP_FULL) when the map is full.
#[inline(always)]
fn proc_counters(tgid: u32) -> Option<*mut PinCounters> {
    if let Some(p) = PINS.get_ptr_mut(tgid) {
        return Some(p);
    }
    // Another thread of the process may create it at the same time: NOEXIST
    // keeps the first one, and the lookup below finds it either way.
    let _ = PINS.insert(tgid, &ZERO_COUNTERS, BPF_NOEXIST as u64);
    let Some(p) = PINS.get_ptr_mut(tgid) else {
        count_lost(lost::PIN_MAP_FULL);
        return None;
    };
    // SAFETY: p points to this process's PINS value; comm is plain bytes (threads that
    // create the entry at once may leave a mix of their names).
    unsafe {
        generated::bpf_get_current_comm((&raw mut (*p).comm).cast(), COMM_LEN as u32);
    }
    Some(p)
}

/// Whether this unpin is the second call of an unpin_user_pages_dirty_lock(make_dirty
/// = false) → unpin_user_pages pair (same thread, array and count), whose first call
/// was counted; if not, and it may be one of a pair, records it as counted.
#[inline(always)]
fn second_of_pair(pid_tgid: u64, func: u32, args: &PinArgs) -> bool {
    let other = match func {
        pin_fn::UNPIN_USER_PAGES => pin_fn::UNPIN_USER_PAGES_DIRTY_LOCK,
        pin_fn::UNPIN_USER_PAGES_DIRTY_LOCK if args.flags == 0 => pin_fn::UNPIN_USER_PAGES,
        _ => return false,
    };
    if let Some(p) = UNPIN_PAIR.get_ptr(pid_tgid) {
        // SAFETY: p points to a value of this map; only this thread uses its key.
        let last = unsafe { *p };
        if last.counted == other && last.obj == args.obj && last.count == args.count {
            let _ = UNPIN_PAIR.remove(pid_tgid);
            return true;
        }
    }
    let pair = UnpinPair {
        obj: args.obj,
        count: args.count,
        counted: func,
        _pad: 0,
    };
    // Failure (LRU maps evict rather than fail) would at worst count a pair twice.
    let _ = UNPIN_PAIR.insert(pid_tgid, pair, 0);
    false
}

/// Counts one call of the pinning function `s` that returned `ret` (0 for void
/// functions), per function and for the calling process.
#[inline(always)]
fn count_call(s: Spec, pid_tgid: u64, args: &PinArgs, ret: i64) {
    // Pins taken or dropped, or pages (un)charged, by this call.
    let mut pages: u64 = 0;
    let mut failed = false;
    let mut inside_pin = false;
    let mut second = false;
    match s.class {
        Class::Pin => {
            let taken = if s.func == pin_fn::FOLIO_ADD_PINS {
                if ret == 0 { Some(args.count) } else { None }
            } else if ret >= 0 {
                Some(ret as u64)
            } else {
                None
            };
            match taken {
                Some(n) => pages = n,
                None => failed = true,
            }
        }
        Class::Unpin => {
            pages = args.count;
            // SAFETY: a plain lookup; the value is not read.
            inside_pin = unsafe { PIN_ARGS.get(pid_tgid) }.is_some();
            second = !inside_pin && second_of_pair(pid_tgid, s.func, args);
        }
        Class::Account => {
            if ret == 0 {
                pages = args.count;
            } else {
                failed = true;
            }
        }
    }

    if let Some(k) = PIN_KINDS.get_ptr_mut(s.func) {
        // SAFETY: k points to this CPU's slot of PIN_KINDS.
        unsafe {
            add(&raw mut (*k).calls, 1);
            if failed {
                add(&raw mut (*k).failed, 1);
            }
            if pages != 0 {
                add(&raw mut (*k).pages, pages);
            }
        }
    }

    let Some(p) = proc_counters((pid_tgid >> 32) as u32) else {
        return;
    };
    // SAFETY: p points to this process's PINS value; every counter is updated atomically.
    unsafe {
        let counter = match s.class {
            Class::Pin => {
                add(&raw mut (*p).pin_calls, 1);
                if failed {
                    add(&raw mut (*p).failed_pins, 1);
                    return;
                }
                let longterm = s.func == pin_fn::MEMFD_PIN_FOLIOS
                    || s.func == pin_fn::FOLIO_ADD_PINS
                    || args.flags & FOLL_LONGTERM != 0;
                if longterm && pages != 0 {
                    add(&raw mut (*p).longterm, pages);
                }
                &raw mut (*p).pinned
            }
            Class::Unpin if inside_pin => &raw mut (*p).unpinned_inside_pin,
            Class::Unpin if second => return,
            Class::Unpin => &raw mut (*p).unpinned,
            Class::Account if failed => return,
            Class::Account => {
                let inc = args.flags != 0;
                match (s.func == pin_fn::ACCOUNT_LOCKED_VM, inc) {
                    (true, true) => &raw mut (*p).locked_vm_charged,
                    (true, false) => &raw mut (*p).locked_vm_uncharged,
                    (false, true) => &raw mut (*p).iommufd_added,
                    (false, false) => &raw mut (*p).iommufd_removed,
                }
            }
        };
        if pages != 0 {
            add(counter, pages);
        }
    }
}

/// Entry of a function with a return value (fentry or kprobe): save the arguments.
#[inline(always)]
fn save_args(map: &HashMap<u64, PinArgs>, args: PinArgs) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    // A failed insert (map full) shows up as lost::NO_ENTRY at return (kprobe
    // fallback); fexit has its arguments anyway.
    let _ = map.insert(pid_tgid, args, 0);
}

/// fexit of a function with a return value. `mark`: the map its fentry saved the
/// arguments in (the inside-pin mark), cleared here; None when there is no fentry.
#[inline(always)]
fn ret_fexit(ctx: &FExitContext, mark: Option<&HashMap<u64, PinArgs>>, s: Spec) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    if let Some(map) = mark {
        let _ = map.remove(pid_tgid);
    }
    let args = pin_args(s, |n| ctx.arg::<u64>(n));
    count_call(s, pid_tgid, &args, ret_value(s, ctx.arg::<u64>(s.nargs)));
}

#[inline(always)]
fn ret_kretprobe(ctx: &RetProbeContext, map: &HashMap<u64, PinArgs>, s: Spec) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let Some(args) = take_saved(map, pid_tgid) else {
        return;
    };
    count_call(s, pid_tgid, &args, ret_value(s, ctx.ret::<u64>()));
}

/// An unpin (void function): counted at once.
#[inline(always)]
fn unpin(s: Spec, args: PinArgs) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if wanted(pid_tgid) {
        count_call(s, pid_tgid, &args, 0);
    }
}

/// kprobe + kretprobe fallback of a function with a return value.
macro_rules! with_ret_kprobes {
    ($func:literal, $kprobe:ident, $kretprobe:ident, $map:ident, $spec:expr) => {
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            save_args(&$map, pin_args($spec, |n| ctx.arg::<u64>(n).unwrap_or(0)));
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            ret_kretprobe(&ctx, &$map, $spec);
            0
        }
    };
}

/// fentry + fexit + kprobe + kretprobe programs of a pin function: its fentry
/// marks the thread as inside a pin call (and saves the arguments in PIN_ARGS).
macro_rules! pin {
    ($func:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $spec:expr) => {
        #[fentry(function = $func)]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            save_args(&PIN_ARGS, pin_args($spec, |n| ctx.arg::<u64>(n)));
            0
        }

        #[fexit(function = $func)]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            ret_fexit(&ctx, Some(&PIN_ARGS), $spec);
            0
        }

        with_ret_kprobes!($func, $kprobe, $kretprobe, PIN_ARGS, $spec);
    };
}

/// fexit + kprobe + kretprobe programs of an accounting function: fexit needs
/// no fentry; the kprobe saves the arguments in `$map` for the kretprobe.
macro_rules! account {
    ($func:literal, $fexit:ident, $kprobe:ident, $kretprobe:ident, $map:ident, $spec:expr) => {
        #[fexit(function = $func)]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            ret_fexit(&ctx, None, $spec);
            0
        }

        with_ret_kprobes!($func, $kprobe, $kretprobe, $map, $spec);
    };
}

/// fexit + kprobe programs of one void unpin function.
macro_rules! void_unpin {
    ($func:literal, $fexit:ident, $kprobe:ident, $spec:expr) => {
        #[fexit(function = $func)]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            unpin($spec, pin_args($spec, |n| ctx.arg::<u64>(n)));
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            unpin($spec, pin_args($spec, |n| ctx.arg::<u64>(n).unwrap_or(0)));
            0
        }
    };
}

pin!(
    "pin_user_pages_fast",
    pup_fast_fentry,
    pup_fast_fexit,
    pup_fast_kprobe,
    pup_fast_kretprobe,
    PIN_FAST
);
pin!(
    "pin_user_pages_remote",
    pup_remote_fentry,
    pup_remote_fexit,
    pup_remote_kprobe,
    pup_remote_kretprobe,
    PIN_REMOTE
);
pin!(
    "pin_user_pages",
    pup_fentry,
    pup_fexit,
    pup_kprobe,
    pup_kretprobe,
    PIN
);
pin!(
    "pin_user_pages_unlocked",
    pup_unlocked_fentry,
    pup_unlocked_fexit,
    pup_unlocked_kprobe,
    pup_unlocked_kretprobe,
    PIN_UNLOCKED
);
pin!(
    "memfd_pin_folios",
    memfd_pin_fentry,
    memfd_pin_fexit,
    memfd_pin_kprobe,
    memfd_pin_kretprobe,
    MEMFD_PIN
);
pin!(
    "folio_add_pins",
    add_pins_fentry,
    add_pins_fexit,
    add_pins_kprobe,
    add_pins_kretprobe,
    FOLIO_ADD_PINS
);
account!(
    "__account_locked_vm",
    acct_fexit,
    acct_kprobe,
    acct_kretprobe,
    ACCT_ARGS,
    ACCOUNT
);
account!(
    "iopt_pages_update_pinned",
    iopt_fexit,
    iopt_kprobe,
    iopt_kretprobe,
    IOPT_ARGS,
    IOPT_UPDATE
);

void_unpin!(
    "unpin_user_page",
    unpin_page_fexit,
    unpin_page_kprobe,
    unpin_one(pin_fn::UNPIN_USER_PAGE)
);
void_unpin!(
    "unpin_folio",
    unpin_folio_fexit,
    unpin_folio_kprobe,
    unpin_one(pin_fn::UNPIN_FOLIO)
);
void_unpin!(
    "unpin_user_pages",
    unpin_pages_fexit,
    unpin_pages_kprobe,
    unpin_n(pin_fn::UNPIN_USER_PAGES)
);
void_unpin!(
    "unpin_user_pages_dirty_lock",
    unpin_pages_dirty_fexit,
    unpin_pages_dirty_kprobe,
    unpin_dirty(pin_fn::UNPIN_USER_PAGES_DIRTY_LOCK)
);
void_unpin!(
    "unpin_user_page_range_dirty_lock",
    unpin_range_dirty_fexit,
    unpin_range_dirty_kprobe,
    unpin_dirty(pin_fn::UNPIN_USER_PAGE_RANGE_DIRTY_LOCK)
);
void_unpin!(
    "unpin_user_folio",
    unpin_user_folio_fexit,
    unpin_user_folio_kprobe,
    unpin_n(pin_fn::UNPIN_USER_FOLIO)
);
void_unpin!(
    "unpin_folios",
    unpin_folios_fexit,
    unpin_folios_kprobe,
    unpin_n(pin_fn::UNPIN_FOLIOS)
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}

/// fexit (tracing) programs require a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
