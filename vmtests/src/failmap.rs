//! `vfio-failed-map`: an IOMMU mapping that the IOMMU layer refuses, and what is left after it.
//!
//! The process maps 64 KiB for the edu device (a type1 container, or an IOAS of /dev/iommu or
//! /dev/ioasid with the device attached), then asks for a second 64 KiB at 1 GiB, where the
//! domain has no page table yet, with `/proc/self/make-it-fail` set: the test kernel's
//! `fail_page_alloc`, configured by the scenario to fail only allocations made under
//! `iommu_map_nosync()` by tasks that ask for it, fails the first page-table page, so
//! `iommu_map()` returns `-ENOMEM` inside the ioctl. The MAP must fail with `ENOMEM`, and leave
//! `VmPin` and `VmLck` as they were: what the backend pinned and charged for it is undone.
//! The first mapping stays, and the process holds it until `--hold-until`'s file appears.

use crate::dmabuf::DmaBuffer;
use crate::sysfs;
use crate::workload::{EduMapping, HeldArgs, find_edu, vm_now};
use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use std::time::Duration;

/// Where the mapping that succeeds goes.
pub const IOVA: u64 = 0x10_0000;
/// Where the mapping that fails goes: 1 GiB, so that its page-table pages are new.
pub const FAILED_IOVA: u64 = 1 << 30;
/// Bytes of each mapping.
pub const BYTES: u64 = 64 << 10;

/// The kernel's fault-injection switch of this task (`CONFIG_FAULT_INJECTION`).
const MAKE_IT_FAIL: &str = "/proc/self/make-it-fail";

#[derive(Parser, Debug)]
#[command(
    name = "vfio-failed-map",
    about = "Map for the edu device, then a map the IOMMU layer fails (fail_page_alloc), and hold"
)]
pub struct Args {
    #[command(flatten)]
    pub held: HeldArgs,
}

fn set_make_it_fail(on: bool) -> Result<()> {
    std::fs::write(MAKE_IT_FAIL, if on { "1" } else { "0" }).with_context(|| {
        format!("writing {MAKE_IT_FAIL} (a kernel with CONFIG_FAULT_INJECTION is needed)")
    })
}

/// Maps, fails a map, checks the failure and what it left, announces and holds.
pub fn run(args: &Args) -> Result<()> {
    let args = &args.held;
    let bdf = find_edu(&args.sysfs, None)?;
    sysfs::bind_vfio_pci(&args.sysfs, &bdf, Duration::from_secs(3))?;
    let buf = DmaBuffer::new(usize::try_from(2 * BYTES)?, 0x5a).context("mmap of the buffer")?;
    let held = EduMapping::new(args, &bdf, (buf.addr(), IOVA, BYTES))?;

    let (pin0, lck0) = vm_now()?;
    set_make_it_fail(true)?;
    let failed = held.map(buf.addr() + BYTES, FAILED_IOVA, BYTES);
    set_make_it_fail(false)?;
    let (pin1, lck1) = vm_now()?;
    match failed {
        Ok(()) => bail!(
            "the map at {FAILED_IOVA:#x} succeeded: fail_page_alloc failed no allocation under \
             iommu_map_nosync (is it configured, with this task's make-it-fail?)"
        ),
        Err(e) => ensure!(
            e.root_cause()
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                == Some(libc::ENOMEM),
            "the map at {FAILED_IOVA:#x} failed with {e:#}, expected ENOMEM from iommu_map"
        ),
    }
    ensure!(
        (pin1, lck1) == (pin0, lck0),
        "the failed map left VmPin {pin0} -> {pin1} KiB, VmLck {lck0} -> {lck1} KiB"
    );

    let line = serde_json::json!({
        "held": true,
        "pid": std::process::id(),
        "backend": args.backend,
        "bdf": bdf,
        "mapped": {"iova": IOVA, "size": BYTES},
        "failed": {"iova": FAILED_IOVA, "size": BYTES, "errno": libc::ENOMEM},
        "vm_pin_kib": pin0,
        "vm_lck_kib": lck0,
    });
    crate::hold::announce_and_wait(&line, &args.hold_until)?;
    drop(held);
    drop(buf);
    Ok(())
}
