//! The calls: fixed bad-input cases, one per class of the iommufd error
//! contract, and seeded random calls driven by the [`Model`].

use super::call::*;
use super::exec::{ARENA_PAGES, MEMFD_PAGES, PAGE};
use super::model::Model;
use super::ops::{Op, OpSet};
use super::prng::Rng;
use ioasid_uapi::iommufd::*;

/// Where fixed-IOVA maps go (inside every IOVA range of a fresh IOAS).
pub const IOVA_BASE: u64 = 0x10_0000;
/// Number of page slots above IOVA_BASE the random calls use: small, so
/// that overlaps and splits happen often.
pub const IOVA_SLOTS: u64 = 32;
/// Ids that a sequence never allocates.
pub const BOGUS_IDS: [u32; 3] = [0, 0x00ff_ffff, u32::MAX];

/// A named list of calls run on fresh file descriptors.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub calls: Vec<Call>,
}

impl Case {
    /// The ops this case issues.
    pub fn ops(&self) -> OpSet {
        let mut s = OpSet::empty();
        for c in &self.calls {
            s.insert(c.op());
        }
        s
    }
}

// --- builders -------------------------------------------------------------

fn o(k: usize) -> Id {
    Id::Obj(k)
}
fn alloc() -> Call {
    Call::new(Cmd::Alloc { flags: 0 })
}
fn destroy(id: Id) -> Call {
    Call::new(Cmd::Destroy { id })
}
fn map_f(ioas: Id, flags: u32, user_va: Addr, length: u64, iova: u64) -> Call {
    Call::new(Cmd::Map {
        ioas,
        flags,
        reserved: 0,
        user_va,
        length,
        iova,
    })
}
fn map(k: usize, page: u64, pages: u64, iova: u64) -> Call {
    map_f(o(k), FIXED_RW, Addr::Arena(page * PAGE), pages * PAGE, iova)
}
fn map_file(ioas: Id, flags: u32, fd: Fd, start: u64, length: u64, iova: u64) -> Call {
    Call::new(Cmd::MapFile {
        ioas,
        flags,
        fd,
        start,
        length,
        iova,
    })
}
fn unmap(ioas: Id, iova: u64, length: u64) -> Call {
    Call::new(Cmd::Unmap { ioas, iova, length })
}
fn copy(dst: Id, src: Id, flags: u32, length: u64, dst_iova: u64, src_iova: u64) -> Call {
    Call::new(Cmd::Copy {
        dst,
        src,
        flags,
        length,
        dst_iova,
        src_iova,
    })
}
fn ranges(ioas: Id, num_iovas: u32, ptr: RangesPtr) -> Call {
    Call::new(Cmd::IovaRanges {
        ioas,
        num_iovas,
        reserved: 0,
        ptr,
    })
}
fn allow(ioas: Id, r: &[(u64, u64)]) -> Call {
    Call::new(Cmd::AllowIovas {
        ioas,
        ranges: r.to_vec(),
        num_iovas: None,
        reserved: 0,
        ptr: RangesPtr::Scratch,
    })
}
fn opt(option_id: u32, op: u16, object: Id, val64: u64) -> Call {
    Call::new(Cmd::Option {
        option_id,
        op,
        reserved: 0,
        object,
        val64,
    })
}
fn sized(mut c: Call, size: Size) -> Call {
    c.size = size;
    c
}
fn over(nonzero: bool) -> Size {
    Size::Over { extra: 8, nonzero }
}

/// The size-rule calls of one command: short sizes, oversized with zero
/// and non-zero tail (a valid call otherwise).
fn size_rules(c: &Call) -> Vec<Call> {
    let n = c.struct_size();
    vec![
        sized(c.clone(), Size::Short(0)),
        sized(c.clone(), Size::Short(4)),
        sized(c.clone(), Size::Short(n - 4)),
        sized(c.clone(), Size::Short(n - 1)),
        sized(c.clone(), over(true)),
        sized(
            c.clone(),
            Size::Over {
                extra: 4096,
                nonzero: true,
            },
        ),
        sized(c.clone(), over(false)),
    ]
}

fn case(name: &str, calls: Vec<Call>) -> Case {
    Case {
        name: name.to_string(),
        calls,
    }
}

/// The highest page-aligned address.
const TOP: u64 = !(PAGE - 1);

