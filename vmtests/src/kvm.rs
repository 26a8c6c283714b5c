//! `kvm-vfio-workload`: hands the edu device's VFIO file to a KVM VM through the KVM-VFIO
//! device, holds it there for a moment and takes it away again — what QEMU does for an
//! assigned device — so that KVM's non-coherent DMA (guest `wbinvd`) state can be watched.
//!
//! No vCPU is created or run: KVM decides at `KVM_DEV_VFIO_FILE_ADD` / `_DEL` (and when the
//! VM is destroyed). `virt/kvm/vfio.c`, `kvm_vfio_update_coherency()`, calls
//! `kvm_arch_register_noncoherent_dma()` when the set of files it holds first contains one
//! that is not `vfio_file_enforced_coherent()`, and `kvm_arch_unregister_noncoherent_dma()`
//! when that is no longer so. For a group file that is "every device of the group has
//! `IOMMU_CAP_ENFORCE_CACHE_COHERENCY`", for a device cdev "this device has it": with
//! intel-iommu, `ECAP.SC` (snoop control, bit 7 of the extended capability register), which
//! the IOMMU shows in sysfs. So the program can predict the outcome and prints the
//! prediction (`expect_noncoherent`); only a tracer (ioasid-top) sees what KVM did.
//!
//! The pure parts (arguments, ecap decoding, the sysfs lookups, the summary) are unit-tested
//! here; [`run`] needs the VM.

use crate::errno::describe_error;
use crate::sysfs;
use crate::vfio::VfioDevice;
use crate::workload::{check_device, find_edu, open_cdev, open_type1};
use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use ioasid_uapi::ioctl::{ioctl_ptr, ioctl_val};
use ioasid_uapi::iommu_sysfs::{self, DeviceIommu};
use ioasid_uapi::kvm::*;
use ioasid_uapi::pci::{parse_pci_config, pcie_devctl_offset};
use ioasid_uapi::test_hook;
use ioasid_uapi::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
use ioasid_uapi::{DEV_IOASID, DEV_IOMMU, Iommufd};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which VFIO file KVM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// the device's VFIO group file (/dev/vfio/N), in a type1 container
    Type1,
    /// the device's VFIO cdev (/dev/vfio/devices/vfioN), bound to /dev/iommu and attached
    /// to an IOAS
    Iommufd,
    /// the device's VFIO cdev bound to this project's /dev/ioasid and attached to an IOAS
    Ioasid,
}

/// How the file leaves the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Remove {
    /// `KVM_DEV_VFIO_FILE_DEL`, then close the VM
    Del,
    /// just close the VM: destroying it releases the KVM-VFIO device, which drops its files
    Close,
}

/// Give the edu device's VFIO file to a KVM VM and take it back (no vCPU runs).
#[derive(Debug, Parser)]
#[command(name = "kvm-vfio-workload", version)]
pub struct Args {
    /// which VFIO file KVM gets
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// how the file leaves the VM
    #[arg(long, value_enum, default_value = "del")]
    pub remove: Remove,
    /// milliseconds the VM holds the file
    #[arg(long, default_value_t = 1000)]
    pub hold_ms: u64,
    /// hold the file until FILE exists instead of --hold-ms, printing a `{"held":true,...}`
    /// line on stdout (flushed) once the VM holds it, so a script can wait for it
    #[arg(long, value_name = "FILE", conflicts_with = "hold_ms")]
    pub hold_until: Option<PathBuf>,
    /// with a device cdev: give KVM the file before binding and attaching the device, as QEMU
    /// does, and detach it before the file leaves the VM, so that only vfio's recheck after
    /// attach and detach can tell KVM (not with type1)
    #[arg(long)]
    pub attach_after_add: bool,
    /// never make the VM's KVM-VFIO device, so that KVM is never told of the VFIO file: a VMM
    /// that forgets KVM_DEV_VFIO_FILE_ADD (the VM and the attached device are held all the same)
    #[arg(long, conflicts_with_all = ["attach_after_add", "remove"])]
    pub no_kvm_vfio: bool,
    /// while the VM holds the device: set /dev/ioasid's test hook no_snoop_override to VALUE
    /// (hw, 0 or 1), then write the device's PCIe Device Control back unchanged through its
    /// VFIO config region (step `devctl`): vfio-pci asks KVM to recheck after such a write.
    /// A PCI Express device (--bdf) bound through a device cdev
    #[arg(long, value_name = "VALUE")]
    pub poke_devctl: Option<String>,
    /// after the Device Control write, set the hook to VALUE: no push follows (the next
    /// question KVM asks, e.g. at the detach, sees it)
    #[arg(long, value_name = "VALUE", requires = "poke_devctl")]
    pub then_override: Option<String>,
    /// PCI address of the edu device (default: the first 1234:11e8 found)
    #[arg(long)]
    pub bdf: Option<String>,
    /// do not (re)bind the device to vfio-pci
    #[arg(long)]
    pub no_bind: bool,
    /// KVM device node
    #[arg(long, default_value = "/dev/kvm", hide = true)]
    pub kvm_dev: PathBuf,
    /// sysfs mount point
    #[arg(long, default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
    /// devtmpfs mount point
    #[arg(long, default_value = "/dev", hide = true)]
    pub devfs: PathBuf,
    /// debugfs mount point (where KVM names its VMs `<pid>-<vm fd>`)
    #[arg(long, default_value = "/sys/kernel/debug", hide = true)]
    pub debugfs: PathBuf,
}

