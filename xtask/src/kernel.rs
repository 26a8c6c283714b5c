//! `cargo xtask kernel`: the pristine tree + `git am patches/*.patch` + ci/kernel fragments,
//! built with ccache into a fixed `O=` directory.
//!
//! Both the series and the config are applied only when they changed (their hashes are
//! recorded next to the build), so a second run with nothing new is an incremental `make`.

use crate::util::{Paths, capture, kernel_make, note, nproc, run, run_logged, sha256_hex, step};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fragments merged over `make tinyconfig`, in order.
pub const FRAGMENTS: &[&str] = &[
    "ci/kernel/base.config",
    "ci/kernel/ioasid.config",
    "ci/kernel/test.config",
];

pub struct KernelOpts {
    pub jobs: Option<usize>,
}

pub fn kernel(paths: &Paths, opts: &KernelOpts) -> Result<PathBuf> {
    ensure_pristine(paths)?;
    apply_series(paths)?;
    configure(paths)?;
    build(paths, opts.jobs.unwrap_or_else(nproc))?;
    Ok(paths.bzimage())
}

pub fn ensure_pristine(paths: &Paths) -> Result<()> {
    let pristine = paths.pristine();
    if !pristine.join(".git").exists() {
        bail!(
            "no kernel source at {}: run `cargo xtask setup` first (it fetches Linux {})",
            pristine.display(),
            crate::setup::KERNEL_VERSION
        );
    }
    Ok(())
}

fn git(tree: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(tree).args([
        "-c",
        "user.name=ioasid xtask",
        "-c",
        "user.email=xtask@ioasid.invalid",
    ]);
    cmd
}

pub fn series(paths: &Paths) -> Result<Vec<PathBuf>> {
    let dir = paths.repo.join("patches");
    let mut patches: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "patch")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("0000-"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    patches.sort();
    Ok(patches)
}

