//! What a sequence believes the devices hold.
//!
//! * [`Model`]: IOASes, their mapped areas and allowed ranges, updated from
//!   the *reference* (mainline) outcome of every call, so the generator can
//!   aim at existing areas.
//! * [`PinModel`]: for one device, which backing pages each live area holds
//!   and so how many pages the device's file pins, updated from *that
//!   device's* outcome. It predicts each call's `VmPin`/`VmLck` delta under
//!   the device's [`PinRule`]: mainline iommufd counts every pin of each of
//!   its pages objects, `/dev/ioasid` each distinct page once per open file.

use super::call::{Addr, Call, Cmd, Fd, Id};
use super::exec::{MemCounters, PAGE};
use super::outcome::Outcome;
use ioasid_uapi::iommufd::*;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoasModel {
    pub alive: bool,
    /// (iova, length) of each successful map/copy not yet unmapped.
    pub areas: Vec<(u64, u64)>,
    /// The last allowed-IOVA list set (inclusive ranges).
    pub allowed: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Indexed like [`Id::Obj`]: every successful IOAS_ALLOC appends one.
    pub objs: Vec<IoasModel>,
}

impl Model {
    pub fn alive(&self) -> Vec<usize> {
        (0..self.objs.len())
            .filter(|&k| self.objs[k].alive)
            .collect()
    }

    fn obj(&mut self, id: Id) -> Option<&mut IoasModel> {
        match id {
            Id::Obj(k) => self.objs.get_mut(k),
            Id::Raw(_) => None,
        }
    }

    /// Account for `call`, whose reference outcome was `r`.
    pub fn apply(&mut self, call: &Call, r: &Outcome) {
        if !r.ok() && !unmap_enoent(call, r) {
            return;
        }
        match &call.cmd {
            Cmd::Alloc { .. } => self.objs.push(IoasModel {
                alive: true,
                ..Default::default()
            }),
            Cmd::Destroy { id } => {
                if let Some(o) = self.obj(*id) {
                    o.alive = false;
                    o.areas.clear();
                }
            }
            Cmd::Map { ioas, length, .. } => {
                let out: IommuIoasMap = r.decode();
                if let Some(o) = self.obj(*ioas) {
                    o.areas.push((out.iova, *length));
                }
            }
            Cmd::MapFile { ioas, length, .. } => {
                let out: IommuIoasMapFile = r.decode();
                if let Some(o) = self.obj(*ioas) {
                    o.areas.push((out.iova, *length));
                }
            }
            Cmd::Copy { dst, length, .. } => {
                let out: IommuIoasCopy = r.decode();
                if let Some(o) = self.obj(*dst) {
                    o.areas.push((out.dst_iova, *length));
                }
            }
            Cmd::Unmap { ioas, iova, length } => {
                if let Some(o) = self.obj(*ioas) {
                    let gone = unmapped(&o.areas, |a| *a, *iova, *length);
                    o.areas.retain(|a| !gone.contains(&a.0));
                }
            }
            Cmd::AllowIovas { ioas, ranges, .. } => {
                let ranges = ranges.clone();
                if let Some(o) = self.obj(*ioas) {
                    o.allowed = ranges;
                }
            }
            Cmd::IovaRanges { .. } | Cmd::Option { .. } => {}
        }
    }
}

/// Is `r` an IOAS_UNMAP that failed with ENOENT? Both kernels have then
/// already unmapped the areas of the range before the one that is not
/// entirely inside it ([`unmapped`]).
fn unmap_enoent(call: &Call, r: &Outcome) -> bool {
    matches!(call.cmd, Cmd::Unmap { .. }) && r.ret == Err(libc::ENOENT)
}

