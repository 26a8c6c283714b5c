//! The IOMMU behind a PCI device as sysfs shows it (a sysfs uAPI): which one, and for
//! intel-iommu its extended capabilities, of which snoop control decides whether the IOMMU can
//! keep a device's no-snoop DMA coherent with the CPU caches.

use std::{io, path::Path};

/// Snoop control (`ECAP.SC`, bit 7 of VT-d's extended capability register): the IOMMU can
/// force snooping, so intel-iommu reports `IOMMU_CAP_ENFORCE_CACHE_COHERENCY`
/// (drivers/iommu/intel/iommu.c, `intel_iommu_capable()`).
pub const ECAP_SC: u64 = 1 << 7;

/// Parses the sysfs `intel-iommu/ecap` file: hex digits, no prefix (`"f00f4a\n"`).
pub fn parse_ecap(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t);
    u64::from_str_radix(digits, 16).map_err(|e| format!("ecap {t:?} is not hex: {e}"))
}

/// The device's IOMMU as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIommu {
    /// `dmar0`, from the `<dev>/iommu` link
    pub name: String,
    /// VT-d extended capabilities; None for an IOMMU that is not intel-iommu
    pub ecap: Option<u64>,
}

impl DeviceIommu {
    /// Whether the IOMMU enforces cache coherency for the device; None when not known
    /// (not intel-iommu).
    pub fn snoop_control(&self) -> Option<bool> {
        self.ecap.map(|e| e & ECAP_SC != 0)
    }
}

/// `<sys_root>/bus/pci/devices/<bdf>/iommu` (a link to the IOMMU's class device) and, for
/// intel-iommu, its `intel-iommu/ecap`. `Ok(None)`: the device has no IOMMU.
pub fn device_iommu(sys_root: &Path, bdf: &str) -> io::Result<Option<DeviceIommu>> {
    let link = sys_root.join("bus/pci/devices").join(bdf).join("iommu");
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("readlink {}: {e}", link.display()),
            ));
        }
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} points to {}", link.display(), target.display()),
            )
        })?;
    let ecap_path = link.join("intel-iommu/ecap");
    let ecap = match std::fs::read_to_string(&ecap_path) {
        Ok(s) => Some(parse_ecap(&s).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", ecap_path.display()),
            )
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", ecap_path.display()),
            ));
        }
    };
    Ok(Some(DeviceIommu { name, ecap }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecap_snoop_control_bit() {
        // QEMU's intel-iommu with snoop-control=off and =on (as the guest's sysfs shows them).
        let off = DeviceIommu {
            name: "dmar0".into(),
            ecap: Some(parse_ecap("f00f4a\n").unwrap()),
        };
        let on = DeviceIommu {
            name: "dmar0".into(),
            ecap: Some(parse_ecap("0xf00fca").unwrap()),
        };
        assert_eq!(off.snoop_control(), Some(false));
        assert_eq!(on.snoop_control(), Some(true));
        let other = DeviceIommu {
            name: "virtio-iommu".into(),
            ecap: None,
        };
        assert_eq!(other.snoop_control(), None);
        assert!(parse_ecap("zz").is_err());
        assert!(parse_ecap("").is_err());
    }

    #[test]
    fn device_iommu_from_fake_sysfs() {
        let root = std::env::temp_dir().join(format!("uapi-iommu-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = root.join("bus/pci/devices/0000:00:0a.0");
        std::fs::create_dir_all(&dev).unwrap();
        assert_eq!(device_iommu(&root, "0000:00:0a.0").unwrap(), None);

        let dmar = root.join("devices/virtual/iommu/dmar0");
        std::fs::create_dir_all(dmar.join("intel-iommu")).unwrap();
        std::fs::write(dmar.join("intel-iommu/ecap"), "f00fca\n").unwrap();
        std::os::unix::fs::symlink(&dmar, dev.join("iommu")).unwrap();
        let got = device_iommu(&root, "0000:00:0a.0").unwrap().unwrap();
        assert_eq!(got.name, "dmar0");
        assert_eq!(got.ecap, Some(0xf00fca));
        assert_eq!(got.snoop_control(), Some(true));

        std::fs::write(dmar.join("intel-iommu/ecap"), "nothex\n").unwrap();
        assert!(device_iommu(&root, "0000:00:0a.0").is_err());
        std::fs::remove_dir_all(dmar.join("intel-iommu")).unwrap();
        assert_eq!(
            device_iommu(&root, "0000:00:0a.0").unwrap().unwrap().ecap,
            None
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
