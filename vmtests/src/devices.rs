//! `ioasid-smoke --devices`: binding, HWPTs and attaching the edu device's VFIO cdev, with
//! iommufd's errno contract for bad input, against `/dev/ioasid` or `/dev/iommu` (the same
//! checks pass on both: mainline validates the expectations).
//!
//! The checks run in order on one cdev and one iommufd file; a check whose setup failed reports
//! "not run". At the end the files are closed and `VmPin`/`VmLck` must be back where they were.

use crate::accounting::vm_pin_and_lck_kib;
use crate::difftest::domain::edu_cdev;
use crate::dmabuf::DmaBuffer;
use crate::kvm::device_iommu;
use crate::tap::{CheckResult, Tap, expect_errno, expect_ok};
use crate::vfio::VfioDevice;
use crate::workload::find_edu;
use anyhow::{Context, Result};
use ioasid_uapi::Iommufd;
use ioasid_uapi::iommu_sysfs::DeviceIommu;
use ioasid_uapi::iommufd::{
    IOMMU_HW_INFO_TYPE_INTEL_VTD, IOMMU_HWPT_DATA_NONE, IOMMU_IOAS_MAP_READABLE,
    IOMMU_IOAS_MAP_WRITEABLE, IommuHwptAlloc, IommuIovaRange,
};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// An id no object of a fresh file has.
const MISSING_ID: u32 = 9999;
/// A HWPT flag bit iommufd does not define: every implementation must refuse it.
const UNDEFINED_HWPT_FLAG: u32 = 1 << 31;
const IOVA: u64 = 1 << 20;
const LEN: u64 = 64 << 10;
/// The x86 MSI window, which VT-d reports as a reserved region (`IOMMU_RESV_MSI`) of every
/// device.
const MSI_START: u64 = 0xfee0_0000;
const MSI_LAST: u64 = 0xfeef_ffff;

/// Whether the usable IOVA ranges of `ioas` intersect `[start, last]`.
fn usable(c: &Ctx, ioas: u32, start: u64, last: u64) -> Result<bool, String> {
    let ranges = expect_ok(c.fd.ioas_iova_ranges(ioas))?;
    Ok(ranges
        .ranges
        .iter()
        .any(|r| r.start <= last && start <= r.last))
}

/// The state the checks build up.
struct Ctx {
    /// The edu device's IOMMU, from sysfs.
    iommu: DeviceIommu,
    fd: Iommufd,
    dev: VfioDevice,
    buf: DmaBuffer,
    dev_id: Option<u32>,
    ioas: Option<u32>,
    hwpt: Option<u32>,
    auto_hwpt: Option<u32>,
}

fn need(v: Option<u32>, what: &str) -> Result<u32, String> {
    v.ok_or_else(|| format!("not run: {what} unavailable (an earlier check failed)"))
}

/// `IOMMU_HWPT_ALLOC` with every field given, for the bad-input checks.
fn hwpt_alloc(c: &Ctx, edit: impl FnOnce(&mut IommuHwptAlloc)) -> io::Result<u32> {
    let mut cmd = IommuHwptAlloc::new();
    cmd.data_type = IOMMU_HWPT_DATA_NONE;
    edit(&mut cmd);
    c.fd.hwpt_alloc_with(&mut cmd)
}

