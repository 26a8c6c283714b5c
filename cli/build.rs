//! Builds the eBPF object (ebpf/ioasid-ebpf) with aya-build and leaves it in
//! OUT_DIR/ioasid-ebpf, where src/loader.rs includes it.
//!
//! - The eBPF crate is excluded from the workspace (it targets
//!   bpfel-unknown-none), so the nested `cargo build --package ioasid-ebpf`
//!   that aya-build runs must start in its own directory.
//! - It is built with a stable toolchain (default `1.95.0`, override with
//!   IOASID_EBPF_TOOLCHAIN) plus `-Z build-std=core`, which needs
//!   RUSTC_BOOTSTRAP=1. That variable is set here, in this build script's own
//!   environment only, so it reaches the nested build and nothing else.
//! - AYA_BUILD_SKIP=1 skips the eBPF build (e.g. on a machine without
//!   bpf-linker); the binary then embeds an empty object and says so at run
//!   time.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "ioasid-ebpf";
const TOOLCHAIN_ENV: &str = "IOASID_EBPF_TOOLCHAIN";
const DEFAULT_TOOLCHAIN: &str = "1.95.0";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let ebpf_dir = manifest_dir.join("..").join("ebpf").join(EBPF_PACKAGE);
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("eBPF crate not found at {}", ebpf_dir.display()))?;
    let common_dir = manifest_dir
        .join("..")
        .join("ebpf")
        .join("ioasid-ebpf-common");

    println!("cargo:rerun-if-env-changed={TOOLCHAIN_ENV}");
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    // aya-build watches the eBPF crate; the shared records live next to it.
    println!("cargo:rerun-if-changed={}", common_dir.display());

    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_owned());

    if env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single threaded at this point; the value
        // is only inherited by the nested eBPF cargo build.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    // aya-build relays the nested cargo's stderr as build warnings; keep
    // that to real diagnostics.
    if env::var_os("CARGO_TERM_QUIET").is_none() {
        // SAFETY: as above.
        unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    }
    // The nested `cargo build --package ioasid-ebpf` resolves the package
    // from the current directory: use the eBPF crate's own workspace.
    env::set_current_dir(&ebpf_dir)
        .with_context(|| format!("cannot enter {}", ebpf_dir.display()))?;

    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .with_context(|| format!("building the eBPF object with toolchain {toolchain}"))?;

    // With AYA_BUILD_SKIP aya-build returns without an object: provide an
    // empty one so the crate still compiles (the loader refuses it).
    let object = out_dir.join(EBPF_PACKAGE);
    if !object.exists() {
        fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
