//! Event records shared by the ioasid-top eBPF programs and userspace.
//!
//! This crate is the ONLY definition of the records that cross the ring
//! buffer, and of the values of the maps userspace reads (pinning counters). Every record starts with an [`EventHeader`]; `header.kind` says
//! which record follows and `header.size` its full size in bytes, so a reader
//! can skip kinds it does not know and a newer producer may append fields at
//! the end of a record without breaking older readers.
//!
//! All records are `#[repr(C)]`, contain only integers and have explicit
//! padding fields, so they have no implicit padding bytes (required for
//! `aya::Pod`, and it keeps the verifier from seeing uninitialised stack).
//!
//! The `user` feature implements `aya::Pod` for the records (userspace only).
#![no_std]

/// Length of `task_struct::comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Kinds of records (`EventHeader::kind`). Values are stable: never reuse one.
pub mod kind {
    /// `iommu_map()` returned; record is [`super::MapEvent`].
    pub const IOMMU_MAP: u16 = 1;
    /// `iommu_map_nosync()` returned; record is [`super::MapEvent`].
    pub const IOMMU_MAP_NOSYNC: u16 = 2;
    /// `iommu_unmap()` returned; record is [`super::UnmapEvent`].
    pub const IOMMU_UNMAP: u16 = 3;
    /// `kvm_arch_register_noncoherent_dma()` was called; record is [`super::KvmEvent`].
    pub const KVM_REGISTER_NONCOHERENT_DMA: u16 = 4;
    /// `kvm_arch_unregister_noncoherent_dma()` was called; record is [`super::KvmEvent`].
    pub const KVM_UNREGISTER_NONCOHERENT_DMA: u16 = 5;
    /// `iommu_unmap_fast()` returned; record is [`super::UnmapEvent`].
    pub const IOMMU_UNMAP_FAST: u16 = 6;
    /// `iommu_attach_group()` returned (VFIO type1, /dev/ioasid); record is
    /// [`super::AttachEvent`].
    pub const IOMMU_ATTACH_GROUP: u16 = 7;
    /// `iommu_detach_group()` was called; record is [`super::AttachEvent`] (`ret` 0).
    pub const IOMMU_DETACH_GROUP: u16 = 8;
    /// `iommu_attach_group_handle()` returned (iommufd); record is [`super::AttachEvent`].
    pub const IOMMU_ATTACH_GROUP_HANDLE: u16 = 9;
    /// `iommu_detach_group_handle()` was called (iommufd); record is [`super::AttachEvent`].
    pub const IOMMU_DETACH_GROUP_HANDLE: u16 = 10;
    /// `iommu_replace_group_handle()` returned (iommufd); record is [`super::AttachEvent`].
    pub const IOMMU_REPLACE_GROUP_HANDLE: u16 = 11;

    // 32..=49 were the per-call pin, unpin and accounting records (ring buffer) before
    // pinning was counted in the kernel ([`super::PinCounters`]): retired, never reuse them.
}

/// Bits of `EventHeader::flags`.
pub mod flags {
    /// The record was produced by the kprobe/kretprobe fallback (not fentry/fexit).
    pub const VIA_KPROBE: u32 = 1 << 0;
    // 1 << 1 was INSIDE_PIN of the retired pin records: never reuse it.
}

/// `prot` bits of `iommu_map()` (include/linux/iommu.h).
pub mod prot {
    pub const IOMMU_READ: i32 = 1 << 0;
    pub const IOMMU_WRITE: i32 = 1 << 1;
    /// DMA cache coherency (snoop); its absence is what makes KVM care.
    pub const IOMMU_CACHE: i32 = 1 << 2;
    pub const IOMMU_NOEXEC: i32 = 1 << 3;
    pub const IOMMU_MMIO: i32 = 1 << 4;
    pub const IOMMU_PRIV: i32 = 1 << 5;
}

/// Slots of the per-CPU `LOST` array.
pub mod lost {
    /// A ring buffer reservation failed (buffer full): the event was dropped.
    pub const RINGBUF_FULL: u32 = 0;
    /// A kretprobe fired without the arguments its kprobe should have stored
    /// (argument map full, or the probe was attached mid-call).
    pub const NO_ENTRY: u32 = 1;
    /// A pinning call of a process that has no entry in the `PINS` map and could
    /// not get one (map full): its per-process counts were not updated.
    pub const PIN_MAP_FULL: u32 = 2;
    /// Number of slots.
    pub const SLOTS: u32 = 3;
}

