//! PCI sysfs helpers. Every function takes the sysfs root (normally `/sys`)
//! so that the logic can be unit-tested against a temporary directory tree.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// `<root>/bus/pci/devices`
pub fn pci_devices_dir(root: &Path) -> PathBuf {
    root.join("bus/pci/devices")
}

/// `<root>/bus/pci/devices/<bdf>`
pub fn pci_device_dir(root: &Path, bdf: &str) -> PathBuf {
    pci_devices_dir(root).join(bdf)
}

/// Parse a sysfs hex id such as `"0x1234\n"`.
pub fn parse_hex_id(s: &str) -> Result<u16> {
    let t = s.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .with_context(|| format!("sysfs id {t:?} lacks a 0x prefix"))?;
    u16::from_str_radix(digits, 16)
        .with_context(|| format!("sysfs id {t:?} is not a 16-bit hex number"))
}

/// Check a PCI address looks like `dddd:bb:dd.f` (guards the string we write
/// into sysfs files and hand to `VFIO_GROUP_GET_DEVICE_FD`).
pub fn validate_bdf(bdf: &str) -> Result<()> {
    let b = bdf.as_bytes();
    let ok = b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit());
    if !ok {
        bail!("{bdf:?} is not a PCI address of the form dddd:bb:dd.f");
    }
    Ok(())
}

fn read_id(dev: &Path, attr: &str) -> Result<u16> {
    let p = dev.join(attr);
    let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    parse_hex_id(&s).with_context(|| format!("parsing {}", p.display()))
}

/// All PCI devices under `root` with the given vendor/device id, sorted by address.
pub fn find_pci_devices(root: &Path, vendor: u16, device: u16) -> Result<Vec<String>> {
    let dir = pci_devices_dir(root);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // Unreadable or malformed ids just mean "not our device".
        let (Ok(v), Ok(d)) = (read_id(&path, "vendor"), read_id(&path, "device")) else {
            continue;
        };
        if v == vendor && d == device {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn link_basename(p: &Path) -> Result<Option<String>> {
    match fs::read_link(p) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("readlink {}", p.display())),
    }
}

/// Name of the driver currently bound to `bdf`, if any.
pub fn current_driver(root: &Path, bdf: &str) -> Result<Option<String>> {
    link_basename(&pci_device_dir(root, bdf).join("driver"))
}

/// IOMMU group number of `bdf` (from the `iommu_group` link).
pub fn iommu_group(root: &Path, bdf: &str) -> Result<u32> {
    let link = pci_device_dir(root, bdf).join("iommu_group");
    let name = link_basename(&link)?.with_context(|| {
        format!(
            "{} missing: is the IOMMU enabled (intel_iommu=on)?",
            link.display()
        )
    })?;
    name.parse()
        .with_context(|| format!("iommu group name {name:?} of {bdf} is not a number"))
}

/// The device's VFIO cdev name (`"vfio0"`) from `<dev>/vfio-dev/`, if any.
pub fn vfio_cdev_name(root: &Path, bdf: &str) -> Result<Option<String>> {
    let dir = pci_device_dir(root, bdf).join("vfio-dev");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix("vfio")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().next())
}

fn write_attr(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Bind `bdf` to vfio-pci: `driver_override`, unbind from the current
/// driver, `drivers_probe`, then wait up to `timeout` for the `driver` link
/// to name vfio-pci. A no-op when already bound.
pub fn bind_vfio_pci(root: &Path, bdf: &str, timeout: Duration) -> Result<()> {
    validate_bdf(bdf)?;
    let dev = pci_device_dir(root, bdf);
    let current = current_driver(root, bdf)?;
    if current.as_deref() == Some(VFIO_PCI_DRIVER) {
        return Ok(());
    }
    write_attr(&dev.join("driver_override"), VFIO_PCI_DRIVER)?;
    if current.is_some() {
        write_attr(&dev.join("driver/unbind"), bdf)?;
    }
    write_attr(&root.join("bus/pci/drivers_probe"), bdf)?;
    let start = Instant::now();
    loop {
        let now = current_driver(root, bdf)?;
        if now.as_deref() == Some(VFIO_PCI_DRIVER) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let drv_dir = root.join("bus/pci/drivers").join(VFIO_PCI_DRIVER);
            bail!(
                "{bdf} not bound to {VFIO_PCI_DRIVER} after {timeout:?} (driver now: {}; {} {})",
                now.as_deref().unwrap_or("none"),
                drv_dir.display(),
                if drv_dir.exists() {
                    "exists"
                } else {
                    "does not exist: is CONFIG_VFIO_PCI enabled/loaded?"
                }
            );
        }
        sleep(Duration::from_millis(20));
    }
}

