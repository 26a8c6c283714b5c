//! Issuing a [`Call`] on a device: the shared memory the calls point into,
//! `/proc/self/status` accounting, and the raw ioctl.

use super::call::{Call, Env, RANGES_CAP};
use super::ops::Op;
use super::outcome::{Outcome, SCRATCH_FILL};
use anyhow::{Context, Result, bail};
use ioasid_uapi::Iommufd;
use ioasid_uapi::iommufd::IommuIovaRange;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

pub const PAGE: u64 = 4096;
/// Pages of the read-write arena (user_va of IOAS_MAP).
pub const ARENA_PAGES: u64 = 64;
/// Pages of the read-only, PROT_NONE and hole regions.
pub const SIDE_PAGES: u64 = 16;
/// Size of the memfd of IOAS_MAP_FILE, in pages.
pub const MEMFD_PAGES: u64 = 64;

/// An anonymous private mapping, unmapped on drop. Never accessed through
/// Rust references: the kernel may write it (the range scratch array).
pub struct Mem {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mem {
    /// `mmap(len, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE)`.
    pub fn new(len: usize, prot: libc::c_int) -> Result<Self> {
        // SAFETY: anonymous mapping request without an address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mmap of {len} bytes (prot {prot:#x})"));
        }
        let ptr = NonNull::new(p.cast::<u8>()).context("mmap returned NULL")?;
        Ok(Self { ptr, len })
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in new().
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Reads `VmPin`/`VmLck` of this process ([`read_status`]; a fake in tests).
pub type Meter = Box<dyn Fn() -> Result<MemCounters>>;

/// The memory and file every call of a run points into. Shared by both
/// devices, so user pointers are identical in both runs.
///
/// The regions are distinct memory, page by page: the arena, the read-only
/// and the PROT_NONE mappings are separate private anonymous mappings
/// (the arena populated writable, so one frame per page; a long-term pin of
/// a read-only page unshares the zero page into a frame of its own), the
/// memfd is a shmem file the process never maps, and the hole is unmapped.
/// The pin model ([`super::model::Backing`]) names pages accordingly.
pub struct Resources {
    arena: Mem,
    read_only: Mem,
    no_access: Mem,
    hole: u64,
    memfd: OwnedFd,
    scratch: Mem,
    meter: Meter,
}

impl Resources {
    pub fn new() -> Result<Self> {
        Self::with_meter(Box::new(read_status))
    }

    /// As [`Resources::new`], with `VmPin`/`VmLck` read by `meter`.
    pub fn with_meter(meter: Meter) -> Result<Self> {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let arena = Mem::new((ARENA_PAGES * PAGE) as usize, rw)?;
        let read_only = Mem::new((SIDE_PAGES * PAGE) as usize, libc::PROT_READ)?;
        let no_access = Mem::new((SIDE_PAGES * PAGE) as usize, libc::PROT_NONE)?;
        // A hole: map, remember the address, unmap.
        let hole = Mem::new((SIDE_PAGES * PAGE) as usize, libc::PROT_NONE)?;
        let hole_addr = hole.addr();
        drop(hole);
        let scratch = Mem::new(
            (RANGES_CAP * core::mem::size_of::<IommuIovaRange>()).next_multiple_of(PAGE as usize),
            rw,
        )?;
        let memfd = crate::memfd::create(c"ioasid-difftest", (MEMFD_PAGES * PAGE) as usize)
            .context("memfd of IOMMU_IOAS_MAP_FILE")?;
        Ok(Self {
            arena,
            read_only,
            no_access,
            hole: hole_addr,
            memfd,
            scratch,
            meter,
        })
    }

    /// `VmPin` and `VmLck` now.
    pub fn counters(&self) -> Result<MemCounters> {
        (self.meter)()
    }

    pub fn env(&self) -> Env {
        Env {
            arena: self.arena.addr(),
            read_only: self.read_only.addr(),
            no_access: self.no_access.addr(),
            hole: self.hole,
            memfd: self.memfd.as_raw_fd(),
            ranges: self.scratch.addr(),
        }
    }

    fn scratch_ptr(&self) -> *mut IommuIovaRange {
        self.scratch.ptr.as_ptr().cast()
    }

    fn scratch_reset(&self, input: &[IommuIovaRange]) {
        let p = self.scratch_ptr();
        for i in 0..RANGES_CAP {
            let v = input.get(i).copied().unwrap_or(SCRATCH_FILL);
            // SAFETY: i < RANGES_CAP and the mapping holds RANGES_CAP
            // entries; it is page aligned, so every entry is aligned.
            unsafe { p.add(i).write_volatile(v) };
        }
    }