/// Slots of the `OFFSETS` array: byte offsets of the kernel struct members the programs read,
/// found by userspace in the running kernel's BTF (Rust eBPF has no CO-RE) and written before
/// the programs attach. [`offsets::UNKNOWN`] means the member could not be found: the field of
/// the record that needs it is left at its "unknown" value.
pub mod offsets {
    /// `struct iommu_group::id` (an `int`): the group's number, `/sys/kernel/iommu_groups/<id>`.
    pub const IOMMU_GROUP_ID: u32 = 0;
    /// Number of slots.
    pub const SLOTS: u32 = 1;
    /// Value of a slot whose member was not found.
    pub const UNKNOWN: u32 = u32::MAX;
}

/// `FOLL_LONGTERM` of `enum gup_flags` (include/linux/mm_types.h, 1 << 8 since
/// Linux 6.2): a pin call with it takes long-term pins.
pub const FOLL_LONGTERM: u32 = 1 << 8;

/// The traced pinning functions: their index in the per-CPU `PIN_KINDS` array
/// of [`PinKindCounters`], in report order. Values are stable.
pub mod pin_fn {
    pub const PIN_USER_PAGES_FAST: u32 = 0;
    pub const PIN_USER_PAGES_REMOTE: u32 = 1;
    pub const PIN_USER_PAGES: u32 = 2;
    pub const PIN_USER_PAGES_UNLOCKED: u32 = 3;
    /// One pin per folio.
    pub const MEMFD_PIN_FOLIOS: u32 = 4;
    /// Pins added to an already pinned folio (returns 0, adds its `pins` argument).
    pub const FOLIO_ADD_PINS: u32 = 5;
    pub const UNPIN_USER_PAGE: u32 = 6;
    pub const UNPIN_FOLIO: u32 = 7;
    pub const UNPIN_USER_PAGES: u32 = 8;
    pub const UNPIN_USER_PAGES_DIRTY_LOCK: u32 = 9;
    pub const UNPIN_USER_PAGE_RANGE_DIRTY_LOCK: u32 = 10;
    pub const UNPIN_USER_FOLIO: u32 = 11;
    pub const UNPIN_FOLIOS: u32 = 12;
    /// Charge or uncharge of an mm's `locked_vm`.
    pub const ACCOUNT_LOCKED_VM: u32 = 13;
    /// iommufd's `pinned_vm` and, per its account mode, `locked_vm`.
    pub const IOPT_PAGES_UPDATE_PINNED: u32 = 14;
    /// Number of functions (slots of `PIN_KINDS`).
    pub const COUNT: u32 = 15;
}

/// Entries of the `PINS` hash map (per-process counters, key: tgid). Userspace
/// removes the entries of processes that have exited (folding their counts
/// into its own totals) at every report; a pinning call of a new process when
/// the map is full is counted in [`lost::PIN_MAP_FULL`].
pub const PINS_MAX_ENTRIES: u32 = 8192;

/// Per-process pinning counters: the value of the `PINS` hash map, keyed by
/// thread group id (u32). Every counter is cumulative since attach and only
/// ever grows, by atomic adds (threads of one process pin on several CPUs at
/// once); pages are pins (one per page, see `cli/src/pins.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinCounters {
    /// Pin calls (successful or not).
    pub pin_calls: u64,
    /// Pin calls that failed (negative return).
    pub failed_pins: u64,
    /// Pins taken.
    pub pinned: u64,
    /// ... of which by a call with `FOLL_LONGTERM` (all of `memfd_pin_folios`
    /// and `folio_add_pins`).
    pub longterm: u64,
    /// Pins dropped (not counting nested or inside-pin unpins).
    pub unpinned: u64,
    /// Pins dropped by GUP inside a pin call of the same thread (not in `unpinned`).
    pub unpinned_inside_pin: u64,
    /// `__account_locked_vm` pages charged / uncharged (mm `locked_vm`, VmLck).
    pub locked_vm_charged: u64,
    pub locked_vm_uncharged: u64,
    /// `iopt_pages_update_pinned` pages added / removed (iommufd's `pinned_vm`).
    pub iommufd_added: u64,
    pub iommufd_removed: u64,
    /// `comm` of the thread whose call created the entry, NUL padded; threads
    /// creating it at once may leave a mix. A name the process takes later (exec,
    /// prctl(PR_SET_NAME)) is not seen here, and a process that reuses the pid of
    /// one that exited since the last report keeps the old name.
    pub comm: [u8; COMM_LEN],
}

impl PinCounters {
    /// Long-term pins held now, as far as the calls tell: long-term pins taken
    /// minus pins dropped by the process. Short-term pins (I/O in flight:
    /// 9p, O_DIRECT) are left out: whoever completes the I/O drops them,
    /// often a kworker, so they would never net out in the pinning process.
    /// Negative when the process drops pins taken before attach (or drops its
    /// own short-term pins itself: unpins do not say which kind they drop).
    pub fn net_pinned(&self) -> i128 {
        self.longterm as i128 - self.unpinned as i128
    }

