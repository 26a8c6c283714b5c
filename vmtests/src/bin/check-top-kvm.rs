//! `check-top-kvm TOP.jsonl WORKLOAD.json flip|never|register@STEP,unregister@STEP`: exits 0 when ioasid-top's report of
//! KVM's non-coherent DMA (wbinvd) state around `kvm-vfio-workload` is exactly what the
//! scenario expects (see `ioasid_vmtests::kvmcheck`).

use anyhow::{Context, Result};
use ioasid_vmtests::kvmcheck::{Expect, check, workload_summary};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [top, workload, expect] = args.as_slice() else {
        anyhow::bail!(
            "usage: check-top-kvm TOP.jsonl WORKLOAD.json flip|never|register@STEP,unregister@STEP \
             (STEP: file_add, attach, detach, remove)"
        );
    };
    let expect: Expect = expect.parse()?;
    let top_text = std::fs::read_to_string(top).with_context(|| format!("cannot read {top}"))?;
    let workload_text =
        std::fs::read_to_string(workload).with_context(|| format!("cannot read {workload}"))?;
    let verdict = check(&top_text, &workload_summary(&workload_text)?, expect)?;
    println!("ok - ioasid-top saw {verdict}");
    Ok(())
}
