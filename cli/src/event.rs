//! Decoding of ring buffer records (defined in `ioasid-ebpf-common`).

use std::mem::size_of;

use ioasid_ebpf_common::{AttachEvent, EventHeader, KvmEvent, MapEvent, UnmapEvent, flags, kind};

/// Which map function a [`MapEvent`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapFn {
    IommuMap,
    IommuMapNosync,
}

impl MapFn {
    pub fn name(self) -> &'static str {
        match self {
            MapFn::IommuMap => "iommu_map",
            MapFn::IommuMapNosync => "iommu_map_nosync",
        }
    }
}

/// Which unmap function an [`UnmapEvent`] came from. VFIO type1 unmaps with
/// `iommu_unmap_fast` (batched IOTLB flush) and falls back to `iommu_unmap`;
/// neither calls the other, so every unmap is reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnmapFn {
    IommuUnmap,
    IommuUnmapFast,
}

impl UnmapFn {
    pub fn name(self) -> &'static str {
        match self {
            UnmapFn::IommuUnmap => "iommu_unmap",
            UnmapFn::IommuUnmapFast => "iommu_unmap_fast",
        }
    }
}

/// Registration or unregistration of non-coherent DMA with a KVM VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvmOp {
    Register,
    Unregister,
}

impl KvmOp {
    pub fn name(self) -> &'static str {
        match self {
            KvmOp::Register => "register",
            KvmOp::Unregister => "unregister",
        }
    }

    pub fn function(self) -> &'static str {
        match self {
            KvmOp::Register => "kvm_arch_register_noncoherent_dma",
            KvmOp::Unregister => "kvm_arch_unregister_noncoherent_dma",
        }
    }
}

/// Which attach or detach function an [`AttachEvent`] came from: VFIO type1 and /dev/ioasid
/// attach with `iommu_attach_group`, iommufd with the `_handle` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttachFn {
    AttachGroup,
    DetachGroup,
    AttachGroupHandle,
    DetachGroupHandle,
    ReplaceGroupHandle,
}

/// What an [`AttachFn`] does to the group's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOp {
    Attach,
    Detach,
    /// Moves the group from whatever domain it had to this one.
    Replace,
}

impl AttachFn {
    pub fn name(self) -> &'static str {
        match self {
            AttachFn::AttachGroup => "iommu_attach_group",
            AttachFn::DetachGroup => "iommu_detach_group",
            AttachFn::AttachGroupHandle => "iommu_attach_group_handle",
            AttachFn::DetachGroupHandle => "iommu_detach_group_handle",
            AttachFn::ReplaceGroupHandle => "iommu_replace_group_handle",
        }
    }

    pub fn op(self) -> AttachOp {
        match self {
            AttachFn::AttachGroup | AttachFn::AttachGroupHandle => AttachOp::Attach,
            AttachFn::DetachGroup | AttachFn::DetachGroupHandle => AttachOp::Detach,
            AttachFn::ReplaceGroupHandle => AttachOp::Replace,
        }
    }
}

impl AttachOp {
    pub fn name(self) -> &'static str {
        match self {
            AttachOp::Attach => "attach",
            AttachOp::Detach => "detach",
            AttachOp::Replace => "replace",
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Map(MapFn, MapEvent),
    Unmap(UnmapFn, UnmapEvent),
    Kvm(KvmOp, KvmEvent),
    Attach(AttachFn, AttachEvent),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Map(_, e) => &e.header,
            Event::Unmap(_, e) => &e.header,
            Event::Kvm(_, e) => &e.header,
            Event::Attach(_, e) => &e.header,
        }
    }
}