/// The fixed cases, one or more per bad-input class.
pub fn fixed_cases() -> Vec<Case> {
    let a = IOVA_BASE;
    let mut v = vec![
        // --- IOAS_ALLOC / DESTROY
        case(
            "alloc/destroy: ids, reuse of the lowest free id, ENOENT",
            vec![
                alloc(),
                alloc(),
                alloc(),
                destroy(o(1)),
                alloc(),
                destroy(o(1)),
                destroy(o(0)),
                destroy(o(2)),
                destroy(o(3)),
                destroy(o(3)),
                alloc(),
            ],
        ),
        case(
            "alloc: unknown flags",
            vec![
                Call::new(Cmd::Alloc { flags: 1 }),
                Call::new(Cmd::Alloc { flags: 1 << 31 }),
                alloc(),
            ],
        ),
        case("alloc: size rules", {
            let mut c = size_rules(&alloc());
            c.push(alloc());
            c
        }),
        case(
            "destroy: ids that do not exist",
            vec![
                destroy(Id::Raw(0)),
                destroy(Id::Raw(1)),
                destroy(Id::Raw(0x00ff_ffff)),
                destroy(Id::Raw(u32::MAX)),
            ],
        ),
        case("destroy: size rules", {
            let mut c = vec![alloc(), alloc()];
            c.extend(size_rules(&destroy(o(0))));
            c.push(destroy(o(1)));
            c
        }),
        // --- IOVA_RANGES
        case(
            "iova_ranges: fresh IOAS, EMSGSIZE, pointers, reserved, ids",
            vec![
                alloc(),
                ranges(o(0), 0, RangesPtr::Null),
                ranges(o(0), 0, RangesPtr::Scratch),
                ranges(o(0), 1, RangesPtr::Scratch),
                ranges(o(0), RANGES_CAP as u32, RangesPtr::Scratch),
                ranges(o(0), 1, RangesPtr::Null),
                ranges(o(0), 1, RangesPtr::ReadOnly),
                Call::new(Cmd::IovaRanges {
                    ioas: o(0),
                    num_iovas: 1,
                    reserved: 1,
                    ptr: RangesPtr::Scratch,
                }),
                ranges(Id::Raw(0), 1, RangesPtr::Scratch),
                ranges(Id::Raw(0x00ff_ffff), 1, RangesPtr::Scratch),
            ],
        ),
        case("iova_ranges: size rules", {
            let mut c = vec![alloc()];
            c.extend(size_rules(&ranges(o(0), 4, RangesPtr::Scratch)));
            c
        }),
        // --- ALLOW_IOVAS
        case(
            "allow_iovas: set, query, invalid lists, clear",
            vec![
                alloc(),
                allow(o(0), &[(a, a + 0xf_ffff)]),
                ranges(o(0), 4, RangesPtr::Scratch),
                allow(o(0), &[(a, a + 0xf_ffff), (a + 0x20_0000, a + 0x2f_ffff)]),
                ranges(o(0), 4, RangesPtr::Scratch),
                allow(o(0), &[(a, a)]),
                allow(o(0), &[(a + 0x1000, a)]),
                allow(o(0), &[(a, a + 0xf_ffff), (a + 0x8_0000, a + 0x1f_ffff)]),
                allow(o(0), &[(0, u64::MAX)]),
                allow(o(0), &[(a + 0x800, a + 0x17ff)]),
                Call::new(Cmd::AllowIovas {
                    ioas: o(0),
                    ranges: vec![],
                    num_iovas: Some(2),
                    reserved: 0,
                    ptr: RangesPtr::Null,
                }),
                Call::new(Cmd::AllowIovas {
                    ioas: o(0),
                    ranges: vec![(a, a + 0xfff)],
                    num_iovas: None,
                    reserved: 1,
                    ptr: RangesPtr::Scratch,
                }),
                allow(Id::Raw(0x00ff_ffff), &[(a, a + 0xfff)]),
                allow(o(0), &[]),
                ranges(o(0), 4, RangesPtr::Scratch),
            ],
        ),
        case("allow_iovas: size rules", {
            let mut c = vec![alloc()];
            c.extend(size_rules(&allow(o(0), &[(a, a + 0xffff)])));
            c
        }),
        // --- MAP
        case(
            "map: flags, reserved, ids",
            vec![
                alloc(),
                map_f(o(0), IOMMU_IOAS_MAP_FIXED_IOVA, Addr::Arena(0), PAGE, a),
                map_f(o(0), FIXED_RW | 1 << 3, Addr::Arena(0), PAGE, a),
                map_f(o(0), FIXED_RW | 1 << 31, Addr::Arena(0), PAGE, a),
                Call::new(Cmd::Map {
                    ioas: o(0),
                    flags: FIXED_RW,
                    reserved: 1,
                    user_va: Addr::Arena(0),
                    length: PAGE,
                    iova: a,
                }),
                map_f(Id::Raw(0), FIXED_RW, Addr::Arena(0), PAGE, a),
                map_f(Id::Raw(0x00ff_ffff), FIXED_RW, Addr::Arena(0), PAGE, a),
                map_f(
                    o(0),
                    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                    Addr::Arena(0),
                    PAGE,
                    a,
                ),
                map_f(
                    o(0),
                    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
                    Addr::Arena(0),
                    PAGE,
                    a + 0x10000,
                ),
                ranges(o(0), 4, RangesPtr::Scratch),
            ],
        ),
        case(
            "map: zero length, overflow of iova+length and user_va+length",
            vec![
                alloc(),
                map_f(o(0), FIXED_RW, Addr::Arena(0), 0, a),
                map_f(o(0), FIXED_RW, Addr::Arena(0), PAGE, u64::MAX),
                map_f(o(0), FIXED_RW, Addr::Arena(0), u64::MAX, a),
                map_f(o(0), FIXED_RW, Addr::Arena(0), 2 * PAGE, TOP),
                map_f(o(0), FIXED_RW, Addr::Arena(0), 1 << 63, 1 << 63),
                map_f(o(0), FIXED_RW, Addr::Raw(TOP), 2 * PAGE, a),
                map_f(o(0), RW, Addr::Arena(0), u64::MAX - PAGE, 0),
            ],
        ),
        case(
            "map: unaligned iova, length, user address",
            vec![
                alloc(),
                map_f(o(0), FIXED_RW, Addr::Arena(0), PAGE, a + 0x800),
                map_f(o(0), FIXED_RW, Addr::Arena(0), PAGE + 0x800, a),
                map_f(o(0), FIXED_RW, Addr::Arena(0x800), PAGE, a),
                map_f(o(0), FIXED_RW, Addr::Arena(0x800), PAGE, a + 0x10800),
                map_f(o(0), FIXED_RW, Addr::Arena(1), 1, a + 0x20001),
                map_f(o(0), RW, Addr::Arena(0x800), PAGE, 0),
                ranges(o(0), 4, RangesPtr::Scratch),
                unmap(o(0), 0, u64::MAX),
            ],
        ),
        case(
            "map: read-only, PROT_NONE, unmapped and kernel user memory with WRITEABLE",
            vec![
                alloc(),
                map_f(o(0), FIXED_RW, Addr::ReadOnly(0), 4 * PAGE, a),
                map_f(
                    o(0),
                    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                    Addr::ReadOnly(0),
                    4 * PAGE,
                    a + 0x10000,
                ),
                map_f(o(0), FIXED_RW, Addr::NoAccess(0), 4 * PAGE, a + 0x20000),
                map_f(o(0), FIXED_RW, Addr::Hole(0), 4 * PAGE, a + 0x30000),
                map_f(o(0), FIXED_RW, Addr::Raw(0), 4 * PAGE, a + 0x40000),
                map_f(
                    o(0),
                    FIXED_RW,
                    Addr::Raw(0xffff_8000_0000_0000),
                    4 * PAGE,
                    a + 0x50000,
                ),
                unmap(o(0), 0, u64::MAX),
            ],
        ),
        case(
            "map: overlap with existing areas, adjacency, kernel-chosen IOVAs",
            vec![
                alloc(),
                map(0, 0, 4, a + 0x4000),
                map(0, 0, 4, a + 0x4000),
                map(0, 8, 2, a + 0x3000),
                map(0, 8, 2, a + 0x7000),
                map(0, 8, 8, a),
                map(0, 8, 4, a),
                map(0, 12, 4, a + 0x8000),
                map_f(o(0), RW, Addr::Arena(0), 4 * PAGE, 0),
                map_f(o(0), RW, Addr::Arena(16 * PAGE), 16 * PAGE, 0),
                map_f(o(0), RW, Addr::Arena(0), PAGE, 0xdead_0000),
                ranges(o(0), 4, RangesPtr::Scratch),
                unmap(o(0), 0, u64::MAX),
            ],
        ),
        case(
            "map: IOVA outside the allowed ranges",
            vec![
                alloc(),
                allow(o(0), &[(a, a + 0xf_ffff)]),
                map(0, 0, 1, a - PAGE),
                map(0, 0, 2, a + 0xf_f000),
                map(0, 0, 1, a + 0x10_0000),
                map(0, 0, 1, a),
                map(0, 0, 1, a + 0xf_f000),
                map_f(o(0), RW, Addr::Arena(0), 4 * PAGE, 0),
                map_f(o(0), RW, Addr::Arena(0), 0x20_0000, 0),
                allow(o(0), &[(a + 0x10_0000, a + 0x1f_ffff)]),
                ranges(o(0), 4, RangesPtr::Scratch),
                unmap(o(0), 0, u64::MAX),
                allow(o(0), &[(a + 0x10_0000, a + 0x1f_ffff)]),
            ],
        ),
        case("map: size rules", {
            let mut c = vec![alloc()];
            c.extend(size_rules(&map(0, 0, 1, a)));
            c.push(unmap(o(0), 0, u64::MAX));
            c
        }),
        // --- MAP_FILE
        case(
            "map_file: memfd, flags, fds, offsets, overflow",
            vec![
                alloc(),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0, 4 * PAGE, a),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0, 4 * PAGE, a),
                map_file(o(0), FIXED_RW, Fd::Memfd, 4 * PAGE, 4 * PAGE, a + 0x10000),
                map_file(o(0), RW, Fd::Memfd, 8 * PAGE, 4 * PAGE, 0),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0x800, PAGE, a + 0x20800),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0x800, PAGE, a + 0x30000),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0, 0, a + 0x40000),
                map_file(
                    o(0),
                    FIXED_RW,
                    Fd::Memfd,
                    u64::MAX - PAGE,
                    2 * PAGE,
                    a + 0x40000,
                ),
                map_file(o(0), FIXED_RW, Fd::Memfd, 0, u64::MAX, a + 0x40000),
                map_file(
                    o(0),
                    FIXED_RW,
                    Fd::Memfd,
                    (MEMFD_PAGES - 1) * PAGE,
                    4 * PAGE,
                    a + 0x50000,
                ),
                map_file(o(0), FIXED_RW, Fd::Raw(-1), 0, PAGE, a + 0x60000),
                map_file(o(0), FIXED_RW, Fd::Raw(99_999), 0, PAGE, a + 0x60000),
                map_file(
                    o(0),
                    IOMMU_IOAS_MAP_FIXED_IOVA,
                    Fd::Memfd,
                    0,
                    PAGE,
                    a + 0x60000,
                ),
                map_file(o(0), FIXED_RW | 1 << 3, Fd::Memfd, 0, PAGE, a + 0x60000),
                map_file(
                    Id::Raw(0x00ff_ffff),
                    FIXED_RW,
                    Fd::Memfd,
                    0,
                    PAGE,
                    a + 0x60000,
                ),
                ranges(o(0), 4, RangesPtr::Scratch),
                unmap(o(0), 0, u64::MAX),
            ],
        ),
        case("map_file: size rules", {
            let mut c = vec![alloc()];
            c.extend(size_rules(&map_file(o(0), FIXED_RW, Fd::Memfd, 0, PAGE, a)));
            c.push(unmap(o(0), 0, u64::MAX));
            c
        }),
        // --- UNMAP
        case(
            "unmap: splits, partial covers, exact, ENOENT, all",
            vec![
                alloc(),
                map(0, 0, 4, a),
                map(0, 4, 4, a + 0x4000),
                map(0, 8, 2, a + 0x10000),
                unmap(o(0), a + PAGE, PAGE),
                unmap(o(0), a, PAGE),
                unmap(o(0), a + PAGE, 4 * PAGE),
                unmap(o(0), a + 0x2000, 0x4000),
                unmap(o(0), a, 4 * PAGE),
                unmap(o(0), a, 4 * PAGE),
                unmap(o(0), a + 0x20000, PAGE),
                unmap(o(0), a + 0x4000, 0x10000),
                unmap(o(0), 0, u64::MAX),
                unmap(o(0), 0, u64::MAX),
            ],
        ),
        case(
            "unmap: zero length, overflow, unaligned, ids",
            vec![
                alloc(),
                map(0, 0, 4, a),
                unmap(o(0), a, 0),
                unmap(o(0), a, u64::MAX),
                unmap(o(0), TOP, 2 * PAGE),
                unmap(o(0), u64::MAX, 1),
                unmap(o(0), a + 0x800, PAGE),
                unmap(o(0), a, PAGE + 0x800),
                unmap(o(0), a, 4 * PAGE - 1),
                unmap(Id::Raw(0), a, 4 * PAGE),
                unmap(Id::Raw(0x00ff_ffff), a, 4 * PAGE),
                unmap(o(0), a, 4 * PAGE),
            ],
        ),
        case("unmap: size rules", {
            let mut c = vec![alloc(), map(0, 0, 1, a), map(0, 1, 1, a + PAGE)];
            c.extend(size_rules(&unmap(o(0), a, PAGE)));
            c.push(unmap(o(0), 0, u64::MAX));
            c
        }),
        // --- COPY
        case(
            "copy: whole and partial areas, flags, overlap, ids, kernel-chosen IOVA",
            vec![
                alloc(),
                alloc(),
                map(0, 0, 4, a),
                copy(o(1), o(0), FIXED_RW, 4 * PAGE, a, a),
                copy(o(1), o(0), FIXED_RW, 4 * PAGE, a, a),
                copy(o(1), o(0), FIXED_RW, 2 * PAGE, a + 0x10000, a + PAGE),
                copy(o(1), o(0), FIXED_RW, 8 * PAGE, a + 0x20000, a),
                copy(o(1), o(0), FIXED_RW, PAGE, a + 0x30000, a + 0x40000),
                copy(o(1), o(0), IOMMU_IOAS_MAP_FIXED_IOVA, PAGE, a + 0x30000, a),
                copy(o(1), o(0), FIXED_RW | 1 << 3, PAGE, a + 0x30000, a),
                copy(o(1), o(0), FIXED_RW, 0, a + 0x30000, a),
                copy(o(1), o(0), FIXED_RW, u64::MAX, a + 0x30000, a),
                copy(o(1), o(0), FIXED_RW, PAGE, u64::MAX, a),
                copy(o(1), o(0), FIXED_RW, PAGE, a + 0x30800, a),
                copy(o(1), o(0), FIXED_RW, PAGE, a + 0x30000, a + 0x800),
                copy(o(0), o(0), FIXED_RW, PAGE, a + 2 * PAGE, a),
                copy(o(0), o(0), FIXED_RW, PAGE, a + 0x50000, a),
                copy(o(1), o(0), RW, 4 * PAGE, 0, a),
                copy(Id::Raw(0x00ff_ffff), o(0), FIXED_RW, PAGE, a + 0x60000, a),
                copy(o(1), Id::Raw(0x00ff_ffff), FIXED_RW, PAGE, a + 0x60000, a),
                ranges(o(1), 4, RangesPtr::Scratch),
                unmap(o(0), 0, u64::MAX),
                unmap(o(1), 0, u64::MAX),
            ],
        ),
        case(
            "copy: destination outside the allowed ranges",
            vec![
                alloc(),
                alloc(),
                map(0, 0, 4, a),
                allow(o(1), &[(a + 0x10_0000, a + 0x1f_ffff)]),
                copy(o(1), o(0), FIXED_RW, 4 * PAGE, a, a),
                copy(o(1), o(0), FIXED_RW, 4 * PAGE, a + 0x10_0000, a),
                copy(o(1), o(0), RW, 4 * PAGE, 0, a),
                unmap(o(1), 0, u64::MAX),
            ],
        ),
        case("copy: size rules", {
            let mut c = vec![alloc(), alloc(), map(0, 0, 1, a)];
            c.extend(size_rules(&copy(o(1), o(0), RW, PAGE, 0, a)));
            c.push(unmap(o(1), 0, u64::MAX));
            c
        }),
        // --- OPTION
        case(
            "option: huge pages, rlimit mode, unknown options and ops",
            vec![
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, Id::Raw(0), 0),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, Id::Raw(0), 2),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, Id::Raw(0), 1),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, Id::Raw(0), 0),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, Id::Raw(0), 0),
                alloc(),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, Id::Raw(0), 1),
                opt(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, o(0), 2),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, o(0), 1),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, 2, o(0), 0),
                opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, Id::Raw(0), 0),
                opt(
                    IOMMU_OPTION_HUGE_PAGES,
                    IOMMU_OPTION_OP_GET,
                    Id::Raw(0x00ff_ffff),
                    0,
                ),
                opt(7, IOMMU_OPTION_OP_GET, o(0), 0),
                opt(7, IOMMU_OPTION_OP_GET, Id::Raw(0), 0),
                Call::new(Cmd::Option {
                    option_id: IOMMU_OPTION_HUGE_PAGES,
                    op: IOMMU_OPTION_OP_GET,
                    reserved: 1,
                    object: o(0),
                    val64: 0,
                }),
            ],
        ),
        case("option: size rules", {
            let mut c = vec![alloc()];
            c.extend(size_rules(&opt(
                IOMMU_OPTION_HUGE_PAGES,
                IOMMU_OPTION_OP_GET,
                o(0),
                0,
            )));
            c
        }),
    ];
    // Huge pages off changes nothing visible without a domain; map after it.
    v.push(case(
        "option: huge pages off, then map and unmap",
        vec![
            alloc(),
            opt(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, o(0), 0),
            map(0, 0, 8, a),
            unmap(o(0), a, 8 * PAGE),
        ],
    ));
    v
}