/// The start IOVAs of the areas (`span` gives each one's iova and length)
/// that an IOAS_UNMAP of `length` bytes at `iova` removes, walking them as
/// iopt_unmap_iova_range() (and `unmap_range` of /dev/ioasid's ioas.rs)
/// does: in IOVA order from the first area meeting the range, each entirely
/// inside it, up to the first that is not — that one fails the call with
/// ENOENT and the ones before it stay unmapped. Areas are never split.
pub fn unmapped<T>(
    areas: &[T],
    span: impl Fn(&T) -> (u64, u64),
    iova: u64,
    length: u64,
) -> Vec<u64> {
    let Some(last) = length.checked_sub(1).and_then(|l| iova.checked_add(l)) else {
        return Vec::new();
    };
    let mut meeting: Vec<(u64, u64)> = areas
        .iter()
        .map(span)
        .filter(|&(a, l)| l != 0 && a <= last && a.saturating_add(l - 1) >= iova)
        .map(|(a, l)| (a, a.saturating_add(l - 1)))
        .collect();
    meeting.sort_unstable();
    meeting
        .into_iter()
        .take_while(|&(a, a_last)| a >= iova && a_last <= last)
        .map(|(a, _)| a)
        .collect()
}

/// Which memory a page is. The regions of [`super::exec::Resources`] are
/// distinct memory: separate private anonymous mappings (the arena and the
/// read-only mapping populated page by page, each page its own frame — a
/// long-term pin of a read-only page unshares the zero page) and a memfd
/// (shmem pages, never mapped by the process). So a page is named by its
/// region and its index in it (for a literal address: address / page size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backing {
    Arena,
    ReadOnly,
    NoAccess,
    Hole,
    Raw,
    Memfd,
    /// A file descriptor other than the memfd (by number).
    File(i32),
}

/// One page of backing memory: region and page index.
pub type PageKey = (Backing, u64);

/// A pinned range of backing pages: mainline's `struct iopt_pages`,
/// `/dev/ioasid`'s `Pages`. Each successful MAP/MAP_FILE creates one; the
/// areas a COPY makes share their source areas' ones.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PagesObj {
    backing: Backing,
    /// Index of the first page in the region.
    first: u64,
    npages: u64,
}

impl PagesObj {
    fn keys(&self) -> impl Iterator<Item = PageKey> + '_ {
        (0..self.npages).map(|i| (self.backing, self.first.saturating_add(i)))
    }
}

/// A live area: `length` bytes at `iova` of IOAS `ioas` (the device's id),
/// the bytes from `start_byte` (counted from the start of the first page)
/// of `pages`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PinArea {
    ioas: u32,
    iova: u64,
    length: u64,
    pages: usize,
    start_byte: u64,
}

impl PinArea {
    /// The page indices (in its pages object) the area uses, inclusive.
    fn page_span(&self) -> (u64, u64) {
        let last_byte = self
            .start_byte
            .saturating_add(self.length.saturating_sub(1));
        (self.start_byte / PAGE, last_byte / PAGE)
    }
}

/// How a device counts the pages it pins in `VmPin` (`mm->pinned_vm`) and,
/// when it charges the mm (IOMMU_OPTION_RLIMIT_MODE = 1, a task without
/// CAP_IPC_LOCK), in `VmLck` (`mm->locked_vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinRule {
    /// Mainline iommufd with a domain on every IOAS: each MAP/MAP_FILE pins
    /// the pages of its own pages object (`struct iopt_pages`), counted even
    /// when another pages object pins the same memory; a COPY's areas use
    /// the source's pages object and pin nothing more; a page of a pages
    /// object is unpinned when no live area uses that page of it
    /// (iopt_pages_update_pinned(), __iopt_area_unfill_domain()).
    PagesObject,
    /// `/dev/ioasid`: a per-file table keyed by pfn counts each distinct
    /// page once, however many IOASes, maps and pages objects of the file
    /// pin it (`PinAccount`, kernel-rust/drivers/iommu/ioasid/pages.rs). A
    /// pages object (`Pages`) is shared whole by the areas a COPY makes from
    /// it and released, with all its pages, when the last of them goes.
    DistinctPerFile,
    /// Mainline iommufd without a domain: pins nothing at map time.
    Unpinned,
}

impl PinRule {
    /// What the prediction counts, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PagesObject => "every pin of each pages object",
            Self::DistinctPerFile => "distinct pages of the fd",
            Self::Unpinned => "a bare IOAS pins nothing",
        }
    }
}

