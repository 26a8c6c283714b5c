//! `vfio-orphan-pins`: pinned memory that outlives the process that pinned it.
//!
//! The process maps 1 MiB for the edu device (a type1 container, or an IOAS of /dev/iommu or
//! /dev/ioasid with the device attached), forks, and exits at once without unmapping or
//! closing: the child inherited the files and holds them, and the pages stay pinned, charged
//! to the parent's address space, which is gone. The child waits for `--hold-until`'s file and
//! exits; its exit releases the files and the pins. The parent prints one `held` line first:
//! its pid, the child's, and what it was charged.

use crate::dmabuf::DmaBuffer;
use crate::sysfs;
use crate::workload::{EduMapping, HeldArgs, find_edu, vm_now};
use anyhow::{Context, Result, bail};
use clap::Parser;
use std::time::Duration;

/// Where the buffer is mapped.
pub const IOVA: u64 = 0x10_0000;
/// Bytes mapped.
pub const BYTES: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "vfio-orphan-pins",
    about = "Map for the edu device, fork, and exit leaving the child holding the pins"
)]
pub struct Args {
    /// the child holds the files until `--hold-until`'s file exists
    #[command(flatten)]
    pub held: HeldArgs,
}

/// Maps, forks, and never returns: the parent exits after its `held` line, the child when the
/// release file appears.
pub fn run(args: &Args) -> Result<std::convert::Infallible> {
    let args = &args.held;
    let bdf = find_edu(&args.sysfs, None)?;
    sysfs::bind_vfio_pci(&args.sysfs, &bdf, Duration::from_secs(3))?;
    let buf = DmaBuffer::new(usize::try_from(BYTES)?, 0x5a).context("mmap of the buffer")?;
    let (pin0, lck0) = vm_now()?;
    let held = EduMapping::new(args, &bdf, (buf.addr(), IOVA, BYTES))?;
    let (pin1, lck1) = vm_now()?;

    // SAFETY: this process has one thread, so the child is a full copy that may run Rust.
    let child = unsafe { libc::fork() };
    match child {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            // The child: hold the inherited files until released, then let exit close them.
            let mut waited = Duration::ZERO;
            while !args.hold_until.exists() && waited < crate::hold::MAX_HOLD {
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
            std::mem::forget((held, buf));
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(0) }
        }
        child => {
            let line = serde_json::json!({
                "held": true,
                "pid": std::process::id(),
                "holder": child,
                "backend": args.backend,
                "bdf": bdf,
                "bytes": BYTES,
                "vm_pin_kib": pin1.saturating_sub(pin0),
                "vm_lck_kib": lck1.saturating_sub(lck0),
            });
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .context("writing the held line")?;
            }
            std::mem::forget((held, buf));
            // SAFETY: as above: no unmap, no close, nothing of this process runs any more.
            unsafe { libc::_exit(0) }
        }
    }
}