    /// Net pages charged to `locked_vm` through `__account_locked_vm`.
    pub fn net_locked_vm(&self) -> i128 {
        self.locked_vm_charged as i128 - self.locked_vm_uncharged as i128
    }

    /// Net pages counted through `iopt_pages_update_pinned`.
    pub fn net_iommufd(&self) -> i128 {
        self.iommufd_added as i128 - self.iommufd_removed as i128
    }

    /// Adds `other`'s counts (saturating); `other`'s comm wins when it has one
    /// (userspace: folding an exited process's counts with a newer entry's).
    pub fn add(&mut self, other: &PinCounters) {
        if other.comm[0] != 0 {
            self.comm = other.comm;
        }
        for (a, b) in [
            (&mut self.pin_calls, other.pin_calls),
            (&mut self.failed_pins, other.failed_pins),
            (&mut self.pinned, other.pinned),
            (&mut self.longterm, other.longterm),
            (&mut self.unpinned, other.unpinned),
            (&mut self.unpinned_inside_pin, other.unpinned_inside_pin),
            (&mut self.locked_vm_charged, other.locked_vm_charged),
            (&mut self.locked_vm_uncharged, other.locked_vm_uncharged),
            (&mut self.iommufd_added, other.iommufd_added),
            (&mut self.iommufd_removed, other.iommufd_removed),
        ] {
            *a = a.saturating_add(b);
        }
    }
}

/// Per pinning function counters (every call, nested or not): the value of the
/// per-CPU `PIN_KINDS` array, indexed by [`pin_fn`]; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinKindCounters {
    pub calls: u64,
    /// Pins and accounting: calls that returned an error; unpins: 0.
    pub failed: u64,
    /// Pins taken, pins dropped, or pages (un)charged by successful calls.
    pub pages: u64,
}

/// Value of the `UNPIN_PAIR` map (key: pid_tgid): the last counted call of the
/// pair `unpin_user_pages_dirty_lock(make_dirty = false)` → `unpin_user_pages()`
/// (same array and count) on this thread, so that the other call of the pair
/// is not counted again (fexit sees the inner call first, kprobes the outer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpinPair {
    pub obj: u64,
    pub count: u64,
    /// Which call was counted: [`pin_fn::UNPIN_USER_PAGES`] or
    /// [`pin_fn::UNPIN_USER_PAGES_DIRTY_LOCK`].
    pub counted: u32,
    pub _pad: u32,
}

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u16,
    /// Size in bytes of the whole record, header included.
    pub size: u16,
    /// Bits of [`flags`].
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC, ns) when the record was made.
    pub ts_ns: u64,
    /// Thread group id: what userspace calls the process id.
    pub tgid: u32,
    /// Thread id (the kernel's `pid`).
    pub tid: u32,
    /// `comm` of the current task, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// `iommu_map()` / `iommu_map_nosync()`:
/// `int (struct iommu_domain *domain, unsigned long iova, phys_addr_t paddr,
///       size_t size, int prot, gfp_t gfp)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEvent {
    pub header: EventHeader,
    /// `struct iommu_domain *` (kernel address, only an identity).
    pub domain: u64,
    pub iova: u64,
    pub paddr: u64,
    pub size: u64,
    /// Bits of [`prot`].
    pub prot: i32,
    pub gfp: u32,
    /// Return value: 0 or a negative errno.
    pub ret: i32,
    pub _pad: u32,
}

/// `iommu_unmap()`:
/// `size_t (struct iommu_domain *domain, unsigned long iova, size_t size)`;
/// also `iommu_unmap_fast()`, which has a fourth argument
/// (`struct iommu_iotlb_gather *iotlb_gather`) that is not recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapEvent {
    pub header: EventHeader,
    pub domain: u64,
    pub iova: u64,
    /// Size the caller asked to unmap.
    pub size: u64,
    /// Return value: bytes actually unmapped.
    pub unmapped: u64,
}

/// `kvm_arch_{,un}register_noncoherent_dma(struct kvm *kvm)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmEvent {
    pub header: EventHeader,
    /// `struct kvm *` (kernel address, only an identity).
    pub kvm: u64,
}