/// The pages one device's file pins, per [`PinRule`], from that device's
/// own outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinModel {
    rule: PinRule,
    /// The task lacks CAP_IPC_LOCK: RLIMIT_MODE = 1 charges `VmLck`.
    charges_mm: bool,
    /// IOMMU_OPTION_RLIMIT_MODE was last set to 1.
    mm_mode: bool,
    /// Every pages object ever created (indexed by creation order); only
    /// those some live area uses are pinned.
    pages: Vec<PagesObj>,
    areas: Vec<PinArea>,
}

impl PinModel {
    /// `charges_mm`: the task has no CAP_IPC_LOCK, so RLIMIT_MODE = 1
    /// charges `VmLck` (with it nothing is charged: IOPT_PAGES_ACCOUNT_NONE).
    pub fn new(rule: PinRule, charges_mm: bool) -> Self {
        Self {
            rule,
            charges_mm,
            mm_mode: false,
            pages: Vec::new(),
            areas: Vec::new(),
        }
    }

    pub fn rule(&self) -> PinRule {
        self.rule
    }

    /// Pages the file pins now.
    pub fn pinned_pages(&self) -> u64 {
        match self.rule {
            PinRule::Unpinned => 0,
            PinRule::PagesObject => {
                let mut spans: Vec<(usize, u64, u64)> = self
                    .areas
                    .iter()
                    .map(|a| {
                        let (f, l) = a.page_span();
                        (a.pages, f, l)
                    })
                    .collect();
                spans.sort_unstable();
                let mut n = 0;
                let mut cur: Option<(usize, u64, u64)> = None;
                for (p, f, l) in spans {
                    match cur {
                        Some((cp, cf, cl)) if cp == p && f <= cl.saturating_add(1) => {
                            cur = Some((cp, cf, cl.max(l)));
                        }
                        _ => {
                            if let Some((_, cf, cl)) = cur {
                                n += cl - cf + 1;
                            }
                            cur = Some((p, f, l));
                        }
                    }
                }
                if let Some((_, cf, cl)) = cur {
                    n += cl - cf + 1;
                }
                n
            }
            PinRule::DistinctPerFile => {
                let used: BTreeSet<usize> = self.areas.iter().map(|a| a.pages).collect();
                let keys: BTreeSet<PageKey> = used
                    .into_iter()
                    .filter_map(|p| self.pages.get(p))
                    .flat_map(PagesObj::keys)
                    .collect();
                keys.len() as u64
            }
        }
    }

    /// `VmPin` and `VmLck` the file accounts for now, in kB.
    pub fn counters(&self) -> MemCounters {
        let kb = (self.pinned_pages() * PAGE / 1024) as i64;
        MemCounters {
            pin_kb: kb,
            lck_kb: if self.charges_mm && self.mm_mode {
                kb
            } else {
                0
            },
        }
    }

    /// Account for `call`, whose outcome on this device was `r`, `id`
    /// resolving the call's ids to the device's as they were sent (a stale
    /// [`Id::Obj`] of a destroyed IOAS may name an IOAS allocated since with
    /// the same id); returns the predicted change of `VmPin`/`VmLck`.
    pub fn apply(&mut self, call: &Call, r: &Outcome, id: &dyn Fn(Id) -> u32) -> MemCounters {
        let before = self.counters();
        self.update(call, r, id);
        let after = self.counters();
        MemCounters {
            pin_kb: after.pin_kb - before.pin_kb,
            lck_kb: after.lck_kb - before.lck_kb,
        }
    }

    /// The file is closed: every area, and so every pin, goes.
    pub fn close(&mut self) {
        self.areas.clear();
    }

