#!/bin/sh
# The main job: ioasid-top watching a real VFIO workload (QEMU's edu device bound to vfio-pci,
# DMA through mainline iommufd behind intel-iommu) in the patched kernel; then /dev/ioasid.
set -eu
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
echo "== kernel: $(uname -r); /dev/ioasid: $(ls /dev/ioasid 2>/dev/null || echo missing)"
ioasid-top --once --interval 600 > "$out/top.txt" 2> "$out/top.stderr" &
top=$!
sleep 5
echo "== vfio-edu-workload --backend iommufd --maps 4 --size 64K"
vfio-edu-workload --backend iommufd --maps 4 --size 64K
kill -INT $top
wait $top || true
echo "== ioasid-top --once (what the IOMMU saw while the workload ran)"
cat "$out/top.txt"
echo "== ioasid-smoke on /dev/ioasid"
ioasid-smoke --dev /dev/ioasid
