#!/bin/sh
# A mapping the IOMMU layer refuses, on BACKEND, with ioasid-top audit watching.
#
# The test kernel's fail_page_alloc (CONFIG_FAIL_PAGE_ALLOC, ci/kernel/test.config) is set to
# fail one page allocation, and only one made with iommu_map_nosync() on the stack
# (require-start/-end, its address range from /proc/kallsyms) by a task that asks for it
# (task-filter, /proc/<pid>/make-it-fail): a page-table page of the IOMMU domain. The workload
# maps 64 KiB for edu, then a second 64 KiB where the domain has no page table yet with
# make-it-fail set: iommu_map() returns -ENOMEM, the MAP fails with ENOMEM, and the workload
# checks that VmPin and VmLck are as before it (the backend undid its pins and charges).
# check-audit asserts exactly one finding, mapping-anomaly about the workload, exit status 3.
# Usage: audit-failed-map.sh BACKEND (type1 | iommufd | ioasid)
set -eu
. ci/vm/lib.sh
backend=$1
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
fail=/sys/kernel/debug/fail_page_alloc
if [ ! -d "$fail" ]; then
    echo "no $fail: the kernel lacks CONFIG_FAIL_PAGE_ALLOC or CONFIG_FAULT_INJECTION_DEBUG_FS" >&2
    exit 1
fi

start=$(awk '$3 == "iommu_map_nosync" { print $1; exit }' /proc/kallsyms)
end=$(sort /proc/kallsyms | awk -v s="$start" '$1 == s { found = 1; next } found { print $1; exit }')
if [ -z "$start" ] || [ -z "$end" ] || [ "$start" = 0000000000000000 ]; then
    echo "no address range for iommu_map_nosync in /proc/kallsyms (start '$start', end '$end')" >&2
    exit 1
fi
echo "failing one page allocation under iommu_map_nosync [0x$start, 0x$end) for make-it-fail tasks"
echo 0 > "$fail/probability"
echo "0x$start" > "$fail/require-start"
echo "0x$end" > "$fail/require-end"
echo Y > "$fail/task-filter"
echo N > "$fail/ignore-gfp-wait"
echo N > "$fail/ignore-gfp-highmem"
echo 0 > "$fail/min-order"
# 2: the forced failure is logged with its stack, checked below.
echo 2 > "$fail/verbose"
echo 1 > "$fail/times"
echo 100 > "$fail/probability"

audit_held_workload "$out" vfio-failed-map --backend "$backend" --hold-until "$out/release"
echo 0 > "$fail/probability"
left=$(cat "$fail/times")
cat "$out/workload.json"
cat "$out/audit.stderr" >&2
grep '"type":"finding"' "$out/audit.jsonl" || true
echo "ioasid-top audit exit status: $status"
cat "$out/audit.txt"
if [ "$left" -ne 0 ]; then
    echo "fail_page_alloc failed no allocation (times left: $left)" >&2
    exit 1
fi
# The audit saw the failure in the workload's domain, with its errno.
if ! grep '"type":"domain"' "$out/audit.jsonl" | grep "\"pid\":$pid," | grep -q '"failed_maps":[1-9]'; then
    echo "the audit's domain lines of pid $pid count no failed map" >&2
    exit 1
fi
if ! grep '"type":"finding"' "$out/audit.jsonl" | grep -q 'returned -12'; then
    echo "the mapping-anomaly finding does not give the errno -12 (ENOMEM)" >&2
    exit 1
fi
# The one forced failure was an allocation with iommu_map_nosync() on the stack.
if ! dmesg | sed -n '/FAULT_INJECTION: forcing a failure/,/end trace\|<\/TASK>/p' | grep -q iommu_map_nosync; then
    echo "dmesg does not show the forced allocation failure under iommu_map_nosync:" >&2
    dmesg | grep -A40 'FAULT_INJECTION' >&2 || true
    exit 1
fi
echo "ok - the MAP at 1 GiB failed with ENOMEM inside iommu_map, VmPin and VmLck unchanged"
check_audit_outcome "$out" "$status" "$table_status" finding "mapping-anomaly@$pid"
