#!/bin/sh
# The no-snoop matrix: every device (edu: conventional PCI, no Device Control register; igb: PCI
# Express, Enable No Snoop clear and read-only under QEMU) x its no-snoop ability as /dev/ioasid
# sees it (hw: read from config space; 1: the CONFIG_IOASID_TEST hook says it can) x backend
# (mainline iommufd, /dev/ioasid): kvm-vfio-workload gives the device's VFIO cdev, bound and
# attached, to a KVM VM, and ioasid-top's fexit probes on kvm_arch_{,un}register_noncoherent_dma
# show what KVM did (check-top-kvm, exact calls and states). Expected, from the rules:
#   mainline: registered iff snoop control is off, whatever the device;
#   /dev/ioasid: registered iff snoop control is off and the device can issue no-snoop.
# Prints the matrix; fails if any cell differs.
# Usage: kvm-no-snoop-matrix.sh SNOOP_CONTROL (on | off): the guest's intel-iommu setting.
set -eu
. ci/vm/lib.sh
snoop=$1
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
hook=/sys/kernel/debug/ioasid/no_snoop_override

edu=$(bdf_of 0x1234:0x11e8)
igb=$(bdf_of 0x8086:0x10c9)

failed=0
printf '%-8s %-6s %-14s %-12s %-12s %-12s %s\n' snoop device no-snoop backend expected observed verdict \
    > "$out/matrix.txt"
for backend in iommufd ioasid; do
    for device in edu igb; do
        for ability in hw 1; do
            eval "bdf=\$$device"
            echo "$ability" > "$hook"
            if [ "$snoop" = off ] && { [ "$backend" = iommufd ] || [ "$ability" = 1 ]; }; then
                expect=flip
            else
                expect=never
            fi
            cell="$out/$backend-$device-$ability"
            start_top "$cell.top" 6 --json --interval 0.25 || exit 1
            kvm-vfio-workload --backend "$backend" --bdf "$bdf" --hold-ms 1000 > "$cell.workload.json"
            sleep 0.5
            kill -INT $top
            wait $top
            if check-top-kvm "$cell.top.jsonl" "$cell.workload.json" "$expect" > "$cell.check" 2>&1; then
                observed=$expect verdict=ok
            else
                observed="not $expect" verdict=FAIL failed=1
            fi
            cat "$cell.check"
            printf '%-8s %-6s %-14s %-12s %-12s %-12s %s\n' "$snoop" "$device" "$ability" "$backend" \
                "$expect" "$observed" "$verdict" >> "$out/matrix.txt"
        done
    done
done
echo hw > "$hook"
echo "no-snoop matrix (flip: KVM registered non-coherent DMA while the VM held the device, then unregistered):"
cat "$out/matrix.txt"
exit $failed
