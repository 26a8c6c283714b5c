#!/bin/sh
# The IOMMU API misused by a kernel module, with ioasid-top audit watching: the calls no correct
# in-tree caller makes, made for real on a real VT-d domain (ci/kmod/iommu_misuse.c, built by
# `cargo xtask test` into target/kmod/). The module attaches its own domain to the edu device's
# group and does MISUSE in insmod's context; the audits stop while it holds the domain, then it
# is removed. Besides the audit's verdict (check-audit), the script checks the audit's domain
# line: the module's domain (from its kernel log line), tied to edu, with the maps it made.
# With VFIO_BOUND=1 in the environment, edu is bound to vfio-pci (and opened by nobody) before
# the module attaches to its group; otherwise it is bound to no driver, as the guest boots.
# Usage: audit-misuse.sh MISUSE finding RULE | audit-misuse.sh MISUSE clean
#   MISUSE: short-unmap | noncoherent-map | mixed-map | coherent-map (see the module)
set -eu
. ci/vm/lib.sh
misuse=$1
expect=$2
rule=${3:-}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
ko=target/kmod/iommu_misuse.ko
if [ ! -f "$ko" ]; then
    echo "no $ko: cargo xtask test builds it from ci/kmod against the test kernel" >&2
    exit 1
fi
bdf=$(bdf_of 0x1234:0x11e8)
if [ "${VFIO_BOUND:-0}" = 1 ]; then
    bind-vfio-pci "$bdf"
    echo "opened by no process"
elif [ -e "/sys/bus/pci/devices/$bdf/driver" ]; then
    echo "$bdf is bound to $(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")"); expected no driver" >&2
    exit 1
fi

start_audits "$out"
loaded=0
insmod "$ko" bdf="$bdf" misuse="$misuse" &
pid=$!
wait $pid || loaded=$?
stop_audits
cat "$out/audit.stderr" >&2
grep -E '"type":"(domain|group|finding)"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
dmesg | grep iommu_misuse || true
if [ "$loaded" -ne 0 ]; then
    echo "insmod $ko misuse=$misuse failed ($loaded): the kernel log above says why" >&2
    exit 1
fi
domain=$(dmesg | sed -n "s/.*iommu_misuse: $misuse done on $bdf, domain \([0-9a-f]*\) .*/\1/p" | tail -1)
rmmod iommu_misuse
if [ -z "$domain" ]; then
    echo "the module did not log its domain" >&2
    exit 1
fi

# The audit's row for insmod and the module's domain, tied to edu through the traced attach.
row=$(grep '"type":"domain"' "$out/audit.jsonl" | grep "\"pid\":$pid," | grep "\"domain\":\"0x$domain\"" | tail -1)
if [ -z "$row" ]; then
    echo "the audit has no domain line for pid $pid and domain 0x$domain" >&2
    exit 1
fi
case $row in
*"\"devices\":[\"$bdf\"]"*) ;;
*)
    echo "the domain is not tied to $bdf: $row" >&2
    exit 1
    ;;
esac
case $misuse in
short-unmap) want='"maps":1,"unmaps":1,"mapped_bytes":0,' ;;
noncoherent-map) want='"maps":1,"unmaps":0,"mapped_bytes":4096,' ;;
mixed-map) want='"maps":2,"unmaps":0,"mapped_bytes":8192,' ;;
coherent-map) want='"maps":1,"unmaps":0,"mapped_bytes":4096,' ;;
*)
    echo "unknown misuse $misuse" >&2
    exit 1
    ;;
esac
case $row in
*"$want"*) ;;
*)
    echo "the domain line does not have $want: $row" >&2
    exit 1
    ;;
esac
echo "ok - the audit saw domain 0x$domain of pid $pid tied to $bdf with $want"
# The finding's evidence says what was done, and names the device.
if [ "$expect" = finding ]; then
    case $misuse in
    short-unmap) evidence='asked for 8.0 KiB at IOVA 0x100000 and unmapped 4.0 KiB' ;;
    noncoherent-map) evidence='sit behind an IOMMU with snoop control' ;;
    mixed-map) evidence='IOVA 0x101000, prot 0x3. The same domain got 1 map(s) with IOMMU_CACHE: mixed attributes' ;;
    coherent-map) evidence="4.0 KiB more was mapped into it than unmapped, by pid $pid insmod" ;;
    esac
    finding=$(grep '"type":"finding"' "$out/audit.jsonl" | tail -1)
    case $finding in
    *"$evidence"*"\"devices\":[\"$bdf\"]"* | *"\"devices\":[\"$bdf\"]"*"$evidence"*) ;;
    *)
        echo "the finding does not say '$evidence' and name $bdf: $finding" >&2
        exit 1
        ;;
    esac
    echo "ok - the finding names $bdf and says '$evidence'"
fi
# mappings-outlive-owner is about a domain whose owner is gone: it names no process.
case $rule in
mappings-outlive-owner) expected=$rule ;;
*) expected=$rule@$pid ;;
esac
check_audit_outcome "$out" "$status" "$table_status" "$expect" "$expected"