/// The fixed cases whose every call is in `ops`.
pub fn fixed_cases_for(ops: OpSet) -> Vec<Case> {
    fixed_cases()
        .into_iter()
        .filter(|c| ops.contains_all(c.ops()))
        .collect()
}

// --- random calls ------------------------------------------------------------

fn weight(op: Op) -> u64 {
    match op {
        Op::Alloc => 2,
        Op::Destroy => 1,
        Op::IovaRanges => 1,
        Op::AllowIovas => 1,
        Op::Map => 5,
        Op::MapFile => 2,
        Op::Unmap => 3,
        Op::Copy => 2,
        Op::Option => 1,
    }
}

fn pick_op(rng: &mut Rng, m: &Model, ops: OpSet) -> Option<Op> {
    // Nothing to work on yet: allocate first when allowed.
    if m.alive().is_empty() && ops.contains(Op::Alloc) && !rng.chance(1, 10) {
        return Some(Op::Alloc);
    }
    let total: u64 = ops.iter().map(weight).sum();
    let mut x = rng.below(total);
    for op in ops.iter() {
        if x < weight(op) {
            return Some(op);
        }
        x -= weight(op);
    }
    None
}

fn pick_ioas(rng: &mut Rng, m: &Model) -> Id {
    let alive = m.alive();
    if !alive.is_empty()
        && !rng.chance(1, 10)
        && let Some(&k) = rng.pick(&alive)
    {
        return Id::Obj(k);
    }
    if !m.objs.is_empty() && rng.chance(1, 2) {
        return Id::Obj(rng.below(m.objs.len() as u64) as usize);
    }
    Id::Raw(*rng.pick(&BOGUS_IDS).unwrap_or(&0))
}

