//! `vfio-edu-workload`: real DMA through the edu device using either the
//! iommufd cdev flow (`/dev/iommu` or `/dev/ioasid`) or the legacy VFIO
//! type1 container flow. The pure parts (arguments, IOVA plan, JSON summary)
//! are unit-tested here; [`run`] needs the VM.

use crate::dmabuf::{DmaBuffer, ensure_same, pattern};
use crate::edu::{self, DMA_ADDR_LIMIT, Edu};
use crate::sysfs;
use crate::vfio::{VfioContainer, VfioDevice, VfioGroup, enable_bus_master};
use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use ioasid_uapi::iommufd::{IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE};
use ioasid_uapi::vfio::*;
use ioasid_uapi::{DEV_IOASID, DEV_IOMMU, Iommufd};
use serde::{Deserialize, Serialize};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PAGE_SIZE: u64 = 4096;
/// First IOVA of the map list.
pub const BASE_IOVA: u64 = 0x100000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// VFIO device cdev + mainline iommufd (/dev/iommu)
    Iommufd,
    /// VFIO group + /dev/vfio/vfio type1 container
    Type1,
    /// VFIO device cdev + this project's /dev/ioasid
    Ioasid,
}

impl Backend {
    /// The iommufd character device of a cdev backend; None for type1.
    pub fn iommu_dev(self) -> Option<&'static str> {
        match self {
            Backend::Iommufd => Some(DEV_IOMMU),
            Backend::Ioasid => Some(DEV_IOASID),
            Backend::Type1 => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Iommufd => "iommufd",
            Backend::Type1 => "type1",
            Backend::Ioasid => "ioasid",
        }
    }
}

/// Parse a byte count: decimal, `0x` hex, or with a K/M/G (KiB/MiB/GiB) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let v = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => num.parse::<u64>(),
    }
    .map_err(|e| format!("invalid size {s:?}: {e}"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

/// Drive real DMA through the QEMU edu device via VFIO.
#[derive(Debug, Parser)]
#[command(name = "vfio-edu-workload", version)]
pub struct Args {
    /// IOMMU backend to use
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// number of DMA mappings
    #[arg(long, default_value_t = 2)]
    pub maps: u32,
    /// bytes per mapping (multiple of 4 KiB; accepts 0x.. and K/M/G suffixes)
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    pub size: u64,
    /// PCI address of the edu device (default: the first 1234:11e8 found)
    #[arg(long)]
    pub bdf: Option<String>,
    /// iommufd character device (default: /dev/iommu or /dev/ioasid per backend)
    #[arg(long)]
    pub iommu_dev: Option<PathBuf>,
    /// do not (re)bind the device to vfio-pci
    #[arg(long)]
    pub no_bind: bool,
    /// per-transfer DMA timeout in milliseconds
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
    /// no device and no DMA: only map the plan into an IOAS of the iommufd device (for
    /// /dev/ioasid, which has no devices yet); not with type1
    #[arg(long)]
    pub no_device: bool,
    /// once everything is mapped (and the DMA done), print a `held` JSON line and wait until
    /// this file exists before unmapping: lets a tool look at the pinned state from outside
    #[arg(long, value_name = "FILE")]
    pub hold_until: Option<PathBuf>,
    /// after unmapping, DMA the device's buffer to IOVA B again: the IOMMU must block it and
    /// leave the memory unchanged (`dma_blocked_after_unmap` in the summary)
    #[arg(long)]
    pub dma_after_unmap: bool,
}

impl Args {
    pub fn iommu_dev(&self) -> Option<PathBuf> {
        match (self.backend, &self.iommu_dev) {
            (Backend::Type1, _) => None,
            (_, Some(p)) => Some(p.clone()),
            (b, None) => b.iommu_dev().map(PathBuf::from),
        }
    }
}

/// One IOVA mapping of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub iova: u64,
    pub size: u64,
    /// offset of this mapping in the DMA buffer
    #[serde(skip, default)]
    pub buf_offset: u64,
}

/// Mappings plus the DMA source/destination inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub maps: Vec<MapEntry>,
    pub total: u64,
    /// bytes per transfer
    pub xfer: u64,
    /// IOVA A (pattern source, start of the first map)
    pub src_iova: u64,
    /// IOVA B (destination, end of the last map)
    pub dst_iova: u64,
}

