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
use crate::vfio::{VfioContainer, VfioDevice, VfioGroup};
use crate::workload::{Backend, bind_attach_map, find_edu, type1_with_map, vm_now};
use anyhow::{Context, Result, bail};
use clap::Parser;
use ioasid_uapi::Iommufd;
use std::path::{Path, PathBuf};
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
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// the child holds the files until this file exists
    #[arg(long, value_name = "FILE")]
    pub hold_until: PathBuf,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
}

/// What keeps the mapping; never dropped in either process (both leave with `_exit`).
#[allow(dead_code, reason = "held only for their file descriptors")]
enum Held {
    Type1(VfioContainer, VfioGroup),
    Iommufd(VfioDevice, Iommufd),
}

fn map(args: &Args, bdf: &str, buf: &DmaBuffer) -> Result<Held> {
    let area = (buf.addr(), IOVA, BYTES);
    match args.backend.iommu_dev() {
        None => {
            let (container, group) = type1_with_map(&args.sysfs, &args.devfs, bdf, area)?;
            Ok(Held::Type1(container, group))
        }
        Some(path) => {
            let fd = Iommufd::open(Path::new(path)).with_context(|| format!("opening {path}"))?;
            let (dev, _ioas) = bind_attach_map(&args.sysfs, &args.devfs, &fd, path, bdf, area)?;
            Ok(Held::Iommufd(dev, fd))
        }
    }
}

/// Maps, forks, and never returns: the parent exits after its `held` line, the child when the
/// release file appears.
pub fn run(args: &Args) -> Result<std::convert::Infallible> {
    let bdf = find_edu(&args.sysfs, None)?;
    sysfs::bind_vfio_pci(&args.sysfs, &bdf, Duration::from_secs(3))?;
    let buf = DmaBuffer::new(usize::try_from(BYTES)?, 0x5a).context("mmap of the buffer")?;
    let (pin0, lck0) = vm_now()?;
    let held = map(args, &bdf, &buf)?;
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
