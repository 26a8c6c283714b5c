#!/bin/sh
# `ioasid-top domain` must show exactly the IOVA ranges a workload has mapped, merged, while it
# holds them, and the domain empty again once it has unmapped and exited.
# 1. Two `ioasid-top domain --comm vfio-edu-worklo --once --json` attach; 2. vfio-edu-workload
# maps MAPS x SIZE at IOVA 0x100000.. and holds; 3. the first ioasid-top is stopped (SIGINT:
# its final report is taken while the maps are held); 4. the workload unmaps and exits; 5. the
# second ioasid-top is stopped. check-top-maps --domain-view compares both with the workload's
# own list of maps and pid, and check-top-maps --attach that both tie the domain to the device's
# IOMMU group (held: attached, listing the device; exited: detached).
# Usage: top-domain-view.sh BACKEND (iommufd | type1 | ioasid) [MAPS SIZE]
set -eu
. ci/vm/lib.sh
backend=$1
maps=${2:-4}
size=${3:-64K}
comm=vfio-edu-worklo
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"

ioasid-top domain --comm "$comm" --once --json --interval 600 \
    > "$out/domain-held.jsonl" 2> "$out/domain-held.stderr" &
held_top=$!
ioasid-top domain --comm "$comm" --once --json --interval 600 \
    > "$out/domain-exited.jsonl" 2> "$out/domain-exited.stderr" &
exited_top=$!
# attached PID NAME: every probe of that ioasid-top is attached once its last `probe` line (the
# last pinning function) is out.
attached() {
    if ! wait_until "$1" grep -qs '"fn":"iopt_pages_update_pinned"' "$out/domain-$2.jsonl"; then
        echo "ioasid-top domain ($2) did not attach:" >&2
        cat "$out/domain-$2.stderr" >&2
        kill -INT $held_top $exited_top 2>/dev/null || true
        exit 1
    fi
}
attached $held_top held
attached $exited_top exited

vfio-edu-workload --backend "$backend" --maps "$maps" --size "$size" \
    --hold-until "$out/release" > "$out/domain-workload.json" &
wl=$!
if ! wait_until $wl grep -qs '"held":true' "$out/domain-workload.json"; then
    echo "the workload did not reach its hold point" >&2
    kill -INT $held_top $exited_top 2>/dev/null || true
    exit 1
fi
kill -INT $held_top
wait $held_top
: > "$out/release"
wait $wl
kill -INT $exited_top
wait $exited_top
cat "$out/domain-held.stderr" "$out/domain-exited.stderr" >&2
grep -E '"type":"domain_range' "$out/domain-held.jsonl" || true
grep -E '"type":"domain_range' "$out/domain-exited.jsonl" || true
check-top-maps --domain-view held "$out/domain-held.jsonl" "$out/domain-workload.json" "$comm"
check-top-maps --domain-view exited "$out/domain-exited.jsonl" "$out/domain-workload.json" "$comm"
bdf=$(grep -o '"bdf":"[^"]*"' "$out/domain-workload.json" | tail -n 1 | cut -d'"' -f4)
group=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
grep -E '"type":"(attach|group)"' "$out/domain-held.jsonl" "$out/domain-exited.jsonl" || true
check-top-maps --attach held "$out/domain-held.jsonl" "$out/domain-workload.json" "$group"
check-top-maps --attach exited "$out/domain-exited.jsonl" "$out/domain-workload.json" "$group"