impl Plan {
    pub fn buf_offset_of(&self, iova: u64) -> u64 {
        iova - BASE_IOVA
    }
}

/// `maps` mappings of `size` bytes at `BASE_IOVA + i * size`, contiguous in
/// one buffer. A = start of the first map, B = the last `xfer` bytes of the
/// last map, `xfer = min(4 KiB, total / 2)`, so A and B never overlap.
pub fn plan(maps: u32, size: u64) -> Result<Plan> {
    ensure!(maps >= 1, "--maps must be at least 1");
    ensure!(
        maps <= 4096,
        "--maps {maps} is unreasonably many (max 4096)"
    );
    ensure!(
        size > 0 && size.is_multiple_of(PAGE_SIZE),
        "--size {size:#x} must be a non-zero multiple of {PAGE_SIZE:#x}"
    );
    let total = size
        .checked_mul(maps.into())
        .context("--maps * --size overflows")?;
    match BASE_IOVA.checked_add(total) {
        Some(end) if end <= DMA_ADDR_LIMIT => {}
        _ => bail!(
            "mappings end beyond edu's DMA mask: {BASE_IOVA:#x} + {maps} * {size:#x} > {DMA_ADDR_LIMIT:#x}"
        ),
    }
    let maps: Vec<MapEntry> = (0..u64::from(maps))
        .map(|i| MapEntry {
            iova: BASE_IOVA + i * size,
            size,
            buf_offset: i * size,
        })
        .collect();
    let xfer = edu::DMA_BUF_SIZE.min(total / 2);
    Ok(Plan {
        maps,
        total,
        xfer,
        src_iova: BASE_IOVA,
        dst_iova: BASE_IOVA + total - xfer,
    })
}

/// The JSON line printed at the end (compared later with the eBPF tool).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub backend: Backend,
    pub bdf: String,
    pub maps: Vec<MapEntry>,
    pub dma_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iommu_dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ioas_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hwpt_id: Option<u32>,
    /// `VmPin`/`VmLck` of this process (KiB) before mapping, while everything was mapped, and
    /// after unmapping: what the kernel really charged (only with `--hold-until`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmCounters>,
    /// With `--dma-after-unmap`: whether the DMA to the unmapped IOVA B left memory unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dma_blocked_after_unmap: Option<bool>,
}

/// `VmPin` and `VmLck` of /proc/self/status, in KiB, at the three points of a held run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCounters {
    pub pin_before: u64,
    pub lck_before: u64,
    pub pin_held: u64,
    pub lck_held: u64,
    pub pin_after: u64,
    pub lck_after: u64,
}

/// `(VmPin, VmLck)` of this process, KiB.
/// VmPin and VmLck of this process now, in KiB.
pub(crate) fn vm_now() -> Result<(u64, u64)> {
    crate::accounting::vm_pin_and_lck_kib()
        .map_err(anyhow::Error::msg)
        .context("reading VmPin and VmLck of /proc/self/status")
}

/// The hold point of `--hold-until`: records the counters, prints the `held` line (stdout,
/// flushed, so a script can wait for it) and waits for the file.
struct Hold<'a> {
    until: Option<&'a Path>,
    vm: VmCounters,
}

impl Hold<'_> {
    fn before(&mut self) -> Result<()> {
        if self.until.is_some() {
            (self.vm.pin_before, self.vm.lck_before) = vm_now()?;
        }
        Ok(())
    }

    fn hold(&mut self, maps: &[MapEntry]) -> Result<()> {
        let Some(file) = self.until else {
            return Ok(());
        };
        (self.vm.pin_held, self.vm.lck_held) = vm_now()?;
        let line = serde_json::json!({
            "held": true,
            "pid": std::process::id(),
            "maps": maps,
            "vm": self.vm,
        });
        crate::hold::announce_and_wait(&line, file)
    }

    fn after(&mut self) -> Result<()> {
        if self.until.is_some() {
            (self.vm.pin_after, self.vm.lck_after) = vm_now()?;
        }
        Ok(())
    }
}

impl Summary {
    pub fn to_json_line(&self) -> Result<String> {
        serde_json::to_string(self).context("serializing summary")
    }
}

