//! The observable result of one call on one device, and the comparison of
//! the two devices' results.

use super::call::Call;
use super::exec::MemCounters;
use super::ops::Op;
use crate::errno::errno_name;
use ioasid_uapi::iommufd::*;
use std::fmt::Write as _;

/// Everything a call returned that a client can observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Ok(ioctl return value)` or `Err(errno)`.
    pub ret: Result<i32, i32>,
    /// The command buffer after the call (the kernel writes outputs back
    /// into it, also on some failures, e.g. EMSGSIZE of IOVA_RANGES).
    pub bytes: Vec<u8>,
    /// The shared `iommu_iova_range` array after the call (IOVA_RANGES and
    /// ALLOW_IOVAS only; empty otherwise).
    pub ranges: Vec<IommuIovaRange>,
    /// Change of `VmPin` (kB) of this process across the call, if measured.
    pub pinned_kb: Option<i64>,
    /// Change of `VmLck` (kB) across the call, if measured.
    pub locked_kb: Option<i64>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.ret.is_ok()
    }

    /// The command structure as written back, decoded as `T` (bytes past
    /// the buffer read as zero).
    pub fn decode<T: IommufdCmd + Copy + Default>(&self) -> T {
        decode(&self.bytes)
    }
}

/// Read a `T` from the start of `bytes` (missing bytes are zero).
pub fn decode<T: IommufdCmd + Copy + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let n = bytes.len().min(core::mem::size_of::<T>());
    // SAFETY: T is a padding-free repr(C) POD from ioasid-uapi (every bit
    // pattern is valid); at most size_of::<T>() bytes are written into it.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

fn ret_str(r: &Result<i32, i32>) -> String {
    match r {
        Ok(v) => format!("ok ({v})"),
        Err(e) => format!("{} ({e})", errno_name(*e)),
    }
}

/// The command structure decoded for display.
pub fn struct_str(op: Op, bytes: &[u8]) -> String {
    let n = op.struct_size() as usize;
    let mut s = match op {
        Op::Destroy => format!("{:x?}", decode::<IommuDestroy>(bytes)),
        Op::Alloc => format!("{:x?}", decode::<IommuIoasAlloc>(bytes)),
        Op::IovaRanges => format!("{:x?}", decode::<IommuIoasIovaRanges>(bytes)),
        Op::AllowIovas => format!("{:x?}", decode::<IommuIoasAllowIovas>(bytes)),
        Op::Map => format!("{:x?}", decode::<IommuIoasMap>(bytes)),
        Op::MapFile => format!("{:x?}", decode::<IommuIoasMapFile>(bytes)),
        Op::Unmap => format!("{:x?}", decode::<IommuIoasUnmap>(bytes)),
        Op::Copy => format!("{:x?}", decode::<IommuIoasCopy>(bytes)),
        Op::Option => format!("{:x?}", decode::<IommuOption>(bytes)),
    };
    if bytes.len() > n {
        let _ = write!(s, " tail={:02x?}", &bytes[n..]);
    }
    s
}

/// One line describing an outcome.
pub fn describe(op: Op, o: &Outcome) -> String {
    let mut s = describe_result(op, o);
    if let Some(p) = o.pinned_kb {
        let _ = write!(s, " VmPin{p:+}kB");
    }
    if let Some(l) = o.locked_kb {
        let _ = write!(s, " VmLck{l:+}kB");
    }
    s
}

/// [`describe`] without the VmPin/VmLck changes: what both devices must
/// answer alike.
pub fn describe_result(op: Op, o: &Outcome) -> String {
    let mut s = format!("{} {}", ret_str(&o.ret), struct_str(op, &o.bytes));
    if matches!(op, Op::IovaRanges) {
        let shown: Vec<String> = o
            .ranges
            .iter()
            .take_while(|r| **r != SCRATCH_FILL)
            .map(|r| format!("{:#x}..={:#x}", r.start, r.last))
            .collect();
        let _ = write!(s, " ranges=[{}]", shown.join(" "));
    }
    s
}

/// How the measured VmPin/VmLck change of a call on device `dev` deviates
/// from `expected` (the change its [`PinRule`](super::model::PinRule)
/// predicts, described by `why`): one line per deviating counter, e.g.
/// "VmPin: /dev/ioasid +8 kB, expected +4 kB (distinct pages of the fd)".
/// Nothing when the call was not measured.
pub fn pin_deviations(dev: &str, o: &Outcome, expected: MemCounters, why: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (name, got, want) in [
        ("VmPin", o.pinned_kb, expected.pin_kb),
        ("VmLck", o.locked_kb, expected.lck_kb),
    ] {
        if let Some(got) = got
            && got != want
        {
            v.push(format!(
                "{name}: {dev} {got:+} kB, expected {want:+} kB ({why})"
            ));
        }
    }
    v
}