/// Wait until `path` exists (device nodes appear asynchronously via devtmpfs/udev).
pub fn wait_for_path(path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() >= timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Self-removing temporary directory (no external crates).
    pub struct TestDir(PathBuf);

    impl TestDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ioasid-vmtests-{}-{}-{tag}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create test dir");
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::TestDir;
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds `<root>/bus/pci/devices/<bdf>` with vendor/device files, like
    /// sysfs (where the entries are symlinks into /sys/devices; plain
    /// directories are equivalent for our reads).
    fn add_dev(root: &Path, bdf: &str, vendor: &str, device: &str) -> PathBuf {
        let d = pci_device_dir(root, bdf);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("vendor"), vendor).unwrap();
        fs::write(d.join("device"), device).unwrap();
        d
    }

    #[test]
    fn hex_ids() {
        assert_eq!(parse_hex_id("0x1234\n").unwrap(), 0x1234);
        assert_eq!(parse_hex_id("0x11e8").unwrap(), 0x11e8);
        assert!(parse_hex_id("1234").is_err());
        assert!(parse_hex_id("0xzz").is_err());
        assert!(parse_hex_id("0x123456").is_err());
    }

    #[test]
    fn bdf_validation() {
        validate_bdf("0000:00:04.0").unwrap();
        validate_bdf("0000:af:1f.7").unwrap();
        assert!(validate_bdf("00:04.0").is_err());
        assert!(validate_bdf("0000:00:04.0\n").is_err());
        assert!(validate_bdf("0000/00:04.0").is_err());
        assert!(validate_bdf("../../../x/y").is_err());
    }

    #[test]
    fn finds_edu_among_others() {
        let t = TestDir::new("find");
        let root = t.path();
        add_dev(root, "0000:00:01.0", "0x8086\n", "0x29c0\n");
        add_dev(root, "0000:00:05.0", "0x1234\n", "0x11e8\n");
        add_dev(root, "0000:00:04.0", "0x1234\n", "0x11e8\n");
        add_dev(root, "0000:00:06.0", "0x1234\n", "0x1111\n");
        let broken = pci_device_dir(root, "0000:00:07.0");
        fs::create_dir_all(&broken).unwrap(); // no id files: skipped
        let found = find_pci_devices(root, 0x1234, 0x11e8).unwrap();
        assert_eq!(found, vec!["0000:00:04.0", "0000:00:05.0"]);
        assert!(find_pci_devices(root, 0x1af4, 0x1000).unwrap().is_empty());
    }

    #[test]
    fn missing_sysfs_is_an_error() {
        let t = TestDir::new("nosys");
        let err = find_pci_devices(t.path(), 1, 2).unwrap_err();
        assert!(format!("{err:#}").contains("bus/pci/devices"), "{err:#}");
    }

    #[test]
    fn links_group_driver_and_cdev() {
        let t = TestDir::new("links");
        let root = t.path();
        let d = add_dev(root, "0000:00:04.0", "0x1234", "0x11e8");
        assert_eq!(current_driver(root, "0000:00:04.0").unwrap(), None);
        assert!(iommu_group(root, "0000:00:04.0").is_err());
        assert_eq!(vfio_cdev_name(root, "0000:00:04.0").unwrap(), None);

        symlink("../../../../kernel/iommu_groups/7", d.join("iommu_group")).unwrap();
        symlink("../../../../bus/pci/drivers/vfio-pci", d.join("driver")).unwrap();
        fs::create_dir_all(d.join("vfio-dev/vfio3")).unwrap();
        fs::create_dir_all(d.join("vfio-dev/power")).unwrap();
        assert_eq!(iommu_group(root, "0000:00:04.0").unwrap(), 7);
        assert_eq!(
            current_driver(root, "0000:00:04.0").unwrap().as_deref(),
            Some("vfio-pci")
        );
        assert_eq!(
            vfio_cdev_name(root, "0000:00:04.0").unwrap().as_deref(),
            Some("vfio3")
        );
    }

    #[test]
    fn bad_group_name() {
        let t = TestDir::new("badgroup");
        let root = t.path();
        let d = add_dev(root, "0000:00:04.0", "0x1234", "0x11e8");
        symlink("../x/notanumber", d.join("iommu_group")).unwrap();
        assert!(iommu_group(root, "0000:00:04.0").is_err());
    }

    #[test]
    fn bind_noop_when_already_vfio() {
        let t = TestDir::new("bound");
        let root = t.path();
        let d = add_dev(root, "0000:00:04.0", "0x1234", "0x11e8");
        symlink("../drivers/vfio-pci", d.join("driver")).unwrap();
        bind_vfio_pci(root, "0000:00:04.0", Duration::from_millis(10)).unwrap();
        assert!(!d.join("driver_override").exists());
    }

    #[test]
    fn bind_writes_override_unbind_probe_then_times_out_in_a_fake_tree() {
        let t = TestDir::new("bind");
        let root = t.path();
        let d = add_dev(root, "0000:00:04.0", "0x1234", "0x11e8");
        let drv = root.join("bus/pci/drivers/edu");
        fs::create_dir_all(&drv).unwrap();
        fs::write(drv.join("unbind"), "").unwrap();
        symlink(&drv, d.join("driver")).unwrap();
        let err = bind_vfio_pci(root, "0000:00:04.0", Duration::from_millis(50)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("not bound to vfio-pci"), "{msg}");
        assert!(msg.contains("driver now: edu"), "{msg}");
        assert_eq!(
            fs::read_to_string(d.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            fs::read_to_string(drv.join("unbind")).unwrap(),
            "0000:00:04.0"
        );
        assert_eq!(
            fs::read_to_string(root.join("bus/pci/drivers_probe")).unwrap(),
            "0000:00:04.0"
        );
    }

    #[test]
    fn bind_rejects_weird_bdf() {
        let t = TestDir::new("weird");
        assert!(bind_vfio_pci(t.path(), "../../evil", Duration::from_millis(1)).is_err());
    }

    #[test]
    fn wait_for_path_times_out() {
        let t = TestDir::new("wait");
        wait_for_path(t.path(), Duration::from_millis(1)).unwrap();
        assert!(wait_for_path(&t.path().join("nope"), Duration::from_millis(30)).is_err());
    }
}
