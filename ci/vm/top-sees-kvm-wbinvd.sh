#!/bin/sh
# ioasid-top --json with a report every 0.25 s, started before kvm-vfio-workload gives the edu
# device's VFIO file to a KVM VM for 1.5 s and takes it back: check-top-kvm asserts the exact
# kvm_arch_{,un}register_noncoherent_dma calls and the VM's noncoherent_dma (wbinvd) state in
# the reports while the VM holds the file and after (see vmtests/src/kvmcheck.rs).
# Usage: top-sees-kvm-wbinvd.sh BACKEND (type1 | iommufd | ioasid) EXPECT (flip | never | register@STEP,unregister@STEP) [REMOVE (del | close)]
# NO_SNOOP_OVERRIDE (0 | 1): first set /dev/ioasid's test hook for the devices' ability to
# issue no-snoop (CONFIG_IOASID_TEST; QEMU's devices cannot). WORKLOAD_ARGS: more
# kvm-vfio-workload options, e.g. --attach-after-add (QEMU's order: KVM gets the file first).
# DEVICE=igb: the igb NIC of the pcie_nic scenarios instead of edu.
set -eu
. ci/vm/lib.sh
backend=$1
expect=$2
remove=${3:-del}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
if [ -n "${NO_SNOOP_OVERRIDE:-}" ]; then
    echo "$NO_SNOOP_OVERRIDE" > /sys/kernel/debug/ioasid/no_snoop_override
    echo "no_snoop_override: $(cat /sys/kernel/debug/ioasid/no_snoop_override)"
fi

# No --once: the periodic report blocks are what shows the state while the file is in the VM.
# The probes are attached once the `probe` lines are out (all at once, after every attach).
start_top "$out/top" 6 --json --interval 0.25 || exit 1

device_args=
if [ "${DEVICE:-edu}" = igb ]; then
    device_args="--bdf $(bdf_of 0x8086:0x10c9)"
fi
# shellcheck disable=SC2086 # WORKLOAD_ARGS and device_args are lists of options
kvm-vfio-workload --backend "$backend" --remove "$remove" --hold-ms 1500 ${WORKLOAD_ARGS:-} \
    $device_args > "$out/workload.json"
cat "$out/workload.json"
# One more periodic report after the unregister, then the final one.
sleep 0.5
kill -INT $top
wait $top
cat "$out/top.stderr" >&2
check-top-kvm "$out/top.jsonl" "$out/workload.json" "$expect"