/// `<root>/bus/pci/devices/<bdf>/iommu` and its ecap ([`iommu_sysfs::device_iommu`]); a
/// device without an IOMMU is an error that says what to check.
pub fn device_iommu(root: &Path, bdf: &str) -> Result<DeviceIommu> {
    iommu_sysfs::device_iommu(root, bdf)
        .with_context(|| format!("reading the IOMMU of {bdf} in sysfs"))?
        .with_context(|| {
            format!(
                "{bdf} has no IOMMU (is intel_iommu=on, is the guest started with -device \
                 intel-iommu?)"
            )
        })
}

/// The iommufd objects of the cdev backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommufdIds {
    pub dev_id: u32,
    pub ioas_id: u32,
    pub hwpt_id: u32,
}

/// The JSON line printed at the end (read by `check-top-kvm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// This process: the `pid` of ioasid-top's kvm lines.
    pub pid: u32,
    pub backend: Backend,
    pub bdf: String,
    /// The VFIO file given to KVM.
    pub vfio_file: String,
    /// `group` or `device`.
    pub vfio_file_kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iommufd: Option<IommufdIds>,
    /// The device's IOMMU (`dmar0`).
    pub iommu: String,
    /// Its VT-d extended capabilities, hex; absent when not intel-iommu.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iommu_ecap: Option<String>,
    /// `ECAP.SC`: the IOMMU enforces snooping; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snoop_control: Option<bool>,
    /// /dev/ioasid's test hook for the device's no-snoop ability (`hw`, `0`, `1`), when the
    /// kernel has it and the backend is /dev/ioasid.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub no_snoop_override: Option<String>,
    /// What KVM should do: register non-coherent DMA (guest `wbinvd` honoured) while it
    /// holds the file. Absent when the IOMMU does not say.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expect_noncoherent: Option<bool>,
    /// The VM fd: with the pid, KVM's name for the VM (`<pid>-<vm_fd>` in debugfs).
    pub vm_fd: RawFd,
    /// The VM's debugfs directory, when debugfs is mounted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vm_debugfs: Option<String>,
    /// The KVM-VFIO device fd.
    pub kvm_vfio_fd: RawFd,
    /// When each step ran (`CLOCK_MONOTONIC` ns).
    #[serde(default)]
    pub steps: Steps,
    /// `KVM_DEV_VFIO_FILE_ADD` succeeded (and a second one said `EEXIST`).
    pub added: bool,
    pub remove: Remove,
    /// The file left the VM: `_DEL` succeeded (and a second one said `ENOENT`), or the VM
    /// was destroyed (its debugfs directory is gone, when there was one).
    pub removed: bool,
    pub hold_ms: u64,
}

impl Summary {
    pub fn to_json_line(&self) -> Result<String> {
        serde_json::to_string(self).context("serializing summary")
    }
}

/// `--hold-until`: says the VM holds the file (stdout, flushed), then waits for `release`.
fn hold_until(release: &Path, summary: &Summary) -> Result<()> {
    let line = serde_json::json!({
        "held": true,
        "pid": summary.pid,
        "vfio_file": summary.vfio_file,
    });
    crate::hold::announce_and_wait(&line, release)
}

