//! The kselftests the guest runs: tools/testing/selftests/ioasid, compiled on the host with gcc
//! against the uAPI headers of the built kernel (`make headers` in the build directory), into
//! target/selftests/. The guest sees the repository, so scenarios run `target/selftests/ioasid`.

use crate::util::{Paths, kernel_make, run, step};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The selftest sources, relative to the kernel tree (and to kernel-rust/).
const SELFTEST_DIR: &str = "tools/testing/selftests/ioasid";

/// uAPI headers the selftest includes: `make headers` must have exported them, and again
/// whenever the tree's copy is newer (the series changed them).
const HEADERS: [&str; 2] = ["linux/iommufd.h", "linux/ioasid.h"];

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// True when `<build>/usr/include` lacks one of [`HEADERS`] or holds an older copy than the tree.
fn headers_stale(tree: &Path, include: &Path) -> bool {
    HEADERS.iter().any(|h| {
        let exported = modified(&include.join(h));
        let source = modified(&tree.join("include/uapi").join(h));
        match (exported, source) {
            (None, _) => true,
            (Some(e), Some(s)) => s > e,
            (Some(_), None) => false,
        }
    })
}

/// Builds `target/selftests/ioasid` and returns its path.
pub fn build(paths: &Paths) -> Result<PathBuf> {
    let tree = paths.worktree();
    let include = paths.build().join("usr/include");
    if headers_stale(&tree, &include) {
        step("exporting the kernel's uAPI headers (make headers)");
        run(kernel_make(paths, &tree, &paths.build()).arg("headers"))?;
    }
    for h in HEADERS {
        if !include.join(h).exists() {
            bail!(
                "{} is missing after `make headers` (is the series applied to {}?)",
                include.join(h).display(),
                tree.display()
            );
        }
    }
    // The source as the series ships it: patches/ is checked against kernel-rust/.
    let src = paths
        .repo
        .join("kernel-rust")
        .join(SELFTEST_DIR)
        .join("ioasid.c");
    let harness = tree.join("tools/testing/selftests");
    if !harness.join("kselftest_harness.h").exists() {
        bail!("no kselftest_harness.h under {}", harness.display());
    }
    let out_dir = paths.repo.join("target/selftests");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let out = out_dir.join("ioasid");
    step(format!(
        "building the ioasid kselftest into {}",
        out.display()
    ));
    // The flags of tools/testing/selftests/lib.mk and the selftest's Makefile.
    run(Command::new("gcc")
        .args(["-Wall", "-Werror", "-O2", "-D_GNU_SOURCE="])
        .arg("-isystem")
        .arg(&include)
        .arg("-I")
        .arg(&harness)
        .arg("-o")
        .arg(&out)
        .arg(&src))?;
    Ok(out)
}
