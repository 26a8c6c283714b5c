//! `cargo xtask kernel --each-patch`: the series is bisectable and its component builds every
//! way it can be configured.
//!
//! From the pristine tree, each patch is applied with `git am` and the kernel built
//! incrementally in the one build directory (ccache, the same `O=`), so the walk costs one cold
//! build plus what each patch changes. Then the component is built `=n` and `=m` (the module
//! must come out), and last `=y` again: the build directory ends exactly as `cargo xtask kernel`
//! leaves it, ready for the VM. Every state that was built is also booted (`true` in the
//! guest; a WARN, BUG or Oops in dmesg fails). The Rust files of the series are checked with the tree's
//! rustfmt config, and every build runs clippy (`CLIPPY=1`): a warning in a file of the series
//! fails the walk. The times go to `target/series-build.json` and are printed as a table.
//!
//! A walk that passed is remembered by the hash of the series and the config fragments, so
//! `cargo xtask test` repeats it only when one of them changed.

use crate::kernel::{FRAGMENTS, apply_series_stamp, configure_tree, git_am_one, series};
use crate::util::{Paths, kernel_make, note, run, run_logged, sha256_hex, step};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The component's Kconfig symbol.
const SYMBOL: &str = "IOASID";

#[derive(Serialize)]
struct BuildTime {
    /// `NNNN-subject.patch`, or `IOASID=n` / `IOASID=m` / `IOASID=y`.
    what: String,
    seconds: f64,
    /// How long booting it and running `true` took; 0 where nothing was built.
    boot_seconds: f64,
}

#[derive(Serialize)]
struct Report {
    series_hash: String,
    builds: Vec<BuildTime>,
}

/// Where a passed walk is recorded.
fn stamp(paths: &Paths) -> PathBuf {
    paths.kernel_dir().join("series-verified")
}

