//! The iommufd ABI smoke checks. They encode *mainline iommufd's* behaviour
//! (see drivers/iommu/iommufd/main.c and ioas.c): run them against
//! `/dev/iommu` to validate the expectations and against `/dev/ioasid` to
//! validate the Rust component.

use crate::dmabuf::DmaBuffer;
use crate::tap::{CheckResult, Tap, expect_errno, expect_ok};
use ioasid_uapi::Iommufd;
use ioasid_uapi::ioctl::_IO;
use ioasid_uapi::iommufd::*;
use std::io::{self, Write};

/// An ioctl number on iommufd's type that no kernel implements.
pub const UNKNOWN_IOCTL: u32 = _IO(IOMMUFD_TYPE, 0xff);
/// IOVA used by the map checks.
pub const MAP_IOVA: u64 = 0x100000;
/// Length used by the map checks (two 4 KiB pages).
pub const MAP_LEN: u64 = 0x2000;
/// Destination IOVA of the copy check.
pub const COPY_IOVA: u64 = 0x300000;
/// An object id that is never allocated in a fresh context.
pub const BOGUS_ID: u32 = 0x7fff_fff0;

/// State shared by the checks of one run.
pub struct Ctx {
    pub fd: Iommufd,
    first: Option<u32>,
    second: Option<u32>,
    destroyed: Option<u32>,
    buf: Option<DmaBuffer>,
}

impl Ctx {
    pub fn new(fd: Iommufd) -> Self {
        Self {
            fd,
            first: None,
            second: None,
            destroyed: None,
            buf: None,
        }
    }

    /// Issue `IOMMU_IOAS_ALLOC` with a hand-built byte buffer and return the
    /// id the kernel wrote (offset 8), destroying it so nothing leaks.
    fn raw_ioas_alloc(&self, mut bytes: Vec<u8>) -> io::Result<u32> {
        // SAFETY: iommu_ioas_alloc carries no user pointers; the size field
        // never exceeds the buffer (ioctl_raw checks).
        unsafe { self.fd.ioctl_raw(IOMMU_IOAS_ALLOC, &mut bytes) }?;
        let id = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if id != 0 {
            // Best effort: the checks only look at the allocation result.
            let _ = self.fd.destroy(id);
        }
        Ok(id)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for id in [self.first.take(), self.second.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.fd.destroy(id);
        }
    }
}

pub type Check = (&'static str, fn(&mut Ctx) -> CheckResult);

fn alloc_bytes(size: u32, flags: u32, total_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; total_len.max(12)];
    b[0..4].copy_from_slice(&size.to_ne_bytes());
    b[4..8].copy_from_slice(&flags.to_ne_bytes());
    b
}

fn need(v: Option<u32>, what: &str) -> Result<u32, String> {
    v.ok_or_else(|| format!("not run: {what} unavailable (earlier check failed)"))
}

/// The address of the mapping checks' buffer.
fn buffer_addr(c: &Ctx) -> Result<u64, String> {
    c.buf
        .as_ref()
        .map(DmaBuffer::addr)
        .ok_or_else(|| "not run: no buffer".to_owned())
}

/// The checks of the brief, in order.
pub fn basic_checks() -> Vec<Check> {
    vec![
        ("IOMMU_IOAS_ALLOC returns a non-zero id", |c| {
            let id = expect_ok(c.fd.ioas_alloc())?;
            c.first = Some(id);
            if id == 0 {
                Err("expected non-zero id got 0".into())
            } else {
                Ok(())
            }
        }),
        (
            "IOMMU_IOAS_ALLOC again returns a distinct non-zero id",
            |c| {
                let id = expect_ok(c.fd.ioas_alloc())?;
                c.second = Some(id);
                match c.first {
                    _ if id == 0 => Err("expected non-zero id got 0".into()),
                    Some(f) if f == id => Err(format!("expected an id other than {f} got {id}")),
                    _ => Ok(()),
                }
            },
        ),
        ("IOMMU_DESTROY first IOAS", |c| {
            let id = need(c.first, "first IOAS")?;
            expect_ok(c.fd.destroy(id))?;
            c.first = None;
            c.destroyed = Some(id);
            Ok(())
        }),
        ("IOMMU_DESTROY second IOAS", |c| {
            let id = need(c.second, "second IOAS")?;
            expect_ok(c.fd.destroy(id))?;
            c.second = None;
            Ok(())
        }),
        ("IOMMU_DESTROY of a destroyed id -> ENOENT", |c| {
            let id = need(c.destroyed, "destroyed id")?;
            expect_errno(&c.fd.destroy(id), libc::ENOENT)
        }),
        ("unknown ioctl _IO(';', 0xff) -> ENOTTY", |c| {
            let mut b = alloc_bytes(16, 0, 16);
            // SAFETY: pointer-free buffer whose size field equals its length.
            let r = unsafe { c.fd.ioctl_raw(UNKNOWN_IOCTL, &mut b) };
            expect_errno(&r, libc::ENOTTY)
        }),
        ("IOMMU_IOAS_ALLOC with size=4 -> EINVAL", |c| {
            expect_errno(&c.raw_ioas_alloc(alloc_bytes(4, 0, 12)), libc::EINVAL)
        }),
        (
            "IOMMU_IOAS_ALLOC oversized (24) with non-zero tail -> E2BIG",
            |c| {
                let mut b = alloc_bytes(24, 0, 24);
                b[20] = 0xa5;
                expect_errno(&c.raw_ioas_alloc(b), libc::E2BIG)
            },
        ),
        (
            "IOMMU_IOAS_ALLOC oversized (24) with zero tail is accepted",
            |c| {
                let id = expect_ok(c.raw_ioas_alloc(alloc_bytes(24, 0, 24)))?;
                if id == 0 {
                    Err("expected non-zero id got 0".into())
                } else {
                    Ok(())
                }
            },
        ),
        ("IOMMU_IOAS_ALLOC with unknown flags -> EOPNOTSUPP", |c| {
            expect_errno(&c.raw_ioas_alloc(alloc_bytes(12, 1, 12)), libc::EOPNOTSUPP)
        }),
    ]
}