/// Find the edu device (or validate `--bdf`).
pub fn find_edu(sysfs_root: &Path, bdf: Option<&str>) -> Result<String> {
    if let Some(b) = bdf {
        sysfs::validate_bdf(b)?;
        let dir = sysfs::pci_device_dir(sysfs_root, b);
        ensure!(dir.exists(), "{} does not exist", dir.display());
        return Ok(b.to_string());
    }
    let found = sysfs::find_pci_devices(sysfs_root, edu::EDU_VENDOR_ID, edu::EDU_DEVICE_ID)?;
    found.into_iter().next().with_context(|| {
        format!(
            "no edu device ({:04x}:{:04x}) under {}: start QEMU with -device edu",
            edu::EDU_VENDOR_ID,
            edu::EDU_DEVICE_ID,
            sysfs::pci_devices_dir(sysfs_root).display()
        )
    })
}

/// How the plan's mappings are established and torn down.
trait Mapper {
    fn map(&mut self, vaddr: u64, iova: u64, size: u64) -> Result<()>;
    /// returns bytes unmapped
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64>;
}

struct IommufdMapper<'a> {
    fd: &'a Iommufd,
    ioas: u32,
}

impl Mapper for IommufdMapper<'_> {
    fn map(&mut self, vaddr: u64, iova: u64, size: u64) -> Result<()> {
        let got = self
            .fd
            .ioas_map(
                self.ioas,
                vaddr,
                size,
                Some(iova),
                IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            )
            .with_context(|| {
                format!(
                    "IOMMU_IOAS_MAP ioas {} iova {iova:#x} size {size:#x}",
                    self.ioas
                )
            })?;
        ensure!(
            got == iova,
            "IOMMU_IOAS_MAP placed the mapping at {got:#x}, asked for fixed {iova:#x}"
        );
        Ok(())
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64> {
        self.fd.ioas_unmap(self.ioas, iova, size).with_context(|| {
            format!(
                "IOMMU_IOAS_UNMAP ioas {} iova {iova:#x} size {size:#x}",
                self.ioas
            )
        })
    }
}

struct Type1Mapper<'a> {
    container: &'a VfioContainer,
}

impl Mapper for Type1Mapper<'_> {
    fn map(&mut self, vaddr: u64, iova: u64, size: u64) -> Result<()> {
        self.container
            .map_dma(
                vaddr,
                iova,
                size,
                VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            )
            .with_context(|| format!("VFIO_IOMMU_MAP_DMA iova {iova:#x} size {size:#x}"))
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64> {
        self.container
            .unmap_dma(iova, size)
            .with_context(|| format!("VFIO_IOMMU_UNMAP_DMA iova {iova:#x} size {size:#x}"))
    }
}