fn rand_iova(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=3 => IOVA_BASE + PAGE * rng.below(IOVA_SLOTS) + 0x800,
        4..=5 => TOP,
        6 => u64::MAX,
        _ => IOVA_BASE + PAGE * rng.below(IOVA_SLOTS),
    }
}

fn rand_len(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=3 => 0,
        4..=7 => PAGE * rng.range(1, 4) + 0x100,
        8..=9 => u64::MAX,
        _ => PAGE * rng.range(1, 8),
    }
}

fn rand_flags(rng: &mut Rng) -> u32 {
    match rng.below(100) {
        0..=64 => FIXED_RW,
        65..=79 => RW,
        80..=84 => IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
        85..=89 => IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        90..=94 => IOMMU_IOAS_MAP_FIXED_IOVA,
        _ => FIXED_RW | (1 << rng.range(3, 31)),
    }
}

fn rand_user_va(rng: &mut Rng) -> Addr {
    let page = PAGE * rng.below(ARENA_PAGES - 8);
    match rng.below(100) {
        0..=3 => Addr::Arena(page + 0x800),
        4..=5 => Addr::ReadOnly(0),
        6..=7 => Addr::NoAccess(0),
        8 => Addr::Hole(0),
        9 => Addr::Raw(0),
        _ => Addr::Arena(page),
    }
}

