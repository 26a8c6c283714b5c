//! Device-independent descriptions of one ioctl call and their encoding
//! into the bytes handed to the kernel.
//!
//! A [`Call`] names objects by [`Id`] (the k-th IOAS this sequence
//! allocated, or a literal id) and memory by [`Addr`] (an offset into one of
//! the shared test mappings, or a literal address); [`Call::encode`] resolves
//! them for one device. The same buffers are used for both devices, so every
//! pointer in the encoded bytes is identical between the two runs and the
//! output bytes can be compared verbatim.

use super::ops::Op;
use ioasid_uapi::iommufd::*;
use ioasid_uapi::struct_bytes;
use std::fmt;

/// An object id as the sequence refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    /// The k-th object (0-based) successfully allocated in this sequence.
    Obj(usize),
    /// A literal id, e.g. 0 or one never allocated.
    Raw(u32),
}

/// A user address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    /// Offset into the read-write, populated anonymous arena.
    Arena(u64),
    /// Offset into a read-only (PROT_READ) mapping.
    ReadOnly(u64),
    /// Offset into a PROT_NONE mapping.
    NoAccess(u64),
    /// Offset into an address range that was unmapped again (a hole).
    Hole(u64),
    /// A literal address (0, a kernel address, ...).
    Raw(u64),
}

/// The file descriptor of IOMMU_IOAS_MAP_FILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    /// The shared memfd ([`Env::memfd`]).
    Memfd,
    /// A literal fd number (-1, a closed one, ...).
    Raw(i32),
}

/// The `allowed_iovas` pointer of IOVA_RANGES / ALLOW_IOVAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangesPtr {
    /// The shared scratch array ([`Env::ranges`], [`RANGES_CAP`] entries).
    Scratch,
    /// NULL.
    Null,
    /// A read-only mapping (the kernel cannot write there).
    ReadOnly,
}

/// Capacity (entries) of the shared `struct iommu_iova_range` scratch array.
pub const RANGES_CAP: usize = 64;

/// How the `size` field and the buffer length relate to `sizeof(struct)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// `size = sizeof(struct)`.
    Exact,
    /// `size = n` with `n < sizeof(struct)` (the buffer stays full size).
    Short(u32),
    /// `size = sizeof(struct) + extra`, the extra bytes zero or (when
    /// `nonzero`) ending in 0xa5.
    Over { extra: u32, nonzero: bool },
}

/// The command and its fields. Fields not named here are zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Destroy {
        id: Id,
    },
    Alloc {
        flags: u32,
    },
    IovaRanges {
        ioas: Id,
        num_iovas: u32,
        reserved: u32,
        ptr: RangesPtr,
    },
    /// `ranges` is copied into the scratch array; `num_iovas` defaults to
    /// `ranges.len()` and may only exceed it with a non-scratch pointer.
    AllowIovas {
        ioas: Id,
        ranges: Vec<(u64, u64)>,
        num_iovas: Option<u32>,
        reserved: u32,
        ptr: RangesPtr,
    },
    Map {
        ioas: Id,
        flags: u32,
        reserved: u32,
        user_va: Addr,
        length: u64,
        iova: u64,
    },
    MapFile {
        ioas: Id,
        flags: u32,
        fd: Fd,
        start: u64,
        length: u64,
        iova: u64,
    },
    Unmap {
        ioas: Id,
        iova: u64,
        length: u64,
    },
    Copy {
        dst: Id,
        src: Id,
        flags: u32,
        length: u64,
        dst_iova: u64,
        src_iova: u64,
    },
    Option {
        option_id: u32,
        op: u16,
        reserved: u16,
        object: Id,
        val64: u64,
    },
}

/// One ioctl call of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub cmd: Cmd,
    pub size: Size,
}

/// Read-write + readable map flags.
pub const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
/// RW at a fixed IOVA.
pub const FIXED_RW: u32 = IOMMU_IOAS_MAP_FIXED_IOVA | RW;

/// What the encoding needs to know about one device and the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub arena: u64,
    pub read_only: u64,
    pub no_access: u64,
    pub hole: u64,
    pub memfd: i32,
    /// Address of the scratch `struct iommu_iova_range[RANGES_CAP]`.
    pub ranges: u64,
}