/// Map, DMA A → device → B, compare, unmap. Returns whether the data matched;
/// errors are setup/teardown failures.
fn dma_round_trip(
    dev: Option<&VfioDevice>,
    plan: &Plan,
    mapper: &mut dyn Mapper,
    timeout: Duration,
    hold: &mut Hold<'_>,
    blocked_after_unmap: Option<&mut Option<bool>>,
) -> Result<bool> {
    let buf = DmaBuffer::new(usize::try_from(plan.total)?, 0x5a)
        .with_context(|| format!("mmap of {:#x} bytes of anonymous memory", plan.total))?;
    let mut mapped = Vec::new();
    let mut result = (|| -> Result<bool> {
        hold.before()?;
        for m in &plan.maps {
            mapper.map(buf.addr() + m.buf_offset, m.iova, m.size)?;
            mapped.push(*m);
        }
        let Some(dev) = dev else {
            // --no-device: the maps are the whole workload.
            hold.hold(&plan.maps)?;
            return Ok(true);
        };
        enable_bus_master(dev).context("enabling bus mastering")?;
        let bar = dev.region(VFIO_PCI_BAR0_REGION_INDEX).context("edu BAR0")?;
        let mut edu = Edu::new(bar);
        edu.timeout = timeout;
        edu.check_ident()?;
        edu.check_liveness(0x5eed_1234)?;

        let pat = pattern(plan.xfer as usize, 0x0100_5ed0_u32);
        let src_off = plan.buf_offset_of(plan.src_iova) as usize;
        let dst_off = plan.buf_offset_of(plan.dst_iova) as usize;
        buf.write(src_off, &pat)?;
        buf.fill(dst_off, plan.xfer as usize, 0xc3)?;
        edu.ram_to_device(plan.src_iova, 0, plan.xfer)
            .with_context(|| format!("DMA RAM {:#x} -> device", plan.src_iova))?;
        edu.device_to_ram(0, plan.dst_iova, plan.xfer)
            .with_context(|| format!("DMA device -> RAM {:#x}", plan.dst_iova))?;
        let got = buf.read(dst_off, plan.xfer as usize)?;
        hold.hold(&plan.maps)?;
        match ensure_same("DMA round trip", &got, &pat) {
            Ok(()) => Ok(true),
            Err(e) => {
                eprintln!("{e:#}");
                Ok(false)
            }
        }
    })();
    // Unmap everything that was mapped, even after a failure.
    for m in mapped.iter().rev() {
        match mapper.unmap(m.iova, m.size) {
            Ok(n) if n == m.size => {}
            Ok(n) => {
                let e =
                    anyhow::anyhow!("unmap of {:#x}+{:#x} released {n:#x} bytes", m.iova, m.size);
                result = result.and(Err(e));
            }
            Err(e) => result = result.and(Err(e)),
        }
    }
    if let Err(e) = hold.after() {
        result = result.and(Err(e));
    }
    if let (Some(dev), Some(blocked), Ok(true)) = (dev, blocked_after_unmap, &result) {
        match dma_to_unmapped(dev, plan, &buf, timeout) {
            Ok(b) => *blocked = Some(b),
            Err(e) => result = Err(e),
        }
    }
    drop(buf);
    result
}

/// With everything unmapped, DMA the device's buffer (still holding the pattern) to IOVA B
/// again. Returns whether the memory behind B stayed as it was: the IOMMU blocked the write.
fn dma_to_unmapped(
    dev: &VfioDevice,
    plan: &Plan,
    buf: &DmaBuffer,
    timeout: Duration,
) -> Result<bool> {
    let dst_off = plan.buf_offset_of(plan.dst_iova) as usize;
    let fill = vec![0x3c_u8; plan.xfer as usize];
    buf.fill(dst_off, plan.xfer as usize, 0x3c)?;
    let bar = dev.region(VFIO_PCI_BAR0_REGION_INDEX).context("edu BAR0")?;
    let mut edu = Edu::new(bar);
    edu.timeout = timeout;
    // edu completes a transfer whether or not the IOMMU let its writes through.
    edu.device_to_ram(0, plan.dst_iova, plan.xfer)
        .with_context(|| format!("DMA device -> unmapped RAM {:#x}", plan.dst_iova))?;
    let got = buf.read(dst_off, plan.xfer as usize)?;
    Ok(got == fill)
}

/// The device is a vfio-pci device with config space (what the workloads rely on).
pub fn check_device(dev: &VfioDevice) -> Result<()> {
    let info = dev.info().context("VFIO_DEVICE_GET_INFO")?;
    ensure!(
        info.flags & VFIO_DEVICE_FLAGS_PCI != 0,
        "VFIO device is not PCI (flags {:#x})",
        info.flags
    );
    ensure!(
        info.num_regions > VFIO_PCI_CONFIG_REGION_INDEX,
        "only {} regions",
        info.num_regions
    );
    Ok(())
}

/// Opens the backend's iommufd device (/dev/iommu or /dev/ioasid) and records it in `summary`;
/// `missing` says why a backend without one cannot go on.
fn open_iommu(
    args: &Args,
    summary: &mut Summary,
    missing: &'static str,
) -> Result<(std::path::PathBuf, Iommufd)> {
    let iommu_dev = args.iommu_dev().context(missing)?;
    let fd =
        Iommufd::open(&iommu_dev).with_context(|| format!("opening {}", iommu_dev.display()))?;
    summary.iommu_dev = Some(iommu_dev.display().to_string());
    Ok((iommu_dev, fd))
}