/// Holds what the workload has for `--hold-until` or `--hold-ms`.
fn hold(args: &Args, summary: &Summary) -> Result<()> {
    match &args.hold_until {
        Some(release) => hold_until(release, summary),
        None => {
            std::thread::sleep(Duration::from_millis(args.hold_ms));
            Ok(())
        }
    }
}

/// `/dev/kvm`
pub struct Kvm {
    file: File,
}

/// A VM fd from `KVM_CREATE_VM`.
pub struct Vm {
    fd: OwnedFd,
}

/// The KVM-VFIO device of a VM (`KVM_CREATE_DEVICE` with `KVM_DEV_TYPE_VFIO`).
pub struct KvmVfio {
    fd: OwnedFd,
}

impl Kvm {
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::NotFound {
                    ": the kernel has no KVM, or no vendor module could start (kvm_amd needs SVM \
                     in the vCPU: under QEMU TCG, nested SVM needs -cpu max; see dmesg and \
                     `grep -c svm /proc/cpuinfo`)"
                } else {
                    ""
                };
                anyhow::Error::new(e).context(format!("opening {}{hint}", path.display()))
            })?;
        Ok(Self { file })
    }

    /// `KVM_GET_API_VERSION`
    pub fn api_version(&self) -> io::Result<i32> {
        // SAFETY: takes no argument.
        unsafe { ioctl_val(self.file.as_fd(), KVM_GET_API_VERSION, 0) }
    }

    /// `KVM_CREATE_VM` of the default machine type (0).
    pub fn create_vm(&self) -> io::Result<Vm> {
        // SAFETY: integer argument (the machine type).
        let fd = unsafe { ioctl_val(self.file.as_fd(), KVM_CREATE_VM, 0) }?;
        // SAFETY: on success the ioctl returns a new fd that we now own.
        Ok(Vm {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

impl Vm {
    /// `KVM_CREATE_DEVICE` of `ty`; with `test_only` (`KVM_CREATE_DEVICE_TEST`) nothing is
    /// created and the result only says whether the type exists.
    fn create_device(&self, ty: u32, test_only: bool) -> io::Result<Option<OwnedFd>> {
        let mut arg = KvmCreateDevice {
            type_: ty,
            fd: 0,
            flags: if test_only { KVM_CREATE_DEVICE_TEST } else { 0 },
        };
        // SAFETY: pointer-free structure the kernel reads and writes (`fd`).
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_CREATE_DEVICE, &mut arg) }?;
        if test_only {
            return Ok(None);
        }
        let fd = RawFd::try_from(arg.fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: on success the kernel installed a new fd for us in `arg.fd`.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The VM's KVM-VFIO device, after checking the type exists.
    pub fn create_kvm_vfio(&self) -> Result<KvmVfio> {
        self.create_device(KVM_DEV_TYPE_VFIO, true).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENODEV) {
                ": KVM has no VFIO device type (CONFIG_KVM_VFIO, selected by CONFIG_KVM with CONFIG_VFIO)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "KVM_CREATE_DEVICE KVM_DEV_TYPE_VFIO with KVM_CREATE_DEVICE_TEST: {}{hint}",
                describe_error(&e)
            )
        })?;
        let fd = self
            .create_device(KVM_DEV_TYPE_VFIO, false)
            .context("KVM_CREATE_DEVICE KVM_DEV_TYPE_VFIO")?
            .context("KVM_CREATE_DEVICE returned no fd")?;
        Ok(KvmVfio { fd })
    }
}

