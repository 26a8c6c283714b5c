//! Privilege check before touching bpf(2): one clear line instead of EPERM.

use anyhow::Context as _;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask from the text of /proc/self/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// None if `cap_eff` is enough to load and attach tracing programs
/// (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN), else the one-line complaint.
pub fn missing(cap_eff: u64) -> Option<String> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let lacking: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| *n)
        .collect();
    Some(format!(
        "needs root, or CAP_BPF and CAP_PERFMON (missing {})",
        lacking.join(" and ")
    ))
}

/// Checks the current process. Err(message) when privileges are lacking.
pub fn check() -> anyhow::Result<Option<String>> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let cap_eff = parse_cap_eff(&status).context("no CapEff line in /proc/self/status")?;
    Ok(missing(cap_eff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tioasid-top\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn decides_what_is_missing() {
        assert_eq!(missing(0x1ff_ffff_ffff), None);
        assert_eq!(missing(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        let none = missing(0).expect("no caps is not enough");
        assert!(none.contains("CAP_BPF and CAP_PERFMON"), "{none}");
        let only_bpf = missing(1 << CAP_BPF).expect("CAP_BPF alone is not enough");
        assert!(only_bpf.ends_with("(missing CAP_PERFMON)"), "{only_bpf}");
        assert!(!only_bpf.contains('\n'));
    }
}
