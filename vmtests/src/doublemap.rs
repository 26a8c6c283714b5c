//! `vfio-double-map`: one buffer mapped for two devices through two separate page tables, the
//! way a VMM that keeps one type1 container, or one IOAS, per device does.
//!
//! - type1: a container per device's group, the buffer mapped into both: each container pins
//!   and charges it, so VmLck grows by twice its size;
//! - iommufd: one /dev/iommu file, an IOAS per device, the buffer mapped into both: each IOAS
//!   has its own pinned pages, so VmPin grows by twice its size (IOMMU_IOAS_COPY would share);
//! - ioasid: the same on /dev/ioasid, which charges a page once per file: VmPin grows by its
//!   size once.
//!
//! The devices are edu (conventional PCI) and the igb NIC of `cargo xtask vm --pcie-nic`, each
//! in an IOMMU group of its own. The summary line says what was charged; with `--hold-until`
//! the state is held for `ioasid-top audit` to look at.

use crate::dmabuf::DmaBuffer;
use crate::sysfs;
use crate::vfio::{VfioContainer, VfioDevice, VfioGroup};
use crate::workload::{Backend, bind_attach_map, find_edu, type1_with_map, vm_now};
use anyhow::{Context, Result, ensure};
use clap::Parser;
use ioasid_uapi::Iommufd;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// QEMU's igb (82576).
pub const IGB_VENDOR_ID: u16 = 0x8086;
pub const IGB_DEVICE_ID: u16 = 0x10c9;

/// The IOVA both page tables map the buffer at.
pub const IOVA: u64 = 0x10_0000;

#[derive(Parser, Debug)]
#[command(
    name = "vfio-double-map",
    about = "Map one buffer for two devices through two type1 containers or two IOASes"
)]
pub struct Args {
    /// type1: two containers; iommufd or ioasid: two IOASes of one file
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// bytes of the buffer (a multiple of 4 KiB)
    #[arg(long, default_value = "1M", value_parser = crate::workload::parse_size)]
    pub size: u64,
    /// once both are mapped, print a `held` JSON line and wait until this file exists
    #[arg(long, value_name = "FILE")]
    pub hold_until: Option<PathBuf>,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
}

/// The summary line.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub pid: u32,
    pub backend: Backend,
    pub devices: [String; 2],
    pub bytes: u64,
    /// VmPin and VmLck growth while both mappings were held, in KiB.
    pub vm_pin_kib: u64,
    pub vm_lck_kib: u64,
    /// Both back to where they were after the unmaps and closes.
    pub released: bool,
}

/// The first igb NIC.
fn find_igb(sysfs_root: &Path) -> Result<String> {
    sysfs::find_pci_devices(sysfs_root, IGB_VENDOR_ID, IGB_DEVICE_ID)?
        .into_iter()
        .next()
        .with_context(|| {
            format!(
                "no igb NIC ({IGB_VENDOR_ID:04x}:{IGB_DEVICE_ID:04x}) under {}: boot the VM with \
                 `cargo xtask vm --pcie-nic` (scenario `pcie_nic = true`)",
                sysfs::pci_devices_dir(sysfs_root).display()
            )
        })
}

/// What keeps the two mappings alive; dropping it unmaps and closes.
enum Held {
    Type1([(VfioContainer, VfioGroup); 2]),
    /// The devices first: they unbind from the file before it closes.
    Iommufd {
        devices: [VfioDevice; 2],
        fd: Iommufd,
        ioas: [u32; 2],
    },
}

impl Held {
    fn release(self, bytes: u64) -> Result<()> {
        match self {
            Held::Type1(containers) => {
                for (container, _group) in &containers {
                    let n = container
                        .unmap_dma(IOVA, bytes)
                        .context("VFIO_IOMMU_UNMAP_DMA")?;
                    ensure!(
                        n == bytes,
                        "VFIO_IOMMU_UNMAP_DMA unmapped {n:#x} of {bytes:#x}"
                    );
                }
            }
            Held::Iommufd { devices, fd, ioas } => {
                for (dev, id) in devices.iter().zip(ioas) {
                    let n = fd.ioas_unmap(id, IOVA, bytes).context("IOMMU_IOAS_UNMAP")?;
                    ensure!(n == bytes, "IOMMU_IOAS_UNMAP unmapped {n:#x} of {bytes:#x}");
                    dev.detach_pt().context("VFIO_DEVICE_DETACH_IOMMUFD_PT")?;
                    fd.destroy(id)
                        .with_context(|| format!("IOMMU_DESTROY ioas {id}"))?;
                }
            }
        }
        Ok(())
    }
}

