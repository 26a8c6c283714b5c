//! The hold point of the workloads' `--hold-until FILE`: say on stdout that the state to look
//! at is in place, then wait for the script to create FILE.

use anyhow::{Context, Result, ensure};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// How long a workload waits for its release file before giving up.
pub const MAX_HOLD: Duration = Duration::from_secs(600);

/// Prints `line` (a JSON object with `"held": true`) on stdout, flushed so that a script can
/// wait for it, then waits until `release` exists.
pub fn announce_and_wait(line: &serde_json::Value, release: &Path) -> Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("writing the held line to stdout")?;
    }
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while !release.exists() {
        ensure!(
            waited < MAX_HOLD,
            "{} did not appear within {} s",
            release.display(),
            MAX_HOLD.as_secs()
        );
        std::thread::sleep(step);
        waited += step;
    }
    Ok(())
}