/// `--no-device`: an IOAS of the iommufd device and the plan's maps, nothing else.
fn run_ioas_only(
    args: &Args,
    plan: &Plan,
    summary: &mut Summary,
    hold: &mut Hold<'_>,
) -> Result<bool> {
    let (_, fd) = open_iommu(
        args,
        summary,
        "--no-device needs an iommufd backend (iommufd or ioasid), not type1",
    )?;
    let ioas = fd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?;
    summary.ioas_id = Some(ioas);
    let ok = dma_round_trip(
        None,
        plan,
        &mut IommufdMapper { fd: &fd, ioas },
        Duration::from_millis(args.timeout_ms),
        hold,
        args.dma_after_unmap
            .then_some(&mut summary.dma_blocked_after_unmap),
    );
    let destroy = fd
        .destroy(ioas)
        .with_context(|| format!("IOMMU_DESTROY ioas {ioas}"));
    let ok = ok?;
    destroy?;
    Ok(ok)
}

/// Opens `bdf`'s VFIO device cdev (`/dev/vfio/devices/vfioN`, found through sysfs; the
/// device must be bound to vfio-pci). Returns the device and the cdev's path.
pub fn open_cdev(root: &Path, devfs: &Path, bdf: &str) -> Result<(VfioDevice, PathBuf)> {
    let name = {
        let mut waited = 0;
        loop {
            if let Some(n) = sysfs::vfio_cdev_name(root, bdf)? {
                break n;
            }
            ensure!(
                waited < 100,
                "{}/vfio-dev has no vfioN entry: is CONFIG_VFIO_DEVICE_CDEV enabled?",
                sysfs::pci_device_dir(root, bdf).display()
            );
            std::thread::sleep(Duration::from_millis(20));
            waited += 1;
        }
    };
    let cdev = devfs.join("vfio/devices").join(&name);
    sysfs::wait_for_path(&cdev, Duration::from_secs(2))?;
    let dev = VfioDevice::open_cdev(&cdev)?;
    Ok((dev, cdev))
}

fn run_cdev(
    args: &Args,
    bdf: &str,
    plan: &Plan,
    summary: &mut Summary,
    hold: &mut Hold<'_>,
) -> Result<bool> {
    let (dev, cdev) = open_cdev(&args.sysfs, &args.devfs, bdf)?;
    let (iommu_dev, fd) = open_iommu(args, summary, "cdev backend without an iommufd path")?;

    let dev_id = dev.bind_iommufd(fd.as_fd()).with_context(|| {
        format!(
            "VFIO_DEVICE_BIND_IOMMUFD {} to {}",
            cdev.display(),
            iommu_dev.display()
        )
    })?;
    summary.dev_id = Some(dev_id);
    check_device(&dev)?;
    let ioas = fd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?;
    summary.ioas_id = Some(ioas);
    let hwpt = dev
        .attach_pt(ioas)
        .with_context(|| format!("VFIO_DEVICE_ATTACH_IOMMUFD_PT ioas {ioas}"))?;
    summary.hwpt_id = Some(hwpt);

    let ranges = fd
        .ioas_iova_ranges(ioas)
        .context("IOMMU_IOAS_IOVA_RANGES")?;
    for m in &plan.maps {
        let last = m.iova + m.size - 1;
        ensure!(
            ranges
                .ranges
                .iter()
                .any(|r| r.start <= m.iova && last <= r.last),
            "IOVA {:#x}..={last:#x} outside the allowed ranges {:?}",
            m.iova,
            ranges.ranges
        );
    }

    let ok = dma_round_trip(
        Some(&dev),
        plan,
        &mut IommufdMapper { fd: &fd, ioas },
        Duration::from_millis(args.timeout_ms),
        hold,
        args.dma_after_unmap
            .then_some(&mut summary.dma_blocked_after_unmap),
    );
    let detach = dev.detach_pt().context("VFIO_DEVICE_DETACH_IOMMUFD_PT");
    let destroy = fd
        .destroy(ioas)
        .with_context(|| format!("IOMMU_DESTROY ioas {ioas}"));
    let ok = ok?;
    detach?;
    destroy?;
    drop(dev);
    Ok(ok)
}

