//! `bind-vfio-pci BDF`: binds the PCI device to vfio-pci (`ioasid_vmtests::sysfs::bind_vfio_pci`,
//! as the workloads do before they open it), for scenario scripts that need it bound but not
//! opened.

use anyhow::Result;
use ioasid_vmtests::sysfs::bind_vfio_pci;
use std::{path::Path, time::Duration};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bdf] = args.as_slice() else {
        anyhow::bail!("usage: bind-vfio-pci BDF");
    };
    bind_vfio_pci(Path::new("/sys"), bdf, Duration::from_secs(3))?;
    println!("{bdf} bound to vfio-pci");
    Ok(())
}
