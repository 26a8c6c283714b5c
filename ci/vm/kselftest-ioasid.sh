#!/bin/sh
# The /dev/ioasid kselftests. A test skips when the device answers ENOTTY for its ioctl; every
# ioctl they use is implemented, so a skip (an ioctl that regressed to ENOTTY) fails the scenario
# instead of passing.
set -u
out=${IOASID_VM_OUT:?run me through cargo xtask vm}/kselftest.txt
test -c /dev/ioasid || { echo "/dev/ioasid is missing (CONFIG_IOASID?)"; exit 1; }
target/selftests/ioasid > "$out"
rc=$?
cat "$out"
[ $rc -eq 0 ] || exit $rc
if grep '# SKIP' "$out"; then
    echo "the skips above are not expected: every ioctl the tests use is implemented"
    exit 1
fi