/// What the scratch range array is filled with before each call, so that
/// entries the kernel did not write are recognisable (and compared too).
pub const SCRATCH_FILL: IommuIovaRange = IommuIovaRange {
    start: 0xeeee_eeee_eeee_eeee,
    last: 0xeeee_eeee_eeee_eeee,
};

/// `None` when the two outcomes are identical but for their VmPin/VmLck
/// changes (each device's are checked against its own model,
/// [`pin_deviations`]), else what differs.
pub fn difference(call: &Call, reference: &Outcome, test: &Outcome) -> Option<String> {
    let mut what = Vec::new();
    if reference.ret != test.ret {
        what.push("return value/errno");
    }
    if reference.bytes != test.bytes {
        what.push("output structure");
    }
    if reference.ranges != test.ranges {
        what.push("iova range array");
    }
    if what.is_empty() {
        return None;
    }
    let op = call.op();
    Some(format!(
        "{} differ(s) in {call}\n#   reference: {}\n#   test:      {}",
        what.join(", "),
        describe(op, reference),
        describe(op, test)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::call::Cmd;
    use ioasid_uapi::struct_bytes;

    fn alloc_outcome(ret: Result<i32, i32>, id: u32) -> Outcome {
        Outcome {
            ret,
            bytes: struct_bytes(&IommuIoasAlloc {
                out_ioas_id: id,
                ..IommuIoasAlloc::new()
            }),
            ranges: vec![],
            pinned_kb: Some(0),
            locked_kb: Some(0),
        }
    }

    #[test]
    fn identical_is_none() {
        let c = Call::new(Cmd::Alloc { flags: 0 });
        let a = alloc_outcome(Ok(0), 1);
        assert_eq!(difference(&c, &a, &a.clone()), None);
    }

    #[test]
    fn errno_and_ids_are_compared() {
        let c = Call::new(Cmd::Alloc { flags: 0 });
        let a = alloc_outcome(Ok(0), 1);
        let d = difference(&c, &a, &alloc_outcome(Ok(0), 2)).unwrap();
        assert!(
            d.starts_with("output structure differ(s) in IOMMU_IOAS_ALLOC(flags=0x0)"),
            "{d}"
        );
        assert!(d.contains("out_ioas_id: 1"), "{d}");
        assert!(d.contains("out_ioas_id: 2"), "{d}");
        let d = difference(&c, &a, &alloc_outcome(Err(libc::ENOTTY), 1)).unwrap();
        assert!(d.contains("return value/errno"), "{d}");
        assert!(d.contains("test:      ENOTTY (25)"), "{d}");
        assert!(d.contains("reference: ok (0)"), "{d}");
    }

    #[test]
    fn pins_and_ranges_are_compared() {
        let c = Call::new(Cmd::Alloc { flags: 0 });
        let a = alloc_outcome(Ok(0), 1);
        let mut b = a.clone();
        b.pinned_kb = Some(8);
        b.locked_kb = Some(4);
        // Pin changes are each device's own business ...
        assert_eq!(difference(&c, &a, &b), None);
        // ... checked against its model.
        let want = MemCounters {
            pin_kb: 4,
            lck_kb: 4,
        };
        assert_eq!(
            pin_deviations("/dev/ioasid", &b, want, "distinct pages of the fd"),
            vec!["VmPin: /dev/ioasid +8 kB, expected +4 kB (distinct pages of the fd)"]
        );
        let d = pin_deviations("/dev/iommu", &a, want, "x");
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1], "VmLck: /dev/iommu +0 kB, expected +4 kB (x)");
        assert!(describe(Op::Alloc, &b).ends_with(" VmPin+8kB VmLck+4kB"));
        assert!(!describe_result(Op::Alloc, &b).contains("VmPin"));
        let unmeasured = Outcome {
            pinned_kb: None,
            locked_kb: None,
            ..b.clone()
        };
        assert!(pin_deviations("d", &unmeasured, want, "x").is_empty());
        let mut b = a.clone();
        b.ranges = vec![SCRATCH_FILL];
        assert!(
            difference(&c, &a, &b)
                .unwrap()
                .starts_with("iova range array")
        );
    }

    #[test]
    fn decode_short_and_long() {
        let v: IommuIoasAlloc = decode(&[12, 0, 0, 0]);
        assert_eq!(v.size, 12);
        assert_eq!(v.out_ioas_id, 0);
        let mut b = struct_bytes(&IommuDestroy {
            id: 3,
            ..IommuDestroy::new()
        });
        b.extend_from_slice(&[0, 0xa5]);
        let s = struct_str(Op::Destroy, &b);
        assert!(s.contains("id: 3"), "{s}");
        assert!(s.ends_with("tail=[00, a5]"), "{s}");
    }
}