/// The hash a walk is valid for: the patches and the config fragments.
fn walk_hash(paths: &Paths) -> Result<String> {
    let mut all = Vec::new();
    for p in series(paths)? {
        all.extend(std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    for f in FRAGMENTS {
        let p = paths.repo.join(f);
        all.extend(std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    Ok(sha256_hex(&all))
}

/// Whether the series and fragments as they are now have passed a walk.
pub fn verified(paths: &Paths) -> Result<bool> {
    Ok(std::fs::read_to_string(stamp(paths)).ok().as_deref() == Some(walk_hash(paths)?.as_str()))
}

/// The files of a patch, from its `diff --git a/X b/X` lines.
fn patch_files(patch: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(patch)
        .with_context(|| format!("cannot read {}", patch.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("diff --git a/"))
        .filter_map(|l| l.split_once(" b/").map(|(a, _)| a.to_owned()))
        .collect())
}

/// Whether a change to `file` can change what the kernel build produces. MAINTAINERS, the
/// documentation and the selftests cannot: a patch of only those builds as its parent did.
fn is_build_input(file: &str) -> bool {
    !(file == "MAINTAINERS"
        || file.starts_with("Documentation/")
        || file.starts_with("tools/testing/selftests/"))
}

/// Rust warnings (rustc or clippy) in `log` that point into one of `files` (paths relative to
/// the kernel tree), each as its first line and its `-->` location.
pub fn warnings_in(log: &str, files: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut headline: Option<&str> = None;
    for line in log.lines() {
        let t = line.trim_start();
        if t.starts_with("warning:") {
            headline = Some(t);
        } else if t.starts_with("error:") {
            headline = None;
        } else if let (Some(h), Some(loc)) = (headline, t.strip_prefix("--> ")) {
            if files.iter().any(|f| loc.contains(f.as_str())) {
                found.push(format!("{h} at {loc}"));
            }
            headline = None;
        }
    }
    found
}

/// Boots the kernel just built and runs `true` in it: the state builds *and* boots, with no
/// WARN, BUG or Oops in dmesg.
fn boot_step(paths: &Paths, what: &str) -> Result<Duration> {
    let opts = crate::vm::VmOpts {
        snoop_control: crate::vm::SnoopControl::Off,
        timeout: Duration::from_secs(180),
        name: "series-boot".into(),
        verbose: false,
        memory: crate::vm::DEFAULT_MEMORY.into(),
        pcie_nic: false,
    };
    let start = std::time::Instant::now();
    let out = crate::vm::run_in_vm(paths, &opts, &["true".to_string()])
        .with_context(|| format!("cannot boot the kernel built at {what}"))?;
    let bugs = crate::vm::kernel_bug_lines(&out.dmesg);
    if out.status != 0 || !bugs.is_empty() {
        bail!(
            "the kernel built at {what} does not boot cleanly (status {}, dmesg in {}):\n  {}",
            out.status,
            out.dir.display(),
            bugs.join("\n  ")
        );
    }
    Ok(start.elapsed())
}

/// Builds once and returns how long it took; a Rust warning in a series file fails.
fn build_step(paths: &Paths, jobs: usize, what: &str, files: &[String]) -> Result<Duration> {
    let log = paths.kernel_dir().join("series-build.log");
    let took = run_logged(
        kernel_make(paths, &paths.worktree(), &paths.build()).arg(format!("-j{jobs}")),
        &log,
    )
    .with_context(|| format!("the kernel does not build at {what}"))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = warnings_in(&text, files);
    if !warnings.is_empty() {
        bail!(
            "Rust or clippy warnings in the series at {what} (log {}):\n  {}",
            log.display(),
            warnings.join("\n  ")
        );
    }
    note(format!("{what}: built in {:.0} s", took.as_secs_f64()));
    Ok(took)
}

/// Sets the component to `value` (`y`, `m` or `n`) in `.config`.
fn set_symbol(paths: &Paths, value: char) -> Result<()> {
    let build = paths.build();
    let flag = match value {
        'y' => "--enable",
        'm' => "--module",
        _ => "--disable",
    };
    run(Command::new(paths.worktree().join("scripts/config"))
        .arg("--file")
        .arg(build.join(".config"))
        .arg(flag)
        .arg(SYMBOL))?;
    run_logged(
        kernel_make(paths, &paths.worktree(), &build).arg("olddefconfig"),
        &paths.kernel_dir().join("config.log"),
    )?;
    let config = std::fs::read_to_string(build.join(".config")).context("cannot read .config")?;
    let want = match value {
        'n' => format!("# CONFIG_{SYMBOL} is not set"),
        v => format!("CONFIG_{SYMBOL}={v}"),
    };
    if !config.lines().any(|l| l == want) {
        bail!("CONFIG_{SYMBOL}={value} does not hold after olddefconfig (a dependency missing?)");
    }
    Ok(())
}

/// The Rust files the series adds or changes, relative to the kernel tree.
fn series_rust_files(patches: &[PathBuf]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for p in patches {
        for f in patch_files(p)? {
            if f.ends_with(".rs") && !files.contains(&f) {
                files.push(f);
            }
        }
    }
    Ok(files)
}

pub fn each_patch(paths: &Paths, jobs: usize) -> Result<()> {
    crate::kernel::ensure_pristine(paths)?;
    let patches = series(paths)?;
    let rust_files = series_rust_files(&patches)?;
    let hash = walk_hash(paths)?;
    let _ = std::fs::remove_file(stamp(paths));
    crate::kernel::reset_worktree(paths)?;
    step(format!(
        "building the kernel after each of {} patches, then {SYMBOL}=n, =m, =y (CLIPPY=1)",
        patches.len()
    ));
    configure_tree(paths, false)?;
    let base = build_step(paths, jobs, "the base tree", &rust_files)?;
    let mut builds = vec![BuildTime {
        what: "base".into(),
        seconds: base.as_secs_f64(),
        boot_seconds: boot_step(paths, "the base tree")?.as_secs_f64(),
    }];
    for p in &patches {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        git_am_one(&paths.worktree(), p)?;
        let files = patch_files(p)?;
        if !files.iter().any(|f| is_build_input(f)) {
            note(format!(
                "{name}: changes no build input, builds as its parent"
            ));
            builds.push(BuildTime {
                what: name,
                seconds: 0.0,
                boot_seconds: 0.0,
            });
            continue;
        }
        if files.iter().any(|f| f.ends_with("Kconfig")) {
            // A new symbol takes the value the fragments give it.
            configure_tree(paths, false)?;
        }
        let took = build_step(paths, jobs, &name, &rust_files)?;
        let boot = boot_step(paths, &name)?;
        builds.push(BuildTime {
            what: name,
            seconds: took.as_secs_f64(),
            boot_seconds: boot.as_secs_f64(),
        });
    }
    // The whole series: every fragment line must hold now.
    configure_tree(paths, true)?;
    for value in ['n', 'm', 'y'] {
        if value == 'y' {
            // The fragments' own configuration (CONFIG_IOASID=y among them), which the tests
            // boot: setting the symbol back after =n and =m would leave out what depends on it
            // and those states dropped, such as CONFIG_IOASID_TEST.
            configure_tree(paths, true)?;
        } else {
            set_symbol(paths, value)?;
        }
        let what = format!("{SYMBOL}={value}");
        let took = build_step(paths, jobs, &what, &rust_files)?;
        if value == 'm' {
            let ko = paths.build().join("drivers/iommu/ioasid/ioasid.ko");
            if !ko.exists() {
                bail!("{SYMBOL}=m built no module at {}", ko.display());
            }
        }
        let boot = boot_step(paths, &what)?;
        builds.push(BuildTime {
            what,
            seconds: took.as_secs_f64(),
            boot_seconds: boot.as_secs_f64(),
        });
    }
    rustfmt_check(paths, &rust_files)?;
    apply_series_stamp(paths)?;

    let report = Report {
        series_hash: hash.clone(),
        builds,
    };
    let out = paths.repo.join("target/series-build.json");
    std::fs::create_dir_all(out.parent().context("no target dir")?)?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{:<72} {:>8} {:>8}", "after", "build s", "boot s");
    for b in &report.builds {
        println!("{:<72} {:>8.0} {:>8.0}", b.what, b.seconds, b.boot_seconds);
    }
    note(format!("written to {}", out.display()));
    std::fs::write(stamp(paths), hash)?;
    Ok(())
}

/// `rustfmt --check` of the series' Rust files with the tree's `.rustfmt.toml`, as
/// `make rustfmtcheck` does for the whole tree.
fn rustfmt_check(paths: &Paths, files: &[String]) -> Result<()> {
    let tree = paths.worktree();
    let out = Command::new(paths.cargo_bin().join("rustfmt"))
        .current_dir(&tree)
        .arg("--check")
        .arg("--edition=2021")
        .arg("--config-path")
        .arg(tree.join(".rustfmt.toml"))
        .args(files)
        .output()
        .context("cannot run rustfmt")?;
    if !out.status.success() {
        bail!(
            "rustfmt (the kernel's .rustfmt.toml) wants changes in the series:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    note(format!(
        "rustfmt: {} Rust files of the series are formatted",
        files.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_in_series_files_are_found_and_others_ignored() {
        let log = "\
warning: unused variable: `x`
   --> /k/work/drivers/iommu/ioasid/ioas.rs:12:9
    |
warning: this is mainline's
  --> /k/work/rust/kernel/sync.rs:1:1
error: not a warning
  --> /k/work/drivers/iommu/ioasid/pages.rs:3:3
";
        let files = vec![
            "drivers/iommu/ioasid/ioas.rs".to_string(),
            "drivers/iommu/ioasid/pages.rs".to_string(),
        ];
        let w = warnings_in(log, &files);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("unused variable") && w[0].contains("ioas.rs:12:9"));
    }

    #[test]
    fn documentation_and_selftests_are_no_build_input() {
        assert!(!is_build_input("MAINTAINERS"));
        assert!(!is_build_input("Documentation/userspace-api/ioasid.rst"));
        assert!(!is_build_input("tools/testing/selftests/ioasid/ioasid.c"));
        assert!(is_build_input("drivers/iommu/Kconfig"));
        assert!(is_build_input("rust/kernel/mm/pin.rs"));
    }

    #[test]
    fn patch_files_come_from_diff_git_lines() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-patchfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("0001-x.patch");
        std::fs::write(
            &p,
            "Subject: x\n\ndiff --git a/MAINTAINERS b/MAINTAINERS\n--- a/MAINTAINERS\n\
             diff --git a/rust/kernel/mm/pin.rs b/rust/kernel/mm/pin.rs\n",
        )?;
        assert_eq!(
            patch_files(&p)?,
            vec!["MAINTAINERS", "rust/kernel/mm/pin.rs"]
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