const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/// Additional checks of map/unmap/copy/ranges/option semantics (`--extended`).
pub fn extended_checks() -> Vec<Check> {
    vec![
        ("IOMMU_DESTROY id 0 -> ENOENT", |c| {
            expect_errno(&c.fd.destroy(0), libc::ENOENT)
        }),
        ("IOMMU_IOAS_ALLOC with size=0 -> EINVAL", |c| {
            expect_errno(&c.raw_ioas_alloc(alloc_bytes(0, 0, 12)), libc::EINVAL)
        }),
        ("IOMMU_IOAS_ALLOC for the map checks", |c| {
            c.first = Some(expect_ok(c.fd.ioas_alloc())?);
            let buf =
                DmaBuffer::new(MAP_LEN as usize, 0x5a).map_err(|e| format!("mmap failed: {e}"))?;
            c.buf = Some(buf);
            Ok(())
        }),
        (
            "IOMMU_IOAS_IOVA_RANGES of a fresh IOAS covers the test IOVAs",
            |c| {
                let id = need(c.first, "IOAS")?;
                let r = expect_ok(c.fd.ioas_iova_ranges(id))?;
                let covers = |iova: u64| {
                    r.ranges
                        .iter()
                        .any(|x| x.start <= iova && iova + MAP_LEN - 1 <= x.last)
                };
                if r.ranges.is_empty() || !covers(MAP_IOVA) || !covers(COPY_IOVA) {
                    Err(format!(
                        "expected ranges covering {MAP_IOVA:#x} and {COPY_IOVA:#x} got {:?}",
                        r.ranges
                    ))
                } else {
                    Ok(())
                }
            },
        ),
        ("IOMMU_OPTION HUGE_PAGES get on an IOAS = 1", |c| {
            let id = need(c.first, "IOAS")?;
            let v = expect_ok(c.fd.option_get(IOMMU_OPTION_HUGE_PAGES, id))?;
            if v == 1 {
                Ok(())
            } else {
                Err(format!("expected 1 got {v}"))
            }
        }),
        ("IOMMU_IOAS_MAP at fixed IOVA 0x100000", |c| {
            let id = need(c.first, "IOAS")?;
            let va = buffer_addr(c)?;
            let iova = expect_ok(c.fd.ioas_map(id, va, MAP_LEN, Some(MAP_IOVA), RW))?;
            if iova == MAP_IOVA {
                Ok(())
            } else {
                Err(format!("expected iova {MAP_IOVA:#x} got {iova:#x}"))
            }
        }),
        ("IOMMU_IOAS_MAP over an existing mapping -> EEXIST", |c| {
            let id = need(c.first, "IOAS")?;
            let va = buffer_addr(c)?;
            expect_errno(
                &c.fd.ioas_map(id, va, MAP_LEN, Some(MAP_IOVA), RW),
                libc::EEXIST,
            )
        }),
        ("IOMMU_IOAS_MAP without READABLE|WRITEABLE -> EINVAL", |c| {
            let id = need(c.first, "IOAS")?;
            let va = buffer_addr(c)?;
            expect_errno(
                &c.fd.ioas_map(id, va, MAP_LEN, Some(0x200000), 0),
                libc::EINVAL,
            )
        }),
        ("IOMMU_IOAS_MAP with an unknown flag -> EOPNOTSUPP", |c| {
            let id = need(c.first, "IOAS")?;
            let va = buffer_addr(c)?;
            expect_errno(
                &c.fd.ioas_map(id, va, MAP_LEN, Some(0x200000), RW | 1 << 3),
                libc::EOPNOTSUPP,
            )
        }),
        ("IOMMU_IOAS_MAP on an unknown IOAS -> ENOENT", |c| {
            let va = buffer_addr(c)?;
            expect_errno(
                &c.fd.ioas_map(BOGUS_ID, va, MAP_LEN, Some(0x200000), RW),
                libc::ENOENT,
            )
        }),
        (
            "IOMMU_IOAS_MAP with a kernel-chosen IOVA, then IOMMU_IOAS_UNMAP it",
            |c| {
                let id = need(c.first, "IOAS")?;
                let va = buffer_addr(c)?;
                let iova = expect_ok(c.fd.ioas_map(id, va, MAP_LEN, None, RW))?;
                let n = expect_ok(c.fd.ioas_unmap(id, iova, MAP_LEN))?;
                if n == MAP_LEN {
                    Ok(())
                } else {
                    Err(format!("expected {MAP_LEN:#x} bytes unmapped got {n:#x}"))
                }
            },
        ),
        ("IOMMU_IOAS_COPY into a second IOAS", |c| {
            let src = need(c.first, "IOAS")?;
            let dst = expect_ok(c.fd.ioas_alloc())?;
            c.second = Some(dst);
            let iova = expect_ok(c.fd.ioas_copy(dst, src, MAP_IOVA, MAP_LEN, Some(COPY_IOVA), RW))?;
            if iova == COPY_IOVA {
                Ok(())
            } else {
                Err(format!("expected iova {COPY_IOVA:#x} got {iova:#x}"))
            }
        }),
        ("IOMMU_IOAS_UNMAP 0x100000 returns the mapped length", |c| {
            let id = need(c.first, "IOAS")?;
            let n = expect_ok(c.fd.ioas_unmap(id, MAP_IOVA, MAP_LEN))?;
            if n == MAP_LEN {
                Ok(())
            } else {
                Err(format!("expected {MAP_LEN:#x} got {n:#x}"))
            }
        }),
        ("IOMMU_IOAS_UNMAP of an unmapped range -> ENOENT", |c| {
            let id = need(c.first, "IOAS")?;
            expect_errno(&c.fd.ioas_unmap(id, MAP_IOVA, MAP_LEN), libc::ENOENT)
        }),
        ("IOMMU_IOAS_UNMAP everything of the copy IOAS", |c| {
            let id = need(c.second, "copy IOAS")?;
            let n = expect_ok(c.fd.ioas_unmap_all(id))?;
            if n == MAP_LEN {
                Ok(())
            } else {
                Err(format!("expected {MAP_LEN:#x} got {n:#x}"))
            }
        }),
        ("IOMMU_DESTROY both map-check IOASes", |c| {
            let a = need(c.first.take(), "IOAS")?;
            let b = need(c.second.take(), "copy IOAS")?;
            expect_ok(c.fd.destroy(a))?;
            expect_ok(c.fd.destroy(b))
        }),
    ]
}

