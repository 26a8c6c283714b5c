//! `cargo xtask setup`: everything a fresh Debian bookworm machine of this kind lacks.
//!
//! Each step first checks whether its result is already there and says so; only missing pieces
//! are installed, so a second run does nothing. What was measured to work is in
//! `docs/toolchain.md`.

use crate::util::{Paths, capture, have, note, run, sha256_file, step};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// The kernel the series is written against (Debian's upstream tarball of it).
pub const KERNEL_VERSION: &str = "7.3.4";
/// Debian source version whose `.orig.tar.xz` is upstream Linux 7.3.4.
const KERNEL_DEBIAN_VERSION: &str = "7.3.4-1~bpo13+1";
/// SHA-256 of `linux_7.3.4.orig.tar.xz`, from Debian's signed Sources index.
const KERNEL_ORIG_SHA256: &str = "9894ebada187044287613061502d9131dfd600ea4cd03f7028541d7cf44000df";
/// SHA-256 of `linux-source-7.3_7.3.4-1~bpo13+1_all.deb`, from Debian's signed Packages index.
const KERNEL_SOURCE_DEB_SHA256: &str =
    "703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3";

const BPF_LINKER_VERSION: &str = "0.13.0";
const BINDGEN_VERSION: &str = "0.73.2";
const VIRTME_NG_VERSION: &str = "1.42";

const APT_SOURCES: &str = "/etc/apt/sources.list.d/ioasid.sources";
const APT_PIN: &str = "/etc/apt/preferences.d/ioasid-trixie-backports";

/// Packages from the default bookworm suites (bookworm-security carries LLVM 22).
const PACKAGES: &[&str] = &[
    "busybox-static",
    "clang-22",
    "lld-22",
    "llvm-22",
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "ccache",
    "dwarves",
    "rsync",
    "bc",
    "python3-venv",
    // checkpatch.pl's SPDX check (spdxcheck.py) needs ply and git.
    "python3-ply",
    "python3-git",
    "xz-utils",
    "zstd",
    // `cargo xtask bench --overhead` compares ioasid-top with a bpftrace program; the guest
    // runs the host's binaries (virtme-ng shares the root filesystem).
    "bpftrace",
];

/// A setup step: returns whether it changed the machine.
type Step = fn(&Paths) -> Result<bool>;

pub fn setup(paths: &Paths) -> Result<()> {
    let steps: &[(&str, Step)] = &[
        (
            "apt sources (bookworm-backports, trixie-backports pinned low)",
            apt_sources,
        ),
        ("Debian packages", apt_packages),
        ("qemu-system-x86 >= 10 from bookworm-backports", qemu),
        ("rust-src matching the active rustc", rust_src),
        ("bpf-linker", bpf_linker),
        ("bindgen-cli", bindgen),
        ("virtme-ng (venv)", virtme_ng),
        ("Linux kernel source", kernel_source),
    ];
    let mut changed = 0;
    for (i, (name, f)) in steps.iter().enumerate() {
        step(format!("[{}/{}] {name}", i + 1, steps.len()));
        if f(paths).with_context(|| format!("setup step `{name}` failed"))? {
            changed += 1;
        } else {
            note("already in place");
        }
    }
    if changed == 0 {
        step("setup: nothing to do, everything was already in place");
    } else {
        step(format!(
            "setup: done ({changed} step(s) changed the machine)"
        ));
    }
    Ok(())
}

fn apt_update() -> Result<()> {
    run(Command::new("apt-get").args(["update", "-q"]))
}

fn apt_install(args: &[&str]) -> Result<()> {
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(args))
}

fn apt_sources(_: &Paths) -> Result<bool> {
    if Path::new(APT_SOURCES).exists() && Path::new(APT_PIN).exists() {
        return Ok(false);
    }
    // trixie-backports only for single arch-all packages (rust-src) and kernel sources; the
    // low pin keeps apt from ever upgrading libc or systemd from it.
    std::fs::write(
        APT_SOURCES,
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie-backports\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    .with_context(|| format!("cannot write {APT_SOURCES} (run as root)"))?;
    std::fs::write(
        APT_PIN,
        "Package: *\nPin: release n=trixie-backports\nPin-Priority: 50\n",
    )
    .with_context(|| format!("cannot write {APT_PIN} (run as root)"))?;
    apt_update()?;
    Ok(true)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages(_: &Paths) -> Result<bool> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(false);
    }
    note(format!("installing {}", missing.join(" ")));
    if apt_install(&missing).is_err() {
        apt_update()?;
        apt_install(&missing)?;
    }
    Ok(true)
}

fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

fn qemu(_: &Paths) -> Result<bool> {
    if qemu_major().is_some_and(|m| m >= 10) {
        return Ok(false);
    }
    // bookworm's qemu 7.2 lacks intel-iommu's snoop-control property.
    apt_install(&["-t", "bookworm-backports", "qemu-system-x86"])?;
    match qemu_major() {
        Some(m) if m >= 10 => Ok(true),
        other => bail!("qemu-system-x86_64 is {other:?} after install; need >= 10"),
    }
}

fn rustc_version() -> Result<String> {
    let v = capture(Command::new("rustc").arg("--version"))?;
    v.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .context("cannot parse `rustc --version`")
}

fn rust_src(_: &Paths) -> Result<bool> {
    let sysroot = capture(Command::new("rustc").args(["--print", "sysroot"]))?;
    let library = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library");
    if library.join("core/src/lib.rs").exists() {
        return Ok(false);
    }
    if Command::new("rustup")
        .args(["component", "add", "rust-src"])
        .status()
        .is_ok_and(|s| s.success())
        && library.join("core/src/lib.rs").exists()
    {
        return Ok(true);
    }
    // rustup cannot download here: take Debian's rust-src of exactly the same version (the
    // sources must match the compiler, or core fails with `unknown lang item`).
    let version = rustc_version()?;
    note(format!(
        "rustup could not add rust-src; using Debian's rust-src {version}"
    ));
    let madison = capture(Command::new("apt-cache").args(["madison", "rust-src"]))?;
    let deb_version = madison
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .find(|v| v.starts_with(&format!("{version}+")))
        .with_context(|| format!("Debian has no rust-src {version}; versions: {madison}"))?
        .to_owned();
    let tmp = std::env::temp_dir().join("ioasid-rust-src");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("apt-get")
        .current_dir(&tmp)
        .args(["download", &format!("rust-src={deb_version}")]))?;
    let deb = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(tmp.join("x")))?;
    let src = tmp.join(format!("x/usr/src/rustc-{version}/library"));
    std::fs::create_dir_all(library.parent().context("sysroot path has no parent")?)?;
    run(Command::new("cp").arg("-a").arg(&src).arg(&library))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(true)
}

fn cargo_installed(paths: &Paths, bin: &str, version: &str) -> bool {
    Command::new(paths.cargo_bin().join(bin))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(version))
        .unwrap_or(false)
}

