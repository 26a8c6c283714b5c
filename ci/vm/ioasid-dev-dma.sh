#!/bin/sh
# Real DMA through /dev/ioasid: the edu device's VFIO cdev is bound to /dev/ioasid and attached
# to an IOAS (an automatic HWPT: an intel-iommu paging domain); vfio-edu-workload maps 4 areas,
# writes a pattern at IOVA A, has edu DMA it in and back out to IOVA B and compares. While the
# maps are held, the workload's /dev/ioasid fdinfo must show the device attached to the HWPT,
# which enforces coherency exactly when the vIOMMU has snoop control. After UNMAP the same DMA
# to B must be blocked: memory unchanged, and a DMAR fault logged for B. VmPin/VmLck must be
# back where they started.
# Usage: ioasid-dev-dma.sh SNOOP_CONTROL (on | off)
set -eu
. ci/vm/lib.sh
snoop=$1
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"
case $snoop in
on) coherency=coherent ;;
off) coherency=noncoherent ;;
*) echo "usage: $0 on|off" >&2; exit 2 ;;
esac

fail() {
    echo "not ok - $*" >&2
    exit 1
}

vfio-edu-workload --backend ioasid --maps 4 --size 64K --dma-after-unmap \
    --hold-until "$out/release" > "$out/workload.jsonl" &
wl=$!
if ! wait_until $wl grep -qs '"held":true' "$out/workload.jsonl"; then
    cat "$out/workload.jsonl" >&2
    fail "the workload did not reach its hold point"
fi

# The fdinfo of the workload's /dev/ioasid file while everything is mapped.
: > "$out/fdinfo"
for fd in /proc/$wl/fd/*; do
    if [ "$(readlink "$fd")" = /dev/ioasid ]; then
        cat "/proc/$wl/fdinfo/${fd##*/}" >> "$out/fdinfo"
    fi
done
cat "$out/fdinfo"
hwpt=$(sed -n 's/^ioasid-hwpt:\t\([0-9]*\) auto .*/\1/p' "$out/fdinfo")
[ -n "$hwpt" ] || fail "no automatic HWPT in the fdinfo"
grep -q "^ioasid-hwpt:	$hwpt auto $coherency\$" "$out/fdinfo" ||
    fail "HWPT $hwpt is not $coherency with snoop-control=$snoop"
grep -q "^ioasid-device:	[0-9]* $hwpt\$" "$out/fdinfo" ||
    fail "no device attached to HWPT $hwpt"
[ "$(grep -c '^ioasid-area:' "$out/fdinfo")" -eq 4 ] || fail "not 4 areas in the IOAS"
echo "ok - device attached to automatic HWPT $hwpt ($coherency), 4 areas mapped"

: > "$out/release"
wait $wl || fail "the workload failed"
summary=$(tail -n 1 "$out/workload.jsonl")
echo "$summary"
case $summary in *'"dma_ok":true'*) ;; *) fail "DMA round trip through /dev/ioasid failed" ;; esac
echo "ok - DMA A -> edu -> B through /dev/ioasid returned the pattern"
case $summary in
*'"dma_blocked_after_unmap":true'*) ;;
*) fail "DMA to IOVA B after UNMAP changed memory" ;;
esac
# IOVA B: the last 4 KiB of 4 x 64 KiB from 1 MiB (vfio-edu-workload's plan).
dmesg | grep -q 'fault addr 0x13f000' || {
    dmesg | grep -i dmar >&2 || true
    fail "no DMAR fault logged for IOVA 0x13f000"
}
echo "ok - DMA to unmapped IOVA B blocked by the IOMMU (DMAR fault), memory unchanged"
pin() { echo "$summary" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
[ "$(pin pin_before)" = "$(pin pin_after)" ] && [ "$(pin lck_before)" = "$(pin lck_after)" ] ||
    fail "VmPin/VmLck not back to where they were: $summary"
[ "$(pin pin_held)" -gt "$(pin pin_before)" ] || fail "VmPin did not grow while mapped"
echo "ok - VmPin $(pin pin_before) -> $(pin pin_held) -> $(pin pin_after) kB"