/// A domain attached to or detached from an IOMMU group:
/// `int iommu_attach_group(struct iommu_domain *, struct iommu_group *)`,
/// `void iommu_detach_group(struct iommu_domain *, struct iommu_group *)`,
/// `int iommu_attach_group_handle(struct iommu_domain *, struct iommu_group *, handle)`,
/// `void iommu_detach_group_handle(struct iommu_domain *, struct iommu_group *)`,
/// `int iommu_replace_group_handle(struct iommu_group *, struct iommu_domain *new, handle)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachEvent {
    pub header: EventHeader,
    /// `struct iommu_domain *`: the domain attached, detached, or replacing the group's.
    pub domain: u64,
    /// `struct iommu_group *` (only an identity).
    pub group: u64,
    /// `group->id`, read at the offset of [`offsets::IOMMU_GROUP_ID`]; -1 when unknown.
    pub group_id: i32,
    /// Return value: 0 or a negative errno (0 for the void detaches).
    pub ret: i32,
}

/// Arguments of an attach call, stored per thread by the kprobe fallback.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachArgs {
    pub domain: u64,
    pub group: u64,
}

/// Arguments of a pin or accounting call, stored per thread by fentry or the
/// kprobe fallback. For pins its presence also marks the thread as inside a
/// pin call ([`PinCounters::unpinned_inside_pin`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinArgs {
    pub obj: u64,
    pub start: u64,
    pub count: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// Arguments of a map call, stored per thread by the kprobe fallback until the
/// kretprobe fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapArgs {
    pub domain: u64,
    pub iova: u64,
    pub paddr: u64,
    pub size: u64,
    pub prot: i32,
    pub gfp: u32,
}

/// The last successful `iommu_map_nosync` call of a CPU (per-CPU `NOSYNC_LAST`), kept so
/// that the `iommu_map` around it can leave its own record out: one mapping, one record.
/// `pid_tgid` 0: none pending.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NosyncCall {
    pub pid_tgid: u64,
    pub domain: u64,
    pub iova: u64,
    pub paddr: u64,
    pub size: u64,
}

/// Successful `iommu_map` calls with no record of their own because the `iommu_map_nosync`
/// they wrap was reported (per-CPU `ELIDED_MAPS`, one slot); userspace adds them to the
/// function's counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElidedMaps {
    pub calls: u64,
    pub bytes: u64,
}

/// Arguments of an unmap call (`iommu_unmap` or `iommu_unmap_fast`), stored
/// per thread by the kprobe fallback.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapArgs {
    pub domain: u64,
    pub iova: u64,
    pub size: u64,
}

// The layouts are part of the contract between the eBPF object and userspace:
// make accidental changes (and implicit padding) a compile error.
const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 40);
    assert!(core::mem::size_of::<MapEvent>() == 40 + 4 * 8 + 4 * 4);
    assert!(core::mem::size_of::<UnmapEvent>() == 40 + 4 * 8);
    assert!(core::mem::size_of::<KvmEvent>() == 40 + 8);
    assert!(core::mem::size_of::<AttachEvent>() == 40 + 2 * 8 + 2 * 4);
    assert!(core::mem::size_of::<AttachArgs>() == 2 * 8);
    assert!(core::mem::size_of::<MapArgs>() == 4 * 8 + 2 * 4);
    assert!(core::mem::size_of::<UnmapArgs>() == 3 * 8);
    assert!(core::mem::size_of::<NosyncCall>() == 5 * 8);
    assert!(core::mem::size_of::<ElidedMaps>() == 2 * 8);
    assert!(core::mem::size_of::<PinCounters>() == 10 * 8 + COMM_LEN);
    assert!(core::mem::size_of::<PinKindCounters>() == 3 * 8);
    assert!(core::mem::size_of::<UnpinPair>() == 3 * 8);
    assert!(core::mem::size_of::<PinArgs>() == 4 * 8);
    // Sizes must fit EventHeader::size.
    assert!(core::mem::size_of::<MapEvent>() <= u16::MAX as usize);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers, Copy, and
    // have no implicit padding (checked by the size assertions above).
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::MapEvent {}
    unsafe impl aya::Pod for super::UnmapEvent {}
    unsafe impl aya::Pod for super::KvmEvent {}
    unsafe impl aya::Pod for super::AttachEvent {}
    unsafe impl aya::Pod for super::AttachArgs {}
    unsafe impl aya::Pod for super::MapArgs {}
    unsafe impl aya::Pod for super::UnmapArgs {}
    unsafe impl aya::Pod for super::NosyncCall {}
    unsafe impl aya::Pod for super::ElidedMaps {}
    unsafe impl aya::Pod for super::PinCounters {}
    unsafe impl aya::Pod for super::PinKindCounters {}
    unsafe impl aya::Pod for super::UnpinPair {}
    unsafe impl aya::Pod for super::PinArgs {}
}