    fn scratch_read(&self) -> Vec<IommuIovaRange> {
        let p = self.scratch_ptr();
        // SAFETY: as in scratch_reset.
        (0..RANGES_CAP)
            .map(|i| unsafe { p.add(i).read_volatile() })
            .collect()
    }
}

/// Something iommufd ioctls can be issued on: an open device, or a fake in tests.
pub trait Device {
    /// As [`Iommufd::ioctl_raw`].
    ///
    /// # Safety
    /// As [`Iommufd::ioctl_raw`]: embedded user pointers must be valid for
    /// what the kernel does with them.
    unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int>;
}

impl Device for Iommufd {
    unsafe fn ioctl_raw(&self, nr: u32, buf: &mut [u8]) -> std::io::Result<libc::c_int> {
        // SAFETY: forwarded to the caller.
        unsafe { Iommufd::ioctl_raw(self, nr, buf) }
    }
}

/// `VmPin` and `VmLck` of `/proc/self/status`, in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemCounters {
    /// `mm->pinned_vm`: iommufd adds every page it pins, whatever the
    /// accounting mode (iopt_pages_update_pinned()).
    pub pin_kb: i64,
    /// `mm->locked_vm`: iommufd charges it only in IOPT_PAGES_ACCOUNT_MM
    /// mode (IOMMU_OPTION_RLIMIT_MODE = 1) for tasks without CAP_IPC_LOCK.
    pub lck_kb: i64,
}

/// Parse `VmPin:` / `VmLck:` out of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Result<MemCounters> {
    let field = |name: &str| -> Result<i64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} line in /proc/self/status"))?;
        let v = line[name.len()..]
            .split_whitespace()
            .next()
            .with_context(|| format!("empty {name} line"))?;
        v.parse::<i64>()
            .with_context(|| format!("bad {name} value {v:?}"))
    };
    Ok(MemCounters {
        pin_kb: field("VmPin:")?,
        lck_kb: field("VmLck:")?,
    })
}

pub fn read_status() -> Result<MemCounters> {
    let text =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    parse_status(&text)
}

/// Issue `call` on `dev`, `id` resolving sequence object indices to this
/// device's ids. `measure` reads `/proc/self/status` around the call.
pub fn execute(
    dev: &dyn Device,
    call: &Call,
    res: &Resources,
    id: &dyn Fn(super::call::Id) -> u32,
    measure: bool,
) -> Result<Outcome> {
    let op = call.op();
    let mut enc = call.encode(&res.env(), id);
    let uses_scratch = matches!(op, Op::IovaRanges | Op::AllowIovas);
    if uses_scratch {
        res.scratch_reset(&enc.scratch_in);
    }
    let before = if measure { Some(res.counters()?) } else { None };
    // SAFETY: the size field never exceeds the buffer (Call::encode); every
    // embedded pointer points into `res` (arena, read-only or PROT_NONE
    // mappings, the scratch array of RANGES_CAP entries, which num_iovas
    // never exceeds) or is deliberately invalid (NULL, a hole, a literal
    // address) — the kernel faults on those with EFAULT, it never touches
    // memory this program holds references to.
    let r = unsafe { dev.ioctl_raw(op.nr(), &mut enc.bytes) };
    let after = if measure { Some(res.counters()?) } else { None };
    let ret = match r {
        Ok(v) => Ok(v),
        Err(e) => match e.raw_os_error() {
            Some(n) => Err(n),
            None => bail!("{call}: not issued: {e}"),
        },
    };
    let (pinned_kb, locked_kb) = match (before, after) {
        (Some(b), Some(a)) => (Some(a.pin_kb - b.pin_kb), Some(a.lck_kb - b.lck_kb)),
        _ => (None, None),
    };
    Ok(Outcome {
        ret,
        bytes: enc.bytes,
        ranges: if uses_scratch {
            res.scratch_read()
        } else {
            Vec::new()
        },
        pinned_kb,
        locked_kb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_proc_status() {
        let t = "Name:\tx\nVmLck:\t       8 kB\nVmPin:\t    1024 kB\nVmHWM:\t 1 kB\n";
        assert_eq!(
            parse_status(t).unwrap(),
            MemCounters {
                pin_kb: 1024,
                lck_kb: 8
            }
        );
        assert!(parse_status("VmLck:\t0 kB\n").is_err());
        assert!(parse_status("VmPin: x kB\nVmLck: 0 kB").is_err());
    }

    #[test]
    fn own_status_parses() {
        // Linux has had VmPin since 3.2.
        read_status().unwrap();
    }

    /// Against /dev/null every ioctl fails with ENOTTY; the buffers come back unchanged.
    #[test]
    fn execute_against_dev_null() {
        use super::super::call::{Cmd, Id, RangesPtr};
        let res = Resources::new().unwrap();
        let dev = Iommufd::open("/dev/null").unwrap();
        let call = Call::new(Cmd::IovaRanges {
            ioas: Id::Obj(0),
            num_iovas: 4,
            reserved: 0,
            ptr: RangesPtr::Scratch,
        });
        let o = execute(&dev, &call, &res, &|_| 1, true).unwrap();
        assert_eq!(o.ret, Err(libc::ENOTTY));
        assert_eq!(o.pinned_kb, Some(0));
        assert_eq!(o.ranges, vec![SCRATCH_FILL; RANGES_CAP]);
        assert_eq!(o.bytes, call.encode(&res.env(), &|_| 1).bytes);
    }
}
