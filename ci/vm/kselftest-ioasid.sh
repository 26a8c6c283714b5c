#!/bin/sh
# The /dev/ioasid kselftests. A test skips when /dev/ioasid answers ENOTTY for its ioctl; only
# the ioctls in NOT_YET may do that, so an ioctl that regresses to ENOTTY fails the scenario
# instead of passing as a skip.
set -u
NOT_YET="IOMMU_IOAS_MAP_FILE"
out=${IOASID_VM_OUT:?run me through cargo xtask vm}/kselftest.txt
test -c /dev/ioasid || { echo "/dev/ioasid is missing (CONFIG_IOASID?)"; exit 1; }
target/selftests/ioasid > "$out"
rc=$?
cat "$out"
[ $rc -eq 0 ] || exit $rc
if grep '# SKIP' "$out" | grep -v -E "($NOT_YET) not implemented"; then
    echo "the skips above are not expected: only $NOT_YET may still answer ENOTTY"
    exit 1
fi
