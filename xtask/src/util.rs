//! Process running, paths and hashing shared by every xtask command.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where the repository and the machine-wide cache live.
///
/// The cache (toolchain pieces, kernel sources, build directory, virtme-ng) stays outside the
/// repository so that a fresh clone reuses it and ccache keeps hitting: ccache hashes the build
/// directory's path, so it must not move between runs.
pub struct Paths {
    pub repo: PathBuf,
    pub cache: PathBuf,
}

impl Paths {
    pub fn new() -> Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask lives one level below the repository root")?
            .to_path_buf();
        let cache = match std::env::var_os("IOASID_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set; set IOASID_CACHE")?;
                PathBuf::from(home).join(".cache/ioasid")
            }
        };
        Ok(Self { repo, cache })
    }

    pub fn venv(&self) -> PathBuf {
        self.cache.join("venv")
    }
    pub fn vng(&self) -> PathBuf {
        self.venv().join("bin/vng")
    }
    pub fn kernel_dir(&self) -> PathBuf {
        self.cache.join("kernel")
    }
    /// The pristine kernel tree: a git repository whose tag `base` is the unmodified source.
    pub fn pristine(&self) -> PathBuf {
        self.kernel_dir()
            .join(format!("pristine-{}", crate::setup::KERNEL_VERSION))
    }
    /// The tree the series is applied to (a worktree of `pristine`).
    pub fn worktree(&self) -> PathBuf {
        self.kernel_dir().join("work")
    }
    /// The `O=` build directory. Fixed path: ccache hits depend on it.
    pub fn build(&self) -> PathBuf {
        self.kernel_dir().join("build")
    }
    pub fn bzimage(&self) -> PathBuf {
        self.build().join("arch/x86/boot/bzImage")
    }
    pub fn cargo_bin(&self) -> PathBuf {
        match std::env::var_os("CARGO_HOME") {
            Some(h) => PathBuf::from(h).join("bin"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin"),
        }
    }
}

/// Printed before each step so a long run shows how far it is.
pub fn step(msg: impl AsRef<str>) {
    eprintln!("\x1b[1m==>\x1b[0m {}", msg.as_ref());
}

pub fn note(msg: impl AsRef<str>) {
    eprintln!("    {}", msg.as_ref());
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio and fails with the command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr is passed through.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{what}` printed non-UTF-8"))
}

/// Runs a command with its output going to `log`; on failure shows the log's last lines.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<std::time::Duration> {
    let what = describe(cmd);
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = file
        .try_clone()
        .context("cannot duplicate the log file handle")?;
    let start = Instant::now();
    let status = cmd
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("    | {line}");
        }
        bail!("`{what}` failed ({status}); full log: {}", log.display());
    }
    Ok(start.elapsed())
}

/// True when `program` can be started (found on PATH or as a path).
pub fn have(program: impl AsRef<OsStr>) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&data))
}

/// The environment every kernel `make` needs: LLVM 22 for C and Rust, bindgen from cargo.
pub fn kernel_make(paths: &Paths, tree: &Path, build: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.current_dir(tree)
        .env("LIBCLANG_PATH", "/usr/lib/llvm-22/lib")
        .env("PATH", path_with(&paths.cargo_bin()))
        .arg("LLVM=-22")
        .arg(format!("O={}", build.display()))
        .arg("CC=ccache clang-22")
        // Every build lints the Rust code with clippy; `kernel --each-patch` fails on a warning
        // in a file of the series. Always on, so that switching never rebuilds all Rust code.
        .arg("CLIPPY=1");
    cmd
}

/// PATH with `dir` in front.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut parts = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

pub fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
