# Shared by the in-VM scenario scripts, which source it: `. ci/vm/lib.sh`.

# wait_until PID CMD...: runs CMD every 0.1 s until it succeeds. Fails after 60 s, or as soon as
# process PID, which CMD waits on, has exited.
wait_until() {
    _pid=$1
    shift
    _tries=0
    until "$@"; do
        _tries=$((_tries + 1))
        if [ $_tries -gt 600 ] || ! kill -0 "$_pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
}

# bdf_of VENDOR:DEVICE (0x1234:0x11e8): prints the PCI address of the first such device.
bdf_of() {
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor"):$(cat "$d/device")" = "$1" ]; then
            echo "${d##*/}"
            return 0
        fi
    done
    echo "no PCI device $1: is the guest started with the PCIe NIC (pcie_nic)?" >&2
    return 1
}

# probes_at_least FILE N: ioasid-top's JSON Lines in FILE report N attached functions (a
# `probe` line each).
probes_at_least() {
    [ "$(grep -c '"type":"probe"' "$1" 2>/dev/null || true)" -ge "$2" ]
}

# start_top PREFIX N ARGS...: starts `ioasid-top ARGS...` in the background, its output to
# PREFIX.jsonl and its stderr to PREFIX.stderr, sets $top to its pid, and waits until N traced
# functions have their `probe` line; fails, showing its stderr, if it does not get there.
start_top() {
    _prefix=$1
    _n=$2
    shift 2
    ioasid-top "$@" > "$_prefix.jsonl" 2> "$_prefix.stderr" &
    top=$!
    if ! wait_until $top probes_at_least "$_prefix.jsonl" "$_n"; then
        echo "ioasid-top did not attach:" >&2
        cat "$_prefix.stderr" >&2
        return 1
    fi
}

# start_audits DIR: starts `ioasid-top audit --once --interval 600` twice in the background,
# JSON Lines to DIR/audit.jsonl (pid $top) and the table to DIR/audit.txt (pid $table), and waits
# until both have attached every probe; fails, showing why, if one does not.
start_audits() {
    ioasid-top audit --once --json --interval 600 > "$1/audit.jsonl" 2> "$1/audit.stderr" &
    top=$!
    ioasid-top audit --once --interval 600 > "$1/audit.txt" 2> "$1/audit-table.stderr" &
    table=$!
    if ! wait_until $top probes_at_least "$1/audit.jsonl" 6; then
        echo "ioasid-top audit did not attach:" >&2
        cat "$1/audit.stderr" >&2
        return 1
    fi
    # The table audit says so on stderr once its probes are attached (the last,
    # iopt_pages_update_pinned).
    if ! wait_until $table grep -qs 'iopt_pages_update_pinned' "$1/audit-table.stderr"; then
        echo "ioasid-top audit (table) did not attach:" >&2
        cat "$1/audit-table.stderr" >&2
        return 1
    fi
}

# stop_audits: stops the audits of start_audits (SIGINT: their final report) and sets $status
# and $table_status to their exit statuses.
stop_audits() {
    # One that died already says why in its stderr; the statuses below tell.
    kill -INT $top $table 2>/dev/null || true
    status=0
    wait $top || status=$?
    table_status=0
    wait $table || table_status=$?
}

# check_audit_outcome DIR STATUS TABLE_STATUS EXPECT FINDING: the JSON audit in DIR/audit.jsonl
# (exit status STATUS) has exactly FINDING (`rule@pid`) when EXPECT is `finding`, none when it
# is `clean` (check-audit); the table audit in DIR/audit.txt says as much, with the same status.
# Runs a workload under both audits: starts them, runs "$@" (it prints a line with
# "held":true and its "pid" on stdout, then holds until $OUT/release exists) with stdout to
# $OUT/workload.json, stops the audits while it holds, releases it and waits for it. Sets pid
# (the workload's), status and table_status (the audits' exit statuses).
# Usage: audit_held_workload OUT COMMAND...
audit_held_workload() {
    _out=$1
    shift
    rm -f "$_out/release"
    start_audits "$_out" || return 1
    "$@" > "$_out/workload.json" &
    _wl=$!
    if ! wait_until $_wl grep -qs '"held":true' "$_out/workload.json"; then
        echo "$1 did not reach its hold point" >&2
        kill -INT $top $table || true
        return 1
    fi
    pid=$(grep '"held":true' "$_out/workload.json" | grep -o '"pid":[0-9]*' | head -1 | cut -d: -f2)
    stop_audits
    : > "$_out/release"
    wait $_wl
}

check_audit_outcome() {
    _dir=$1
    _status=$2
    _table_status=$3
    case $4 in
    finding)
        check-audit "$_dir/audit.jsonl" "$_status" "$5" || return 1
        _header='audit: 1 finding(s)'
        ;;
    clean)
        check-audit "$_dir/audit.jsonl" "$_status" || return 1
        _header='audit: no findings'
        ;;
    *)
        echo "unknown expectation $4" >&2
        return 1
        ;;
    esac
    if [ "$_table_status" != "$_status" ] || ! grep -qx "$_header" "$_dir/audit.txt"; then
        echo "the table audit (exit status $_table_status) does not say '$_header' with status $_status" >&2
        return 1
    fi
    echo "ok - the table audit says '$_header', exit status $_table_status"
}
