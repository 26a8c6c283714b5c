//! What each process holds that the audit needs, from the links in `/proc/<pid>/fd`: VFIO
//! devices (device cdevs and groups, resolved to PCI addresses through sysfs), VFIO type1
//! containers, iommufd and /dev/ioasid files, KVM VMs and KVM-VFIO devices.
//!
//! This is what ties a VM to its devices: KVM's calls carry the VM and the calling process, not
//! the VFIO files it holds, and a VMM process holds both its VM fd and its devices' fds.
//!
//! Processes and fds come and go while /proc is read: those that vanish are skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::Path,
};

use anyhow::Context as _;

use crate::startstate::{self, DEV_IOASID};

/// What one fd link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdKind {
    /// `/dev/vfio/devices/vfioN`: a VFIO device cdev, by its name (`vfioN`).
    VfioCdev(String),
    /// `/dev/vfio/N`: a VFIO group, by its IOMMU group number.
    VfioGroup(u32),
    /// `/dev/vfio/vfio`: a VFIO container (type1).
    VfioContainer,
    /// `/dev/iommu`: mainline iommufd.
    Iommufd,
    /// `/dev/ioasid`.
    Ioasid,
    /// `anon_inode:kvm-vm`: a KVM VM.
    KvmVm,
    /// `anon_inode:[vfio-device]`: a device fd from `VFIO_GROUP_GET_DEVICE_FD` (legacy group
    /// path), which keeps its group in use after the group fd is closed; which device it is
    /// does not show.
    VfioGroupDevice,
    /// `anon_inode:kvm-vfio`: a KVM-VFIO device, through which KVM learns of VFIO files.
    KvmVfio,
}

/// Classifies the target of a `/proc/<pid>/fd/<fd>` link; None for anything else.
pub fn classify_link(target: &str) -> Option<FdKind> {
    match target {
        "/dev/vfio/vfio" => return Some(FdKind::VfioContainer),
        "/dev/iommu" => return Some(FdKind::Iommufd),
        DEV_IOASID => return Some(FdKind::Ioasid),
        "anon_inode:kvm-vm" => return Some(FdKind::KvmVm),
        "anon_inode:kvm-vfio" => return Some(FdKind::KvmVfio),
        "anon_inode:[vfio-device]" => return Some(FdKind::VfioGroupDevice),
        _ => {}
    }
    if let Some(name) = target.strip_prefix("/dev/vfio/devices/") {
        return (name.starts_with("vfio") && !name.contains('/'))
            .then(|| FdKind::VfioCdev(name.to_owned()));
    }
    // Groups are numbered; `noiommu-N` groups have no IOMMU to audit.
    target
        .strip_prefix("/dev/vfio/")
        .and_then(|n| n.parse().ok())
        .map(FdKind::VfioGroup)
}

/// The files of one process that matter to the audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFiles {
    pub comm: String,
    /// PCI addresses of the VFIO devices it holds, through cdevs or groups.
    pub devices: BTreeSet<String>,
    pub kvm_vms: u32,
    pub kvm_vfio_devices: u32,
    /// Device fds of the legacy group path (`anon_inode:[vfio-device]`): which devices they
    /// are is not known.
    pub vfio_group_device_fds: u32,
    pub vfio_containers: u32,
    pub iommufd_files: u32,
    pub ioasid_files: u32,
}