impl AsFd for Vm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl KvmVfio {
    fn file_attr(attr: u64, fd: &i32) -> KvmDeviceAttr {
        KvmDeviceAttr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr,
            addr: std::ptr::from_ref(fd) as u64,
        }
    }

    /// `KVM_HAS_DEVICE_ATTR` for the `KVM_DEV_VFIO_FILE` group's `attr`.
    pub fn has_file_attr(&self, attr: u64) -> io::Result<()> {
        let mut a = Self::file_attr(attr, &0);
        // SAFETY: pointer-free for HAS (addr is not read).
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_HAS_DEVICE_ATTR, &mut a) }.map(drop)
    }

    /// `KVM_SET_DEVICE_ATTR` `KVM_DEV_VFIO_FILE` / `attr` with a VFIO file's fd.
    fn set_file(&self, attr: u64, vfio: BorrowedFd<'_>) -> io::Result<()> {
        let fd: i32 = vfio.as_raw_fd();
        let mut a = Self::file_attr(attr, &fd);
        // SAFETY: `addr` points to `fd`, an int32 the kernel only reads, alive for the call.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_DEVICE_ATTR, &mut a) }.map(drop)
    }

    /// `KVM_DEV_VFIO_FILE_ADD`
    pub fn file_add(&self, vfio: BorrowedFd<'_>) -> io::Result<()> {
        self.set_file(KVM_DEV_VFIO_FILE_ADD, vfio)
    }

    /// `KVM_DEV_VFIO_FILE_DEL`
    pub fn file_del(&self, vfio: BorrowedFd<'_>) -> io::Result<()> {
        self.set_file(KVM_DEV_VFIO_FILE_DEL, vfio)
    }
}

impl AsFd for KvmVfio {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Expects `res` to be the errno `want`: the kernel's answer to a repeated ADD or DEL,
/// which shows what KVM's file list holds.
fn expect_errno(res: io::Result<()>, want: i32, what: &str) -> Result<()> {
    match res {
        Err(e) if e.raw_os_error() == Some(want) => Ok(()),
        Err(e) => bail!(
            "{what}: {}, expected {}",
            describe_error(&e),
            describe_error(&io::Error::from_raw_os_error(want))
        ),
        Ok(()) => bail!(
            "{what} succeeded, expected {}",
            describe_error(&io::Error::from_raw_os_error(want))
        ),
    }
}

/// KVM's debugfs name of a VM: `<pid>-<vm fd>` (virt/kvm/kvm_main.c,
/// `kvm_create_vm_debugfs()`).
pub fn vm_debugfs_dir(debugfs: &Path, pid: u32, vm_fd: RawFd) -> PathBuf {
    debugfs.join("kvm").join(format!("{pid}-{vm_fd}"))
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns()`, so of ioasid-top's `ts_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// When the workload's steps ran: `[start, end]` in `CLOCK_MONOTONIC` ns, so that a checker can
/// tell which step a traced kernel call (ioasid-top's `ts_ns`) belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steps {
    /// The first `KVM_DEV_VFIO_FILE_ADD`.
    pub file_add: Option<[u64; 2]>,
    /// Binding and attaching the device (with `--attach-after-add`).
    pub attach: Option<[u64; 2]>,
    /// Writing the device's PCIe Device Control back through vfio-pci (`--poke-devctl`).
    #[serde(default)]
    pub devctl: Option<[u64; 2]>,
    /// Detaching the device (with `--attach-after-add`).
    pub detach: Option<[u64; 2]>,
    /// `KVM_DEV_VFIO_FILE_DEL`, or closing the VM.
    pub remove: Option<[u64; 2]>,
}

/// Runs `f`, recording when into `window`.
fn timed<T>(window: &mut Option<[u64; 2]>, f: impl FnOnce() -> T) -> T {
    let start = monotonic_ns();
    let r = f();
    *window = Some([start, monotonic_ns()]);
    r
}

/// What holds the VFIO file KVM is given (and what must outlive its use there).
enum VfioHolder {
    Type1 {
        // Kept open: the group stays attached to its container while KVM holds the file.
        _container: crate::vfio::VfioContainer,
        group: crate::vfio::VfioGroup,
    },
    Iommufd {
        dev: VfioDevice,
        /// The cdev's path, for messages.
        cdev: PathBuf,
        iommufd: Iommufd,
        /// /dev/iommu or /dev/ioasid.
        path: &'static str,
        /// The IOAS the device is attached to, once bound and attached.
        ioas: Option<u32>,
    },
}

impl VfioHolder {
    fn file(&self) -> BorrowedFd<'_> {
        match self {
            VfioHolder::Type1 { group, .. } => group.as_fd(),
            VfioHolder::Iommufd { dev, .. } => dev.as_fd(),
        }
    }

