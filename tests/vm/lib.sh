# Helpers the scenario scripts share (busybox ash). In the guest at /xtask/lib.sh; a scenario
# sets N (its name) first, and FIO_LOG if fail() should show a fio output file, then sources it:
#     N=70-recovery-kill9-loop FIO_LOG=/tmp/r70.fio
#     . /xtask/lib.sh

# fail MESSAGE...: reports the failure (with fio's output and the server log's tail) and exits 1.
fail() {
    echo "$N: FAIL: $*" >&2
    [ -n "${FIO_LOG:-}" ] && [ -f "$FIO_LOG" ] && sed "s/^/$N: fio: /" "$FIO_LOG" >&2
    tail -20 /run/ublk/server.log 2>/dev/null | sed "s/^/$N: server.log: /" >&2
    exit 1
}

# entry ID: device ID's object in `ublk list --json`.
entry() {
    timeout 30 ublk list --json | tr '{' '\n' | grep "\"id\":$1,"
}

# field ID KEY: the value of scalar KEY in device ID's `ublk list --json` entry.
field() {
    entry "$1" | sed "s/.*\"$2\":\"\{0,1\}\([^,\"]*\).*/\1/"
}

# wait_state ID STATE: up to 60 s (a full queue is noticed only at the 30 s request timeout).
wait_state() {
    tries=0
    until [ "$(field "$1" state)" = "$2" ]; do
        tries=$((tries + 1))
        [ "$tries" -le 600 ] || fail "device $1 is $(field "$1" state), not $2, after 60 s"
        sleep 0.1
    done
}

# running PID: whether PID exists and is not a zombie.
running() {
    case $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) in '' | Z) return 1 ;; esac
}

# d_state: processes in D state, as pid:comm; waits up to 5 s for transient ones to leave it.
d_state() {
    tries=0
    while :; do
        found=
        for d in /proc/[0-9]*; do
            [ "$(sed 's/^.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f1)" = D ] || continue
            found="$found ${d#/proc/}:$(cat "$d/comm" 2>/dev/null)"
        done
        [ -n "$found" ] && [ "$tries" -lt 50 ] || break
        tries=$((tries + 1))
        sleep 0.1
    done
    echo "$found"
}

# written ID: sectors written to /dev/ublkbID so far (field 7 of the block stat file).
written() {
    awk '{ print $7 }' "/sys/block/ublkb$1/stat"
}