fn map_type1(args: &Args, bdfs: &[String; 2], buf: &DmaBuffer, bytes: u64) -> Result<Held> {
    let area = (buf.addr(), IOVA, bytes);
    Ok(Held::Type1([
        type1_with_map(&args.sysfs, &args.devfs, &bdfs[0], area)?,
        type1_with_map(&args.sysfs, &args.devfs, &bdfs[1], area)?,
    ]))
}

fn map_iommufd(args: &Args, bdfs: &[String; 2], buf: &DmaBuffer, bytes: u64) -> Result<Held> {
    let path = args
        .backend
        .iommu_dev()
        .context("an iommufd backend (iommufd or ioasid)")?;
    let fd = Iommufd::open(Path::new(path)).with_context(|| format!("opening {path}"))?;
    let area = (buf.addr(), IOVA, bytes);
    let (dev_a, ioas_a) = bind_attach_map(&args.sysfs, &args.devfs, &fd, path, &bdfs[0], area)?;
    let (dev_b, ioas_b) = bind_attach_map(&args.sysfs, &args.devfs, &fd, path, &bdfs[1], area)?;
    Ok(Held::Iommufd {
        devices: [dev_a, dev_b],
        fd,
        ioas: [ioas_a, ioas_b],
    })
}

/// The whole workload.
pub fn run(args: &Args) -> Result<Summary> {
    ensure!(
        args.size > 0 && args.size.is_multiple_of(4096),
        "--size {:#x} is not a positive multiple of 4 KiB",
        args.size
    );
    let bdfs = [find_edu(&args.sysfs, None)?, find_igb(&args.sysfs)?];
    for bdf in &bdfs {
        sysfs::bind_vfio_pci(&args.sysfs, bdf, Duration::from_secs(3))?;
    }
    let len = usize::try_from(args.size).context("--size does not fit in memory")?;
    // Touched, so that both page tables map the same pages.
    let buf = DmaBuffer::new(len, 0x5a)
        .with_context(|| format!("mmap of {:#x} bytes of anonymous memory", args.size))?;

    let (pin0, lck0) = vm_now()?;
    let held = match args.backend {
        Backend::Type1 => map_type1(args, &bdfs, &buf, args.size)?,
        Backend::Iommufd | Backend::Ioasid => map_iommufd(args, &bdfs, &buf, args.size)?,
    };
    let (pin1, lck1) = vm_now()?;
    let mut summary = Summary {
        pid: std::process::id(),
        backend: args.backend,
        devices: bdfs.clone(),
        bytes: args.size,
        vm_pin_kib: pin1.saturating_sub(pin0),
        vm_lck_kib: lck1.saturating_sub(lck0),
        released: false,
    };
    if let Some(release) = &args.hold_until {
        let line = serde_json::json!({
            "held": true,
            "pid": summary.pid,
            "vm_pin_kib": summary.vm_pin_kib,
            "vm_lck_kib": summary.vm_lck_kib,
        });
        crate::hold::announce_and_wait(&line, release)?;
    }
    held.release(args.size)?;
    summary.released = vm_now()? == (pin0, lck0);
    ensure!(
        summary.released,
        "VmPin/VmLck are {:?} KiB after the unmaps, {:?} before the maps",
        vm_now()?,
        (pin0, lck0)
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from(["x", "--backend", "ioasid"]).unwrap();
        assert_eq!((a.backend, a.size), (Backend::Ioasid, 1 << 20));
        let a = Args::try_parse_from(["x", "--backend", "type1", "--size", "256K"]).unwrap();
        assert_eq!(a.size, 256 << 10);
        assert!(Args::try_parse_from(["x"]).is_err());
    }

    #[test]
    fn no_igb_says_how_to_get_one() {
        let t = crate::sysfs::testutil::TestDir::new("doublemap-igb");
        std::fs::create_dir_all(sysfs::pci_devices_dir(t.path())).unwrap();
        let err = find_igb(t.path()).unwrap_err();
        assert!(format!("{err:#}").contains("--pcie-nic"), "{err:#}");
    }
}
