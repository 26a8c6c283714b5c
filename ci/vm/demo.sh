#!/bin/sh
# The main job: ioasid-top watching real VFIO and KVM work in the patched kernel (QEMU's edu
# device bound to vfio-pci behind intel-iommu with snoop-control off): DMA mappings and pinned
# pages through mainline iommufd and /dev/ioasid, then a KVM VM that gets the device and, with
# it, wbinvd (noncoherent DMA). Then /dev/ioasid's own smoke test.
set -eu
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
echo "== kernel: $(uname -r); /dev/ioasid: $(ls /dev/ioasid 2>/dev/null || echo missing)"
ioasid-top --once --interval 600 > "$out/top.txt" 2> "$out/top.stderr" &
top=$!
sleep 5
echo "== vfio-edu-workload --backend iommufd --maps 4 --size 64K (DMA through mainline iommufd)"
vfio-edu-workload --backend iommufd --maps 4 --size 64K
echo "== vfio-edu-workload --backend ioasid --no-device --maps 4 --size 64K (maps into a /dev/ioasid IOAS)"
vfio-edu-workload --backend ioasid --no-device --maps 4 --size 64K
echo "== kvm-vfio-workload --backend iommufd (the device in a KVM VM for a second)"
kvm-vfio-workload --backend iommufd --hold-ms 1000
kill -INT $top
wait $top || true
echo "== ioasid-top --once (what the IOMMU, the pinning paths and KVM saw)"
cat "$out/top.txt"
echo "== ioasid-smoke on /dev/ioasid"
ioasid-smoke --dev /dev/ioasid
