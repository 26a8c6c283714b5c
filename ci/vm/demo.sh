#!/bin/sh
# The main job: ioasid-top watching real VFIO and KVM work in the patched kernel (QEMU's edu
# device bound to vfio-pci behind intel-iommu with snoop-control off): DMA mappings and pinned
# pages through mainline iommufd and /dev/ioasid, then a KVM VM that gets the device: through
# iommufd it gets wbinvd (non-coherent DMA) although edu cannot issue no-snoop; through
# /dev/ioasid it does not. Then /dev/ioasid's own smoke test.
set -eu
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
echo "== kernel: $(uname -r); /dev/ioasid: $(ls /dev/ioasid 2>/dev/null || echo missing)"
ioasid-top --once --interval 600 > "$out/top.txt" 2> "$out/top.stderr" &
top=$!
sleep 5
echo "== vfio-edu-workload --backend iommufd --maps 4 --size 64K (DMA through mainline iommufd)"
vfio-edu-workload --backend iommufd --maps 4 --size 64K
echo "== vfio-edu-workload --backend ioasid --maps 4 --size 64K (DMA through /dev/ioasid)"
vfio-edu-workload --backend ioasid --maps 4 --size 64K
echo "== kvm-vfio-workload --backend iommufd (the device in a KVM VM for a second: wbinvd on)"
kvm-vfio-workload --backend iommufd --hold-ms 1000
echo "== kvm-vfio-workload --backend ioasid (the same through /dev/ioasid: edu cannot issue no-snoop, wbinvd stays off)"
kvm-vfio-workload --backend ioasid --hold-ms 1000
kill -INT $top
wait $top || true
echo "== ioasid-top --once (what the IOMMU, the pinning paths and KVM saw)"
cat "$out/top.txt"
echo "== ioasid-smoke on /dev/ioasid"
ioasid-smoke --dev /dev/ioasid
