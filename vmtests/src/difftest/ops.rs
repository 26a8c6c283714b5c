//! The ioctls of iommufd's IOAS half, and `--ops` lists of them.

use anyhow::{Result, bail};
use ioasid_uapi::iommufd::*;
use std::fmt;

/// One ioctl of the IOAS half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Destroy,
    Alloc,
    IovaRanges,
    AllowIovas,
    Map,
    MapFile,
    Unmap,
    Copy,
    Option,
}

impl Op {
    /// `sizeof` the command structure of this ioctl.
    pub fn struct_size(self) -> u32 {
        match self {
            Op::Destroy => IommuDestroy::SIZE,
            Op::Alloc => IommuIoasAlloc::SIZE,
            Op::IovaRanges => IommuIoasIovaRanges::SIZE,
            Op::AllowIovas => IommuIoasAllowIovas::SIZE,
            Op::Map => IommuIoasMap::SIZE,
            Op::MapFile => IommuIoasMapFile::SIZE,
            Op::Unmap => IommuIoasUnmap::SIZE,
            Op::Copy => IommuIoasCopy::SIZE,
            Op::Option => IommuOption::SIZE,
        }
    }

    pub const ALL: [Op; 9] = [
        Op::Destroy,
        Op::Alloc,
        Op::IovaRanges,
        Op::AllowIovas,
        Op::Map,
        Op::MapFile,
        Op::Unmap,
        Op::Copy,
        Op::Option,
    ];

    /// The name used by `--ops`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Destroy => "destroy",
            Op::Alloc => "alloc",
            Op::IovaRanges => "iova_ranges",
            Op::AllowIovas => "allow_iovas",
            Op::Map => "map",
            Op::MapFile => "map_file",
            Op::Unmap => "unmap",
            Op::Copy => "copy",
            Op::Option => "option",
        }
    }

    /// The uapi name of the ioctl.
    pub fn ioctl_name(self) -> &'static str {
        match self {
            Op::Destroy => "IOMMU_DESTROY",
            Op::Alloc => "IOMMU_IOAS_ALLOC",
            Op::IovaRanges => "IOMMU_IOAS_IOVA_RANGES",
            Op::AllowIovas => "IOMMU_IOAS_ALLOW_IOVAS",
            Op::Map => "IOMMU_IOAS_MAP",
            Op::MapFile => "IOMMU_IOAS_MAP_FILE",
            Op::Unmap => "IOMMU_IOAS_UNMAP",
            Op::Copy => "IOMMU_IOAS_COPY",
            Op::Option => "IOMMU_OPTION",
        }
    }

    /// The ioctl request number.
    pub fn nr(self) -> u32 {
        match self {
            Op::Destroy => IOMMU_DESTROY,
            Op::Alloc => IOMMU_IOAS_ALLOC,
            Op::IovaRanges => IOMMU_IOAS_IOVA_RANGES,
            Op::AllowIovas => IOMMU_IOAS_ALLOW_IOVAS,
            Op::Map => IOMMU_IOAS_MAP,
            Op::MapFile => IOMMU_IOAS_MAP_FILE,
            Op::Unmap => IOMMU_IOAS_UNMAP,
            Op::Copy => IOMMU_IOAS_COPY,
            Op::Option => IOMMU_OPTION,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub fn from_name(s: &str) -> Option<Op> {
        let s = s.trim().to_ascii_lowercase();
        let s = s
            .strip_prefix("iommu_ioas_")
            .or_else(|| s.strip_prefix("iommu_"))
            .unwrap_or(&s);
        let s = s.replace('-', "_");
        Op::ALL.into_iter().find(|op| {
            op.name() == s
                || matches!(
                    (op, s.as_str()),
                    (Op::Alloc, "ioas_alloc")
                        | (Op::IovaRanges, "ranges")
                        | (Op::AllowIovas, "allow")
                )
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Op`]s (`--ops alloc,destroy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSet(u16);

impl OpSet {
    pub fn all() -> Self {
        Self(Op::ALL.iter().fold(0, |m, op| m | op.bit()))
    }

    pub fn empty() -> Self {
        Self(0)
    }

    pub fn of(ops: &[Op]) -> Self {
        Self(ops.iter().fold(0, |m, op| m | op.bit()))
    }

    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }

    pub fn insert(&mut self, op: Op) {
        self.0 |= op.bit();
    }

    /// True if every op of `other` is in `self`.
    pub fn contains_all(self, other: OpSet) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |op| self.contains(*op))
    }

    /// Parse `"all"` or a comma separated list of op names.
    pub fn parse(s: &str) -> Result<Self> {
        let mut set = OpSet::empty();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                set = OpSet::all();
                continue;
            }
            match Op::from_name(part) {
                Some(op) => set.insert(op),
                None => bail!(
                    "unknown op {part:?}; known: all, {}",
                    Op::ALL.map(Op::name).join(", ")
                ),
            }
        }
        if set.is_empty() {
            bail!("--ops: empty list");
        }
        Ok(set)
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Op::name).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lists() {
        let s = OpSet::parse("alloc,destroy").unwrap();
        assert!(s.contains(Op::Alloc) && s.contains(Op::Destroy));
        assert!(!s.contains(Op::Map));
        assert_eq!(s.to_string(), "destroy,alloc");
        assert_eq!(OpSet::parse("all").unwrap(), OpSet::all());
        assert_eq!(
            OpSet::parse(" IOMMU_IOAS_MAP , map-file,ranges").unwrap(),
            OpSet::of(&[Op::Map, Op::MapFile, Op::IovaRanges])
        );
        assert!(OpSet::parse("alloc,bogus").is_err());
        assert!(OpSet::parse("").is_err());
        assert!(OpSet::parse(",").is_err());
    }

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
            assert_eq!(Op::from_name(op.ioctl_name()), Some(op), "{op}");
        }
        assert_eq!(OpSet::all().iter().count(), Op::ALL.len());
        assert!(OpSet::all().contains_all(OpSet::of(&[Op::Copy])));
        assert!(!OpSet::of(&[Op::Alloc]).contains_all(OpSet::of(&[Op::Alloc, Op::Map])));
    }
}
