//! eBPF programs of ioasid-top.
//!
//! For every traced kernel function there is an fexit program (sees the
//! arguments and the return value in one place) and a kprobe/kretprobe pair
//! used as a fallback when fentry/fexit cannot attach (no BTF for the target,
//! function in a module, kernel without trampolines, ...). The kprobe stores
//! the arguments per thread in a hash map; the kretprobe emits the record.
//!
//! Rust eBPF has no CO-RE: these programs only read function arguments and
//! return values, never fields of kernel structs.
//!
//! Program names are part of the contract with the loader in
//! `cli/src/loader.rs`.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{fexit, kprobe, kretprobe, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use ioasid_ebpf_common::{
    COMM_LEN, EventHeader, KvmEvent, MapArgs, MapEvent, UnmapArgs, UnmapEvent, flags, kind, lost,
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

/// Only report this thread group (process) when non-zero. Set by the loader.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // SAFETY: p points to this CPU's slot; programs run with migration
        // disabled. (The bpf target has no fetch_add in core; a racing
        // program on the same CPU could at worst lose one count.)
        unsafe { *p += 1 };
    }
}

/// Whether the current task passes the `--pid` filter.
#[inline(always)]
fn wanted(pid_tgid: u64) -> bool {
    // SAFETY: plain read of a global the loader may have rewritten; volatile
    // so the compiler does not fold the initial value.
    let filter = unsafe { core::ptr::read_volatile(&raw const FILTER_TGID) };
    filter == 0 || filter == (pid_tgid >> 32) as u32
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

#[inline(always)]
fn emit_map(kind: u16, flags: u32, pid_tgid: u64, args: &MapArgs, ret: i32) {
    let Some(mut entry) = EVENTS.reserve::<MapEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
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
    emit_map(kind, 0, pid_tgid, &args, ret);
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

#[inline(always)]
fn map_kretprobe(ctx: &RetProbeContext, args_map: &HashMap<u64, MapArgs>, kind: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted(pid_tgid) {
        return;
    }
    let Some(p) = args_map.get_ptr(pid_tgid) else {
        count_lost(lost::NO_ENTRY);
        return;
    };
    // SAFETY: p points to a value of this map; only this thread uses its key.
    let args = unsafe { *p };
    let _ = args_map.remove(pid_tgid);
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
    let Some(p) = args_map.get_ptr(pid_tgid) else {
        count_lost(lost::NO_ENTRY);
        return;
    };
    // SAFETY: as in map_kretprobe.
    let args = unsafe { *p };
    let _ = args_map.remove(pid_tgid);
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
