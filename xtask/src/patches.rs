//! `cargo xtask patches [--check]`: generates patches/ from kernel-rust/ (the one source).
//!
//! kernel-rust/series.toml lists the patches in order. kernel-rust/ holds the final version of
//! every file the series adds, so that is the code one reads and edits. A patch lists the files
//! it adds and its edits (kernel-rust/edits/*.diff): edits of existing kernel files are applied
//! in that patch; edits of kernel-rust/ files describe how a later patch changes a file an
//! earlier one added, so every earlier patch takes them out again (`git apply -R`, last patch
//! first). Each patch is committed on a pristine tree; `git format-patch` writes the series with a
//! cover letter. Identity and dates are fixed so the output is byte-for-byte reproducible,
//! which is what makes `--check` (patches/ is not stale) possible.

use crate::util::{Paths, capture, note, path_with, run, step};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize)]
struct Series {
    cover: Cover,
    #[serde(default, rename = "patch")]
    patches: Vec<Patch>,
}

#[derive(Deserialize)]
struct Cover {
    subject: String,
    body_file: String,
}

#[derive(Deserialize)]
struct Patch {
    subject: String,
    body: String,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    edits: Vec<String>,
}

/// The From: of every generated patch. The submitter re-sends under their own name and adds
/// their Signed-off-by; patches in this repository carry none.
const AUTHOR_NAME: &str = "ioasid developers";
const AUTHOR_EMAIL: &str = "ioasid@lists.invalid";
const DATE: &str = "2026-11-25T00:00:00+00:00";

fn git(tree: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(tree)
        .args([
            "-c",
            &format!("user.name={AUTHOR_NAME}"),
            "-c",
            &format!("user.email={AUTHOR_EMAIL}"),
        ])
        .args([
            "-c",
            "core.abbrev=12",
            "-c",
            "diff.algorithm=myers",
            "-c",
            "format.signature=",
        ])
        .env("GIT_AUTHOR_DATE", DATE)
        .env("GIT_COMMITTER_DATE", DATE);
    cmd
}

fn read_series(kr: &Path) -> Result<Series> {
    let series_path = kr.join("series.toml");
    let text = std::fs::read_to_string(&series_path)
        .with_context(|| format!("cannot read {}", series_path.display()))?;
    let series: Series = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid series", series_path.display()))?;
    if series.patches.is_empty() {
        bail!("{} lists no [[patch]]", series_path.display());
    }
    Ok(series)
}

/// The scratch tree the series is committed in. IOASID_PATCHGEN names another one, so that
/// parallel worktrees do not reset each other's.
fn patchgen_tree(paths: &Paths) -> PathBuf {
    match std::env::var_os("IOASID_PATCHGEN") {
        Some(dir) => PathBuf::from(dir),
        None => paths.kernel_dir().join("patchgen"),
    }
}

