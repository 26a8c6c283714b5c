#!/bin/sh
# `ioasid-top audit --once --json` (and a table audit beside it) started before vfio-double-map
# maps one 1 MiB buffer for edu and igb through two page tables of BACKEND, and stopped while
# it holds them. check-audit asserts the exact findings and the exit status:
#   finding: exactly double-accounted-pins about the workload, exit status 3 (type1: two
#            containers charge VmLck twice; iommufd: two IOASes charge VmPin twice);
#   clean:   no finding, exit status 0 (ioasid: /dev/ioasid charges a page once per file).
# Needs the igb NIC (scenario `pcie_nic = true`).
# Usage: audit-double-map.sh BACKEND (type1 | iommufd | ioasid) EXPECT (finding | clean)
set -eu
. ci/vm/lib.sh
backend=$1
expect=$2
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
audit_held_workload "$out" vfio-double-map --backend "$backend" --hold-until "$out/release"
cat "$out/workload.json"
cat "$out/audit.stderr" >&2
grep '"type":"finding"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
# Whatever the verdict, the audit saw the buffer mapped into two domains, and the workload was
# charged for it twice (finding) or once (clean).
domains=$(grep '"type":"domain"' "$out/audit.jsonl" | grep -c "\"pid\":$pid,.*\"mapped_bytes\":1048576," || true)
if [ "$domains" -ne 2 ]; then
    echo "the audit saw $domains domains of pid $pid with 1 MiB mapped, not 2" >&2
    exit 1
fi
summary=$(tail -n 1 "$out/workload.json")
pin=$(echo "$summary" | grep -o '"vm_pin_kib":[0-9]*' | cut -d: -f2)
lck=$(echo "$summary" | grep -o '"vm_lck_kib":[0-9]*' | cut -d: -f2)
if [ -z "$pin" ] || [ -z "$lck" ]; then
    echo "the workload's summary has no vm_pin_kib/vm_lck_kib: $summary" >&2
    exit 1
fi
charged=$((pin > lck ? pin : lck))
want=$([ "$expect" = finding ] && echo 2048 || echo 1024)
if [ "$charged" -ne "$want" ]; then
    echo "$backend charged $charged KiB (VmPin +$pin, VmLck +$lck) for 1 MiB in two domains, expected $want" >&2
    exit 1
fi
echo "ok - 1 MiB in two domains of pid $pid, charged $charged KiB (VmPin +$pin KiB, VmLck +$lck KiB)"
check_audit_outcome "$out" "$status" "$table_status" "$expect" "double-accounted-pins@$pid"