fn bpf_linker(paths: &Paths) -> Result<bool> {
    if cargo_installed(paths, "bpf-linker", BPF_LINKER_VERSION) {
        return Ok(false);
    }
    note("building bpf-linker against LLVM 22 (about 4 minutes on 2 cores)");
    run(Command::new("cargo")
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"]))?;
    Ok(true)
}

fn bindgen(paths: &Paths) -> Result<bool> {
    if cargo_installed(paths, "bindgen", BINDGEN_VERSION) {
        return Ok(false);
    }
    note("building bindgen-cli (about 5 minutes on 2 cores)");
    run(Command::new("cargo").args([
        "install",
        "--locked",
        "bindgen-cli",
        "--version",
        BINDGEN_VERSION,
    ]))?;
    Ok(true)
}

fn virtme_ng(paths: &Paths) -> Result<bool> {
    let vng = paths.vng();
    if have(&vng) {
        return Ok(false);
    }
    std::fs::create_dir_all(&paths.cache)?;
    run(Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(paths.venv()))?;
    run(Command::new(paths.venv().join("bin/pip")).args([
        "install",
        "-q",
        &format!("virtme-ng=={VIRTME_NG_VERSION}"),
    ]))?;
    Ok(true)
}

/// Fetches the kernel source into the cache and makes it a git repository tagged `base`.
///
/// Debian's `linux_7.3.4.orig.tar.xz` is upstream 7.3.4 and is preferred. When the registry
/// does not serve it (seen here: the pool answers 404 for kernel source files while binary
/// packages work), `linux-source-7.3` is used instead: the same release plus Debian's patches.
/// Which one was used is recorded in the base commit's message and printed by `xtask kernel`.
fn kernel_source(paths: &Paths) -> Result<bool> {
    let pristine = paths.pristine();
    if pristine.join(".git").exists()
        && Command::new("git")
            .arg("-C")
            .arg(&pristine)
            .args(["rev-parse", "-q", "--verify", "base"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(false);
    }
    let downloads = paths.cache.join("downloads");
    std::fs::create_dir_all(&downloads)?;
    let _ = std::fs::remove_dir_all(&pristine);
    std::fs::create_dir_all(paths.kernel_dir())?;

    let orig = downloads.join(format!("linux_{KERNEL_VERSION}.orig.tar.xz"));
    let (tarball, origin) = if fetch_orig(&downloads, &orig).is_ok() {
        (
            orig,
            format!("upstream Linux {KERNEL_VERSION} (Debian linux_{KERNEL_VERSION}.orig.tar.xz)"),
        )
    } else {
        note("the orig tarball is not served here; falling back to Debian's linux-source-7.3");
        let deb = downloads.join(format!("linux-source-7.3_{KERNEL_DEBIAN_VERSION}_all.deb"));
        if !deb.exists() || sha256_file(&deb)? != KERNEL_SOURCE_DEB_SHA256 {
            run(Command::new("apt-get").current_dir(&downloads).args([
                "download",
                &format!("linux-source-7.3={KERNEL_DEBIAN_VERSION}"),
            ]))?;
        }
        let sum = sha256_file(&deb)?;
        if sum != KERNEL_SOURCE_DEB_SHA256 {
            bail!(
                "{} has SHA-256 {sum}, expected {KERNEL_SOURCE_DEB_SHA256}",
                deb.display()
            );
        }
        note(format!("checksum ok: {sum}"));
        let x = downloads.join("linux-source-deb");
        let _ = std::fs::remove_dir_all(&x);
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&x))?;
        (
            x.join("usr/src/linux-source-7.3.tar.xz"),
            format!(
                "Debian linux-source-7.3 {KERNEL_DEBIAN_VERSION} (Linux {KERNEL_VERSION} + Debian patches)"
            ),
        )
    };

    note(format!("unpacking {}", tarball.display()));
    let unpack = paths.kernel_dir().join("unpack");
    let _ = std::fs::remove_dir_all(&unpack);
    std::fs::create_dir_all(&unpack)?;
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpack))?;
    let top = std::fs::read_dir(&unpack)?
        .filter_map(|e| e.ok())
        .find(|e| e.path().is_dir())
        .context("the kernel tarball has no top-level directory")?;
    std::fs::rename(top.path(), &pristine)?;
    let _ = std::fs::remove_dir_all(&unpack);
    drop_debian_gitignore(&pristine)?;

    note("recording the tree in git (tag `base`)");
    let git = |args: &[&str]| -> Result<()> {
        run(Command::new("git")
            .arg("-C")
            .arg(&pristine)
            .args([
                "-c",
                "user.name=ioasid xtask",
                "-c",
                "user.email=xtask@ioasid.invalid",
            ])
            .args(args))
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&[
        "commit",
        "-q",
        "-m",
        &format!("Linux {KERNEL_VERSION}\n\nSource: {origin}"),
    ])?;
    git(&["tag", "base"])?;
    Ok(true)
}

fn fetch_orig(downloads: &Path, orig: &Path) -> Result<()> {
    if !orig.exists() {
        run(Command::new("apt-get").current_dir(downloads).args([
            "source",
            "--download-only",
            &format!("linux={KERNEL_DEBIAN_VERSION}"),
        ]))?;
    }
    let sum = sha256_file(orig)?;
    if sum != KERNEL_ORIG_SHA256 {
        bail!(
            "{} has SHA-256 {sum}, expected {KERNEL_ORIG_SHA256}",
            orig.display()
        );
    }
    note(format!("checksum ok: {sum}"));
    Ok(())
}

/// Debian's tree ignores everything at its top level (`/*`): without dropping that block,
/// `git add` records nothing.
fn drop_debian_gitignore(tree: &Path) -> Result<()> {
    let path = tree.join(".gitignore");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(i) = text.find("#\n# Debian packaging") {
        std::fs::write(&path, format!("{}\n", text[..i].trim_end()))?;
    }
    Ok(())
}
