# Helpers the scenario scripts share (busybox ash). In the guest at /xtask/lib.sh; a scenario
# sets N (its name) first, and FIO_LOG if fail() should show a fio output file, then sources it:
#     N=70-recovery-kill9-loop FIO_LOG=/tmp/r70.fio
#     . /xtask/lib.sh
#     trap cleanup EXIT

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

# proc_state PID: the state letter of PID (R, S, D, Z ...), empty if it is gone. The comm field
# may hold spaces, so take what follows its closing parenthesis.
proc_state() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1
}

# running PID: whether PID exists and is not a zombie.
running() {
    case $(proc_state "$1") in '' | Z) return 1 ;; esac
}

# ublk_processes: the pids of running (not zombie) processes named `ublk`.
ublk_processes() {
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = ublk ] && running "${d#/proc/}" && echo "${d#/proc/}"
    done
    true
}

# d_state: processes in D state, as pid:comm; waits up to 5 s for transient ones to leave it.
d_state() {
    tries=0
    while :; do
        found=
        for d in /proc/[0-9]*; do
            [ "$(proc_state "${d#/proc/}")" = D ] || continue
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

# ios ID: requests completed on /dev/ublkbID so far (reads plus writes, fields 1 and 5).
ios() {
    awk '{ print $1 + $5 }' "/sys/block/ublkb$1/stat"
}

# wait_io COUNTER ID MORE: waits up to 60 s, while fio ($fio_pid) runs, until `COUNTER ID`
# (written or ios) has grown by MORE from now; fails if fio exits first or the count stalls.
wait_io() {
    from=$("$1" "$2")
    tries=0
    while [ "$("$1" "$2")" -lt $((from + $3)) ]; do
        running "$fio_pid" || fail "fio exited before $1 on device $2 grew by $3"
        tries=$((tries + 1))
        [ "$tries" -le 600 ] || fail "no I/O reaches device $2 ($1 grew by less than $3 in 60 s)"
        sleep 0.1
    done
}

# refused LABEL WORDS COMMAND...: COMMAND must fail (exit 1 for our errors, 2 for clap's) with one
# stderr line containing "error" and WORDS (case-insensitive), print nothing on stdout and not
# panic. Then, if the scenario set REFUSED_CHECK, `$REFUSED_CHECK LABEL` runs (15 checks that
# nothing was left behind).
refused() {
    label=$1 words=$2
    shift 2
    rc=0
    "$@" >/tmp/bad.out 2>/tmp/bad.err || rc=$?
    shown="'$*' (exit $rc, stderr: $(cat /tmp/bad.err))"
    [ "$rc" -ne 0 ] || fail "$label: $shown succeeded; stdout: $(cat /tmp/bad.out)"
    [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ] || fail "$label: $shown: expected exit status 1 or 2 (124+ means timeout or a signal)"
    ! grep -q panicked /tmp/bad.out /tmp/bad.err || fail "$label: $shown panicked"
    [ ! -s /tmp/bad.out ] || fail "$label: $shown printed on stdout: $(cat /tmp/bad.out)"
    errors=$(grep -ci error /tmp/bad.err || true)
    [ "$errors" -eq 1 ] || fail "$label: $shown: expected one error line on stderr, got $errors"
    line=$(grep -i error /tmp/bad.err)
    # clap names a missing argument on the line after its error line, so search all of stderr.
    grep -qiF -- "$words" /tmp/bad.err || fail "$label: $shown: stderr does not mention '$words'"
    case $line in *"$words"*) ;; *) line="$line $(grep -F -- "$words" /tmp/bad.err | head -1)" ;; esac
    [ -z "${REFUSED_CHECK:-}" ] || "$REFUSED_CHECK" "$label"
    echo "$N: ok: $label: exit $rc: $line"
}

# cleanup: what a scenario's EXIT trap does: kill fio ($fio_pid) if it runs, delete every device.
cleanup() {
    [ -z "${fio_pid:-}" ] || kill -9 "$fio_pid" 2>/dev/null || true
    ublk del --all >/dev/null 2>&1 || true
}

# --- Skips (the protocol vm-e2e judges; see tests/vm/README.md) -------------------------------
# needs_linux X.Y FEATURE: if the guest's kernel (`uname -r`) is older than Linux X.Y, which
# brings FEATURE, prints `SKIP: needs FEATURE (Linux X.Y)` and exits 77: vm-e2e counts the
# scenario as skipped. Name the release that really brings the feature: on a kernel that is
# X.Y or newer a skip is a failure.
needs_linux() {
    _nl_have=$(uname -r)
    _nl_have_major=${_nl_have%%.*}
    _nl_have_minor=${_nl_have#*.}
    _nl_have_minor=${_nl_have_minor%%[!0-9]*}
    _nl_want_major=${1%%.*}
    _nl_want_minor=${1#*.}
    if [ "$_nl_have_major" -lt "$_nl_want_major" ] ||
        { [ "$_nl_have_major" -eq "$_nl_want_major" ] && [ "$_nl_have_minor" -lt "$_nl_want_minor" ]; }; then
        echo "SKIP: needs $2 (Linux $1)"
        exit 77
    fi
}