impl Env {
    fn addr(&self, a: Addr) -> u64 {
        match a {
            Addr::Arena(o) => self.arena.wrapping_add(o),
            Addr::ReadOnly(o) => self.read_only.wrapping_add(o),
            Addr::NoAccess(o) => self.no_access.wrapping_add(o),
            Addr::Hole(o) => self.hole.wrapping_add(o),
            Addr::Raw(a) => a,
        }
    }

    fn ranges_ptr(&self, p: RangesPtr) -> u64 {
        match p {
            RangesPtr::Scratch => self.ranges,
            RangesPtr::Null => 0,
            RangesPtr::ReadOnly => self.read_only,
        }
    }
}

/// Encoded call: the bytes to pass and, for ALLOW_IOVAS, the array to
/// place in the scratch buffer before the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub scratch_in: Vec<IommuIovaRange>,
}

impl Call {
    pub fn new(cmd: Cmd) -> Self {
        Self {
            cmd,
            size: Size::Exact,
        }
    }

    pub fn sized(cmd: Cmd, size: Size) -> Self {
        Self { cmd, size }
    }

    pub fn op(&self) -> Op {
        match self.cmd {
            Cmd::Destroy { .. } => Op::Destroy,
            Cmd::Alloc { .. } => Op::Alloc,
            Cmd::IovaRanges { .. } => Op::IovaRanges,
            Cmd::AllowIovas { .. } => Op::AllowIovas,
            Cmd::Map { .. } => Op::Map,
            Cmd::MapFile { .. } => Op::MapFile,
            Cmd::Unmap { .. } => Op::Unmap,
            Cmd::Copy { .. } => Op::Copy,
            Cmd::Option { .. } => Op::Option,
        }
    }

    /// `sizeof` the command's structure.
    pub fn struct_size(&self) -> u32 {
        self.op().struct_size()
    }