/// A range within or around an existing area of `ioas`, if it has any.
fn around_area(rng: &mut Rng, m: &Model, ioas: Id) -> Option<(u64, u64)> {
    let Id::Obj(k) = ioas else { return None };
    let areas = &m.objs.get(k)?.areas;
    let &(iova, len) = rng.pick(areas)?;
    let pages = len / PAGE;
    Some(match rng.below(10) {
        0..=4 => (iova, len),
        // A middle part: splits the area.
        5..=6 if pages >= 2 => {
            let first = rng.range(if pages >= 3 { 1 } else { 0 }, pages - 1);
            (
                iova.wrapping_add(first * PAGE),
                PAGE * rng.range(1, (pages - first).min(1 << 20)),
            )
        }
        // Covering this area and its neighbours.
        7 => (
            iova.saturating_sub(PAGE * rng.below(4)),
            len.saturating_add(PAGE * rng.below(8)),
        ),
        _ => (iova, len),
    })
}

fn rand_size(rng: &mut Rng, c: &Call) -> Size {
    if !rng.chance(1, 12) {
        return Size::Exact;
    }
    let n = c.struct_size();
    match rng.below(6) {
        0 => Size::Short(0),
        1 => Size::Short(4),
        2 => Size::Short(n - 1),
        3 => Size::Over {
            extra: *rng.pick(&[4u32, 8, 64]).unwrap_or(&8),
            nonzero: false,
        },
        _ => Size::Over {
            extra: *rng.pick(&[4u32, 8, 64]).unwrap_or(&8),
            nonzero: true,
        },
    }
}

