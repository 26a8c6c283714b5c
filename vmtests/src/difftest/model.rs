//! What a sequence believes the reference device holds: IOASes, their
//! mapped areas and allowed ranges. Updated from the *reference* (mainline)
//! outcome of every call, so the generator can aim at existing areas.

use super::call::{Call, Cmd, Id};
use super::outcome::Outcome;
use ioasid_uapi::iommufd::*;

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
        if !r.ok() {
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
                let last = iova.saturating_add(length.saturating_sub(1));
                if let Some(o) = self.obj(*ioas) {
                    o.areas.retain(|&(a, l)| {
                        let a_last = a.saturating_add(l.saturating_sub(1));
                        !(a >= *iova && a_last <= last)
                    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::call::{Addr, FIXED_RW};
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
}