type Check = (&'static str, fn(&mut Ctx) -> CheckResult);

fn checks() -> Vec<Check> {
    vec![
        ("BIND with fd -1 fails EINVAL", |c| {
            expect_errno(&c.dev.bind_iommufd_raw(-1), libc::EINVAL)
        }),
        ("BIND with a closed fd fails EBADF", |c| {
            let closed = {
                let f = File::open("/dev/null").map_err(|e| e.to_string())?;
                f.as_raw_fd()
            };
            expect_errno(&c.dev.bind_iommufd_raw(closed), libc::EBADF)
        }),
        ("BIND with /dev/null fails EBADFD", |c| {
            let null = File::open("/dev/null").map_err(|e| e.to_string())?;
            expect_errno(&c.dev.bind_iommufd_raw(null.as_raw_fd()), libc::EBADFD)
        }),
        ("BIND returns a device id", |c| {
            let id = expect_ok(c.dev.bind_iommufd(c.fd.as_fd()))?;
            if id == 0 {
                return Err("device id 0".into());
            }
            c.dev_id = Some(id);
            c.ioas = Some(expect_ok(c.fd.ioas_alloc())?);
            Ok(())
        }),
        ("GET_HW_INFO of a missing device fails ENOENT", |c| {
            need(c.dev_id, "the device")?;
            expect_errno(&c.fd.get_hw_info(MISSING_ID, &mut [0; 16]), libc::ENOENT)
        }),
        (
            "GET_HW_INFO reports Intel VT-d and the IOMMU's extended capabilities",
            |c| {
                let dev = need(c.dev_id, "the device")?;
                let (info, vtd) = expect_ok(c.fd.get_hw_info_vtd(dev))?;
                if info.out_data_type() != IOMMU_HW_INFO_TYPE_INTEL_VTD {
                    return Err(format!("data type {}", info.out_data_type()));
                }
                match c.iommu.ecap {
                    Some(ecap) if ecap == vtd.ecap_reg => Ok(()),
                    other => Err(format!(
                        "ecap {:#x}, sysfs {}: {other:x?}",
                        vtd.ecap_reg, c.iommu.name
                    )),
                }
            },
        ),
        ("a second BIND fails EINVAL", |c| {
            need(c.dev_id, "the device")?;
            expect_errno(&c.dev.bind_iommufd(c.fd.as_fd()), libc::EINVAL)
        }),
        ("HWPT_ALLOC with an undefined flag fails EOPNOTSUPP", |c| {
            let (dev, ioas) = (need(c.dev_id, "the device")?, need(c.ioas, "the IOAS")?);
            let r = hwpt_alloc(c, |h| {
                (h.dev_id, h.pt_id, h.flags) = (dev, ioas, UNDEFINED_HWPT_FLAG)
            });
            expect_errno(&r, libc::EOPNOTSUPP)
        }),
        ("HWPT_ALLOC with __reserved set fails EOPNOTSUPP", |c| {
            let (dev, ioas) = (need(c.dev_id, "the device")?, need(c.ioas, "the IOAS")?);
            let r = hwpt_alloc(c, |h| (h.dev_id, h.pt_id, h.__reserved) = (dev, ioas, 1));
            expect_errno(&r, libc::EOPNOTSUPP)
        }),
        (
            "HWPT_ALLOC of DATA_NONE with a data length fails EINVAL",
            |c| {
                let (dev, ioas) = (need(c.dev_id, "the device")?, need(c.ioas, "the IOAS")?);
                let r = hwpt_alloc(c, |h| (h.dev_id, h.pt_id, h.data_len) = (dev, ioas, 4));
                expect_errno(&r, libc::EINVAL)
            },
        ),
        (
            "HWPT_ALLOC for an IOAS id as the device fails ENOENT",
            |c| {
                let ioas = need(c.ioas, "the IOAS")?;
                let r = hwpt_alloc(c, |h| (h.dev_id, h.pt_id) = (ioas, ioas));
                expect_errno(&r, libc::ENOENT)
            },
        ),
        ("HWPT_ALLOC on a missing IOAS fails EINVAL", |c| {
            let dev = need(c.dev_id, "the device")?;
            let r = hwpt_alloc(c, |h| (h.dev_id, h.pt_id) = (dev, MISSING_ID));
            expect_errno(&r, libc::EINVAL)
        }),
        ("HWPT_ALLOC on the device id fails EINVAL", |c| {
            let dev = need(c.dev_id, "the device")?;
            let r = hwpt_alloc(c, |h| (h.dev_id, h.pt_id) = (dev, dev));
            expect_errno(&r, libc::EINVAL)
        }),
        (
            "HWPT_ALLOC on an IOAS with an area returns a HWPT id",
            |c| {
                let (dev, ioas) = (need(c.dev_id, "the device")?, need(c.ioas, "the IOAS")?);
                // An area mapped before the HWPT exists is mapped into its domain too.
                expect_ok(c.fd.ioas_map(
                    ioas,
                    c.buf.addr(),
                    LEN,
                    Some(IOVA),
                    IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                ))?;
                let hwpt = expect_ok(c.fd.hwpt_alloc(dev, ioas, 0))?;
                if [0, dev, ioas].contains(&hwpt) {
                    return Err(format!("HWPT id {hwpt}"));
                }
                c.hwpt = Some(hwpt);
                Ok(())
            },
        ),
        ("DESTROY of an IOAS with a HWPT fails EBUSY", |c| {
            need(c.hwpt, "the HWPT")?;
            expect_errno(&c.fd.destroy(need(c.ioas, "the IOAS")?), libc::EBUSY)
        }),
        ("DESTROY of the device fails EBUSY", |c| {
            expect_errno(&c.fd.destroy(need(c.dev_id, "the device")?), libc::EBUSY)
        }),
        (
            "ATTACH to an IOAS with an area over the MSI window fails EADDRINUSE",
            |c| {
                need(c.dev_id, "the device")?;
                // Without a device attached an IOAS has no reserved range, so the map goes in.
                let other = expect_ok(c.fd.ioas_alloc())?;
                let mapped = c.fd.ioas_map(
                    other,
                    c.buf.addr(),
                    LEN,
                    Some(MSI_START),
                    IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                );
                let r = mapped
                    .map_err(|e| format!("the map failed: {e}"))
                    .and_then(|_| expect_errno(&c.dev.attach_pt(other), libc::EADDRINUSE));
                expect_ok(c.fd.destroy(other)).and(r)
            },
        ),
        ("ATTACH to a missing id fails ENOENT", |c| {
            need(c.dev_id, "the device")?;
            expect_errno(&c.dev.attach_pt(MISSING_ID), libc::ENOENT)
        }),
        ("ATTACH to the device id fails EINVAL", |c| {
            expect_errno(
                &c.dev.attach_pt(need(c.dev_id, "the device")?),
                libc::EINVAL,
            )
        }),
        ("ATTACH to the HWPT returns its id", |c| {
            let hwpt = need(c.hwpt, "the HWPT")?;
            let got = expect_ok(c.dev.attach_pt(hwpt))?;
            if got != hwpt {
                return Err(format!("returned {got}, not {hwpt}"));
            }
            Ok(())
        }),
        ("DESTROY of the attached HWPT fails EBUSY", |c| {
            expect_errno(&c.fd.destroy(need(c.hwpt, "the HWPT")?), libc::EBUSY)
        }),
        (
            "IOVA_RANGES leaves out the MSI window while the device is attached",
            |c| {
                need(c.hwpt, "the HWPT")?;
                let ioas = need(c.ioas, "the IOAS")?;
                if usable(c, ioas, MSI_START, MSI_LAST)? {
                    return Err("the MSI window is usable".into());
                }
                if !usable(c, ioas, IOVA, IOVA + LEN - 1)? {
                    return Err("the mapped area is not usable".into());
                }
                Ok(())
            },
        ),
        ("a fixed MAP into the MSI window fails EINVAL", |c| {
            need(c.hwpt, "the HWPT")?;
            let r = c.fd.ioas_map(
                need(c.ioas, "the IOAS")?,
                c.buf.addr(),
                LEN,
                Some(MSI_START),
                IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            );
            expect_errno(&r, libc::EINVAL)
        }),
        ("ALLOW_IOVAS over the MSI window fails EADDRINUSE", |c| {
            need(c.hwpt, "the HWPT")?;
            let range = IommuIovaRange {
                start: MSI_START - LEN,
                last: MSI_LAST + LEN,
            };
            let r = c.fd.ioas_allow_iovas(need(c.ioas, "the IOAS")?, &[range]);
            expect_errno(&r, libc::EADDRINUSE)
        }),
        ("ATTACH to the IOAS moves the device to another HWPT", |c| {
            let (ioas, hwpt) = (need(c.ioas, "the IOAS")?, need(c.hwpt, "the HWPT")?);
            let got = expect_ok(c.dev.attach_pt(ioas))?;
            if [0, ioas, hwpt].contains(&got) {
                return Err(format!("returned {got}"));
            }
            c.auto_hwpt = Some(got);
            Ok(())
        }),
        ("DESTROY of the HWPT left behind succeeds", |c| {
            need(c.auto_hwpt, "the attach to the IOAS")?;
            expect_ok(c.fd.destroy(need(c.hwpt, "the HWPT")?))?;
            c.hwpt = None;
            Ok(())
        }),
        ("DETACH succeeds", |c| {
            need(c.auto_hwpt, "the attach to the IOAS")?;
            expect_ok(c.dev.detach_pt())
        }),
        (
            "the automatic HWPT went with the detach: DESTROY of it fails ENOENT",
            |c| {
                expect_errno(
                    &c.fd.destroy(need(c.auto_hwpt, "the automatic HWPT")?),
                    libc::ENOENT,
                )
            },
        ),
        (
            "with no device and no HWPT left, IOVA_RANGES covers the MSI window again",
            |c| {
                let ioas = need(c.ioas, "the IOAS")?;
                need(c.auto_hwpt, "the attach to the IOAS")?;
                if c.hwpt.is_some() {
                    return Err("not run: the user HWPT is still there".into());
                }
                if !usable(c, ioas, MSI_START, MSI_LAST)? {
                    return Err("the MSI window is still reserved".into());
                }
                Ok(())
            },
        ),
        ("DESTROY of the IOAS succeeds once nothing uses it", |c| {
            expect_ok(c.fd.destroy(need(c.ioas, "the IOAS")?))?;
            c.ioas = None;
            Ok(())
        }),
    ]
}

/// The order the files of a bound, attached device with a mapped area are closed in.
#[derive(Clone, Copy)]
enum CloseFirst {
    /// The iommufd file first: vfio still holds it until the device file goes.
    Iommufd,
    /// The device file first: it unbinds, then the iommufd file goes.
    Device,
}

/// Binds, maps an area, attaches, then closes both files in `order`: every pin must be gone.
fn close_in_order(dev_path: &Path, cdev: &Path, order: CloseFirst) -> CheckResult {
    let before = vm_pin_and_lck_kib()?;
    let fd = Iommufd::open(dev_path).map_err(|e| format!("opening {}: {e}", dev_path.display()))?;
    let dev = VfioDevice::open_cdev(cdev).map_err(|e| format!("{e:#}"))?;
    let buf = DmaBuffer::new(LEN as usize, 0x5a).map_err(|e| format!("{e:#}"))?;
    expect_ok(dev.bind_iommufd(fd.as_fd()))?;
    let ioas = expect_ok(fd.ioas_alloc())?;
    expect_ok(fd.ioas_map(
        ioas,
        buf.addr(),
        LEN,
        Some(IOVA),
        IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ))?;
    expect_ok(dev.attach_pt(ioas))?;
    let held = vm_pin_and_lck_kib()?;
    if held.0 <= before.0 {
        return Err(format!(
            "VmPin did not grow with the area mapped: {before:?} -> {held:?}"
        ));
    }
    match order {
        CloseFirst::Iommufd => {
            drop(fd);
            drop(dev);
        }
        CloseFirst::Device => {
            drop(dev);
            drop(fd);
        }
    }
    let after = vm_pin_and_lck_kib()?;
    if after != before {
        return Err(format!(
            "VmPin/VmLck {after:?} kB after closing, {before:?} before ({held:?} while attached)"
        ));
    }
    Ok(())
}

/// Runs the checks against the iommufd-speaking device `dev_path` with the edu device.
pub fn run<W: Write>(dev_path: &Path, sysfs: &Path, devfs: &Path, out: W) -> Result<Tap<W>> {
    let bdf = find_edu(sysfs, None)?;
    let cdev = edu_cdev(sysfs, devfs, Some(&bdf))?;
    let iommu = device_iommu(sysfs, &bdf)?;
    let before = vm_pin_and_lck_kib().map_err(anyhow::Error::msg)?;
    let all = checks();
    let mut tap = Tap::new(out, all.len() + 3).context("writing TAP output")?;
    {
        let mut c = Ctx {
            iommu,
            fd: Iommufd::open(dev_path)
                .with_context(|| format!("opening {}", dev_path.display()))?,
            dev: VfioDevice::open_cdev(&cdev)?,
            buf: DmaBuffer::new(LEN as usize, 0x5a).context("mmap of the DMA buffer")?,
            dev_id: None,
            ioas: None,
            hwpt: None,
            auto_hwpt: None,
        };
        for (name, check) in all {
            let r = check(&mut c);
            tap.report(name, &r).context("writing TAP output")?;
        }
        // Closing the device file unbinds it; closing the iommufd file drops the rest.
    }
    let pins = vm_pin_and_lck_kib().map_err(anyhow::Error::msg)?;
    let r = if pins == before {
        Ok(())
    } else {
        Err(format!(
            "VmPin/VmLck {pins:?} kB after closing, {before:?} before"
        ))
    };
    tap.report("closing the files releases every pin", &r)
        .context("writing TAP output")?;
    for (name, order) in [
        (
            "closing the iommufd file before the attached device's releases every pin",
            CloseFirst::Iommufd,
        ),
        (
            "closing the attached device's file before the iommufd file releases every pin",
            CloseFirst::Device,
        ),
    ] {
        let r = close_in_order(dev_path, &cdev, order);
        tap.report(name, &r).context("writing TAP output")?;
    }
    Ok(tap)
}