/// One random call, using only ops of `ops` (`None` only if `ops` is empty).
pub fn random_call(rng: &mut Rng, m: &Model, ops: OpSet) -> Option<Call> {
    let op = pick_op(rng, m, ops)?;
    let cmd = match op {
        Op::Alloc => Cmd::Alloc {
            flags: if rng.chance(1, 20) {
                1 << rng.below(32)
            } else {
                0
            },
        },
        Op::Destroy => Cmd::Destroy {
            id: pick_ioas(rng, m),
        },
        Op::IovaRanges => Cmd::IovaRanges {
            ioas: pick_ioas(rng, m),
            num_iovas: *rng.pick(&[0u32, 1, 2, RANGES_CAP as u32]).unwrap_or(&1),
            reserved: u32::from(rng.chance(1, 30)),
            ptr: if rng.chance(1, 20) {
                RangesPtr::Null
            } else {
                RangesPtr::Scratch
            },
        },
        Op::AllowIovas => {
            let n = rng.below(4);
            let mut ranges: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let s = IOVA_BASE + PAGE * rng.below(IOVA_SLOTS);
                    (s, s + PAGE * rng.range(1, 16) - 1)
                })
                .collect();
            if rng.chance(1, 20) {
                ranges.push((IOVA_BASE, IOVA_BASE));
            }
            let null = rng.chance(1, 40);
            Cmd::AllowIovas {
                ioas: pick_ioas(rng, m),
                num_iovas: if null { Some(2) } else { None },
                ranges,
                reserved: u32::from(rng.chance(1, 40)),
                ptr: if null {
                    RangesPtr::Null
                } else {
                    RangesPtr::Scratch
                },
            }
        }
        Op::Map => Cmd::Map {
            ioas: pick_ioas(rng, m),
            flags: rand_flags(rng),
            reserved: u32::from(rng.chance(1, 40)),
            user_va: rand_user_va(rng),
            length: rand_len(rng),
            iova: rand_iova(rng),
        },
        Op::MapFile => Cmd::MapFile {
            ioas: pick_ioas(rng, m),
            flags: rand_flags(rng),
            fd: match rng.below(40) {
                0 => Fd::Raw(-1),
                1 => Fd::Raw(99_999),
                _ => Fd::Memfd,
            },
            start: PAGE * rng.below(MEMFD_PAGES - 8) + if rng.chance(1, 20) { 0x800 } else { 0 },
            length: rand_len(rng),
            iova: rand_iova(rng),
        },
        Op::Unmap => {
            let ioas = pick_ioas(rng, m);
            let (iova, length) = match rng.below(10) {
                0 => (0, u64::MAX),
                1..=6 => around_area(rng, m, ioas).unwrap_or((rand_iova(rng), rand_len(rng))),
                _ => (rand_iova(rng), rand_len(rng)),
            };
            Cmd::Unmap { ioas, iova, length }
        }
        Op::Copy => {
            let src = pick_ioas(rng, m);
            let (src_iova, length) = if rng.chance(8, 10) {
                around_area(rng, m, src).unwrap_or((rand_iova(rng), rand_len(rng)))
            } else {
                (rand_iova(rng), rand_len(rng))
            };
            Cmd::Copy {
                dst: pick_ioas(rng, m),
                src,
                flags: rand_flags(rng),
                length,
                dst_iova: rand_iova(rng),
                src_iova,
            }
        }
        Op::Option => {
            if rng.chance(1, 3) {
                Cmd::Option {
                    option_id: IOMMU_OPTION_RLIMIT_MODE,
                    op: if rng.chance(1, 2) {
                        IOMMU_OPTION_OP_GET
                    } else {
                        IOMMU_OPTION_OP_SET
                    },
                    reserved: 0,
                    object: if rng.chance(1, 10) {
                        pick_ioas(rng, m)
                    } else {
                        Id::Raw(0)
                    },
                    val64: rng.below(3),
                }
            } else {
                Cmd::Option {
                    option_id: if rng.chance(1, 20) {
                        7
                    } else {
                        IOMMU_OPTION_HUGE_PAGES
                    },
                    op: match rng.below(20) {
                        0 => 2,
                        1..=10 => IOMMU_OPTION_OP_GET,
                        _ => IOMMU_OPTION_OP_SET,
                    },
                    reserved: u16::from(rng.chance(1, 30)),
                    object: pick_ioas(rng, m),
                    val64: if rng.chance(1, 10) { 2 } else { rng.below(2) },
                }
            }
        }
    };
    let mut call = Call::new(cmd);
    call.size = rand_size(rng, &call);
    Some(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::outcome::Outcome;

    /// Generate a sequence pretending every call succeeded.
    fn sequence(seed: u64, ops: OpSet, n: usize) -> Vec<Call> {
        let mut rng = Rng::new(seed);
        let mut m = Model::default();
        let mut out = Vec::new();
        for i in 0..n {
            let c = random_call(&mut rng, &m, ops).unwrap();
            let ok = Outcome {
                ret: Ok(0),
                bytes: ioasid_uapi::struct_bytes(&IommuIoasMap {
                    iova: IOVA_BASE + PAGE * (i as u64 % IOVA_SLOTS),
                    ..IommuIoasMap::new()
                }),
                ranges: vec![],
                pinned_kb: None,
                locked_kb: None,
            };
            m.apply(&c, &ok);
            out.push(c);
        }
        out
    }

    #[test]
    fn deterministic_per_seed() {
        let a = sequence(5, OpSet::all(), 300);
        let b = sequence(5, OpSet::all(), 300);
        assert_eq!(a, b);
        assert_ne!(a, sequence(6, OpSet::all(), 300));
    }

    #[test]
    fn respects_ops() {
        for list in [
            "alloc,destroy",
            "alloc",
            "map,unmap",
            "option",
            "alloc,map_file,copy",
        ] {
            let ops = OpSet::parse(list).unwrap();
            for seed in 0..20 {
                for c in sequence(seed, ops, 200) {
                    assert!(ops.contains(c.op()), "{list}: generated {c}");
                }
            }
        }
    }

    #[test]
    fn all_ops_get_generated() {
        let calls = sequence(1, OpSet::all(), 2000);
        for op in Op::ALL {
            assert!(calls.iter().any(|c| c.op() == op), "{op} never generated");
        }
        // Most calls are well-formed: the sequences are not all bad input.
        let exact = calls.iter().filter(|c| c.size == Size::Exact).count();
        assert!(exact > calls.len() * 3 / 4);
        // Unmaps aim at areas often enough to produce splits.
        assert!(calls.iter().filter(|c| c.op() == Op::Unmap).count() > 100);
    }

    #[test]
    fn alloc_first() {
        let ops = OpSet::parse("alloc,destroy,map").unwrap();
        let n_alloc_first = (0..50)
            .filter(|&s| sequence(s, ops, 1)[0].op() == Op::Alloc)
            .count();
        assert!(n_alloc_first > 35);
    }

    #[test]
    fn fixed_cases_filtered_by_ops() {
        let all = fixed_cases();
        assert!(all.len() > 20);
        let names: std::collections::HashSet<_> = all.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names.len(), all.len(), "case names are unique");
        let ad = fixed_cases_for(OpSet::parse("alloc,destroy").unwrap());
        assert!(ad.len() >= 4);
        for c in &ad {
            for call in &c.calls {
                assert!(
                    matches!(call.op(), Op::Alloc | Op::Destroy),
                    "{}: {call}",
                    c.name
                );
            }
        }
        assert_eq!(fixed_cases_for(OpSet::all()).len(), all.len());
        // Every op has a case.
        for op in Op::ALL {
            assert!(all.iter().any(|c| c.ops().contains(op)), "{op}");
        }
    }

    #[test]
    fn size_rules_shape() {
        let r = size_rules(&alloc());
        assert_eq!(r.len(), 7);
        assert_eq!(r[2].size, Size::Short(8));
        assert_eq!(r[3].size, Size::Short(11));
    }
}