/// Binds the cdev of `bdf` to `fd` (the file at `path`), attaches it to a new IOAS and maps
/// `len` bytes at `vaddr` to the fixed `iova` there, read-write: one device's page table, set
/// up as a VMM does. Returns the device and the IOAS.
pub fn bind_attach_map(
    sysfs_root: &Path,
    devfs: &Path,
    fd: &Iommufd,
    path: &str,
    bdf: &str,
    (vaddr, iova, len): (u64, u64, u64),
) -> Result<(VfioDevice, u32)> {
    let (dev, cdev) = open_cdev(sysfs_root, devfs, bdf)?;
    dev.bind_iommufd(fd.as_fd())
        .with_context(|| format!("VFIO_DEVICE_BIND_IOMMUFD {} to {path}", cdev.display()))?;
    let ioas = fd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?;
    dev.attach_pt(ioas)
        .with_context(|| format!("VFIO_DEVICE_ATTACH_IOMMUFD_PT {bdf} to ioas {ioas}"))?;
    IommufdMapper { fd, ioas }
        .map(vaddr, iova, len)
        .with_context(|| format!("into the IOAS of {bdf}"))?;
    Ok((dev, ioas))
}

/// A type1 container of `bdf`'s group with `len` bytes at `vaddr` mapped at `iova`, read-write.
pub fn type1_with_map(
    sysfs_root: &Path,
    devfs: &Path,
    bdf: &str,
    (vaddr, iova, len): (u64, u64, u64),
) -> Result<(VfioContainer, VfioGroup)> {
    let (container, group) = open_type1(sysfs_root, devfs, bdf)?;
    Type1Mapper {
        container: &container,
    }
    .map(vaddr, iova, len)
    .with_context(|| format!("in the container of {bdf}"))?;
    Ok((container, group))
}

/// The options of a workload that maps for the edu device through one backend and holds the
/// mapping until the scenario releases it (`vfio-orphan-pins`, `vfio-failed-map`).
#[derive(clap::Args, Debug)]
pub struct HeldArgs {
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// hold the mapping until this file exists
    #[arg(long, value_name = "FILE")]
    pub hold_until: PathBuf,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
}

/// A page table of the edu device with a mapping in it: a type1 container, or an IOAS of
/// /dev/iommu or /dev/ioasid with the device's cdev bound and attached. Its files keep it.
pub enum EduMapping {
    Type1(VfioContainer, VfioGroup),
    Iommufd(VfioDevice, Iommufd, u32),
}

impl EduMapping {
    /// Maps `len` bytes at `vaddr` to `iova` for `bdf` through `args.backend`, read-write.
    pub fn new(args: &HeldArgs, bdf: &str, area: (u64, u64, u64)) -> Result<Self> {
        match args.backend.iommu_dev() {
            None => {
                let (container, group) = type1_with_map(&args.sysfs, &args.devfs, bdf, area)?;
                Ok(EduMapping::Type1(container, group))
            }
            Some(path) => {
                let fd =
                    Iommufd::open(Path::new(path)).with_context(|| format!("opening {path}"))?;
                let (dev, ioas) = bind_attach_map(&args.sysfs, &args.devfs, &fd, path, bdf, area)?;
                Ok(EduMapping::Iommufd(dev, fd, ioas))
            }
        }
    }

    /// Maps `len` more bytes at `vaddr` to `iova` in the same page table, read-write. The
    /// ioctl's error is the root cause of a failure.
    pub fn map(&self, vaddr: u64, iova: u64, len: u64) -> Result<()> {
        match self {
            EduMapping::Type1(container, _) => Type1Mapper { container }.map(vaddr, iova, len),
            EduMapping::Iommufd(_, fd, ioas) => {
                IommufdMapper { fd, ioas: *ioas }.map(vaddr, iova, len)
            }
        }
    }
}