/// Run the checks against an open context, streaming TAP to `out`.
pub fn run<W: Write>(fd: Iommufd, extended: bool, out: W) -> io::Result<Tap<W>> {
    let mut checks = basic_checks();
    if extended {
        checks.extend(extended_checks());
    }
    let mut tap = Tap::new(out, checks.len())?;
    let mut ctx = Ctx::new(fd);
    for (name, f) in checks {
        let r = f(&mut ctx);
        tap.report(name, &r)?;
    }
    Ok(tap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = basic_checks()
            .iter()
            .chain(extended_checks().iter())
            .map(|c| c.0)
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(basic_checks().len(), 10);
    }

    /// Against /dev/null every ioctl is ENOTTY: only the ENOTTY check passes,
    /// every other line explains what it expected and what it got.
    #[test]
    fn run_against_dev_null() {
        let fd = Iommufd::open("/dev/null").unwrap();
        let tap = run(fd, true, Vec::new()).unwrap();
        let total = basic_checks().len() + extended_checks().len();
        assert_eq!(tap.failed(), total - 1);
        let out = String::from_utf8(tap.into_inner()).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[0], format!("1..{total}"));
        assert_eq!(lines.len(), total + 1);
        assert_eq!(
            lines[1],
            "not ok - IOMMU_IOAS_ALLOC returns a non-zero id: expected ok got ENOTTY (25)"
        );
        assert_eq!(lines[6], "ok - unknown ioctl _IO(';', 0xff) -> ENOTTY");
        assert_eq!(
            lines[7],
            "not ok - IOMMU_IOAS_ALLOC with size=4 -> EINVAL: expected EINVAL got ENOTTY (25)"
        );
        assert!(
            lines[3].contains("not run: first IOAS unavailable"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn alloc_bytes_layout() {
        let b = alloc_bytes(24, 1, 24);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[0..4], &24u32.to_ne_bytes());
        assert_eq!(&b[4..8], &1u32.to_ne_bytes());
        assert!(b[8..].iter().all(|x| *x == 0));
        assert_eq!(alloc_bytes(4, 0, 4).len(), 12);
    }
}
