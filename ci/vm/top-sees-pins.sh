#!/bin/sh
# ioasid-top must report exactly what a workload pins, from events and from the start-up state.
# 1. ioasid-top (events) attaches; 2. vfio-edu-workload maps, does its DMA and holds;
# 3. a second ioasid-top starts while it holds and reads the start-up state (/proc: VmPin,
# VmLck, /dev/ioasid fdinfo); 4. the workload unmaps and exits; 5. the first ioasid-top stops.
# check-top-maps --pins compares both with the workload's own maps and VmPin/VmLck.
# Usage: top-sees-pins.sh BACKEND (iommufd | type1 | ioasid) [MAPS SIZE]
# TOP_ARGS: more options for the first ioasid-top; with --kprobes-only every pinning probe must
# attach as a kprobe (+ kretprobe: arguments stashed at entry), and count the same.
set -eu
. ci/vm/lib.sh
backend=$1
maps=${2:-4}
size=${3:-64K}
out=${IOASID_VM_OUT:?run me through cargo xtask vm}
rm -f "$out/release"

# shellcheck disable=SC2086 # TOP_ARGS is a list of options
ioasid-top --once --json --interval 600 ${TOP_ARGS:-} > "$out/pins-events.jsonl" 2> "$out/pins-events.stderr" &
top=$!
if ! wait_until $top grep -qs '"fn":"iopt_pages_update_pinned"' "$out/pins-events.jsonl"; then
    echo "ioasid-top did not attach:" >&2
    cat "$out/pins-events.stderr" >&2
    exit 1
fi

vfio-edu-workload --backend "$backend" --maps "$maps" --size "$size" \
    --hold-until "$out/release" > "$out/pins-workload.json" &
wl=$!
if ! wait_until $wl grep -qs '"held":true' "$out/pins-workload.json"; then
    echo "the workload did not reach its hold point" >&2
    kill -INT $top || true
    exit 1
fi
ioasid-top --once --json --interval 0.5 > "$out/pins-start.jsonl" 2> "$out/pins-start.stderr"
: > "$out/release"
wait $wl
kill -INT $top
wait $top
cat "$out/pins-events.stderr" >&2
grep '"type":"startup"' "$out/pins-start.jsonl" || true
grep '"type":"pinned"' "$out/pins-events.jsonl" || true
check-top-maps --pins "$out/pins-events.jsonl" "$out/pins-start.jsonl" "$out/pins-workload.json"
case " ${TOP_ARGS:-} " in
*" --kprobes-only "*)
    for f in pin_user_pages_fast unpin_user_page_range_dirty_lock unpin_user_pages_dirty_lock \
        __account_locked_vm iopt_pages_update_pinned; do
        grep '"type":"probe"' "$out/pins-events.jsonl" | grep -q "\"fn\":\"$f\",\"attach\":\"kprobe\"" || {
            echo "--kprobes-only: $f is not traced by a kprobe:" >&2
            grep '"type":"probe"' "$out/pins-events.jsonl" >&2
            exit 1
        }
    done
    ;;
esac
