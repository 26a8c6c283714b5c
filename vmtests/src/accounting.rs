//! Pinning and accounting checks of `/dev/ioasid` (`ioasid-smoke --accounting`).
//!
//! `/dev/ioasid` pins the memory of `IOMMU_IOAS_MAP` at once and charges
//! each page once per open file, however many IOASes map it. These checks
//! observe that through:
//!
//! * the file's fdinfo (`ioasid-pinned-pages`, `ioasid-charged-pages`,
//!   `ioasid-area`), documented in `drivers/iommu/ioasid/ioasid.rs`;
//! * `VmPin` of `/proc/self/status` (`mm->pinned_vm`), which counts every
//!   page the file pins, once;
//! * `RLIMIT_MEMLOCK`: in a child without `CAP_IPC_LOCK` and with a limit
//!   of 1.5x a buffer of [`RLIMIT_PAGES`], mapping the same buffer into two
//!   IOASes succeeds (charged once) while mapping a second, different buffer
//!   fails with `ENOMEM` (the limit is enforced, so a double charge would
//!   have failed). `user->locked_vm` is per user, so other charges of the
//!   same user (io_uring, perf buffers) count too: they must stay below
//!   half a buffer for the first map to fit, which the check reports.
//!
//! `user->locked_vm`, which iommufd's default mode charges, is not visible
//! in procfs; the fdinfo charge and the rlimit behaviour stand for it.
//!
//! These are `/dev/ioasid` semantics: mainline iommufd does not pin without
//! an attached device, so they are not run against `/dev/iommu`.

use crate::dmabuf::DmaBuffer;
use crate::memfd;
use crate::tap::{CheckResult, Tap, expect_errno, expect_ok};
use ioasid_uapi::Iommufd;
use ioasid_uapi::fdinfo::{self, Area, IoasidFdinfo};
use ioasid_uapi::iommufd::*;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};

/// Pages of the test buffers.
pub const PAGES: usize = 64;
/// Pages of the buffers of the rlimit check.
pub const RLIMIT_PAGES: usize = 1024;
/// Size of the memfd mapped both ways, in pages.
const MEMFD_PAGES: usize = 16;
const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
const IOVA_A: u64 = 0x100000;
const IOVA_B: u64 = 0x400000;

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// The pinning lines of `fd`'s fdinfo, by [`fdinfo::parse`] (the one parser of the format,
/// shared with ioasid-top).
fn read_fdinfo(fd: &Iommufd) -> Result<IoasidFdinfo, String> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    if !text.contains("ioasid-pinned-pages:") {
        return Err(format!("{path} has no ioasid-pinned-pages line"));
    }
    fdinfo::parse(&text).map_err(|e| format!("{path}: {e}"))
}

/// A `kB` field of `/proc/self/status` (`VmPin`, `VmLck`…), in KiB.
pub fn status_kib(field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    parse_status_kib(&text, field)
}

/// `(VmPin, VmLck)` of this process, in KiB: what the kernel charged for pinned and locked
/// memory.
pub fn vm_pin_and_lck_kib() -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    Ok((
        parse_status_kib(&text, "VmPin")?,
        parse_status_kib(&text, "VmLck")?,
    ))
}

/// [`status_kib`] of a given status text.
pub fn parse_status_kib(status: &str, field: &str) -> Result<u64, String> {
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("bad {field} line {line:?}: {e}"))
}

/// `VmPin` of `/proc/self/status`, in pages.
pub fn vm_pin_pages() -> Result<u64, String> {
    Ok(status_kib("VmPin")? * 1024 / page_size() as u64)
}

fn expect_eq(what: &str, got: u64, want: u64) -> CheckResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {what} {want} got {got}"))
    }
}

struct Ctx {
    fd: Option<Iommufd>,
    buf: DmaBuffer,
    base_vmpin: u64,
    a: Option<u32>,
    b: Option<u32>,
}

impl Ctx {
    fn fd(&self) -> Result<&Iommufd, String> {
        self.fd
            .as_ref()
            .ok_or_else(|| "not run: file closed".to_string())
    }
    fn pins(&self, pinned: u64, vmpin: u64) -> CheckResult {
        let info = read_fdinfo(self.fd()?)?;
        expect_eq("ioasid-pinned-pages", info.pinned_pages, pinned)?;
        expect_eq(
            "VmPin pages above baseline",
            vm_pin_pages()?.wrapping_sub(self.base_vmpin),
            vmpin,
        )
    }
}