/// A type1 container with `bdf`'s IOMMU group attached (`VFIO_SET_IOMMU` TYPE1v2: from here
/// on the container has an IOMMU domain and `VFIO_IOMMU_MAP_DMA` pins and maps).
pub fn open_type1(
    sysfs_root: &Path,
    devfs: &Path,
    bdf: &str,
) -> Result<(VfioContainer, VfioGroup)> {
    let group = sysfs::iommu_group(sysfs_root, bdf)?;
    let container_path = devfs.join("vfio/vfio");
    let container = VfioContainer::open(&container_path)?;
    let ver = container.api_version().context("VFIO_GET_API_VERSION")?;
    ensure!(
        ver == VFIO_API_VERSION,
        "VFIO API version {ver}, expected {VFIO_API_VERSION}"
    );
    let ext = container
        .check_extension(VFIO_TYPE1v2_IOMMU)
        .context("VFIO_CHECK_EXTENSION TYPE1v2")?;
    ensure!(ext > 0, "container does not support VFIO_TYPE1v2_IOMMU");

    let group_path = devfs.join("vfio").join(group.to_string());
    sysfs::wait_for_path(&group_path, Duration::from_secs(2))?;
    let grp = VfioGroup::open(&group_path)?;
    let st = grp.status().context("VFIO_GROUP_GET_STATUS")?;
    ensure!(
        st.flags & VFIO_GROUP_FLAGS_VIABLE != 0,
        "group {group} not viable (flags {:#x}): bind every device in it to vfio-pci",
        st.flags
    );
    grp.set_container(&container)
        .context("VFIO_GROUP_SET_CONTAINER")?;
    container
        .set_iommu(VFIO_TYPE1v2_IOMMU)
        .context("VFIO_SET_IOMMU TYPE1v2")?;
    Ok((container, grp))
}

fn run_type1(
    args: &Args,
    bdf: &str,
    plan: &Plan,
    summary: &mut Summary,
    hold: &mut Hold<'_>,
) -> Result<bool> {
    let (container, grp) = open_type1(&args.sysfs, &args.devfs, bdf)?;
    let dev = grp
        .device(bdf)
        .with_context(|| format!("VFIO_GROUP_GET_DEVICE_FD {bdf}"))?;
    check_device(&dev)?;
    let ok = dma_round_trip(
        Some(&dev),
        plan,
        &mut Type1Mapper {
            container: &container,
        },
        Duration::from_millis(args.timeout_ms),
        hold,
        args.dma_after_unmap
            .then_some(&mut summary.dma_blocked_after_unmap),
    )?;
    drop(dev);
    drop(grp);
    drop(container);
    Ok(ok)
}

