//! `check-audit AUDIT.jsonl STATUS [RULE[@PID]...]`: exits 0 when `ioasid-top audit --once
//! --json` (output in AUDIT.jsonl, exit status STATUS) reported exactly the findings of the
//! given rules, each once (about PID when given), and no other (see
//! `ioasid_vmtests::auditcheck`).

use anyhow::{Context, Result};
use ioasid_vmtests::auditcheck::{Expected, check};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [audit, status, rules @ ..] = args.as_slice() else {
        anyhow::bail!("usage: check-audit AUDIT.jsonl STATUS [RULE[@PID]...]");
    };
    let status: i32 = status
        .parse()
        .with_context(|| format!("exit status {status:?}"))?;
    let expected = rules
        .iter()
        .map(|r| r.parse::<Expected>())
        .collect::<Result<Vec<_>>>()?;
    let text = std::fs::read_to_string(audit).with_context(|| format!("cannot read {audit}"))?;
    let verdict = check(&text, status, &expected)?;
    println!("ok - ioasid-top audit reported {verdict}");
    Ok(())
}