type Check = (&'static str, fn(&mut Ctx) -> CheckResult);

fn checks() -> Vec<Check> {
    vec![
        (
            "fdinfo of a fresh file: mode user, nothing pinned or charged",
            |c| {
                let info = read_fdinfo(c.fd()?)?;
                if info.account_mode != "user" {
                    return Err(format!(
                        "expected ioasid-account-mode user got {:?}",
                        info.account_mode
                    ));
                }
                expect_eq("ioasid-pinned-pages", info.pinned_pages, 0)?;
                expect_eq("ioasid-charged-pages", info.charged_pages, 0)
            },
        ),
        ("IOMMU_IOAS_MAP pins the buffer once (fdinfo, VmPin)", |c| {
            let a = expect_ok(c.fd()?.ioas_alloc())?;
            c.a = Some(a);
            let len = c.buf.len() as u64;
            expect_ok(c.fd()?.ioas_map(a, c.buf.addr(), len, Some(IOVA_A), RW))?;
            c.pins(PAGES as u64, PAGES as u64)
        }),
        (
            "fdinfo lists the area with its IOVA, length and prot",
            |c| {
                let info = read_fdinfo(c.fd()?)?;
                let a = c.a.ok_or("not run: no IOAS")?;
                let want = Area {
                    ioas: a,
                    iova: IOVA_A,
                    length: c.buf.len() as u64,
                    prot: "rw".to_string(),
                };
                if info.areas.contains(&want) {
                    Ok(())
                } else {
                    Err(format!("expected area {want:?} got {:?}", info.areas))
                }
            },
        ),
        (
            "the same buffer mapped into a second IOAS is not pinned again",
            |c| {
                let b = expect_ok(c.fd()?.ioas_alloc())?;
                c.b = Some(b);
                let len = c.buf.len() as u64;
                expect_ok(c.fd()?.ioas_map(b, c.buf.addr(), len, Some(IOVA_B), RW))?;
                c.pins(PAGES as u64, PAGES as u64)
            },
        ),
        ("IOMMU_IOAS_COPY shares the pinned pages", |c| {
            let fd = c.fd()?;
            let (a, b) = (c.a.ok_or("not run")?, c.b.ok_or("not run")?);
            let len = c.buf.len() as u64;
            expect_ok(fd.ioas_copy(b, a, IOVA_A, len, None, RW))?;
            c.pins(PAGES as u64, PAGES as u64)
        }),
        (
            "unmapping the first IOAS keeps the pages the second maps",
            |c| {
                let fd = c.fd()?;
                let a = c.a.ok_or("not run")?;
                let n = expect_ok(fd.ioas_unmap_all(a))?;
                expect_eq("unmapped bytes", n, c.buf.len() as u64)?;
                c.pins(PAGES as u64, PAGES as u64)
            },
        ),
        (
            "IOMMU_DESTROY of the second IOAS returns to baseline",
            |c| {
                let b = c.b.take().ok_or("not run")?;
                expect_ok(c.fd()?.destroy(b))?;
                c.pins(0, 0)?;
                let info = read_fdinfo(c.fd()?)?;
                expect_eq("ioasid-charged-pages", info.charged_pages, 0)
            },
        ),
        (
            "closing the file with mappings returns VmPin to baseline",
            |c| {
                let fd = c.fd()?;
                let a = c.a.ok_or("not run")?;
                let len = c.buf.len() as u64;
                expect_ok(fd.ioas_map(a, c.buf.addr(), len, None, RW))?;
                c.pins(PAGES as u64, PAGES as u64)?;
                c.fd = None;
                c.a = None;
                expect_eq(
                    "VmPin pages above baseline",
                    vm_pin_pages()?.wrapping_sub(c.base_vmpin),
                    0,
                )
            },
        ),
        (
            "a memfd mapped through mmap() and through IOMMU_IOAS_MAP_FILE is pinned once",
            |_| {
                let fd = Iommufd::open(ioasid_uapi::DEV_IOASID).map_err(|e| e.to_string())?;
                let len = MEMFD_PAGES * page_size();
                let memfd =
                    memfd::create(c"ioasid-accounting", len).map_err(|e| format!("memfd: {e}"))?;
                let mapping = memfd::SharedMapping::new(memfd.as_fd(), len)
                    .map_err(|e| format!("mmap of the memfd: {e}"))?;
                let base = vm_pin_pages()?;
                let a = expect_ok(fd.ioas_alloc())?;
                expect_ok(fd.ioas_map(a, mapping.addr(), len as u64, None, RW))?;
                expect_ok(fd.ioas_map_file(a, memfd.as_fd(), 0, len as u64, None, RW))?;
                expect_eq(
                    "ioasid-pinned-pages",
                    read_fdinfo(&fd)?.pinned_pages,
                    MEMFD_PAGES as u64,
                )?;
                expect_eq(
                    "VmPin pages above baseline",
                    vm_pin_pages()?.wrapping_sub(base),
                    MEMFD_PAGES as u64,
                )?;
                expect_ok(fd.destroy(a))?;
                expect_eq("ioasid-pinned-pages", read_fdinfo(&fd)?.pinned_pages, 0)?;
                expect_eq(
                    "VmPin pages above baseline",
                    vm_pin_pages()?.wrapping_sub(base),
                    0,
                )
            },
        ),
        (
            "pages pinned inside a huge page, then around it, are counted once and released piecewise",
            |_| {
                // A 2 MiB buffer (a transparent huge page where the kernel gives one) is one run of
                // page frames in the table of pinned pages; maps of a page inside it, of the whole,
                // and of a range across its end split that run, and every release must find whole
                // runs again.
                let fd = Iommufd::open(ioasid_uapi::DEV_IOASID).map_err(|e| e.to_string())?;
                let huge = 2 << 20;
                let ps = page_size() as u64;
                let (buf, _) = DmaBuffer::new_huge_aligned(2 * huge)
                    .map_err(|e| format!("huge buffer: {e}"))?;
                let a = expect_ok(fd.ioas_alloc())?;
                let pinned = |want: u64| {
                    expect_eq("ioasid-pinned-pages", read_fdinfo(&fd)?.pinned_pages, want)
                };
                let mid = buf.addr() + 100 * ps;
                let page = expect_ok(fd.ioas_map(a, mid, ps, None, RW))?;
                pinned(1)?;
                let whole = expect_ok(fd.ioas_map(a, buf.addr(), huge as u64, None, RW))?;
                pinned(512)?;
                let across_start = buf.addr() + huge as u64 - 8 * ps;
                let across = expect_ok(fd.ioas_map(a, across_start, 16 * ps, None, RW))?;
                pinned(520)?;
                expect_ok(fd.ioas_unmap(a, whole, huge as u64))?;
                pinned(17)?;
                expect_ok(fd.ioas_unmap(a, page, ps))?;
                pinned(16)?;
                expect_ok(fd.ioas_unmap(a, across, 16 * ps))?;
                pinned(0)
            },
        ),
        ("IOMMU_IOAS_MAP of unmapped memory -> EFAULT", |_| {
            let fd = Iommufd::open(ioasid_uapi::DEV_IOASID).map_err(|e| e.to_string())?;
            let a = expect_ok(fd.ioas_alloc())?;
            // The page at the end of the buffer's mapping is unmapped:
            // a guard from a fresh PROT_NONE reservation.
            let ps = page_size();
            // SAFETY: anonymous PROT_NONE reservation, never dereferenced.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ps,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err("mmap failed".into());
            }
            let r = fd.ioas_map(a, p as u64, ps as u64, None, RW);
            // SAFETY: unmapping the reservation made above.
            unsafe { libc::munmap(p, ps) };
            expect_errno(&r, libc::EFAULT)?;
            expect_eq("ioasid-pinned-pages", read_fdinfo(&fd)?.pinned_pages, 0)
        }),
        (
            "RLIMIT_MEMLOCK 1.5x a 1024-page buffer, no CAP_IPC_LOCK: two IOASes of one buffer map, another buffer -> ENOMEM",
            |_| run_in_child(rlimit_child),
        ),
    ]
}

