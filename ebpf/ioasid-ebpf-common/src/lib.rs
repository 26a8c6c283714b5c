//! Event records shared by the ioasid-top eBPF programs and userspace.
//!
//! This crate is the ONLY definition of the records that cross the ring
//! buffer. Every record starts with an [`EventHeader`]; `header.kind` says
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

    // Page pinning and its accounting: every record is a [`super::PinEvent`].
    // These kinds start at 32 so the two ranges grow apart without clashing.
    /// `pin_user_pages_fast()` returned.
    pub const PIN_USER_PAGES_FAST: u16 = 32;
    /// `pin_user_pages_remote()` returned.
    pub const PIN_USER_PAGES_REMOTE: u16 = 33;
    /// `pin_user_pages()` returned.
    pub const PIN_USER_PAGES: u16 = 34;
    /// `pin_user_pages_unlocked()` returned.
    pub const PIN_USER_PAGES_UNLOCKED: u16 = 35;
    /// `memfd_pin_folios()` returned (one pin per folio).
    pub const MEMFD_PIN_FOLIOS: u16 = 36;
    /// `folio_add_pins()` returned (pins added to an already pinned folio).
    pub const FOLIO_ADD_PINS: u16 = 37;
    /// `unpin_user_page()` was called.
    pub const UNPIN_USER_PAGE: u16 = 40;
    /// `unpin_folio()` was called.
    pub const UNPIN_FOLIO: u16 = 41;
    /// `unpin_user_pages()` was called.
    pub const UNPIN_USER_PAGES: u16 = 42;
    /// `unpin_user_pages_dirty_lock()` was called.
    pub const UNPIN_USER_PAGES_DIRTY_LOCK: u16 = 43;
    /// `unpin_user_page_range_dirty_lock()` was called.
    pub const UNPIN_USER_PAGE_RANGE_DIRTY_LOCK: u16 = 44;
    /// `unpin_user_folio()` was called.
    pub const UNPIN_USER_FOLIO: u16 = 45;
    /// `unpin_folios()` was called.
    pub const UNPIN_FOLIOS: u16 = 46;
    /// `__account_locked_vm()` returned (charge or uncharge of an mm's `locked_vm`).
    pub const ACCOUNT_LOCKED_VM: u16 = 48;
    /// `iopt_pages_update_pinned()` returned (iommufd's `pinned_vm` and, per its
    /// account mode, `locked_vm`).
    pub const IOPT_PAGES_UPDATE_PINNED: u16 = 49;
}

/// Bits of `EventHeader::flags`.
pub mod flags {
    /// The record was produced by the kprobe/kretprobe fallback (not fentry/fexit).
    pub const VIA_KPROBE: u32 = 1 << 0;
    /// An unpin made while the same thread was inside a traced pin function:
    /// GUP dropping pins it took itself (migration before a long-term pin),
    /// already netted out of that pin call's return value.
    pub const INSIDE_PIN: u32 = 1 << 1;
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
    /// Number of slots.
    pub const SLOTS: u32 = 2;
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

/// A pin, unpin or accounting call. Which function, and so what the fields
/// mean, is `header.kind`; every field is an argument or the return value:
///
/// | kind | `obj` | `start` | `count` | `flags` | `ret` |
/// |---|---|---|---|---|---|
/// | `pin_user_pages*` | `mm` (remote) or 0 | user address | `nr_pages` | `gup_flags` | pages pinned or -errno |
/// | `memfd_pin_folios` | `struct file *` | file offset | `max_folios` | 0 | folios pinned (one pin each) or -errno |
/// | `folio_add_pins` | `struct folio *` | 0 | pins to add | 0 | 0 or -errno |
/// | `unpin_user_page`, `unpin_folio` | page / folio | 0 | 1 | 0 | 0 |
/// | `unpin_user_pages*`, `unpin_folios`, `unpin_user_folio`, `unpin_user_page_range_dirty_lock` | array / page / folio | 0 | `npages` / `nfolios` | `make_dirty` | 0 |
/// | `__account_locked_vm` | `mm` | 0 | `pages` | `inc` | 0 or -errno |
/// | `iopt_pages_update_pinned` | `struct iopt_pages *` | 0 | `npages` | `inc` | 0 or -errno |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinEvent {
    pub header: EventHeader,
    /// Kernel address (identity only), see the table.
    pub obj: u64,
    pub start: u64,
    pub count: u64,
    pub flags: u32,
    pub _pad: u32,
    /// Return value (0 for void functions).
    pub ret: i64,
}

/// Arguments of a pin or accounting call, stored per thread by fentry or the
/// kprobe fallback. For pins its presence also marks the thread as inside a
/// pin call (see [`flags::INSIDE_PIN`]).
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
    assert!(core::mem::size_of::<MapArgs>() == 4 * 8 + 2 * 4);
    assert!(core::mem::size_of::<UnmapArgs>() == 3 * 8);
    assert!(core::mem::size_of::<PinEvent>() == 40 + 5 * 8);
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
    unsafe impl aya::Pod for super::MapArgs {}
    unsafe impl aya::Pod for super::UnmapArgs {}
    unsafe impl aya::Pod for super::PinEvent {}
    unsafe impl aya::Pod for super::PinArgs {}
}
