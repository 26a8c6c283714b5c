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

use crate::util::{Paths, note, run, step};
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
        .args(["-c", &format!("user.name={AUTHOR_NAME}"), "-c", &format!("user.email={AUTHOR_EMAIL}")])
        .args(["-c", "core.abbrev=12", "-c", "diff.algorithm=myers", "-c", "format.signature="])
        .env("GIT_AUTHOR_DATE", DATE)
        .env("GIT_COMMITTER_DATE", DATE);
    cmd
}

pub fn patches(paths: &Paths, check: bool) -> Result<()> {
    crate::kernel::ensure_pristine(paths)?;
    let kr = paths.repo.join("kernel-rust");
    let series_path = kr.join("series.toml");
    let text = std::fs::read_to_string(&series_path).with_context(|| format!("cannot read {}", series_path.display()))?;
    let series: Series = toml::from_str(&text).with_context(|| format!("{} is not a valid series", series_path.display()))?;
    if series.patches.is_empty() {
        bail!("{} lists no [[patch]]", series_path.display());
    }
    // IOASID_PATCHGEN names another scratch tree, so that parallel worktrees do not reset each
    // other's patchgen tree.
    let tree = match std::env::var_os("IOASID_PATCHGEN") {
        Some(dir) => PathBuf::from(dir),
        None => paths.kernel_dir().join("patchgen"),
    };
    if !tree.join(".git").exists() {
        run(git(&paths.pristine()).args(["worktree", "prune"]))?;
        run(git(&paths.pristine()).arg("worktree").arg("add").arg("-q").arg("--detach").arg(&tree).arg("base"))?;
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
                bail!("patch {} ({}): edit {e} mixes files of kernel-rust/ with other kernel files; split it", i + 1, p.subject);
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
            std::fs::copy(&src, &dst)
                .with_context(|| format!("patch {} ({}): cannot copy {}", k + 1, p.subject, src.display()))?;
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
                let out = apply.arg(kr.join(e)).output().context("cannot run git apply -R")?;
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
        for e in p.edits.iter().filter(|e| !own_edits[k].iter().any(|(o, _)| o == *e)) {
            let diff = kr.join(e);
            let out = git(&tree).arg("apply").arg(&diff).output().context("cannot run git apply")?;
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
        .args(["format-patch", "-q", "--cover-letter", "--zero-commit", "--no-signature", "--base=base", "-o"])
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
        step(format!("patches/ is up to date ({} patches)", series.patches.len()));
    } else {
        step(format!("wrote {} patches and a cover letter to patches/", series.patches.len()));
    }
    Ok(())
}

/// Every file under kernel-rust/ (but the series itself, the cover letter and edits) must be
/// owned by a patch: a file that is in no patch would silently never reach users.
fn check_every_file_is_in_the_series(kr: &Path, owned: &std::collections::BTreeSet<String>) -> Result<()> {
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
            } else if !matches!(rel.as_str(), "series.toml" | "cover-letter.txt") && !owned.contains(&rel) {
                stray.push(rel);
            }
        }
    }
    if !stray.is_empty() {
        stray.sort();
        bail!("kernel-rust/ files in no patch of series.toml: {}", stray.join(", "));
    }
    Ok(())
}

/// The paths a unified diff changes (its `+++ b/` lines).
fn diff_paths(diff: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(diff).with_context(|| format!("cannot read {}", diff.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .map(|p| p.trim().to_owned())
        .collect())
}

fn write_cover_letter(dir: &Path, cover: &Cover, kr: &Path) -> Result<()> {
    let path = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("0000-cover-letter")))
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
        v.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect()
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