/// The rlimit scenario, in a forked child: it drops `CAP_IPC_LOCK` and
/// lowers `RLIMIT_MEMLOCK`, which must not leak into the other checks.
fn rlimit_child() -> CheckResult {
    let ps = page_size();
    let limit = (RLIMIT_PAGES + RLIMIT_PAGES / 2) * ps;
    let rl = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: plain setrlimit on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
        return Err(format!("setrlimit: {}", io::Error::last_os_error()));
    }
    drop_cap_ipc_lock()?;

    let buf = DmaBuffer::new(RLIMIT_PAGES * ps, 0x11).map_err(|e| e.to_string())?;
    let other = DmaBuffer::new(RLIMIT_PAGES * ps, 0x22).map_err(|e| e.to_string())?;
    let fd = Iommufd::open(ioasid_uapi::DEV_IOASID).map_err(|e| e.to_string())?;
    let a = expect_ok(fd.ioas_alloc())?;
    let b = expect_ok(fd.ioas_alloc())?;
    let len = buf.len() as u64;
    expect_ok(fd.ioas_map(a, buf.addr(), len, None, RW))
        .map_err(|e| format!("first map (other locked_vm charges of the user?): {e}"))?;
    expect_ok(fd.ioas_map(b, buf.addr(), len, None, RW))
        .map_err(|e| format!("same buffer in a second IOAS (charged once): {e}"))?;
    let info = read_fdinfo(&fd)?;
    expect_eq(
        "ioasid-charged-pages",
        info.charged_pages,
        RLIMIT_PAGES as u64,
    )?;
    expect_errno(&fd.ioas_map(b, other.addr(), len, None, RW), libc::ENOMEM)
        .map_err(|e| format!("another buffer beyond the limit: {e}"))?;
    expect_eq(
        "ioasid-charged-pages after ENOMEM",
        read_fdinfo(&fd)?.charged_pages,
        RLIMIT_PAGES as u64,
    )
}