/// Why a record could not be decoded. Never fatal: such records are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header, or than its header says, or than its kind needs.
    Truncated { len: usize, need: usize },
    /// A kind this build does not know (newer eBPF object?).
    UnknownKind(u16),
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: bounds checked above; T is one of the #[repr(C)] integer-only
    // records (any bit pattern is valid); read_unaligned has no alignment need.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes)?;
    let declared = usize::from(header.size);
    if declared > bytes.len() {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            need: declared,
        });
    }
    // Decode only what the header says is this record (it may be longer
    // than what this build knows: fields appended by a newer producer).
    let record = &bytes[..declared.max(size_of::<EventHeader>())];
    match header.kind {
        kind::IOMMU_MAP => Ok(Event::Map(MapFn::IommuMap, read(record)?)),
        kind::IOMMU_MAP_NOSYNC => Ok(Event::Map(MapFn::IommuMapNosync, read(record)?)),
        kind::IOMMU_UNMAP => Ok(Event::Unmap(UnmapFn::IommuUnmap, read(record)?)),
        kind::IOMMU_UNMAP_FAST => Ok(Event::Unmap(UnmapFn::IommuUnmapFast, read(record)?)),
        kind::KVM_REGISTER_NONCOHERENT_DMA => Ok(Event::Kvm(KvmOp::Register, read(record)?)),
        kind::KVM_UNREGISTER_NONCOHERENT_DMA => Ok(Event::Kvm(KvmOp::Unregister, read(record)?)),
        kind::IOMMU_ATTACH_GROUP => Ok(Event::Attach(AttachFn::AttachGroup, read(record)?)),
        kind::IOMMU_DETACH_GROUP => Ok(Event::Attach(AttachFn::DetachGroup, read(record)?)),
        kind::IOMMU_ATTACH_GROUP_HANDLE => {
            Ok(Event::Attach(AttachFn::AttachGroupHandle, read(record)?))
        }
        kind::IOMMU_DETACH_GROUP_HANDLE => {
            Ok(Event::Attach(AttachFn::DetachGroupHandle, read(record)?))
        }
        kind::IOMMU_REPLACE_GROUP_HANDLE => {
            Ok(Event::Attach(AttachFn::ReplaceGroupHandle, read(record)?))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// `comm` as text: up to the first NUL, invalid UTF-8 replaced.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// How the record was produced: "fexit" or "kprobe".
pub fn via(header: &EventHeader) -> &'static str {
    if header.flags & flags::VIA_KPROBE != 0 {
        "kprobe"
    } else {
        "fexit"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ioasid_ebpf_common::COMM_LEN;

    pub(crate) fn comm(s: &str) -> [u8; COMM_LEN] {
        let mut c = [0u8; COMM_LEN];
        let n = s.len().min(COMM_LEN - 1);
        c[..n].copy_from_slice(&s.as_bytes()[..n]);
        c
    }

    pub(crate) fn hdr(k: u16, size: usize, tgid: u32, tid: u32, name: &str) -> EventHeader {
        EventHeader {
            kind: k,
            size: u16::try_from(size).expect("record size fits u16"),
            flags: 0,
            ts_ns: 1_000,
            tgid,
            tid,
            comm: comm(name),
        }
    }

    /// A successful attach-family call of `f` by process `tgid`: `domain`, `group` (pointer)
    /// and its number `group_id`.
    pub(crate) fn attach_event(
        f: AttachFn,
        tgid: u32,
        domain: u64,
        group: u64,
        group_id: i32,
    ) -> AttachEvent {
        let k = match f {
            AttachFn::AttachGroup => kind::IOMMU_ATTACH_GROUP,
            AttachFn::DetachGroup => kind::IOMMU_DETACH_GROUP,
            AttachFn::AttachGroupHandle => kind::IOMMU_ATTACH_GROUP_HANDLE,
            AttachFn::DetachGroupHandle => kind::IOMMU_DETACH_GROUP_HANDLE,
            AttachFn::ReplaceGroupHandle => kind::IOMMU_REPLACE_GROUP_HANDLE,
        };
        AttachEvent {
            header: hdr(k, size_of::<AttachEvent>(), tgid, tgid, "qemu-system-x86"),
            domain,
            group,
            group_id,
            ret: 0,
        }
    }

    #[test]
    fn attach_records_decode_to_their_function() {
        for f in [
            AttachFn::AttachGroup,
            AttachFn::DetachGroup,
            AttachFn::AttachGroupHandle,
            AttachFn::DetachGroupHandle,
            AttachFn::ReplaceGroupHandle,
        ] {
            let e = attach_event(f, 7, 0xd0, 0x90, 3);
            // SAFETY: AttachEvent is repr(C), integers only, no padding.
            let bytes = unsafe {
                std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<AttachEvent>())
            };
            assert_eq!(decode(bytes), Ok(Event::Attach(f, e)), "{}", f.name());
        }
        assert_eq!(AttachFn::ReplaceGroupHandle.op(), AttachOp::Replace);
        assert_eq!(AttachFn::DetachGroupHandle.op().name(), "detach");
    }

    pub(crate) fn map_event(
        f: MapFn,
        tgid: u32,
        tid: u32,
        domain: u64,
        iova: u64,
        size: u64,
        ret: i32,
    ) -> MapEvent {
        let k = match f {
            MapFn::IommuMap => kind::IOMMU_MAP,
            MapFn::IommuMapNosync => kind::IOMMU_MAP_NOSYNC,
        };
        MapEvent {
            header: hdr(k, size_of::<MapEvent>(), tgid, tid, "qemu-system-x86"),
            domain,
            iova,
            paddr: 0x1_0000_0000 + iova,
            size,
            prot: 0b111,
            gfp: 0xcc0,
            ret,
            _pad: 0,
        }
    }

    pub(crate) fn unmap_event(
        f: UnmapFn,
        tgid: u32,
        domain: u64,
        iova: u64,
        size: u64,
        unmapped: u64,
    ) -> UnmapEvent {
        let k = match f {
            UnmapFn::IommuUnmap => kind::IOMMU_UNMAP,
            UnmapFn::IommuUnmapFast => kind::IOMMU_UNMAP_FAST,
        };
        UnmapEvent {
            header: hdr(k, size_of::<UnmapEvent>(), tgid, tgid, "qemu-system-x86"),
            domain,
            iova,
            size,
            unmapped,
        }
    }

    pub(crate) fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a padding-free #[repr(C)] record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_each_kind() {
        let m = map_event(
            MapFn::IommuMapNosync,
            10,
            11,
            0xffff_8880_0000_1000,
            0x1000,
            4096,
            0,
        );
        assert_eq!(
            decode(&bytes_of(&m)),
            Ok(Event::Map(MapFn::IommuMapNosync, m))
        );

        let u = unmap_event(
            UnmapFn::IommuUnmap,
            10,
            0xffff_8880_0000_1000,
            0x1000,
            4096,
            4096,
        );
        assert_eq!(
            decode(&bytes_of(&u)),
            Ok(Event::Unmap(UnmapFn::IommuUnmap, u))
        );

        let uf = unmap_event(
            UnmapFn::IommuUnmapFast,
            10,
            0xffff_8880_0000_1000,
            0x2000,
            1 << 21,
            1 << 21,
        );
        assert_eq!(uf.header.kind, kind::IOMMU_UNMAP_FAST);
        assert_eq!(
            decode(&bytes_of(&uf)),
            Ok(Event::Unmap(UnmapFn::IommuUnmapFast, uf))
        );

        let k = KvmEvent {
            header: hdr(
                kind::KVM_UNREGISTER_NONCOHERENT_DMA,
                size_of::<KvmEvent>(),
                5,
                5,
                "qemu",
            ),
            kvm: 0xffff_c900_0000_0000,
        };
        assert_eq!(decode(&bytes_of(&k)), Ok(Event::Kvm(KvmOp::Unregister, k)));
    }

    #[test]
    fn tolerates_longer_records_and_rejects_short_ones() {
        let m = map_event(MapFn::IommuMap, 1, 1, 0xd, 0, 8192, 0);
        let mut longer = m;
        longer.header.size += 8;
        let mut bytes = bytes_of(&longer);
        bytes.extend_from_slice(&[0xaa; 8]);
        match decode(&bytes) {
            Ok(Event::Map(MapFn::IommuMap, got)) => assert_eq!(got.size, 8192),
            other => panic!("unexpected {other:?}"),
        }

        let short = &bytes_of(&m)[..size_of::<MapEvent>() - 1];
        assert!(matches!(decode(short), Err(DecodeError::Truncated { .. })));
        assert!(matches!(
            decode(&[0u8; 3]),
            Err(DecodeError::Truncated { .. })
        ));

        // The header claims a size shorter than the kind needs.
        let mut lying = m;
        lying.header.size = 40;
        assert!(matches!(
            decode(&bytes_of(&lying)),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn unmap_fast_record_is_an_unmap_record() {
        // Same layout as iommu_unmap; a short one is rejected, a longer one
        // (fields appended by a newer producer) is accepted.
        let u = unmap_event(UnmapFn::IommuUnmapFast, 3, 0xd, 0, 8192, 8192);
        let short = &bytes_of(&u)[..size_of::<UnmapEvent>() - 1];
        assert!(matches!(decode(short), Err(DecodeError::Truncated { .. })));
        let mut longer = u;
        longer.header.size += 8;
        let mut bytes = bytes_of(&longer);
        bytes.extend_from_slice(&[0x55; 8]);
        match decode(&bytes) {
            Ok(Event::Unmap(UnmapFn::IommuUnmapFast, got)) => {
                assert_eq!((got.size, got.unmapped), (8192, 8192));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(UnmapFn::IommuUnmapFast.name(), "iommu_unmap_fast");
        assert_eq!(UnmapFn::IommuUnmap.name(), "iommu_unmap");
    }

    #[test]
    fn unknown_kind_is_reported() {
        let h = hdr(999, size_of::<EventHeader>(), 1, 1, "x");
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(999)));
    }

    #[test]
    fn comm_and_via() {
        assert_eq!(comm_str(&comm("qemu")), "qemu");
        assert_eq!(comm_str(&[b'a'; COMM_LEN]), "a".repeat(COMM_LEN));
        let mut h = hdr(kind::IOMMU_MAP, 88, 1, 1, "x");
        assert_eq!(via(&h), "fexit");
        h.flags |= flags::VIA_KPROBE;
        assert_eq!(via(&h), "kprobe");
    }
}