fn series_hash(patches: &[PathBuf]) -> Result<String> {
    let mut all = Vec::new();
    for p in patches {
        all.extend(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    Ok(sha256_hex(&all))
}

/// Resets the worktree to `base` and applies the series with `git am`, unless the same
/// series is already applied.
/// The worktree at the pristine base, nothing applied.
pub fn reset_worktree(paths: &Paths) -> Result<()> {
    let work = paths.worktree();
    if !work.join(".git").exists() {
        step(format!("creating the kernel worktree {}", work.display()));
        run(git(&paths.pristine()).args(["worktree", "prune"]))?;
        run(git(&paths.pristine())
            .arg("worktree")
            .arg("add")
            .arg("-q")
            .arg("--detach")
            .arg(&work)
            .arg("base"))?;
    }
    let _ = std::fs::remove_file(paths.kernel_dir().join("work.series"));
    let _ = git(&work).args(["am", "--abort"]).output();
    run(git(&work).args(["reset", "-q", "--hard", "base"]))?;
    run(git(&work).args(["clean", "-q", "-fdx"]))?;
    copy_tool_configs(paths)
}

/// The kernel's top-level tool configs (`.rustfmt.toml`, `.clippy.toml`: the MSRV clippy holds
/// the code to, its disallowed methods) are not in the base commit — the tree's own .gitignore
/// ignores dotfiles — so the worktree gets them from the unpacked source beside it.
fn copy_tool_configs(paths: &Paths) -> Result<()> {
    for name in [".rustfmt.toml", ".clippy.toml"] {
        let src = paths.pristine().join(name);
        let dst = paths.worktree().join(name);
        std::fs::copy(&src, &dst)
            .with_context(|| format!("cannot copy {} (run `cargo xtask setup`)", src.display()))?;
    }
    Ok(())
}

/// Records that the worktree holds the whole series as it is now.
pub fn apply_series_stamp(paths: &Paths) -> Result<()> {
    let hash = series_hash(&series(paths)?)?;
    std::fs::write(paths.kernel_dir().join("work.series"), hash)?;
    Ok(())
}

pub fn apply_series(paths: &Paths) -> Result<()> {
    let work = paths.worktree();
    let patches = series(paths)?;
    let hash = series_hash(&patches)?;
    let stamp = paths.kernel_dir().join("work.series");
    if work.join(".git").exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str())
    {
        step(format!(
            "series of {} patch(es) already applied",
            patches.len()
        ));
        return Ok(());
    }
    step(format!(
        "applying {} patch(es) to a pristine tree",
        patches.len()
    ));
    reset_worktree(paths)?;
    for p in &patches {
        git_am_one(&work, p)?;
    }
    std::fs::write(&stamp, &hash)?;
    Ok(())
}

/// `git am` one patch; one that does not apply aborts with an error that names the patch and
/// the files it failed on.
pub fn git_am_one(work: &Path, p: &Path) -> Result<()> {
    let out = git(work)
        .arg("am")
        .arg("-q")
        .arg(p)
        .output()
        .with_context(|| format!("cannot run git am {}", p.display()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let _ = git(work).args(["am", "--abort"]).output();
        let files: Vec<&str> = msg
            .lines()
            .filter_map(|l| {
                l.strip_prefix("error: patch failed: ")
                    .or_else(|| l.strip_prefix("error: "))
            })
            .filter(|l| !l.starts_with("could not build fake ancestor"))
            .collect();
        // git's hints tell how to continue an am we have already aborted.
        let detail: Vec<&str> = msg.lines().filter(|l| !l.starts_with("hint:")).collect();
        bail!(
            "patch {} does not apply to Linux {}: {}\n{}",
            p.file_name().unwrap_or_default().to_string_lossy(),
            crate::setup::KERNEL_VERSION,
            files.join("; "),
            detail.join("\n").trim()
        );
    }
    Ok(())
}

/// tinyconfig + fragments + olddefconfig; then every fragment line must hold in `.config`
/// (merge_config silently drops what Kconfig dependencies refuse).
pub fn configure(paths: &Paths) -> Result<()> {
    let (fragments, hash) = fragments(paths)?;
    let stamp = paths.kernel_dir().join("build.config-hash");
    let build = paths.build();
    if build.join(".config").exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str())
    {
        return check_config(&build, &fragments, true);
    }
    configure_tree(paths, true)
}

/// The fragment paths and the hash of their contents.
fn fragments(paths: &Paths) -> Result<(Vec<PathBuf>, String)> {
    let mut fragments = Vec::new();
    let mut all = Vec::new();
    for f in FRAGMENTS {
        let p = paths.repo.join(f);
        all.extend(
            std::fs::read(&p)
                .with_context(|| format!("cannot read config fragment {}", p.display()))?,
        );
        fragments.push(p);
    }
    Ok((fragments, sha256_hex(&all)))
}

/// Configures the build of the worktree as it is. `strict`: every fragment line must hold;
/// otherwise symbols the tree does not have yet (a patch not applied yet adds them) may be
/// missing, as they are while walking the series.
pub fn configure_tree(paths: &Paths, strict: bool) -> Result<()> {
    let build = paths.build();
    std::fs::create_dir_all(&build)?;
    let (fragments, hash) = fragments(paths)?;
    let stamp = paths.kernel_dir().join("build.config-hash");
    let _ = std::fs::remove_file(&stamp);
    step("configuring: tinyconfig + ci/kernel fragments");
    let work = paths.worktree();
    let log = paths.kernel_dir().join("config.log");
    run_logged(kernel_make(paths, &work, &build).arg("tinyconfig"), &log)?;
    let mut merge = Command::new(work.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&work)
        .arg("-m")
        .arg("-O")
        .arg(&build)
        .arg(build.join(".config"));
    merge.args(&fragments);
    run_logged(&mut merge, &log)?;
    run_logged(kernel_make(paths, &work, &build).arg("olddefconfig"), &log)?;
    check_config(&build, &fragments, strict)?;
    if strict {
        std::fs::write(&stamp, &hash)?;
    }
    Ok(())
}

fn check_config(build: &Path, fragments: &[PathBuf], strict: bool) -> Result<()> {
    let config = std::fs::read_to_string(build.join(".config")).context("cannot read .config")?;
    let mut wrong = Vec::new();
    for f in fragments {
        for line in std::fs::read_to_string(f)?.lines() {
            let Some((key, want)) = line.strip_prefix("CONFIG_").and_then(|l| l.split_once('='))
            else {
                continue;
            };
            let set = config
                .lines()
                .find_map(|l| l.strip_prefix(&format!("CONFIG_{key}=")));
            let known = config.lines().any(|l| {
                l.starts_with(&format!("CONFIG_{key}="))
                    || l == format!("# CONFIG_{key} is not set")
            });
            let ok = match (want, set) {
                ("n", None) => true,
                (w, Some(s)) => w == s,
                (_, None) => !strict && !known,
            };
            if !ok {
                wrong.push(format!(
                    "CONFIG_{key}={want} (got {})",
                    set.unwrap_or("unset")
                ));
            }
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the kernel config does not hold what ci/kernel asks (a dependency is missing?):\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

fn build(paths: &Paths, jobs: usize) -> Result<()> {
    step(format!(
        "building the kernel (-j{jobs}, ccache; log {})",
        paths.kernel_dir().join("build.log").display()
    ));
    let log = paths.kernel_dir().join("build.log");
    let took = run_logged(
        kernel_make(paths, &paths.worktree(), &paths.build()).arg(format!("-j{jobs}")),
        &log,
    )?;
    let head = capture(git(&paths.worktree()).args(["log", "--oneline", "-1"]))?;
    note(format!(
        "built {} in {:.0} s (tree at {})",
        paths.bzimage().display(),
        took.as_secs_f64(),
        head.trim()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "{script}");
    }

    #[test]
    fn a_patch_that_does_not_apply_is_named_with_its_file() {
        let dir = std::env::temp_dir().join(format!("xtask-am-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        sh(
            &dir,
            "git init -q tree && cd tree && printf 'a\\nb\\n' > Kconfig && git add Kconfig && \
             git -c user.name=t -c user.email=t@t commit -qm base && \
             printf 'a\\nB\\n' > Kconfig && git -c user.name=t -c user.email=t@t commit -qam change && \
             git format-patch -q -1 -o .. && git reset -q --hard HEAD~1 && \
             printf 'x\\ny\\n' > Kconfig && git -c user.name=t -c user.email=t@t commit -qam diverge",
        );
        let patch = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "patch"))
            .unwrap();
        let err = git_am_one(&dir.join("tree"), &patch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0001-change.patch does not apply"), "{err}");
        assert!(err.contains("Kconfig"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_kernel_source_says_to_run_setup() {
        let paths = Paths {
            repo: PathBuf::from("/nonexistent-repo"),
            cache: PathBuf::from("/nonexistent-cache"),
        };
        let err = ensure_pristine(&paths).unwrap_err().to_string();
        assert!(err.contains("cargo xtask setup"), "{err}");
    }
}