    /// Binds the cdev to its iommufd file and attaches it to a new IOAS (type1 needs nothing).
    fn bind_and_attach(&mut self, summary: &mut Summary) -> Result<()> {
        if let VfioHolder::Iommufd {
            dev,
            cdev,
            iommufd,
            path,
            ioas,
        } = self
        {
            let dev_id = dev.bind_iommufd(iommufd.as_fd()).with_context(|| {
                format!("VFIO_DEVICE_BIND_IOMMUFD {} to {path}", cdev.display())
            })?;
            check_device(dev)?;
            let id = iommufd.ioas_alloc().context("IOMMU_IOAS_ALLOC")?;
            let hwpt = dev
                .attach_pt(id)
                .with_context(|| format!("VFIO_DEVICE_ATTACH_IOMMUFD_PT ioas {id}"))?;
            *ioas = Some(id);
            summary.iommufd = Some(IommufdIds {
                dev_id,
                ioas_id: id,
                hwpt_id: hwpt,
            });
        }
        Ok(())
    }

    /// Undoes the iommufd attach (type1 needs nothing: closing the files does it).
    fn detach(&mut self) -> Result<()> {
        if let VfioHolder::Iommufd {
            dev, iommufd, ioas, ..
        } = self
            && let Some(id) = ioas.take()
        {
            dev.detach_pt().context("VFIO_DEVICE_DETACH_IOMMUFD_PT")?;
            iommufd
                .destroy(id)
                .with_context(|| format!("IOMMU_DESTROY ioas {id}"))?;
        }
        Ok(())
    }
}

/// The VFIO file of the edu device for `backend`, set up the way a VMM would before handing
/// it to KVM.
fn open_vfio(args: &Args, bdf: &str, summary: &mut Summary) -> Result<VfioHolder> {
    match args.backend {
        Backend::Type1 => {
            let (container, group) = open_type1(&args.sysfs, &args.devfs, bdf)?;
            let n = sysfs::iommu_group(&args.sysfs, bdf)?;
            summary.vfio_file = args
                .devfs
                .join("vfio")
                .join(n.to_string())
                .display()
                .to_string();
            summary.vfio_file_kind = "group".into();
            Ok(VfioHolder::Type1 {
                _container: container,
                group,
            })
        }
        Backend::Iommufd | Backend::Ioasid => {
            let path = if args.backend == Backend::Iommufd {
                DEV_IOMMU
            } else {
                DEV_IOASID
            };
            let (dev, cdev) = open_cdev(&args.sysfs, &args.devfs, bdf)?;
            summary.vfio_file = cdev.display().to_string();
            summary.vfio_file_kind = "device".into();
            let iommufd =
                Iommufd::open(Path::new(path)).with_context(|| format!("opening {path}"))?;
            let mut holder = VfioHolder::Iommufd {
                dev,
                cdev,
                iommufd,
                path,
                ioas: None,
            };
            if !args.attach_after_add {
                holder.bind_and_attach(summary)?;
            }
            Ok(holder)
        }
    }
}

