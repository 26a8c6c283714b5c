#!/bin/sh
# ioasid-top --once --json, started before a VFIO workload with a known set of maps, must
# report exactly those areas mapped and unmapped, in one domain, with no lost events.
# Usage: top-sees-vfio-maps.sh BACKEND (iommufd | type1 | ioasid) [MAPS SIZE]
set -eu
. ci/vm/lib.sh
backend=$1
maps=${2:-4}
size=${3:-64K}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}

ioasid-top --once --json --interval 600 > "$out/top.jsonl" 2> "$out/top.stderr" &
top=$!
# The probes are attached once every function has its `probe` line.
if ! wait_until $top probes_at_least "$out/top.jsonl" 3; then
    echo "ioasid-top did not attach:" >&2
    cat "$out/top.stderr" >&2
    exit 1
fi

vfio-edu-workload --backend "$backend" --maps "$maps" --size "$size" > "$out/workload.json"
kill -INT $top
wait $top
cat "$out/top.stderr" >&2
check-top-maps "$out/top.jsonl" "$out/workload.json" vfio-edu-worklo
