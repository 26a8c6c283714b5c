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

# probes_at_least FILE N: ioasid-top's JSON Lines in FILE report N attached functions (a
# `probe` line each).
probes_at_least() {
    [ "$(grep -c '"type":"probe"' "$1" 2>/dev/null || true)" -ge "$2" ]
}