    /// Encode for one device: `id` resolves [`Id::Obj`] to that device's id.
    pub fn encode(&self, env: &Env, id: &dyn Fn(Id) -> u32) -> Encoded {
        let mut scratch_in = Vec::new();
        let mut bytes = match &self.cmd {
            Cmd::Destroy { id: i } => struct_bytes(&IommuDestroy {
                id: id(*i),
                ..IommuDestroy::new()
            }),
            Cmd::Alloc { flags } => struct_bytes(&IommuIoasAlloc {
                flags: *flags,
                ..IommuIoasAlloc::new()
            }),
            Cmd::IovaRanges {
                ioas,
                num_iovas,
                reserved,
                ptr,
            } => struct_bytes(&IommuIoasIovaRanges {
                ioas_id: id(*ioas),
                // Never more than the scratch array holds.
                num_iovas: if *ptr == RangesPtr::Scratch {
                    (*num_iovas).min(RANGES_CAP as u32)
                } else {
                    *num_iovas
                },
                __reserved: *reserved,
                allowed_iovas: env.ranges_ptr(*ptr),
                ..IommuIoasIovaRanges::new()
            }),
            Cmd::AllowIovas {
                ioas,
                ranges,
                num_iovas,
                reserved,
                ptr,
            } => {
                let n = ranges.len().min(RANGES_CAP);
                scratch_in = ranges[..n]
                    .iter()
                    .map(|&(start, last)| IommuIovaRange { start, last })
                    .collect();
                let num = match (ptr, num_iovas) {
                    (RangesPtr::Scratch, Some(k)) => (*k).min(RANGES_CAP as u32),
                    (_, Some(k)) => *k,
                    (_, None) => n as u32,
                };
                struct_bytes(&IommuIoasAllowIovas {
                    ioas_id: id(*ioas),
                    num_iovas: num,
                    __reserved: *reserved,
                    allowed_iovas: env.ranges_ptr(*ptr),
                    ..IommuIoasAllowIovas::new()
                })
            }
            Cmd::Map {
                ioas,
                flags,
                reserved,
                user_va,
                length,
                iova,
            } => struct_bytes(&IommuIoasMap {
                flags: *flags,
                ioas_id: id(*ioas),
                __reserved: *reserved,
                user_va: env.addr(*user_va),
                length: *length,
                iova: *iova,
                ..IommuIoasMap::new()
            }),
            Cmd::MapFile {
                ioas,
                flags,
                fd,
                start,
                length,
                iova,
            } => struct_bytes(&IommuIoasMapFile {
                flags: *flags,
                ioas_id: id(*ioas),
                fd: match fd {
                    Fd::Memfd => env.memfd,
                    Fd::Raw(n) => *n,
                },
                start: *start,
                length: *length,
                iova: *iova,
                ..IommuIoasMapFile::new()
            }),
            Cmd::Unmap { ioas, iova, length } => struct_bytes(&IommuIoasUnmap {
                ioas_id: id(*ioas),
                iova: *iova,
                length: *length,
                ..IommuIoasUnmap::new()
            }),
            Cmd::Copy {
                dst,
                src,
                flags,
                length,
                dst_iova,
                src_iova,
            } => struct_bytes(&IommuIoasCopy {
                flags: *flags,
                dst_ioas_id: id(*dst),
                src_ioas_id: id(*src),
                length: *length,
                dst_iova: *dst_iova,
                src_iova: *src_iova,
                ..IommuIoasCopy::new()
            }),
            Cmd::Option {
                option_id,
                op,
                reserved,
                object,
                val64,
            } => struct_bytes(&IommuOption {
                option_id: *option_id,
                op: *op,
                __reserved: *reserved,
                object_id: id(*object),
                val64: *val64,
                ..IommuOption::new()
            }),
        };
        match self.size {
            Size::Exact => {}
            Size::Short(n) => bytes[0..4].copy_from_slice(&n.to_ne_bytes()),
            Size::Over { extra, nonzero } => {
                let total = bytes.len() + extra as usize;
                bytes.resize(total, 0);
                if nonzero && extra > 0 {
                    bytes[total - 1] = 0xa5;
                }
                bytes[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
            }
        }
        Encoded { bytes, scratch_in }
    }
}

fn id_str(i: Id) -> String {
    match i {
        Id::Obj(k) => format!("obj#{k}"),
        Id::Raw(v) => format!("{v:#x}"),
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.op().ioctl_name())?;
        match &self.cmd {
            Cmd::Destroy { id } => write!(f, "id={}", id_str(*id))?,
            Cmd::Alloc { flags } => write!(f, "flags={flags:#x}")?,
            Cmd::IovaRanges {
                ioas,
                num_iovas,
                reserved,
                ptr,
            } => write!(
                f,
                "ioas={} num_iovas={num_iovas} reserved={reserved:#x} ptr={ptr:?}",
                id_str(*ioas)
            )?,
            Cmd::AllowIovas {
                ioas,
                ranges,
                num_iovas,
                reserved,
                ptr,
            } => {
                write!(f, "ioas={} ranges=[", id_str(*ioas))?;
                for (i, (s, l)) in ranges.iter().enumerate() {
                    write!(f, "{}{s:#x}..={l:#x}", if i > 0 { " " } else { "" })?;
                }
                write!(
                    f,
                    "] num_iovas={num_iovas:?} reserved={reserved:#x} ptr={ptr:?}"
                )?
            }
            Cmd::Map {
                ioas,
                flags,
                reserved,
                user_va,
                length,
                iova,
            } => write!(
                f,
                "ioas={} flags={flags:#x} reserved={reserved:#x} user_va={user_va:x?} length={length:#x} iova={iova:#x}",
                id_str(*ioas)
            )?,
            Cmd::MapFile {
                ioas,
                flags,
                fd,
                start,
                length,
                iova,
            } => write!(
                f,
                "ioas={} flags={flags:#x} fd={fd:?} start={start:#x} length={length:#x} iova={iova:#x}",
                id_str(*ioas)
            )?,
            Cmd::Unmap { ioas, iova, length } => write!(
                f,
                "ioas={} iova={iova:#x} length={length:#x}",
                id_str(*ioas)
            )?,
            Cmd::Copy {
                dst,
                src,
                flags,
                length,
                dst_iova,
                src_iova,
            } => write!(
                f,
                "dst={} src={} flags={flags:#x} length={length:#x} dst_iova={dst_iova:#x} src_iova={src_iova:#x}",
                id_str(*dst),
                id_str(*src)
            )?,
            Cmd::Option {
                option_id,
                op,
                reserved,
                object,
                val64,
            } => write!(
                f,
                "option_id={option_id} op={op} reserved={reserved:#x} object={} val64={val64:#x}",
                id_str(*object)
            )?,
        }
        match self.size {
            Size::Exact => {}
            Size::Short(n) => write!(f, " size={n}")?,
            Size::Over { extra, nonzero } => write!(
                f,
                " size={}{}",
                self.struct_size() + extra,
                if nonzero {
                    " nonzero-tail"
                } else {
                    " zero-tail"
                }
            )?,
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            arena: 0x10_0000,
            read_only: 0x20_0000,
            no_access: 0x30_0000,
            hole: 0x40_0000,
            memfd: 7,
            ranges: 0x50_0000,
        }
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn encode_map_resolves_ids_and_addresses() {
        let c = Call::new(Cmd::Map {
            ioas: Id::Obj(1),
            flags: FIXED_RW,
            reserved: 0,
            user_va: Addr::Arena(0x3000),
            length: 0x2000,
            iova: 0x100000,
        });
        let e = c.encode(&env(), &|i| match i {
            Id::Obj(k) => 10 + k as u32,
            Id::Raw(v) => v,
        });
        assert_eq!(e.bytes.len(), 40);
        assert_eq!(u32_at(&e.bytes, 0), 40);
        assert_eq!(u32_at(&e.bytes, 4), FIXED_RW);
        assert_eq!(u32_at(&e.bytes, 8), 11);
        assert_eq!(u64_at(&e.bytes, 16), 0x10_3000);
        assert_eq!(u64_at(&e.bytes, 24), 0x2000);
        assert_eq!(u64_at(&e.bytes, 32), 0x100000);
        assert!(c.to_string().starts_with("IOMMU_IOAS_MAP(ioas=obj#1"));
    }

    #[test]
    fn encode_sizes() {
        let raw = |i: Id| match i {
            Id::Obj(_) => 1,
            Id::Raw(v) => v,
        };
        let short = Call::sized(Cmd::Alloc { flags: 0 }, Size::Short(4));
        let e = short.encode(&env(), &raw);
        assert_eq!(e.bytes.len(), 12);
        assert_eq!(u32_at(&e.bytes, 0), 4);
        let over = Call::sized(
            Cmd::Destroy { id: Id::Raw(5) },
            Size::Over {
                extra: 8,
                nonzero: true,
            },
        );
        let e = over.encode(&env(), &raw);
        assert_eq!(e.bytes.len(), 16);
        assert_eq!(u32_at(&e.bytes, 0), 16);
        assert_eq!(u32_at(&e.bytes, 4), 5);
        assert_eq!(e.bytes[15], 0xa5);
        assert!(e.bytes[8..15].iter().all(|b| *b == 0));
        assert!(over.to_string().ends_with("size=16 nonzero-tail)"));
    }

    #[test]
    fn encode_ranges_never_exceed_scratch() {
        let c = Call::new(Cmd::IovaRanges {
            ioas: Id::Raw(1),
            num_iovas: 1000,
            reserved: 0,
            ptr: RangesPtr::Scratch,
        });
        let e = c.encode(&env(), &|_| 1);
        assert_eq!(u32_at(&e.bytes, 8), RANGES_CAP as u32);
        assert_eq!(u64_at(&e.bytes, 16), 0x50_0000);
        let c = Call::new(Cmd::AllowIovas {
            ioas: Id::Raw(1),
            ranges: vec![(0x1000, 0x1fff); RANGES_CAP + 5],
            num_iovas: Some(9999),
            reserved: 0,
            ptr: RangesPtr::Scratch,
        });
        let e = c.encode(&env(), &|_| 1);
        assert_eq!(e.scratch_in.len(), RANGES_CAP);
        assert_eq!(u32_at(&e.bytes, 8), RANGES_CAP as u32);
        let c = Call::new(Cmd::AllowIovas {
            ioas: Id::Raw(1),
            ranges: vec![],
            num_iovas: Some(3),
            reserved: 0,
            ptr: RangesPtr::Null,
        });
        let e = c.encode(&env(), &|_| 1);
        assert_eq!(u32_at(&e.bytes, 8), 3);
        assert_eq!(u64_at(&e.bytes, 16), 0);
    }
}