/// What KVM should do with the file: register non-coherent DMA or not. Mainline (type1,
/// iommufd) decides from the IOMMU alone: non-coherent unless it enforces snooping.
/// /dev/ioasid also asks whether the device can issue no-snoop requests at all (the three
/// conditions of the series; the platform, x86, honours no-snoop). `None` when the IOMMU does
/// not say.
fn expect_noncoherent(args: &Args, snoop_control: Option<bool>, bdf: &str) -> Result<Option<bool>> {
    let Some(sc) = snoop_control else {
        return Ok(None);
    };
    if args.backend != Backend::Ioasid {
        return Ok(Some(!sc));
    }
    let can_issue_no_snoop = match no_snoop_override(&args.debugfs)?.as_deref() {
        Some("1") => true,
        Some("0") => false,
        _ => {
            let cfg_path = sysfs::pci_device_dir(&args.sysfs, bdf).join("config");
            let cfg = std::fs::read(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?;
            !parse_pci_config(&cfg).cannot()
        }
    };
    Ok(Some(!sc && can_issue_no_snoop))
}

/// Writes `value` (hw, 0 or 1) to `<debugfs>/ioasid/no_snoop_override`.
fn set_no_snoop_override(debugfs: &Path, value: &str) -> Result<()> {
    let path = debugfs.join(test_hook::NO_SNOOP_OVERRIDE);
    std::fs::write(&path, value).with_context(|| {
        format!(
            "writing {value} to {} (a kernel with CONFIG_IOASID_TEST)",
            path.display()
        )
    })
}

/// `--poke-devctl`: change what the test hook says of the device, then write its Device
/// Control back through vfio-pci in the timed step `devctl`, which makes vfio-pci ask KVM again;
/// `--then-override` changes the hook once more, without a push.
fn poke_devctl(args: &Args, bdf: &str, holder: &VfioHolder, steps: &mut Steps) -> Result<()> {
    let Some(value) = &args.poke_devctl else {
        return Ok(());
    };
    let VfioHolder::Iommufd { dev, .. } = holder else {
        bail!("--poke-devctl needs a device cdev (--backend iommufd or ioasid)");
    };
    set_no_snoop_override(&args.debugfs, value)?;
    let cfg = dev
        .region(VFIO_PCI_CONFIG_REGION_INDEX)
        .context("the VFIO config region")?;
    let mut bytes = vec![0u8; 256];
    cfg.read(0, &mut bytes)
        .context("reading config space through VFIO")?;
    let off = pcie_devctl_offset(&bytes).with_context(|| {
        format!("{bdf} is not PCI Express: it has no Device Control (--bdf an igb NIC)")
    })? as u64;
    let devctl = cfg.read16(off).context("reading Device Control")?;
    timed(&mut steps.devctl, || cfg.write16(off, devctl)).context("writing Device Control back")?;
    if let Some(value) = &args.then_override {
        set_no_snoop_override(&args.debugfs, value)?;
    }
    Ok(())
}

/// The no-snoop test hook's value ([`test_hook`]); `None` without the hook.
pub fn no_snoop_override(debugfs: &Path) -> Result<Option<String>> {
    Ok(test_hook::read_no_snoop_override(debugfs)?)
}

/// The whole workload; returns the summary to print.
pub fn run(args: &Args) -> Result<Summary> {
    ensure!(
        !(args.attach_after_add && args.backend == Backend::Type1),
        "--attach-after-add needs a device cdev (--backend iommufd or ioasid): a type1 group \
         is attached to its container before KVM can get it"
    );
    let bdf = find_edu(&args.sysfs, args.bdf.as_deref())?;
    if !args.no_bind {
        sysfs::bind_vfio_pci(&args.sysfs, &bdf, Duration::from_secs(3))?;
    }
    let iommu = device_iommu(&args.sysfs, &bdf)?;
    let snoop = iommu.snoop_control();
    let mut summary = Summary {
        pid: std::process::id(),
        backend: args.backend,
        bdf: bdf.clone(),
        vfio_file: String::new(),
        vfio_file_kind: String::new(),
        iommufd: None,
        iommu: iommu.name.clone(),
        iommu_ecap: iommu.ecap.map(|e| format!("{e:#x}")),
        snoop_control: snoop,
        no_snoop_override: match args.backend {
            Backend::Ioasid => no_snoop_override(&args.debugfs)?,
            _ => None,
        },
        expect_noncoherent: expect_noncoherent(args, snoop, &bdf)?,
        vm_fd: -1,
        vm_debugfs: None,
        kvm_vfio_fd: -1,
        steps: Steps::default(),
        added: false,
        remove: args.remove,
        removed: false,
        hold_ms: args.hold_ms,
    };

    let kvm = Kvm::open(&args.kvm_dev)?;
    let version = kvm.api_version().context("KVM_GET_API_VERSION")?;
    ensure!(
        version == KVM_API_VERSION,
        "KVM_GET_API_VERSION says {version}, expected {KVM_API_VERSION}"
    );
    let vm = kvm.create_vm().map_err(|e| {
        anyhow::anyhow!(
            "KVM_CREATE_VM: {} (dmesg says why KVM refused)",
            describe_error(&e)
        )
    })?;
    summary.vm_fd = vm.as_fd().as_raw_fd();
    // KVM names the VM in debugfs; its directory shows the VM exists now and, later, that
    // closing destroyed it. Only checked where debugfs is mounted with a kvm directory.
    let debugfs_dir = vm_debugfs_dir(&args.debugfs, summary.pid, summary.vm_fd);
    if args.debugfs.join("kvm").is_dir() {
        ensure!(
            debugfs_dir.is_dir(),
            "KVM_CREATE_VM returned fd {} but {} does not exist",
            summary.vm_fd,
            debugfs_dir.display()
        );
        summary.vm_debugfs = Some(debugfs_dir.display().to_string());
    }

    if args.no_kvm_vfio {
        let mut holder = open_vfio(args, &bdf, &mut summary)?;
        hold(args, &summary)?;
        drop(vm);
        drop(kvm);
        holder.detach()?;
        return Ok(summary);
    }

    let kv = vm.create_kvm_vfio()?;
    summary.kvm_vfio_fd = kv.as_fd().as_raw_fd();
    // The device is the KVM-VFIO one: it knows the VFIO file attributes.
    for (attr, name) in [
        (KVM_DEV_VFIO_FILE_ADD, "KVM_DEV_VFIO_FILE_ADD"),
        (KVM_DEV_VFIO_FILE_DEL, "KVM_DEV_VFIO_FILE_DEL"),
    ] {
        kv.has_file_attr(attr).map_err(|e| {
            anyhow::anyhow!(
                "KVM_HAS_DEVICE_ATTR KVM_DEV_VFIO_FILE/{name}: {}",
                describe_error(&e)
            )
        })?;
    }

    let mut holder = open_vfio(args, &bdf, &mut summary)?;
    timed(&mut summary.steps.file_add, || kv.file_add(holder.file())).map_err(|e| {
        anyhow::anyhow!(
            "KVM_SET_DEVICE_ATTR KVM_DEV_VFIO_FILE_ADD {}: {}",
            summary.vfio_file,
            describe_error(&e)
        )
    })?;
    // KVM keeps a list of its files and refuses one it has: a second ADD proves the first
    // one took (it returns before re-evaluating coherency, so it changes nothing).
    expect_errno(
        kv.file_add(holder.file()),
        libc::EEXIST,
        "a second KVM_DEV_VFIO_FILE_ADD of the same file",
    )?;
    summary.added = true;
    if args.attach_after_add {
        // KVM asked when the file came and heard "coherent" (nothing attached); from here on
        // only vfio's recheck after attach tells it otherwise.
        let mut window = None;
        timed(&mut window, || holder.bind_and_attach(&mut summary))?;
        summary.steps.attach = window;
    }

    poke_devctl(args, &bdf, &holder, &mut summary.steps)?;
    hold(args, &summary)?;
    if args.attach_after_add {
        timed(&mut summary.steps.detach, || holder.detach())?;
    }

    match args.remove {
        Remove::Del => {
            timed(&mut summary.steps.remove, || kv.file_del(holder.file())).map_err(|e| {
                anyhow::anyhow!(
                    "KVM_SET_DEVICE_ATTR KVM_DEV_VFIO_FILE_DEL {}: {}",
                    summary.vfio_file,
                    describe_error(&e)
                )
            })?;
            expect_errno(
                kv.file_del(holder.file()),
                libc::ENOENT,
                "a second KVM_DEV_VFIO_FILE_DEL of the same file",
            )?;
            summary.removed = true;
            drop(kv);
            drop(vm);
        }
        Remove::Close => {
            // The device fd holds a reference on the VM: with both closed the VM is destroyed
            // here (kvm_destroy_vm → kvm_vfio_release drops the files and re-evaluates).
            timed(&mut summary.steps.remove, || {
                drop(kv);
                drop(vm);
            });
            if let Some(dir) = &summary.vm_debugfs {
                ensure!(
                    !Path::new(dir).exists(),
                    "{dir} still exists after closing the VM and its KVM-VFIO device: the VM was not destroyed"
                );
            }
            summary.removed = true;
        }
    }
    drop(kvm);
    holder.detach()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::testutil::TestDir;

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from(["x", "--backend", "type1"]).unwrap();
        assert_eq!(
            (a.backend, a.remove, a.hold_ms),
            (Backend::Type1, Remove::Del, 1000)
        );
        let a = Args::try_parse_from([
            "x",
            "--backend",
            "iommufd",
            "--remove",
            "close",
            "--hold-ms",
            "5",
        ])
        .unwrap();
        assert_eq!(
            (a.backend, a.remove, a.hold_ms),
            (Backend::Iommufd, Remove::Close, 5)
        );
        let a =
            Args::try_parse_from(["x", "--backend", "type1", "--hold-until", "/tmp/r"]).unwrap();
        assert_eq!(a.hold_until.as_deref(), Some(Path::new("/tmp/r")));
        assert!(
            Args::try_parse_from([
                "x",
                "--backend",
                "type1",
                "--hold-until",
                "r",
                "--hold-ms",
                "5"
            ])
            .is_err()
        );
        let a = Args::try_parse_from(["x", "--backend", "ioasid", "--no-kvm-vfio"]).unwrap();
        assert!(a.no_kvm_vfio);
        assert!(
            Args::try_parse_from([
                "x",
                "--backend",
                "ioasid",
                "--no-kvm-vfio",
                "--attach-after-add"
            ])
            .is_err()
        );
        assert!(Args::try_parse_from(["x"]).is_err());
        assert!(Args::try_parse_from(["x", "--backend", "dpdk"]).is_err());
        assert!(Args::try_parse_from(["x", "--backend", "type1", "--remove", "never"]).is_err());
    }

    #[test]
    fn a_device_without_an_iommu_says_what_to_check() {
        let t = TestDir::new("kvm-iommu");
        let root = t.path();
        std::fs::create_dir_all(sysfs::pci_device_dir(root, "0000:00:0a.0")).unwrap();
        let err = device_iommu(root, "0000:00:0a.0").unwrap_err();
        assert!(format!("{err:#}").contains("no IOMMU"), "{err:#}");
    }

    #[test]
    fn debugfs_name_of_a_vm() {
        assert_eq!(
            vm_debugfs_dir(Path::new("/sys/kernel/debug"), 812, 5),
            Path::new("/sys/kernel/debug/kvm/812-5")
        );
    }

    #[test]
    fn summary_json_round_trips() {
        let s = Summary {
            pid: 55,
            backend: Backend::Iommufd,
            bdf: "0000:00:0a.0".into(),
            vfio_file: "/dev/vfio/devices/vfio0".into(),
            vfio_file_kind: "device".into(),
            iommufd: Some(IommufdIds {
                dev_id: 1,
                ioas_id: 2,
                hwpt_id: 3,
            }),
            iommu: "dmar0".into(),
            iommu_ecap: Some("0xf00f4a".into()),
            snoop_control: Some(false),
            no_snoop_override: None,
            expect_noncoherent: Some(true),
            vm_fd: 4,
            vm_debugfs: Some("/sys/kernel/debug/kvm/55-4".into()),
            kvm_vfio_fd: 5,
            steps: Steps::default(),
            added: true,
            remove: Remove::Del,
            removed: true,
            hold_ms: 1000,
        };
        let line = s.to_json_line().unwrap();
        assert!(
            line.starts_with(r#"{"pid":55,"backend":"iommufd","#),
            "{line}"
        );
        assert!(line.contains(r#""remove":"del""#), "{line}");
        assert_eq!(serde_json::from_str::<Summary>(&line).unwrap(), s);
        let t1 = Summary {
            backend: Backend::Type1,
            iommufd: None,
            iommu_ecap: None,
            snoop_control: None,
            expect_noncoherent: None,
            vm_debugfs: None,
            ..s
        };
        let line = t1.to_json_line().unwrap();
        assert!(!line.contains("iommufd\":{"), "{line}");
        assert!(!line.contains("expect_noncoherent"), "{line}");
        assert_eq!(serde_json::from_str::<Summary>(&line).unwrap(), t1);
    }

    #[test]
    fn repeated_add_and_del_answers() {
        assert!(
            expect_errno(
                Err(io::Error::from_raw_os_error(libc::EEXIST)),
                libc::EEXIST,
                "x"
            )
            .is_ok()
        );
        let e = expect_errno(Ok(()), libc::EEXIST, "second add").unwrap_err();
        assert!(e.to_string().contains("succeeded, expected EEXIST"), "{e}");
        let e = expect_errno(
            Err(io::Error::from_raw_os_error(libc::EINVAL)),
            libc::ENOENT,
            "d",
        )
        .unwrap_err();
        assert!(e.to_string().contains("EINVAL"), "{e}");
    }
}
