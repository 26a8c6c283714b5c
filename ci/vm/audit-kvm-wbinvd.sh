#!/bin/sh
# `ioasid-top audit --once --json` started before kvm-vfio-workload gives the edu device's
# VFIO file to a KVM VM and holds it there; stopped (SIGINT: its one, final report) while the
# VM holds it. A second audit, beside it, prints the table. check-audit asserts the exact
# findings and the exit status of the JSON one; the table's must say as many, with the same
# status:
#   finding: exactly RULE about the workload, exit status 3 (warning) or 4 (critical):
#     unneeded-wbinvd-exposure (the default; snoop-control=off: KVM registers non-coherent DMA
#       from the IOMMU alone, and edu is conventional PCI, so it cannot issue no-snoop);
#     guest-cannot-flush (WORKLOAD_ARGS=--no-kvm-vfio, NO_SNOOP_OVERRIDE=1: a device that may
#       issue no-snoop, an IOMMU that lets it through, and KVM never told);
#   clean:   no finding, exit status 0 (e.g. snoop-control=on: KVM never registers).
# Usage: audit-kvm-wbinvd.sh BACKEND (type1 | iommufd | ioasid) EXPECT (finding | clean) [RULE]
# NO_SNOOP_OVERRIDE (0 | 1): first set the test kernel's no-snoop hook, which both /dev/ioasid
# and the audit read (QEMU's devices cannot enable no-snoop). WORKLOAD_ARGS: more
# kvm-vfio-workload options. WAIT_REGISTER=1: report only after KVM's register call is seen
# (implied for an unneeded-wbinvd-exposure finding).
set -eu
. ci/vm/lib.sh
backend=$1
expect=$2
rule=${3:-unneeded-wbinvd-exposure}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"
if [ -n "${NO_SNOOP_OVERRIDE:-}" ]; then
    echo "$NO_SNOOP_OVERRIDE" > /sys/kernel/debug/ioasid/no_snoop_override
    echo "no_snoop_override: $(cat /sys/kernel/debug/ioasid/no_snoop_override)"
fi
wait_register=${WAIT_REGISTER:-0}
if [ "$expect" = finding ] && [ "$rule" = unneeded-wbinvd-exposure ]; then
    wait_register=1
fi

start_audits "$out" || exit 1

# shellcheck disable=SC2086 # WORKLOAD_ARGS is a list of options
kvm-vfio-workload --backend "$backend" --hold-until "$out/release" ${WORKLOAD_ARGS:-} \
    > "$out/workload.json" &
wl=$!
if ! wait_until $wl grep -qs '"held":true' "$out/workload.json"; then
    echo "kvm-vfio-workload did not reach its hold point" >&2
    kill -INT $top || true
    exit 1
fi
pid=$(grep '"held":true' "$out/workload.json" | grep -o '"pid":[0-9]*' | head -1 | cut -d: -f2)
if [ "$wait_register" = 1 ]; then
    # The register call is reported as it is seen: wait for it before the report.
    if ! wait_until $top grep -qs '"op":"register"' "$out/audit.jsonl"; then
        echo "ioasid-top audit saw no kvm_arch_register_noncoherent_dma call" >&2
        kill -INT $top || true
        : > "$out/release"
        exit 1
    fi
fi
stop_audits
: > "$out/release"
wait $wl
cat "$out/audit.stderr" >&2
grep '"type":"finding"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
check_audit_outcome "$out" "$status" "$table_status" "$expect" "$rule@$pid"