pub fn patches(paths: &Paths, check: bool) -> Result<()> {
    crate::kernel::ensure_pristine(paths)?;
    let kr = paths.repo.join("kernel-rust");
    let series = read_series(&kr)?;
    let tree = patchgen_tree(paths);
    if !tree.join(".git").exists() {
        run(git(&paths.pristine()).args(["worktree", "prune"]))?;
        run(git(&paths.pristine())
            .arg("worktree")
            .arg("add")
            .arg("-q")
            .arg("--detach")
            .arg(&tree)
            .arg("base"))?;
    }
    run(git(&tree).args(["reset", "-q", "--hard", "base"]))?;
    run(git(&tree).args(["clean", "-q", "-fdx"]))?;

    // Which patch each owned file first appears in, and which edits change owned files.
    let mut owned = std::collections::BTreeSet::new();
    let mut own_edits: Vec<Vec<(String, Vec<String>)>> = Vec::new();
    for p in &series.patches {
        owned.extend(p.files.iter().cloned());
    }
    for (i, p) in series.patches.iter().enumerate() {
        let mut mine = Vec::new();
        for e in &p.edits {
            let touched = diff_paths(&kr.join(e))?;
            let own = touched.iter().filter(|t| owned.contains(*t)).count();
            if own != 0 && own != touched.len() {
                bail!(
                    "patch {} ({}): edit {e} mixes files of kernel-rust/ with other kernel files; split it",
                    i + 1,
                    p.subject
                );
            }
            if own != 0 {
                mine.push((e.clone(), touched));
            }
        }
        own_edits.push(mine);
    }

    let mut present: Vec<String> = Vec::new();
    for (k, p) in series.patches.iter().enumerate() {
        present.extend(p.files.iter().cloned());
        // kernel-rust/ holds the final version of its files: patch k gets them with the
        // changes of every later patch taken out again, last patch first.
        for f in &present {
            let src = kr.join(f);
            let dst = tree.join(f);
            std::fs::create_dir_all(dst.parent().context("file path without parent")?)?;
            std::fs::copy(&src, &dst).with_context(|| {
                format!(
                    "patch {} ({}): cannot copy {}",
                    k + 1,
                    p.subject,
                    src.display()
                )
            })?;
        }
        for (j, later) in own_edits.iter().enumerate().skip(k + 1).rev() {
            for (e, touched) in later {
                if !touched.iter().any(|t| present.contains(t)) {
                    continue;
                }
                let mut apply = git(&tree);
                apply.args(["apply", "-R"]);
                for t in touched.iter().filter(|t| present.contains(t)) {
                    apply.arg(format!("--include={t}"));
                }
                let out = apply
                    .arg(kr.join(e))
                    .output()
                    .context("cannot run git apply -R")?;
                if !out.status.success() {
                    bail!(
                        "patch {} ({}): taking out the later change {e} (patch {}) fails — update that diff to the \
                         final files: {}",
                        k + 1,
                        p.subject,
                        j + 1,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        for e in p
            .edits
            .iter()
            .filter(|e| !own_edits[k].iter().any(|(o, _)| o == *e))
        {
            let diff = kr.join(e);
            let out = git(&tree)
                .arg("apply")
                .arg(&diff)
                .output()
                .context("cannot run git apply")?;
            if !out.status.success() {
                bail!(
                    "patch {} ({}): edit {} does not apply: {}",
                    k + 1,
                    p.subject,
                    e,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        run(git(&tree).args(["add", "-A"]))?;
        let msg = format!("{}\n\n{}\n", p.subject.trim(), p.body.trim());
        run(git(&tree).args(["commit", "-q", "--allow-empty-message", "-m", &msg]))?;
    }
    check_every_file_is_in_the_series(&kr, &owned)?;
    if check {
        // Edits in the form the commits give them, so that `--import` round-trips.
        let off = import_commits(&tree, &kr, &series, false)?;
        if !off.is_empty() {
            bail!(
                "kernel-rust/ differs from what its own patches give ({}); run `cargo xtask patches` \
                 then `cargo xtask patches --import`",
                off.join(", ")
            );
        }
    }

    let out_dir = if check {
        let d = paths.repo.join("target/patches-check");
        let _ = std::fs::remove_dir_all(&d);
        d
    } else {
        paths.repo.join("patches")
    };
    std::fs::create_dir_all(&out_dir)?;
    if !check {
        for e in std::fs::read_dir(&out_dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "patch") {
                std::fs::remove_file(&p)?;
            }
        }
    }
    run(git(&tree)
        .args([
            "format-patch",
            "-q",
            "--cover-letter",
            "--zero-commit",
            "--no-signature",
            "--base=base",
            "-o",
        ])
        .arg(&out_dir)
        .arg("base..HEAD"))?;
    write_cover_letter(&out_dir, &series.cover, &kr)?;

    if check {
        let stale = compare_dirs(&out_dir, &paths.repo.join("patches"))?;
        if !stale.is_empty() {
            bail!(
                "patches/ is stale against kernel-rust/ ({}); run `cargo xtask patches`",
                stale.join(", ")
            );
        }
        step(format!(
            "patches/ is up to date ({} patches)",
            series.patches.len()
        ));
        checkpatch(paths)?;
        kernel_doc(paths)?;
    } else {
        step(format!(
            "wrote {} patches and a cover letter to patches/",
            series.patches.len()
        ));
    }
    Ok(())
}

/// `cargo xtask patches --import`: the inverse of [`patches`], for changing an earlier patch.
///
/// After `cargo xtask patches`, the scratch tree has one commit per patch on `base`. Edit there
/// (`git rebase -i base`, amend the commit of the patch a change belongs to, let the rebase
/// carry it through the later ones), then import: every edit of series.toml is rewritten from
/// the diff of its patch's commit, and every file of kernel-rust/ from the last commit. The
/// series itself (subjects, files, edits) is not changed here: the commits must still be one
/// per patch, in order, with the patches' subjects.
pub fn import(paths: &Paths) -> Result<()> {
    let kr = paths.repo.join("kernel-rust");
    let series = read_series(&kr)?;
    let tree = patchgen_tree(paths);
    if !tree.join(".git").exists() {
        bail!(
            "no scratch tree at {}: run `cargo xtask patches`, edit its commits, then import",
            tree.display()
        );
    }
    let rebase = capture(git(&tree).args(["rev-parse", "--git-path", "rebase-merge"]))?;
    if tree.join(rebase.trim()).exists() {
        bail!(
            "a rebase is in progress in {}: finish it (`git rebase --continue`) first",
            tree.display()
        );
    }
    if !capture(git(&tree).args(["status", "--porcelain"]))?
        .trim()
        .is_empty()
    {
        bail!(
            "{} has uncommitted changes: amend them into the commit of their patch first",
            tree.display()
        );
    }
    let changed = import_commits(&tree, &kr, &series, true)?;
    if changed.is_empty() {
        step("kernel-rust/ already matches the scratch tree");
    } else {
        step(format!(
            "imported into kernel-rust/: {}; now run `cargo xtask patches`",
            changed.join(", ")
        ));
    }
    Ok(())
}

/// The files of kernel-rust/ that differ from what the commits of `tree` give (and, with
/// `write`, are rewritten from them).
fn import_commits(tree: &Path, kr: &Path, series: &Series, write: bool) -> Result<Vec<String>> {
    let commits: Vec<String> = capture(git(tree).args(["rev-list", "--reverse", "base..HEAD"]))?
        .lines()
        .map(str::to_owned)
        .collect();
    if commits.len() != series.patches.len() {
        bail!(
            "{} has {} commits on base, series.toml {} patches: one commit per patch",
            tree.display(),
            commits.len(),
            series.patches.len()
        );
    }

    let mut changed = Vec::new();
    let mut write = |rel: String, content: &[u8]| -> Result<()> {
        let dst = kr.join(&rel);
        if std::fs::read(&dst).ok().as_deref() != Some(content) {
            if write {
                std::fs::create_dir_all(dst.parent().context("file path without parent")?)?;
                std::fs::write(&dst, content)
                    .with_context(|| format!("cannot write {}", dst.display()))?;
            }
            changed.push(rel);
        }
        Ok(())
    };
    let mut covered = std::collections::BTreeSet::new();
    for (k, (commit, p)) in commits.iter().zip(&series.patches).enumerate() {
        let subject = capture(git(tree).args(["log", "-1", "--format=%s", commit]))?;
        if subject.trim() != p.subject.trim() {
            bail!(
                "commit {} of {} is \"{}\", but patch {} of series.toml is \"{}\"",
                k + 1,
                tree.display(),
                subject.trim(),
                k + 1,
                p.subject.trim()
            );
        }
        let parent = if k == 0 { "base" } else { &commits[k - 1] };
        for f in &p.files {
            let before = git(tree)
                .args(["cat-file", "-e", &format!("{parent}:{f}")])
                .output()?;
            if before.status.success() {
                bail!(
                    "patch {} ({}) adds {f}, but it exists before its commit",
                    k + 1,
                    p.subject
                );
            }
        }
        for e in &p.edits {
            let touched = diff_paths(&kr.join(e))?;
            covered.extend(touched.iter().cloned());
            let diff = capture(
                git(tree)
                    .args(["diff", "--no-color", "--no-ext-diff", parent, commit, "--"])
                    .args(&touched),
            )?;
            if diff.trim().is_empty() {
                bail!(
                    "patch {} ({}): its commit no longer changes {}; drop {e} from series.toml",
                    k + 1,
                    p.subject,
                    touched.join(", ")
                );
            }
            write(e.clone(), diff.as_bytes())?;
        }
        covered.extend(p.files.iter().cloned());
    }
    let last = commits.last().context("no commits")?;
    for path in capture(git(tree).args(["diff", "--name-only", "base", last]))?.lines() {
        if !covered.contains(path) {
            bail!(
                "the commits change {path}, which no patch of series.toml adds or edits: \
                 add it to a patch's files or edits first"
            );
        }
    }
    for p in &series.patches {
        for f in &p.files {
            let out = git(tree)
                .args(["show", &format!("{last}:{f}")])
                .output()
                .context("cannot run git show")?;
            if !out.status.success() {
                bail!("{f} is missing from the last commit of {}", tree.display());
            }
            write(f.clone(), &out.stdout)?;
        }
    }
    Ok(changed)
}

/// Every file under kernel-rust/ (but the series itself, the cover letter and edits) must be
/// owned by a patch: a file that is in no patch would silently never reach users.
fn check_every_file_is_in_the_series(
    kr: &Path,
    owned: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let mut stray = Vec::new();
    let mut stack = vec![kr.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let rel = p.strip_prefix(kr)?.to_string_lossy().into_owned();
            if p.is_dir() {
                if rel != "edits" {
                    stack.push(p);
                }
            } else if !matches!(rel.as_str(), "series.toml" | "cover-letter.txt")
                && !owned.contains(&rel)
            {
                stray.push(rel);
            }
        }
    }
    if !stray.is_empty() {
        stray.sort();
        bail!(
            "kernel-rust/ files in no patch of series.toml: {}",
            stray.join(", ")
        );
    }
    Ok(())
}

/// The paths a unified diff changes (its `+++ b/` lines).
fn diff_paths(diff: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(diff).with_context(|| format!("cannot read {}", diff.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .map(|p| p.trim().to_owned())
        .collect())
}

fn write_cover_letter(dir: &Path, cover: &Cover, kr: &Path) -> Result<()> {
    let path = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("0000-cover-letter"))
        })
        .context("git format-patch wrote no cover letter")?;
    let body = std::fs::read_to_string(kr.join(&cover.body_file))
        .with_context(|| format!("cannot read kernel-rust/{}", cover.body_file))?;
    let text = std::fs::read_to_string(&path)?;
    let text = text
        .replace("*** SUBJECT HERE ***", cover.subject.trim())
        .replace("*** BLURB HERE ***", body.trim());
    std::fs::write(&path, text)?;
    Ok(())
}

fn compare_dirs(generated: &Path, committed: &Path) -> Result<Vec<String>> {
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(d) {
            Ok(r) => r
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "patch"))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        Ok(v)
    };
    let (g, c) = (list(generated)?, list(committed)?);
    let names = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let (gn, cn) = (names(&g), names(&c));
    let mut stale = Vec::new();
    for n in gn.iter().filter(|n| !cn.contains(n)) {
        stale.push(format!("{n} missing"));
    }
    for n in cn.iter().filter(|n| !gn.contains(n)) {
        stale.push(format!("{n} not generated"));
    }
    for n in gn.iter().filter(|n| cn.contains(n)) {
        if std::fs::read(generated.join(n))? != std::fs::read(committed.join(n))? {
            stale.push(format!("{n} differs"));
        }
    }
    if stale.is_empty() {
        note(format!("{} files compared", gn.len()));
    }
    Ok(stale)
}

/// A checkpatch finding (`--show-types` type) that is justified on a patch, with why.
struct Allowed {
    /// The patch's subject, as in series.toml.
    subject: &'static str,
    /// checkpatch's message type, e.g. `FILE_PATH_CHANGES`.
    kind: &'static str,
    reason: &'static str,
}

/// Every checkpatch ERROR or WARNING the series accepts, in one place. An entry that no longer
/// matches anything fails the check too, so the list cannot outlive its reasons.
const CHECKPATCH_ALLOWED: &[Allowed] = &[
    Allowed {
        subject: "iommu/ioasid: add the /dev/ioasid uAPI header",
        kind: "FILE_PATH_CHANGES",
        reason: "include/uapi/linux/ioasid.h is covered by the IOMMU IOASID entry of the MAINTAINERS patch, \
                 which comes first",
    },
    Allowed {
        subject: "iommu/ioasid: add /dev/ioasid with IOAS allocation",
        kind: "FILE_PATH_CHANGES",
        reason: "drivers/iommu/ioasid/ is covered by the IOMMU IOASID entry of the MAINTAINERS patch, which comes \
                 first",
    },
    Allowed {
        subject: "rust: mm: add long-term page pinning",
        kind: "FILE_PATH_CHANGES",
        reason: "rust/kernel/mm/ is covered by MEMORY MANAGEMENT - RUST, rust/helpers/ by RUST (F: rust/)",
    },
    Allowed {
        subject: "rust: add capable()",
        kind: "FILE_PATH_CHANGES",
        reason: "rust/kernel/capability.rs is covered by RUST (F: rust/)",
    },
    Allowed {
        subject: "rust: mm: add locked_vm and pinned_vm accounting",
        kind: "FILE_PATH_CHANGES",
        reason: "rust/kernel/mm/ is covered by MEMORY MANAGEMENT - RUST, rust/helpers/ by RUST (F: rust/)",
    },
    Allowed {
        subject: "iommu/ioasid: map, copy and unmap user memory in IOASes",
        kind: "FILE_PATH_CHANGES",
        reason: "drivers/iommu/ioasid/pages.rs is covered by the IOMMU IOASID entry (F: drivers/iommu/ioasid/)",
    },
    Allowed {
        subject: "selftests/ioasid: add /dev/ioasid tests",
        kind: "FILE_PATH_CHANGES",
        reason: "tools/testing/selftests/ioasid/ is covered by the IOMMU IOASID entry",
    },
    Allowed {
        subject: "selftests/ioasid: add /dev/ioasid tests",
        kind: "MACRO_WITH_FLOW_CONTROL",
        reason: "REQUIRE_IOCTL() wraps the kselftest harness's SKIP(return, ...), which must return from the \
                 test body; only a macro can, as the harness's own ASSERT_*() and SKIP() do",
    },
    Allowed {
        subject: "Documentation: userspace-api: add /dev/ioasid",
        kind: "FILE_PATH_CHANGES",
        reason: "Documentation/userspace-api/ioasid.rst is covered by the IOMMU IOASID entry",
    },
    Allowed {
        subject: "rust: iommu: add paging domains, mappings, group attachment and DMA ownership",
        kind: "FILE_PATH_CHANGES",
        reason: "rust/kernel/iommu/ is covered by IOMMU SUBSYSTEM (F: rust/kernel/iommu/), \
                 rust/helpers/ by RUST (F: rust/)",
    },
    Allowed {
        subject: "rust: vfio: add IOMMU provider registration",
        kind: "FILE_PATH_CHANGES",
        reason: "rust/kernel/vfio.rs is covered by RUST (F: rust/)",
    },
    Allowed {
        subject: "iommu/ioasid: bind VFIO devices and map IOASes into their IOMMU domains",
        kind: "FILE_PATH_CHANGES",
        reason: "drivers/iommu/ioasid/device.rs and hwpt.rs are covered by the IOMMU IOASID entry \
                 (F: drivers/iommu/ioasid/)",
    },
    Allowed {
        subject: "iommu/ioasid: add a test hook for the no-snoop ability of devices",
        kind: "FILE_PATH_CHANGES",
        reason: "drivers/iommu/ioasid/test.rs is covered by the IOMMU IOASID entry \
                 (F: drivers/iommu/ioasid/)",
    },
];

/// One ERROR, WARNING or CHECK line of `checkpatch.pl --terse --show-types`.
#[derive(Debug, PartialEq)]
struct Finding {
    level: String,
    kind: String,
    text: String,
}

/// Parses `<file>:<line>: <LEVEL>:<TYPE>: <message>` lines; other lines are ignored.
fn parse_checkpatch(out: &str) -> Vec<Finding> {
    out.lines()
        .filter_map(|l| {
            ["ERROR", "WARNING", "CHECK"].iter().find_map(|level| {
                let at = l.find(&format!(": {level}:"))?;
                let rest = &l[at + level.len() + 3..];
                let (kind, msg) = rest.split_once(": ")?;
                if kind.is_empty()
                    || !kind
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    return None;
                }
                Some(Finding {
                    level: (*level).to_owned(),
                    kind: kind.to_owned(),
                    text: format!("{}: {msg}", &l[..at]),
                })
            })
        })
        .collect()
}

