//! Offsets of kernel struct members, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the eBPF programs: Rust eBPF has no CO-RE,
//! so a field they read is located here at start-up and handed to them in the
//! `OFFSETS` map, never compiled in.
//!
//! Only what that needs is parsed: the header, the type section (to walk from
//! one type to the next every kind's trailing data is sized) and the strings.
//! Format: Documentation/bpf/btf.rst.

use std::borrow::Cow;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

// BTF_KIND_*.
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// One type: its fixed part and where its trailing data starts.
#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, per kind.
    size_or_type: u32,
    /// Offset of the trailing data in the type section.
    data: usize,
}

/// A parsed BTF blob: its types (by id, from 1) and strings.
#[derive(Debug)]
pub struct Btf<'a> {
    types: Vec<Type>,
    type_section: &'a [u8],
    strings: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn section<'d>(
    data: &'d [u8],
    start: usize,
    off: u32,
    len: u32,
    what: &str,
) -> Result<&'d [u8], String> {
    let from = start + off as usize;
    data.get(from..from + len as usize)
        .ok_or_else(|| format!("the {what} section ({len} bytes at {from}) is past the end"))
}

impl<'a> Btf<'a> {
    /// Parses a little-endian BTF blob.
    pub fn parse(data: &'a [u8]) -> Result<Self, String> {
        let magic = u16_at(data, 0)?;
        if magic != MAGIC {
            return Err(format!(
                "bad magic {magic:#06x} (not little-endian BTF, {MAGIC:#06x})"
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(format!("header of {hdr_len} bytes, less than {HEADER_LEN}"));
        }
        let type_section = section(data, hdr_len, u32_at(data, 8)?, u32_at(data, 12)?, "type")?;
        let strings = section(
            data,
            hdr_len,
            u32_at(data, 16)?,
            u32_at(data, 20)?,
            "string",
        )?;
        let mut types = Vec::new();
        let mut at = 0;
        while at < type_section.len() {
            let info = u32_at(type_section, at + 4)?;
            let t = Type {
                name_off: u32_at(type_section, at)?,
                kind: (info >> 24) & 0x1f,
                vlen: info & 0xffff,
                kind_flag: info >> 31 == 1,
                size_or_type: u32_at(type_section, at + 8)?,
                data: at + 12,
            };
            let trailing = match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen as usize,
                k if k == 0 || k > KIND_MAX => {
                    return Err(format!("type {} has unknown kind {k}", types.len() + 1));
                }
                _ => 0,
            };
            types.push(t);
            at = t.data + trailing;
        }
        Ok(Btf {
            types,
            type_section,
            strings,
        })
    }

    fn name(&self, off: u32) -> Cow<'a, str> {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end])
    }

    fn by_id(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// The size of type `id` once typedefs and qualifiers are looked through, when it is an
    /// integer.
    fn int_size(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.by_id(id)?;
            match t.kind {
                KIND_INT => return Some(t.size_or_type),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// The byte offset of integer member `member` of `struct name`, and its size.
    pub fn int_member(&self, name: &str, member: &str) -> Result<(u32, u32), String> {
        let s = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name)
            .ok_or_else(|| format!("no struct {name} in the kernel's BTF"))?;
        for i in 0..s.vlen as usize {
            let m = s.data + 12 * i;
            if self.name(u32_at(self.type_section, m)?) != member {
                continue;
            }
            let ty = u32_at(self.type_section, m + 4)?;
            let raw = u32_at(self.type_section, m + 8)?;
            let (bits, bitfield) = if s.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if bitfield != 0 || bits % 8 != 0 {
                return Err(format!("{name}.{member} is a bitfield"));
            }
            let size = self
                .int_size(ty)
                .ok_or_else(|| format!("{name}.{member} is not an integer"))?;
            return Ok((bits / 8, size));
        }
        Err(format!("struct {name} has no member {member}"))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A BTF blob with `int` (id 1), `typedef int gid_t` (2), a union named `iommu_group` (3:
    /// must not match), an enum (4) and `struct iommu_group { int kobj; gid_t id; int x:3; }` at
    /// bit offsets 0, 512 and 544 (5).
    pub fn sample() -> Vec<u8> {
        let strings = b"\0int\0gid_t\0iommu_group\0kobj\0id\0x\0e\0A\0";
        let s = |name: &str| -> u32 {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| {
                    w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0
                })
                .unwrap();
            pos as u32 + 1
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32, flag: bool| (u32::from(flag) << 31) | (kind << 24) | vlen;
        // 1: int, 4 bytes, signed 32 bits.
        push(&[s("int"), info(KIND_INT, 0, false), 4, (1 << 24) | 32]);
        // 2: typedef int gid_t.
        push(&[s("gid_t"), info(KIND_TYPEDEF, 0, false), 1]);
        // 3: union iommu_group (decoy) with one member.
        push(&[
            s("iommu_group"),
            info(KIND_UNION, 1, false),
            4,
            s("id"),
            1,
            0,
        ]);
        // 4: enum e { A = 0 }.
        push(&[s("e"), info(KIND_ENUM, 1, false), 4, s("A"), 0]);
        // 5: struct iommu_group, kind_flag set (bitfield offsets): kobj at 0 (int), id at bit
        // 512, x a 3-bit field at bit 544.
        push(&[
            s("iommu_group"),
            info(KIND_STRUCT, 3, true),
            72,
            s("kobj"),
            1,
            0,
            s("id"),
            2,
            512,
            s("x"),
            1,
            (3 << 24) | 544,
        ]);
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            HEADER_LEN as u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn finds_an_integer_member_through_a_typedef() {
        let data = sample();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.int_member("iommu_group", "id"), Ok((64, 4)));
        assert_eq!(btf.int_member("iommu_group", "kobj"), Ok((0, 4)));
    }

    #[test]
    fn says_why_it_cannot() {
        let data = sample();
        let btf = Btf::parse(&data).unwrap();
        assert!(
            btf.int_member("iommu_group", "x")
                .unwrap_err()
                .contains("bitfield")
        );
        assert!(
            btf.int_member("iommu_group", "nope")
                .unwrap_err()
                .contains("no member")
        );
        assert!(
            btf.int_member("kvm", "id")
                .unwrap_err()
                .contains("no struct kvm")
        );
        let mut bad = data.clone();
        bad[0] = 0;
        assert!(Btf::parse(&bad).unwrap_err().contains("magic"));
        assert!(
            Btf::parse(&data[..data.len() - 3])
                .unwrap_err()
                .contains("past the end")
        );
    }
}