    fn update(&mut self, call: &Call, r: &Outcome, id: &dyn Fn(Id) -> u32) {
        if !r.ok() && !unmap_enoent(call, r) {
            return;
        }
        match &call.cmd {
            Cmd::Map {
                ioas,
                user_va,
                length,
                ..
            } => {
                let out: IommuIoasMap = r.decode();
                let (backing, addr) = match *user_va {
                    Addr::Arena(o) => (Backing::Arena, o),
                    Addr::ReadOnly(o) => (Backing::ReadOnly, o),
                    Addr::NoAccess(o) => (Backing::NoAccess, o),
                    Addr::Hole(o) => (Backing::Hole, o),
                    Addr::Raw(a) => (Backing::Raw, a),
                };
                self.add_pages(id(*ioas), out.iova, *length, backing, addr);
            }
            Cmd::MapFile {
                ioas,
                fd,
                start,
                length,
                ..
            } => {
                let out: IommuIoasMapFile = r.decode();
                let backing = match *fd {
                    Fd::Memfd => Backing::Memfd,
                    Fd::Raw(n) => Backing::File(n),
                };
                self.add_pages(id(*ioas), out.iova, *length, backing, *start);
            }
            Cmd::Copy {
                dst,
                src,
                length,
                src_iova,
                ..
            } => {
                let out: IommuIoasCopy = r.decode();
                self.copy(id(*dst), id(*src), *src_iova, *length, out.dst_iova);
            }
            Cmd::Unmap { ioas, iova, length } => {
                let k = &id(*ioas);
                let mine: Vec<(u64, u64)> = self
                    .areas
                    .iter()
                    .filter(|a| a.ioas == *k)
                    .map(|a| (a.iova, a.length))
                    .collect();
                let gone = unmapped(&mine, |a| *a, *iova, *length);
                self.areas
                    .retain(|a| a.ioas != *k || !gone.contains(&a.iova));
            }
            Cmd::Destroy { id: i } => {
                let k = id(*i);
                self.areas.retain(|a| a.ioas != k);
            }
            Cmd::Option {
                option_id: IOMMU_OPTION_RLIMIT_MODE,
                op: IOMMU_OPTION_OP_SET,
                val64,
                ..
            } => self.mm_mode = *val64 == 1,
            _ => {}
        }
    }

    /// A new pages object for `length` bytes at byte `addr` of `backing`,
    /// and its area at `iova` of IOAS `ioas`.
    fn add_pages(&mut self, ioas: u32, iova: u64, length: u64, backing: Backing, addr: u64) {
        if length == 0 {
            return;
        }
        let start_byte = addr % PAGE;
        let npages = (start_byte.saturating_add(length - 1)) / PAGE + 1;
        self.pages.push(PagesObj {
            backing,
            first: addr / PAGE,
            npages,
        });
        self.areas.push(PinArea {
            ioas,
            iova,
            length,
            pages: self.pages.len() - 1,
            start_byte,
        });
    }

