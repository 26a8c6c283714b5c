//! What PCI config space says about a device's DMA: whether it can issue requests with the
//! No Snoop attribute, which a platform may serve without snooping the CPU caches (and for
//! which KVM gives a guest a working `WBINVD`). The same rule as the kernel series'
//! `pci::Device::no_snoop_capable()`: PCI Express if DevCtl Enable No Snoop is set, PCI-X
//! always, conventional PCI never.

/// Can a PCI device issue no-snoop transactions, from its config space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSnoop {
    /// No PCI Express capability: conventional PCI has no no-snoop attribute.
    ConventionalPci,
    /// PCI Express with DevCtl "Enable No Snoop" (bit 11) clear.
    Disabled,
    /// PCI Express with "Enable No Snoop" set.
    Enabled,
    /// PCI-X: its requests may carry the No Snoop attribute, which has no enable bit.
    PciX,
    /// The config space could not be read or walked (reason).
    Unknown(String),
}

impl NoSnoop {
    /// The device cannot issue no-snoop.
    pub fn cannot(&self) -> bool {
        matches!(self, NoSnoop::ConventionalPci | NoSnoop::Disabled)
    }

    /// What was found, for a report.
    pub fn describe(&self) -> String {
        match self {
            NoSnoop::ConventionalPci => "conventional PCI (no PCI Express capability)".into(),
            NoSnoop::Disabled => "PCI Express, DevCtl Enable No Snoop clear".into(),
            NoSnoop::Enabled => "PCI Express, DevCtl Enable No Snoop set".into(),
            NoSnoop::PciX => "PCI-X (No Snoop has no enable bit)".into(),
            NoSnoop::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

const PCI_STATUS: usize = 0x06;
const PCI_STATUS_CAP_LIST: u16 = 0x10;
const PCI_CAPABILITY_LIST: usize = 0x34;
const PCI_CAP_ID_PCIX: u8 = 0x07;
const PCI_CAP_ID_EXP: u8 = 0x10;
const PCI_EXP_DEVCTL: usize = 0x08;
const PCI_EXP_DEVCTL_NOSNOOP_EN: u16 = 1 << 11;

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// What the capability list of a config space holds, as far as no-snoop goes.
struct Caps {
    /// Offset of the PCI Express capability.
    pcie: Option<usize>,
    pcix: bool,
}

/// Walks the capability list of `cfg`; Err(why) when it cannot be walked. Ok(None): no list.
fn walk_capabilities(cfg: &[u8]) -> Result<Option<Caps>, String> {
    if cfg.len() < 64 {
        return Err(format!("config space is {} bytes", cfg.len()));
    }
    let status = le16(cfg, PCI_STATUS).ok_or("no status register")?;
    if status & PCI_STATUS_CAP_LIST == 0 {
        return Ok(None);
    }
    let mut ptr = usize::from(cfg[PCI_CAPABILITY_LIST] & 0xfc);
    let mut caps = Caps {
        pcie: None,
        pcix: false,
    };
    // At most 48 capabilities fit in 256 bytes: a longer walk is a loop.
    for _ in 0..48 {
        if ptr == 0 {
            return Ok(Some(caps));
        }
        if ptr < 0x40 {
            return Err(format!("capability pointer {ptr:#x} in the header"));
        }
        let (Some(&id), Some(&next)) = (cfg.get(ptr), cfg.get(ptr + 1)) else {
            return Err(format!(
                "capability at {ptr:#x} beyond the {} bytes readable (not root?)",
                cfg.len()
            ));
        };
        if id == PCI_CAP_ID_EXP {
            caps.pcie = Some(ptr);
            return Ok(Some(caps));
        }
        caps.pcix |= id == PCI_CAP_ID_PCIX;
        ptr = usize::from(next & 0xfc);
    }
    Err("capability list loops".into())
}

/// Reads the no-snoop ability from a device's config space (the bytes of sysfs `config`).
pub fn parse_pci_config(cfg: &[u8]) -> NoSnoop {
    match walk_capabilities(cfg) {
        Err(why) => NoSnoop::Unknown(why),
        Ok(None) => NoSnoop::ConventionalPci,
        Ok(Some(Caps {
            pcie: Some(ptr), ..
        })) => match le16(cfg, ptr + PCI_EXP_DEVCTL) {
            Some(devctl) if devctl & PCI_EXP_DEVCTL_NOSNOOP_EN != 0 => NoSnoop::Enabled,
            Some(_) => NoSnoop::Disabled,
            None => NoSnoop::Unknown("PCI Express DevCtl beyond the readable bytes".into()),
        },
        Ok(Some(Caps { pcix: true, .. })) => NoSnoop::PciX,
        Ok(Some(_)) => NoSnoop::ConventionalPci,
    }
}

/// The offset of the PCI Express Device Control register in `cfg`; None for a function
/// that is not PCI Express or whose capability list cannot be walked.
pub fn pcie_devctl_offset(cfg: &[u8]) -> Option<usize> {
    walk_capabilities(cfg)
        .ok()
        .flatten()
        .and_then(|c| c.pcie)
        .map(|ptr| ptr + PCI_EXP_DEVCTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config space of QEMU's edu device: no capability list.
    fn edu_config() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&[0x34, 0x12, 0xe8, 0x11]);
        c
    }

    /// A PCIe device: a PM capability at 0x40, then PCI Express at 0x50.
    fn pcie_config(nosnoop: bool, len: usize) -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[PCI_STATUS] = 0x10;
        c[PCI_CAPABILITY_LIST] = 0x40;
        c[0x40] = 0x01;
        c[0x41] = 0x50;
        c[0x50] = PCI_CAP_ID_EXP;
        c[0x51] = 0;
        let devctl: u16 = 0x2810
            & !(if nosnoop {
                0
            } else {
                PCI_EXP_DEVCTL_NOSNOOP_EN
            });
        c[0x58..0x5a].copy_from_slice(&devctl.to_le_bytes());
        c.truncate(len);
        c
    }

    #[test]
    fn the_devctl_register_is_found_in_pcie_functions_only() {
        // pcie_config puts PCI Express at 0x50: DevCtl at 0x58.
        assert_eq!(pcie_devctl_offset(&pcie_config(false, 256)), Some(0x58));
        assert_eq!(pcie_devctl_offset(&edu_config()), None);
        assert_eq!(pcie_devctl_offset(&[0u8; 16]), None);
    }

    #[test]
    fn pci_config_parsing() {
        assert_eq!(parse_pci_config(&edu_config()), NoSnoop::ConventionalPci);
        assert_eq!(parse_pci_config(&pcie_config(true, 256)), NoSnoop::Enabled);
        assert_eq!(
            parse_pci_config(&pcie_config(false, 256)),
            NoSnoop::Disabled
        );
        // Unprivileged readers get 64 bytes: the capabilities are out of reach.
        assert!(matches!(
            parse_pci_config(&pcie_config(true, 64)),
            NoSnoop::Unknown(_)
        ));
        assert!(matches!(parse_pci_config(&[0; 10]), NoSnoop::Unknown(_)));
        // A capability list that loops.
        let mut c = pcie_config(true, 256);
        c[0x50] = 0x05;
        c[0x51] = 0x40;
        assert!(matches!(parse_pci_config(&c), NoSnoop::Unknown(_)));
        // PCI-X: a PCI-X capability and no PCI Express one.
        let mut c = pcie_config(true, 256);
        c[0x50] = PCI_CAP_ID_PCIX;
        assert_eq!(parse_pci_config(&c), NoSnoop::PciX);
        assert!(!NoSnoop::PciX.cannot());
        assert!(NoSnoop::ConventionalPci.cannot() && NoSnoop::Disabled.cannot());
        assert!(!NoSnoop::Enabled.cannot() && !NoSnoop::Unknown(String::new()).cannot());
    }
}