impl ProcFiles {
    fn holds_anything(&self) -> bool {
        !self.devices.is_empty()
            || self.kvm_vms > 0
            || self.kvm_vfio_devices > 0
            || self.vfio_group_device_fds > 0
            || self.vfio_containers > 0
            || self.iommufd_files > 0
            || self.ioasid_files > 0
    }
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The PCI address a VFIO cdev belongs to: `<sys>/class/vfio-dev/<name>/device`.
fn cdev_bdf(sys_root: &Path, name: &str) -> io::Result<String> {
    let link = sys_root.join("class/vfio-dev").join(name).join("device");
    let target = fs::read_link(&link)?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no device name"))
}

/// The devices of IOMMU group `group`: `<sys>/kernel/iommu_groups/<group>/devices/*`, sorted.
pub fn group_devices(sys_root: &Path, group: u32) -> io::Result<Vec<String>> {
    let dir = sys_root
        .join("kernel/iommu_groups")
        .join(group.to_string())
        .join("devices");
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        out.push(e?.file_name().to_string_lossy().into_owned());
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether PCI device `bdf` is bound to a VFIO driver (vfio-pci or a variant driver such as
/// mlx5_vfio_pci): the name of its `driver` link has `vfio` in it.
fn bound_to_vfio(sys_root: &Path, bdf: &str) -> bool {
    fs::read_link(sys_root.join("bus/pci/devices").join(bdf).join("driver"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().contains("vfio")))
        .unwrap_or(false)
}

/// The files of the process whose /proc directory is `dir`; Ok(None) if it vanished.
fn read_proc_files(dir: &Path, sys_root: &Path) -> anyhow::Result<Option<ProcFiles>> {
    let fd_dir = dir.join("fd");
    let entries = match fs::read_dir(&fd_dir) {
        Ok(e) => e,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", fd_dir.display())),
    };
    let mut files = ProcFiles::default();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("listing {}", fd_dir.display())),
        };
        let target = match fs::read_link(entry.path()) {
            Ok(t) => t,
            // Closed since the listing.
            Err(e) if vanished(&e) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("readlink {}", entry.path().display()));
            }
        };
        let Some(kind) = classify_link(&target.to_string_lossy()) else {
            continue;
        };
        // A device that cannot be resolved (going away) costs only itself, not the process.
        match kind {
            FdKind::VfioCdev(name) => match cdev_bdf(sys_root, &name) {
                Ok(bdf) => {
                    files.devices.insert(bdf);
                }
                Err(e) => eprintln!(
                    "ioasid-top: warning: audit: {}: the PCI device of VFIO cdev {name}: {e}",
                    dir.display()
                ),
            },
            FdKind::VfioGroup(group) => match group_devices(sys_root, group) {
                // The group's bridges and functions of other drivers are not the VM's.
                Ok(devs) => files
                    .devices
                    .extend(devs.into_iter().filter(|d| bound_to_vfio(sys_root, d))),
                Err(e) => eprintln!(
                    "ioasid-top: warning: audit: {}: the devices of IOMMU group {group}: {e}",
                    dir.display()
                ),
            },
            FdKind::VfioContainer => files.vfio_containers += 1,
            FdKind::Iommufd => files.iommufd_files += 1,
            FdKind::Ioasid => files.ioasid_files += 1,
            FdKind::KvmVm => files.kvm_vms += 1,
            FdKind::KvmVfio => files.kvm_vfio_devices += 1,
            FdKind::VfioGroupDevice => files.vfio_group_device_fds += 1,
        }
    }
    if !files.holds_anything() {
        return Ok(Some(files));
    }
    files.comm = match fs::read_to_string(dir.join("comm")) {
        Ok(c) => c.trim_end().to_owned(),
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}/comm", dir.display())),
    };
    Ok(Some(files))
}

/// `PF_KTHREAD` of `task_struct::flags` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether a `/proc/<pid>/stat` line is a kernel thread's: its `flags` (the 9th field, counted
/// after the parenthesised `comm`, which may hold spaces) have `PF_KTHREAD`.
pub fn stat_is_kernel_thread(stat: &str) -> Option<bool> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `comm`: state (3), ppid, pgrp, session, tty_nr, tpgid, flags (9).
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

/// The pids of the kernel threads now. Processes that vanish or cannot be read are left out.
pub fn kernel_threads(proc_root: &Path) -> anyhow::Result<std::collections::BTreeSet<u32>> {
    Ok(startstate::proc_pids(proc_root, None)?
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
                .ok()
                .and_then(|s| stat_is_kernel_thread(&s))
                == Some(true)
        })
        .collect())
}