/// Full workload; prints the summary line on stdout when the DMA ran.
pub fn run(args: &Args) -> Result<Summary> {
    let plan = plan(args.maps, args.size)?;
    let mut hold = Hold {
        until: args.hold_until.as_deref(),
        vm: VmCounters::default(),
    };
    let mut summary = Summary {
        backend: args.backend,
        bdf: String::new(),
        maps: plan.maps.clone(),
        dma_ok: false,
        iommu_dev: None,
        dev_id: None,
        ioas_id: None,
        hwpt_id: None,
        pid: None,
        vm: None,
        dma_blocked_after_unmap: None,
    };
    if args.no_device {
        summary.dma_ok = run_ioas_only(args, &plan, &mut summary, &mut hold)?;
    } else {
        let bdf = find_edu(&args.sysfs, args.bdf.as_deref())?;
        if !args.no_bind {
            sysfs::bind_vfio_pci(&args.sysfs, &bdf, Duration::from_secs(3))?;
        }
        summary.bdf = bdf.clone();
        summary.dma_ok = match args.backend {
            Backend::Iommufd | Backend::Ioasid => {
                run_cdev(args, &bdf, &plan, &mut summary, &mut hold)?
            }
            Backend::Type1 => run_type1(args, &bdf, &plan, &mut summary, &mut hold)?,
        };
    }
    if args.hold_until.is_some() {
        summary.pid = Some(std::process::id());
        summary.vm = Some(hold.vm);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::testutil::TestDir;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x2000"), Ok(0x2000));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("17179869184G").is_err()); // 2^34 GiB = 2^64
    }

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from(["x", "--backend", "ioasid"]).unwrap();
        assert_eq!(a.backend, Backend::Ioasid);
        assert_eq!((a.maps, a.size), (2, 4096));
        assert_eq!(a.iommu_dev(), Some(PathBuf::from("/dev/ioasid")));
        let a = Args::try_parse_from(["x", "--backend", "iommufd", "--maps", "4", "--size", "8K"])
            .unwrap();
        assert_eq!((a.maps, a.size), (4, 8192));
        assert_eq!(a.iommu_dev(), Some(PathBuf::from("/dev/iommu")));
        let a =
            Args::try_parse_from(["x", "--backend", "type1", "--iommu-dev", "/dev/iommu"]).unwrap();
        assert_eq!(a.iommu_dev(), None);
        let a =
            Args::try_parse_from(["x", "--backend", "iommufd", "--iommu-dev", "/tmp/x"]).unwrap();
        assert_eq!(a.iommu_dev(), Some(PathBuf::from("/tmp/x")));
        assert!(Args::try_parse_from(["x"]).is_err());
        assert!(Args::try_parse_from(["x", "--backend", "vfio"]).is_err());
        assert!(Args::try_parse_from(["x", "--backend", "type1", "--size", "lots"]).is_err());
    }

    #[test]
    fn default_plan() {
        let p = plan(2, 4096).unwrap();
        assert_eq!(
            p.maps,
            vec![
                MapEntry {
                    iova: 0x100000,
                    size: 4096,
                    buf_offset: 0
                },
                MapEntry {
                    iova: 0x101000,
                    size: 4096,
                    buf_offset: 4096
                },
            ]
        );
        assert_eq!(
            (p.total, p.xfer, p.src_iova, p.dst_iova),
            (8192, 4096, 0x100000, 0x101000)
        );
    }

    #[test]
    fn plans_keep_a_and_b_disjoint_and_inside() {
        for (n, sz) in [(1, 4096), (1, 8192), (3, 4096), (8, 0x10000), (1, 0x200000)] {
            let p = plan(n, sz).unwrap();
            assert_eq!(p.maps.len(), n as usize);
            assert!(p.xfer >= 2048 && p.xfer <= 4096);
            assert!(p.src_iova + p.xfer <= p.dst_iova, "{n} {sz}");
            assert_eq!(p.dst_iova + p.xfer, BASE_IOVA + p.total);
            assert_eq!(
                p.maps.last().map(|m| m.iova + m.size),
                Some(BASE_IOVA + p.total)
            );
        }
        let p = plan(1, 4096).unwrap();
        assert_eq!((p.xfer, p.dst_iova), (2048, 0x100800));
    }

    #[test]
    fn bad_plans() {
        assert!(plan(0, 4096).is_err());
        assert!(plan(1, 0).is_err());
        assert!(plan(1, 100).is_err());
        assert!(plan(5000, 4096).is_err());
        assert!(plan(2, 1 << 27).is_err()); // past the 28-bit DMA mask
        assert!(plan(4096, 1 << 50).is_err());
    }

    #[test]
    fn summary_json() {
        let p = plan(2, 4096).unwrap();
        let s = Summary {
            backend: Backend::Ioasid,
            bdf: "0000:00:04.0".into(),
            maps: p.maps,
            dma_ok: true,
            iommu_dev: Some("/dev/ioasid".into()),
            dev_id: Some(1),
            ioas_id: Some(2),
            hwpt_id: Some(3),
            pid: None,
            vm: None,
            dma_blocked_after_unmap: None,
        };
        assert_eq!(
            s.to_json_line().unwrap(),
            r#"{"backend":"ioasid","bdf":"0000:00:04.0","maps":[{"iova":1048576,"size":4096},{"iova":1052672,"size":4096}],"dma_ok":true,"iommu_dev":"/dev/ioasid","dev_id":1,"ioas_id":2,"hwpt_id":3}"#
        );
        let t1 = Summary {
            backend: Backend::Type1,
            iommu_dev: None,
            dev_id: None,
            ioas_id: None,
            hwpt_id: None,
            dma_ok: false,
            ..s
        };
        assert_eq!(
            t1.to_json_line().unwrap(),
            r#"{"backend":"type1","bdf":"0000:00:04.0","maps":[{"iova":1048576,"size":4096},{"iova":1052672,"size":4096}],"dma_ok":false}"#
        );
    }

    #[test]
    fn find_edu_in_fake_sysfs() {
        let t = TestDir::new("edu");
        let root = t.path();
        assert!(find_edu(root, None).is_err());
        let d = sysfs::pci_device_dir(root, "0000:00:03.0");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x1234\n").unwrap();
        std::fs::write(d.join("device"), "0x11e8\n").unwrap();
        assert_eq!(find_edu(root, None).unwrap(), "0000:00:03.0");
        assert_eq!(
            find_edu(root, Some("0000:00:03.0")).unwrap(),
            "0000:00:03.0"
        );
        assert!(find_edu(root, Some("0000:00:09.0")).is_err());
        assert!(find_edu(root, Some("bogus")).is_err());
    }
}