/// Clear `CAP_IPC_LOCK` from the effective set (iommufd and /dev/ioasid
/// do not charge a task that has it).
fn drop_cap_ipc_lock() -> CheckResult {
    const CAP_IPC_LOCK: u32 = 14;
    const VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for two data elements.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", io::Error::last_os_error()));
    }
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset with the header and data capget filled in.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Run `f` in a forked child; its verdict comes back through a pipe.
fn run_in_child(f: fn() -> CheckResult) -> CheckResult {
    let mut fds = [0; 2];
    // SAFETY: pipe with a two-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: the smoke program is single-threaded; the child only runs `f`
    // and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        let msg = match f() {
            Ok(()) => String::new(),
            Err(e) => e,
        };
        // SAFETY: writing a live buffer to our pipe end, then exiting
        // without running the parent's destructors.
        unsafe {
            libc::close(fds[0]);
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(if msg.is_empty() { 0 } else { 1 });
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        // SAFETY: reading into a live buffer from our pipe end.
        let n = unsafe { libc::read(fds[0], chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: reaping our child; closing our read end.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    let msg = String::from_utf8_lossy(&out).into_owned();
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if msg.is_empty() {
        Err(format!("child failed with status {status:#x}"))
    } else {
        Err(msg)
    }
}

/// Number of checks `run` reports.
pub fn count() -> usize {
    checks().len()
}

/// Run the checks on a fresh `/dev/ioasid` file, streaming TAP to `out`.
pub fn run<W: Write>(fd: Iommufd, out: W) -> io::Result<Tap<W>> {
    let checks = checks();
    let mut tap = Tap::new(out, checks.len())?;
    let buf = DmaBuffer::new(PAGES * page_size(), 0x5a)?;
    let base_vmpin = vm_pin_pages().map_err(io::Error::other)?;
    let mut ctx = Ctx {
        fd: Some(fd),
        buf,
        base_vmpin,
        a: None,
        b: None,
    };
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
    fn status_fields_in_kib() {
        let status = "Name:\tx\nVmLck:\t    2048 kB\nVmPin:\t       4 kB\nVmPinX:\t1 kB\n";
        assert_eq!(parse_status_kib(status, "VmPin"), Ok(4));
        assert_eq!(parse_status_kib(status, "VmLck"), Ok(2048));
        assert!(parse_status_kib(status, "VmRSS").is_err());
        assert!(parse_status_kib("VmPin:\tlots kB\n", "VmPin").is_err());
    }

    #[test]
    fn parses_the_documented_format() {
        let text = "pos:\t0\nflags:\t02\nioasid-account-mode:\tuser\n\
                    ioasid-pinned-pages:\t64\nioasid-charged-pages:\t0\n\
                    ioasid-object:\t1 ioas\nioasid-area:\t1 0x100000 0x40000 rw\n\
                    ioasid-future-key:\twhatever\n";
        let info = fdinfo::parse(text).unwrap();
        assert_eq!(info.account_mode, "user");
        assert_eq!(info.pinned_pages, 64);
        assert_eq!(info.charged_pages, 0);
        assert_eq!(
            info.areas,
            vec![Area {
                ioas: 1,
                iova: 0x100000,
                length: 0x40000,
                prot: "rw".to_string()
            }]
        );
    }

    #[test]
    fn vm_pin_is_readable() {
        vm_pin_pages().unwrap();
    }
}
