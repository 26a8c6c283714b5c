#!/bin/sh
# ioasid-top --once --json, started before a VFIO workload with a known set of maps, must
# report exactly those areas mapped and unmapped, in one domain, with no lost events.
# Usage: top-sees-vfio-maps.sh BACKEND (iommufd | type1 | ioasid) [MAPS SIZE]
# TOP_ARGS: more ioasid-top options; with --kprobes-only every iommu probe must attach as a
# kprobe and every map/unmap event come through one (the fallback of kernels without BTF).
set -eu
. ci/vm/lib.sh
backend=$1
maps=${2:-4}
size=${3:-64K}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}

# The probes are attached once every function has its `probe` line.
# shellcheck disable=SC2086 # TOP_ARGS is a list of options
start_top "$out/top" 3 --once --json --interval 600 ${TOP_ARGS:-} || exit 1

vfio-edu-workload --backend "$backend" --maps "$maps" --size "$size" > "$out/workload.json"
kill -INT $top
wait $top
cat "$out/top.stderr" >&2
check-top-maps "$out/top.jsonl" "$out/workload.json" vfio-edu-worklo
case " ${TOP_ARGS:-} " in
*" --kprobes-only "*)
    for f in iommu_map iommu_unmap; do
        grep '"type":"probe"' "$out/top.jsonl" | grep -q "\"fn\":\"$f\",\"attach\":\"kprobe\"" || {
            echo "--kprobes-only: $f is not traced by a kprobe:" >&2
            grep '"type":"probe"' "$out/top.jsonl" >&2
            exit 1
        }
    done
    if grep -E '"type":"(map|unmap)"' "$out/top.jsonl" | grep -qv '"via":"kprobe"'; then
        echo "--kprobes-only: an event came through something else than a kprobe" >&2
        exit 1
    fi
    grep -qE '"type":"map".*"via":"kprobe"' "$out/top.jsonl" || {
        echo "--kprobes-only: no map event through a kprobe" >&2
        exit 1
    }
    ;;
esac