/// The subject of a `git format-patch` file, without its `[PATCH n/m]` prefix (folded headers
/// are unfolded).
fn patch_subject(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Subject: "));
    let mut subject = lines.next()?.trim_start_matches("Subject: ").to_owned();
    for l in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        subject.push(' ');
        subject.push_str(l.trim());
    }
    let subject = match subject.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(subject.as_str(), |(_, s)| s),
        None => subject.as_str(),
    };
    Some(subject.to_owned())
}

/// A python3 that can run the tree's scripts/spdxcheck.py (it needs ply), as the directory to
/// put first on PATH, or None when the one on PATH will do.
fn python_for_spdxcheck() -> Result<Option<PathBuf>> {
    let has_ply = |py: &str| {
        Command::new(py)
            .args(["-c", "import ply, git"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_ply("python3") {
        return Ok(None);
    }
    if has_ply("/usr/bin/python3") {
        return Ok(Some(PathBuf::from("/usr/bin")));
    }
    bail!(
        "checkpatch's SPDX check needs python3 with ply and GitPython: apt-get install python3-ply python3-git"
    );
}

/// Runs the pristine tree's scripts/checkpatch.pl --strict on every patch of patches/ but the
/// cover letter. ERRORs and WARNINGs fail unless CHECKPATCH_ALLOWED lists them; CHECKs are
/// printed.
/// Functions of `c` (a C source) defined without a kernel-doc comment right above them: a
/// definition is a line at column 0 that is neither a comment, a preprocessor line nor
/// `static`, and opens a parameter list; its comment must end on the line before.
pub fn undocumented_functions(c: &str) -> Vec<String> {
    let lines: Vec<&str> = c.lines().collect();
    let mut missing = Vec::new();
    let mut in_doc = false;
    let mut doc_ended_on: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("/**") {
            in_doc = true;
        }
        if in_doc && line.trim_end().ends_with("*/") {
            in_doc = false;
            doc_ended_on = Some(i);
            continue;
        }
        let first = line.chars().next();
        let declarator = first.is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && !line.starts_with("static")
            && !line.starts_with("struct ")
            && !line.trim_end().ends_with(';');
        // The return type on a line of its own, as in `__rust_helper bool\nname(...)`: the
        // comment still documents the function on the next line.
        if declarator && !line.contains('(') && doc_ended_on == Some(i.wrapping_sub(1)) {
            doc_ended_on = Some(i);
            continue;
        }
        let definition = declarator && line.contains('(');
        if !in_doc && definition && doc_ended_on != Some(i.wrapping_sub(1)) {
            let name = line
                .split('(')
                .next()
                .and_then(|head| head.split_whitespace().last())
                .unwrap_or(line)
                .trim_start_matches('*');
            missing.push(name.to_owned());
        }
    }
    missing
}

/// kernel-doc of the C files the series adds outside tools/: every function documented, and
/// `scripts/kernel-doc -none -Wall` silent on them.
pub fn kernel_doc(paths: &Paths) -> Result<()> {
    let kr = paths.repo.join("kernel-rust");
    let series = read_series(&kr)?;
    let files: Vec<String> = series
        .patches
        .iter()
        .flat_map(|p| p.files.iter().cloned())
        .filter(|f| (f.ends_with(".c") || f.ends_with(".h")) && !f.starts_with("tools/"))
        .collect();
    let script = paths.pristine().join("scripts/kernel-doc");
    let mut problems = Vec::new();
    for f in &files {
        let path = kr.join(f);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for name in undocumented_functions(&text) {
            problems.push(format!("{f}: {name}() has no kernel-doc comment"));
        }
        let out = Command::new("perl")
            .arg(&script)
            .args(["-none", "-Wall"])
            .arg(&path)
            .output()
            .context("cannot run scripts/kernel-doc")?;
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        problems.extend(
            said.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    if !problems.is_empty() {
        bail!("kernel-doc:\n  {}", problems.join("\n  "));
    }
    step(format!(
        "kernel-doc: {} C files of the series documented",
        files.len()
    ));
    Ok(())
}

pub fn checkpatch(paths: &Paths) -> Result<()> {
    let tree = paths.pristine();
    let script = tree.join("scripts/checkpatch.pl");
    if !script.exists() {
        bail!("{} is missing; run `cargo xtask setup`", script.display());
    }
    let python = python_for_spdxcheck()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(paths.repo.join("patches"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "patch")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('0'))
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("0000-cover-letter"))
        })
        .collect();
    files.sort();
    step(format!("checkpatch --strict on {} patches", files.len()));
    let mut used = vec![false; CHECKPATCH_ALLOWED.len()];
    let mut failures = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let subject = patch_subject(&text).with_context(|| format!("{name} has no Subject:"))?;
        let mut cmd = Command::new("perl");
        cmd.current_dir(&tree)
            .arg(&script)
            .args([
                "--strict",
                "--no-signoff",
                "--terse",
                "--show-types",
                "--color=never",
            ])
            .arg(f);
        if let Some(dir) = &python {
            cmd.env("PATH", path_with(dir));
        }
        let out = cmd.output().context("cannot run scripts/checkpatch.pl")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            bail!(
                "checkpatch on {name} printed errors of its own:\n{}",
                stderr.trim()
            );
        }
        // A clean patch prints nothing with --terse; otherwise the last line is the total.
        let total = match stdout.lines().find(|l| l.starts_with("total: ")) {
            Some(t) => t.trim_start_matches("total: ").to_owned(),
            None if out.status.success() && stdout.trim().is_empty() => "clean".to_owned(),
            None => bail!(
                "checkpatch on {name} failed ({}) without a total:\n{}",
                out.status,
                stdout.trim()
            ),
        };
        let findings = parse_checkpatch(&stdout);
        let mut bad = 0;
        for x in &findings {
            let allowed = CHECKPATCH_ALLOWED
                .iter()
                .position(|a| a.subject == subject && a.kind == x.kind);
            if x.level == "CHECK" {
                note(format!("{name}: CHECK:{}: {}", x.kind, x.text));
            } else if let Some(i) = allowed {
                used[i] = true;
                note(format!(
                    "{name}: allowed {}:{} ({})",
                    x.level, x.kind, CHECKPATCH_ALLOWED[i].reason
                ));
            } else {
                bad += 1;
                failures.push(format!("{name}: {}:{}: {}", x.level, x.kind, x.text));
            }
        }
        note(format!(
            "{name}: {total}{}",
            if bad > 0 { " — FAILS" } else { "" }
        ));
    }
    for (a, _) in CHECKPATCH_ALLOWED.iter().zip(&used).filter(|(_, u)| !**u) {
        failures.push(format!(
            "allow-list entry ({}, {}) matches nothing; remove it from CHECKPATCH_ALLOWED",
            a.subject, a.kind
        ));
    }
    if !failures.is_empty() {
        bail!("checkpatch:\n  {}", failures.join("\n  "));
    }
    step("checkpatch: no ERROR or WARNING outside the allow-list");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpatch_terse_lines_are_parsed() {
        let out = "0001-x.patch:23: WARNING:FILE_PATH_CHANGES: added, moved or deleted file(s), does MAINTAINERS need updating?\n\
                   0001-x.patch:40: CHECK:MACRO_ARG_REUSE: Macro argument reuse 'id' - possible side-effects?\n\
                   0001-x.patch:41: ERROR:SPACING: space required after that ',' (ctx:VxV)\n\
                   total: 1 errors, 1 warnings, 1 checks, 20 lines checked\n";
        let f = parse_checkpatch(out);
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].level.as_str(), f[0].kind.as_str()),
            ("WARNING", "FILE_PATH_CHANGES")
        );
        assert_eq!(
            (f[1].level.as_str(), f[1].kind.as_str()),
            ("CHECK", "MACRO_ARG_REUSE")
        );
        assert_eq!(
            (f[2].level.as_str(), f[2].kind.as_str()),
            ("ERROR", "SPACING")
        );
        assert!(
            f[2].text.starts_with("0001-x.patch:41: space required"),
            "{}",
            f[2].text
        );
    }

    #[test]
    fn folded_subjects_are_unfolded_without_the_patch_prefix() {
        let text = "From 0 Mon Sep 17 00:00:00 2001\nSubject: [PATCH 08/12] iommu/ioasid: map, copy and unmap user\n memory in IOASes\n\nbody\n";
        assert_eq!(
            patch_subject(text).as_deref(),
            Some("iommu/ioasid: map, copy and unmap user memory in IOASes")
        );
        assert_eq!(
            patch_subject("Subject: rust: add capable()\n").as_deref(),
            Some("rust: add capable()")
        );
    }

    #[test]
    fn every_allow_list_entry_has_a_reason() {
        for a in CHECKPATCH_ALLOWED {
            assert!(!a.reason.trim().is_empty() && !a.kind.is_empty() && !a.subject.is_empty());
        }
    }

    #[test]
    fn functions_without_kernel_doc_are_found() {
        let c = "\
// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>

/**
 * rust_helper_a() - documented.
 */
__rust_helper unsigned long rust_helper_a(struct page *page)
{
\treturn 0;
}

__rust_helper struct page *rust_helper_b(struct folio *folio,
\t\t\t\t\t  unsigned long n)
{
\treturn NULL;
}

static int local(void)
{
\treturn 0;
}

/**
 * rust_helper_c() - documented, with the return type on a line of its own.
 */
__rust_helper bool
rust_helper_c(struct iommu_domain *domain)
{
\treturn false;
}

__rust_helper bool
rust_helper_d(struct iommu_domain *domain)
{
\treturn false;
}
";
        assert_eq!(
            undocumented_functions(c),
            vec!["rust_helper_b", "rust_helper_d"]
        );
    }
}