    /// Areas at `dst_iova` of `dst` using the pages under `length` bytes at
    /// `src_iova` of `src` (iopt_get_pages(): contiguous source areas).
    fn copy(&mut self, dst: u32, src: u32, src_iova: u64, length: u64, dst_iova: u64) {
        let Some(last) = length.checked_sub(1).and_then(|l| src_iova.checked_add(l)) else {
            return;
        };
        let mut pieces = Vec::new();
        let mut cur = src_iova;
        loop {
            let Some(a) = self.areas.iter().find(|a| {
                a.ioas == src && a.iova <= cur && cur <= a.iova.saturating_add(a.length - 1)
            }) else {
                // Not what the device saw: the next deltas will show it.
                return;
            };
            let a_last = a.iova.saturating_add(a.length - 1);
            let piece_last = a_last.min(last);
            pieces.push(PinArea {
                ioas: dst,
                iova: 0,
                length: piece_last - cur + 1,
                pages: a.pages,
                start_byte: a.start_byte + (cur - a.iova),
            });
            if a_last >= last {
                break;
            }
            cur = a_last + 1;
        }
        let mut next = dst_iova;
        for mut p in pieces {
            p.iova = next;
            next = next.wrapping_add(p.length);
            self.areas.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::call::FIXED_RW;
    use ioasid_uapi::struct_bytes;

    fn ok(bytes: Vec<u8>) -> Outcome {
        Outcome {
            ret: Ok(0),
            bytes,
            ranges: vec![],
            pinned_kb: None,
            locked_kb: None,
        }
    }

    #[test]
    fn tracks_objects_and_areas() {
        let mut m = Model::default();
        m.apply(&Call::new(Cmd::Alloc { flags: 0 }), &ok(vec![]));
        m.apply(&Call::new(Cmd::Alloc { flags: 0 }), &ok(vec![]));
        assert_eq!(m.alive(), vec![0, 1]);
        let map = Call::new(Cmd::Map {
            ioas: Id::Obj(1),
            flags: FIXED_RW,
            reserved: 0,
            user_va: Addr::Arena(0),
            length: 0x2000,
            iova: 0x100000,
        });
        let out = IommuIoasMap {
            iova: 0x100000,
            ..IommuIoasMap::new()
        };
        m.apply(&map, &ok(struct_bytes(&out)));
        assert_eq!(m.objs[1].areas, vec![(0x100000, 0x2000)]);
        // A failed call changes nothing.
        let failed = Outcome {
            ret: Err(libc::EEXIST),
            ..ok(struct_bytes(&out))
        };
        m.apply(&map, &failed);
        assert_eq!(m.objs[1].areas.len(), 1);
        let unmap_part = Call::new(Cmd::Unmap {
            ioas: Id::Obj(1),
            iova: 0x100000,
            length: 0x1000,
        });
        m.apply(&unmap_part, &ok(vec![]));
        assert_eq!(
            m.objs[1].areas.len(),
            1,
            "an area is only gone when covered"
        );
        let unmap_all = Call::new(Cmd::Unmap {
            ioas: Id::Obj(1),
            iova: 0,
            length: u64::MAX,
        });
        m.apply(&unmap_all, &ok(vec![]));
        assert!(m.objs[1].areas.is_empty());
        m.apply(&Call::new(Cmd::Destroy { id: Id::Obj(0) }), &ok(vec![]));
        assert_eq!(m.alive(), vec![1]);
    }

    fn map_at(k: usize, user_va: Addr, pages: u64, iova: u64) -> (Call, Outcome) {
        let c = Call::new(Cmd::Map {
            ioas: Id::Obj(k),
            flags: FIXED_RW,
            reserved: 0,
            user_va,
            length: pages * PAGE,
            iova,
        });
        let out = IommuIoasMap {
            iova,
            length: pages * PAGE,
            ..IommuIoasMap::new()
        };
        (c, ok(struct_bytes(&out)))
    }

    fn memfd_at(k: usize, start_page: u64, pages: u64, iova: u64) -> (Call, Outcome) {
        let c = Call::new(Cmd::MapFile {
            ioas: Id::Obj(k),
            flags: FIXED_RW,
            fd: Fd::Memfd,
            start: start_page * PAGE,
            length: pages * PAGE,
            iova,
        });
        let out = IommuIoasMapFile {
            iova,
            ..IommuIoasMapFile::new()
        };
        (c, ok(struct_bytes(&out)))
    }

    fn copy_of(
        dst: usize,
        src: usize,
        src_iova: u64,
        pages: u64,
        dst_iova: u64,
    ) -> (Call, Outcome) {
        let c = Call::new(Cmd::Copy {
            dst: Id::Obj(dst),
            src: Id::Obj(src),
            flags: FIXED_RW,
            length: pages * PAGE,
            dst_iova,
            src_iova,
        });
        let out = IommuIoasCopy {
            dst_iova,
            ..IommuIoasCopy::new()
        };
        (c, ok(struct_bytes(&out)))
    }

    fn unmap_of(k: usize, iova: u64, length: u64) -> Call {
        Call::new(Cmd::Unmap {
            ioas: Id::Obj(k),
            iova,
            length,
        })
    }

    /// Apply the same calls to a mainline and a /dev/ioasid model; the
    /// predicted VmPin deltas (kB).
    fn deltas(steps: &[(Call, Outcome)]) -> Vec<(i64, i64)> {
        let mut m = PinModel::new(PinRule::PagesObject, false);
        let mut t = PinModel::new(PinRule::DistinctPerFile, false);
        steps
            .iter()
            .map(|(c, o)| (m.apply(c, o, &ids).pin_kb, t.apply(c, o, &ids).pin_kb))
            .collect()
    }

    const A: u64 = 0x10_0000;

    /// Object k has device id k + 1.
    fn ids(i: Id) -> u32 {
        match i {
            Id::Obj(k) => k as u32 + 1,
            Id::Raw(v) => v,
        }
    }

    /// Areas belong to the device's ids: a stale object index whose id was
    /// handed out again names the new IOAS.
    #[test]
    fn areas_follow_the_device_ids() {
        let mut t = PinModel::new(PinRule::DistinctPerFile, false);
        // Object 1 got id 1 again after object 0 (id 1) was destroyed.
        let reused = |i: Id| match i {
            Id::Obj(0 | 1) => 1,
            Id::Obj(k) => k as u32 + 1,
            Id::Raw(v) => v,
        };
        let (c, o) = map_at(1, Addr::Arena(0), 2, A);
        assert_eq!(t.apply(&c, &o, &reused).pin_kb, 8);
        let destroy0 = Call::new(Cmd::Destroy { id: Id::Obj(0) });
        assert_eq!(t.apply(&destroy0, &ok(vec![]), &reused).pin_kb, -8);
        let (c, o) = map_at(2, Addr::Arena(0), 2, A);
        assert_eq!(t.apply(&c, &o, &reused).pin_kb, 8);
        let raw = Call::new(Cmd::Destroy { id: Id::Raw(3) });
        assert_eq!(t.apply(&raw, &ok(vec![]), &reused).pin_kb, -8);
    }

    #[test]
    fn same_pages_twice_count_once_on_ioasid_only() {
        let d = deltas(&[
            map_at(0, Addr::Arena(0), 4, A),
            // The same arena pages again, and overlapping ones in another IOAS.
            map_at(0, Addr::Arena(0), 4, A + 0x10_000),
            map_at(1, Addr::Arena(2 * PAGE), 4, A),
            // Unmapping one of three maps of page 0..4 frees nothing on ioasid.
            (unmap_of(0, A, 4 * PAGE), ok(vec![])),
            (unmap_of(0, A + 0x10_000, 4 * PAGE), ok(vec![])),
            (Call::new(Cmd::Destroy { id: Id::Obj(1) }), ok(vec![])),
        ]);
        assert_eq!(
            d,
            vec![(16, 16), (16, 0), (16, 8), (-16, 0), (-16, -8), (-16, -16)]
        );
    }

    #[test]
    fn memfd_arena_and_read_only_pages_are_distinct() {
        let d = deltas(&[
            map_at(0, Addr::Arena(0), 2, A),
            memfd_at(0, 0, 2, A + 0x10_000),
            map_at(0, Addr::ReadOnly(0), 2, A + 0x20_000),
            memfd_at(1, 1, 2, A),
        ]);
        assert_eq!(d, vec![(8, 8), (8, 8), (8, 8), (8, 4)]);
    }

    #[test]
    fn copies_share_the_source_pages() {
        // Whole copy, then unmap of the source: still pinned by the copy.
        let d = deltas(&[
            map_at(0, Addr::Arena(0), 4, A),
            copy_of(1, 0, A, 4, A + 0x40_000),
            (unmap_of(0, 0, u64::MAX), ok(vec![])),
            (unmap_of(1, 0, u64::MAX), ok(vec![])),
        ]);
        assert_eq!(d, vec![(16, 16), (0, 0), (0, 0), (-16, -16)]);
        // A partial copy: mainline unpins the pages no area uses, /dev/ioasid
        // keeps the whole source pages object while the copy lives.
        let d = deltas(&[
            map_at(0, Addr::Arena(0), 4, A),
            copy_of(1, 0, A + PAGE, 1, A),
            (unmap_of(0, A, 4 * PAGE), ok(vec![])),
            (Call::new(Cmd::Destroy { id: Id::Obj(1) }), ok(vec![])),
        ]);
        assert_eq!(d, vec![(16, 16), (0, 0), (-12, 0), (-4, -16)]);
        // A copy across two adjacent source areas makes two areas.
        let d = deltas(&[
            map_at(0, Addr::Arena(0), 2, A),
            map_at(0, Addr::Arena(8 * PAGE), 2, A + 2 * PAGE),
            copy_of(0, 0, A + PAGE, 2, A + 0x10_000),
            (unmap_of(0, A, 4 * PAGE), ok(vec![])),
            (unmap_of(0, A + 0x10_000, PAGE), ok(vec![])),
            (unmap_of(0, A + 0x11_000, PAGE), ok(vec![])),
        ]);
        assert_eq!(
            d,
            vec![(8, 8), (8, 8), (0, 0), (-8, -0), (-4, -8), (-4, -8)]
        );
    }

    #[test]
    fn failed_calls_pin_nothing_but_enoent_unmaps_the_areas_before() {
        let (c, o) = map_at(0, Addr::Arena(0), 2, A);
        let failed = Outcome {
            ret: Err(libc::EINVAL),
            ..o.clone()
        };
        let enoent = Outcome {
            ret: Err(libc::ENOENT),
            ..ok(vec![])
        };
        let d = deltas(&[
            (c.clone(), failed),
            (c, o),
            map_at(0, Addr::Arena(4 * PAGE), 4, A + 2 * PAGE),
            // Covers the first area, cuts the second: ENOENT, first unmapped.
            (unmap_of(0, A, 3 * PAGE), enoent),
        ]);
        assert_eq!(d, vec![(0, 0), (8, 8), (16, 16), (-8, -8)]);
        let areas = [
            (A, 2 * PAGE),
            (A + 2 * PAGE, 4 * PAGE),
            (A + 0x10_000, PAGE),
        ];
        assert_eq!(unmapped(&areas, |a| *a, A, 3 * PAGE), vec![A]);
        assert_eq!(
            unmapped(&areas, |a| *a, A + PAGE, 8 * PAGE),
            Vec::<u64>::new()
        );
        assert_eq!(unmapped(&areas, |a| *a, 0, u64::MAX).len(), 3);
        assert!(unmapped(&areas, |a| *a, A, 0).is_empty());
        assert!(unmapped(&areas, |a| *a, u64::MAX, 2).is_empty());
        // The generator's model agrees.
        let mut m = Model::default();
        m.apply(&Call::new(Cmd::Alloc { flags: 0 }), &ok(vec![]));
        m.objs[0].areas = areas.to_vec();
        m.apply(
            &unmap_of(0, A, 3 * PAGE),
            &Outcome {
                ret: Err(libc::ENOENT),
                ..ok(vec![])
            },
        );
        assert_eq!(m.objs[0].areas, areas[1..].to_vec());
    }

    #[test]
    fn locked_vm_only_in_mm_mode_without_cap_ipc_lock() {
        let mode = |v| {
            Call::new(Cmd::Option {
                option_id: IOMMU_OPTION_RLIMIT_MODE,
                op: IOMMU_OPTION_OP_SET,
                reserved: 0,
                object: Id::Raw(0),
                val64: v,
            })
        };
        for (charges, expect) in [(false, 0), (true, 8)] {
            let mut t = PinModel::new(PinRule::DistinctPerFile, charges);
            let (c, o) = map_at(0, Addr::Arena(0), 2, A);
            assert_eq!(t.apply(&c, &o, &ids).lck_kb, 0, "user mode: not in VmLck");
            t.close();
            assert_eq!(t.apply(&mode(1), &ok(vec![]), &ids).lck_kb, 0);
            let d = t.apply(&c, &o, &ids);
            assert_eq!((d.pin_kb, d.lck_kb), (8, expect));
            let (c2, o2) = map_at(0, Addr::Arena(0), 2, A + 0x10_000);
            assert_eq!(t.apply(&c2, &o2, &ids).lck_kb, 0, "same pages");
            t.close();
            assert_eq!(t.counters(), MemCounters::default());
        }
        let mut bare = PinModel::new(PinRule::Unpinned, true);
        let (c, o) = map_at(0, Addr::Arena(0), 2, A);
        assert_eq!(bare.apply(&c, &o, &ids), MemCounters::default());
    }
}
