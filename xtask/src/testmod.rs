//! The test-only kernel module the guest loads: ci/kmod/iommu_misuse.c, which calls the IOMMU
//! API the way a buggy kernel user would (ci/vm/audit-misuse.sh). Built as an external module
//! against the kernel the VM boots, in target/kmod/ so that the repository stays clean; the
//! guest sees the repository and loads target/kmod/iommu_misuse.ko.

use crate::util::{Paths, kernel_make, run, step};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

const SOURCES: [&str; 2] = ["Kbuild", "iommu_misuse.c"];

/// Builds `target/kmod/iommu_misuse.ko` and returns its path.
pub fn build(paths: &Paths) -> Result<PathBuf> {
    let src = paths.repo.join("ci/kmod");
    let out = paths.repo.join("target/kmod");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in SOURCES {
        let (from, to) = (src.join(f), out.join(f));
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    if !paths.build().join("Module.symvers").exists() {
        bail!(
            "{} has no Module.symvers: build the kernel first (cargo xtask kernel)",
            paths.build().display()
        );
    }
    step(format!(
        "building the test module ci/kmod into {}",
        out.display()
    ));
    run(kernel_make(paths, &paths.worktree(), &paths.build())
        .arg(format!("M={}", out.display()))
        .arg("modules"))?;
    let ko = out.join("iommu_misuse.ko");
    if !ko.exists() {
        bail!("{} is missing after the module build", ko.display());
    }
    Ok(ko)
}
