#!/bin/sh
# Three `ioasid-top audit --once` (two --json, one table) start before vfio-orphan-pins maps
# 1 MiB for edu through BACKEND, forks and exits, its child holding the files and the pins.
# The JSON and table audits stopped then must report exactly pins-outlive-owner about the
# exited process (exit status 3); the third, stopped after the child is released and gone
# (its exit drops the pins), must report nothing (exit status 0).
# Usage: audit-orphan-pins.sh BACKEND (type1 | iommufd | ioasid)
set -eu
. ci/vm/lib.sh
backend=$1
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"

start_audits "$out" || exit 1
ioasid-top audit --once --json --interval 600 > "$out/after.jsonl" 2> "$out/after.stderr" &
after=$!
if ! wait_until $after probes_at_least "$out/after.jsonl" 6; then
    echo "ioasid-top audit (after) did not attach:" >&2
    cat "$out/after.stderr" >&2
    exit 1
fi

vfio-orphan-pins --backend "$backend" --hold-until "$out/release" > "$out/workload.json"
cat "$out/workload.json"
pid=$(grep -o '"pid":[0-9]*' "$out/workload.json" | cut -d: -f2)
holder=$(grep -o '"holder":[0-9]*' "$out/workload.json" | cut -d: -f2)
if [ -z "$pid" ] || [ -z "$holder" ] || ! [ -d "/proc/$holder" ]; then
    echo "the child $holder that should hold the pins is gone" >&2
    exit 1
fi
stop_audits

: > "$out/release"
tries=0
# Orphaned, the child is reparented to the guest's init, which may leave it a zombie: that is
# exited too (its files were released before).
running() {
    _state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$_state" != Z ]
}
while running "$holder"; do
    tries=$((tries + 1))
    if [ $tries -gt 600 ]; then
        echo "the child $holder did not exit after its release" >&2
        exit 1
    fi
    sleep 0.1
done
kill -INT $after
after_status=0
wait $after || after_status=$?

cat "$out/audit.stderr" >&2
grep '"type":"finding"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
check_audit_outcome "$out" "$status" "$table_status" finding "pins-outlive-owner@$pid"
echo "after the holder $holder exited:"
check-audit "$out/after.jsonl" "$after_status"