/// The processes (or only `pid`) that hold any of the files above, by pid. A process whose
/// fds cannot be read is warned about on stderr and left out.
pub fn scan(
    proc_root: &Path,
    sys_root: &Path,
    pid: Option<u32>,
) -> anyhow::Result<(BTreeMap<u32, ProcFiles>, u32)> {
    let mut out = BTreeMap::new();
    let mut denied = 0;
    for pid in startstate::proc_pids(proc_root, pid)? {
        match read_proc_files(&proc_root.join(pid.to_string()), sys_root) {
            Ok(Some(files)) if files.holds_anything() => {
                out.insert(pid, files);
            }
            Ok(_) => {}
            Err(e)
                if e.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied) =>
            {
                denied += 1;
            }
            Err(e) => eprintln!("ioasid-top: warning: audit: pid {pid}: {e:#}"),
        }
    }
    if denied > 0 {
        eprintln!(
            "ioasid-top: warning: audit: the open files of {denied} processes cannot be read \
             (run as root, or with CAP_SYS_PTRACE): the devices of their VMs are not known"
        );
    }
    Ok((out, denied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn kernel_threads_are_told_by_their_stat_flags() {
        let kworker = "10 (kworker/u8:0-events unbound) I 2 0 0 0 -1 69238880 0 0 0 0";
        let shell = "1234 (sh (with) parens) S 1 1234 1234 0 -1 4194560 100 0 0 0";
        assert_eq!(stat_is_kernel_thread(kworker), Some(true));
        assert_eq!(stat_is_kernel_thread(shell), Some(false));
        assert_eq!(stat_is_kernel_thread("garbage"), None);
    }

    #[test]
    fn links_are_classified() {
        assert_eq!(
            classify_link("/dev/vfio/devices/vfio0"),
            Some(FdKind::VfioCdev("vfio0".into()))
        );
        assert_eq!(classify_link("/dev/vfio/12"), Some(FdKind::VfioGroup(12)));
        assert_eq!(classify_link("/dev/vfio/vfio"), Some(FdKind::VfioContainer));
        assert_eq!(classify_link("/dev/vfio/noiommu-0"), None);
        assert_eq!(classify_link("/dev/iommu"), Some(FdKind::Iommufd));
        assert_eq!(classify_link("/dev/ioasid"), Some(FdKind::Ioasid));
        assert_eq!(classify_link("anon_inode:kvm-vm"), Some(FdKind::KvmVm));
        assert_eq!(classify_link("anon_inode:kvm-vfio"), Some(FdKind::KvmVfio));
        assert_eq!(
            classify_link("anon_inode:[vfio-device]"),
            Some(FdKind::VfioGroupDevice)
        );
        assert_eq!(classify_link("anon_inode:kvm-vcpu:0"), None);
        assert_eq!(classify_link("/dev/null"), None);
        assert_eq!(classify_link("socket:[1234]"), None);
    }

    #[test]
    fn a_fake_proc_and_sys_give_each_process_its_devices() {
        let root =
            std::env::temp_dir().join(format!("ioasid-top-procfiles-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (proc_root, sys_root) = (root.join("proc"), root.join("sys"));
        // vfio0 is 0000:00:0a.0; group 7 has 0000:01:00.0 and 0000:01:00.1.
        let cdev = sys_root.join("class/vfio-dev/vfio0");
        fs::create_dir_all(&cdev).unwrap();
        symlink(
            "../../../devices/pci0000:00/0000:00:0a.0",
            cdev.join("device"),
        )
        .unwrap();
        let group = sys_root.join("kernel/iommu_groups/7/devices");
        fs::create_dir_all(&group).unwrap();
        fs::create_dir_all(group.join("0000:01:00.0")).unwrap();
        fs::create_dir_all(group.join("0000:01:00.1")).unwrap();
        fs::create_dir_all(group.join("0000:00:1c.0")).unwrap();
        // The two functions are bound to vfio-pci; the root port of the group is not.
        let drivers = sys_root.join("bus/pci/drivers");
        fs::create_dir_all(drivers.join("vfio-pci")).unwrap();
        fs::create_dir_all(drivers.join("pcieport")).unwrap();
        for (bdf, drv) in [
            ("0000:01:00.0", "vfio-pci"),
            ("0000:01:00.1", "vfio-pci"),
            ("0000:00:1c.0", "pcieport"),
        ] {
            let d = sys_root.join("bus/pci/devices").join(bdf);
            fs::create_dir_all(&d).unwrap();
            symlink(drivers.join(drv), d.join("driver")).unwrap();
        }

        let proc_with = |pid: u32, comm: &str, links: &[&str]| {
            let fd = proc_root.join(pid.to_string()).join("fd");
            fs::create_dir_all(&fd).unwrap();
            fs::write(
                proc_root.join(pid.to_string()).join("comm"),
                format!("{comm}\n"),
            )
            .unwrap();
            for (i, l) in links.iter().enumerate() {
                symlink(l, fd.join(i.to_string())).unwrap();
            }
        };
        proc_with(
            10,
            "qemu",
            &[
                "/dev/null",
                "anon_inode:kvm-vm",
                "/dev/iommu",
                "/dev/vfio/devices/vfio0",
            ],
        );
        proc_with(
            11,
            "type1-vmm",
            &[
                "/dev/vfio/vfio",
                "/dev/vfio/7",
                "anon_inode:kvm-vm",
                "anon_inode:kvm-vfio",
            ],
        );
        proc_with(12, "sh", &["/dev/null", "pipe:[5]"]);

        let (got, unreadable) = scan(&proc_root, &sys_root, None).unwrap();
        assert_eq!(unreadable, 0);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [10, 11]);
        let qemu = &got[&10];
        assert_eq!(qemu.comm, "qemu");
        assert_eq!(qemu.devices, BTreeSet::from(["0000:00:0a.0".to_owned()]));
        assert_eq!(
            (qemu.kvm_vms, qemu.kvm_vfio_devices, qemu.iommufd_files),
            (1, 0, 1)
        );
        let type1 = &got[&11];
        assert_eq!(
            type1.devices,
            BTreeSet::from(["0000:01:00.0".to_owned(), "0000:01:00.1".to_owned()])
        );
        assert_eq!((type1.vfio_containers, type1.kvm_vfio_devices), (1, 1));
        assert_eq!(scan(&proc_root, &sys_root, Some(11)).unwrap().0.len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }
}
