#!/bin/sh
# vfio-edu-workload --backend type1 (charges its mappings to VmLck) under RLIMIT_MEMLOCK
# LIMIT bytes (prlimit), holding 4 × 64 KiB = 256 KiB of mappings: as root it has
# CAP_IPC_LOCK, so type1 charges past a lower limit. `ioasid-top audit --once --json` runs
# while it holds them, then again printing the table; check-audit asserts the exact findings
# and the exit status of the JSON one, the table's must say as many with the same status:
#   finding: exactly pins-over-memlock about the workload, exit status 3 (LIMIT < 256 KiB);
#   clean:   no finding, exit status 0 (LIMIT >= 256 KiB).
# Usage: audit-memlock.sh LIMIT EXPECT (finding | clean)
set -eu
. ci/vm/lib.sh
limit=$1
expect=$2
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"

prlimit --memlock="$limit" vfio-edu-workload --backend type1 --maps 4 --size 64K \
    --hold-until "$out/release" > "$out/workload.json" &
wl=$!
if ! wait_until $wl grep -qs '"held":true' "$out/workload.json"; then
    echo "vfio-edu-workload did not reach its hold point" >&2
    exit 1
fi
pid=$(grep '"held":true' "$out/workload.json" | grep -o '"pid":[0-9]*' | head -1 | cut -d: -f2)
grep 'locked memory' "/proc/$pid/limits"
grep VmLck "/proc/$pid/status"
status=0
ioasid-top audit --once --json --interval 0.5 > "$out/audit.jsonl" 2> "$out/audit.stderr" \
    || status=$?
table_status=0
ioasid-top audit --once --interval 0.5 > "$out/audit.txt" 2> /dev/null || table_status=$?
: > "$out/release"
wait $wl
cat "$out/audit.stderr" >&2
grep '"type":"finding"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
check_audit_outcome "$out" "$status" "$table_status" "$expect" "pins-over-memlock@$pid"
