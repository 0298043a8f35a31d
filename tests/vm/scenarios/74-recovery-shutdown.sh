#!/bin/sh
# 74-recovery-shutdown: graceful shutdown and delete under load never hang.
#  (a) SIGTERM, then SIGINT, to an idle background server (the same binary run with --foreground
#      --ready-fd): it stops and deletes its device, removes its record and exits, within 10 s;
#      also for a device added with --recovery (a graceful stop is not a crash: the device goes).
#  (b) SIGTERM to a background server while fio runs on its device: the device goes, fio exits
#      with errors, the server exits, all within 15 s.
#  (c) `ublk del` while fio runs: returns within 10 s, fio exits with errors, the server exits.
#  (d) `ublk del` of a device with --recovery reissue whose server was killed (QUIESCED) while fio waits
#      on it: returns within 10 s and fio exits with errors instead of waiting forever.
# After each: no device left and no process in D state.
set -eu

N=74-recovery-shutdown
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

# wait_exit PID SECS WHAT: fails if PID still runs after SECS seconds; prints the tenths waited.
wait_exit() {
    tries=0
    while running "$1"; do
        tries=$((tries + 1))
        [ "$tries" -le $(($2 * 10)) ] || fail "$3: pid $1 ($(cat "/proc/$1/comm" 2>/dev/null)) still running after $2 s"
        sleep 0.1
    done
    echo "$tries"
}
nothing_left() {
    json=$(timeout 30 ublk list --json) || fail "$1: ublk list failed"
    [ "$json" = "[]" ] || fail "$1: devices left: $json"
    stuck=$(d_state)
    [ -z "$stuck" ] || fail "$1: processes in D state:$stuck"
}
# add ARGS...: sets $id, $dev, $server.
add() {
    out=$(timeout 60 ublk add "$@" 2>/tmp/add.err) || fail "ublk add $* exited $?: $(cat /tmp/add.err)"
    id=${out%% *}
    dev=${out#* }
    server=$(field "$id" pid)
    running "$server" || fail "ublk add $*: server '$server' not running"
}
# start_fio: random read/write on $dev in the background until stopped; waits until I/O flows.
start_fio() {
    fio --eta=never --name=r74 --filename="$dev" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
        --iodepth=32 --time_based --runtime=120 --output=/tmp/r74.fio 2>/tmp/r74.err &
    fio_pid=$!
    wait_io ios "$id" 1000
}
# fio_failed WHAT: fio must exit (within 15 s) with a non-zero status.
fio_failed() {
    wait_exit "$fio_pid" 15 "$1: fio" >/dev/null
    rc=0
    wait "$fio_pid" || rc=$?
    fio_pid=
    [ "$rc" -ne 0 ] || fail "$1: fio succeeded although its device went away"
}

# (a)
for sig in TERM INT; do
    for recovery in "" "--recovery reissue"; do
        # shellcheck disable=SC2086 # $recovery is zero or two words.
        add mem --size 64M $recovery
        [ -e "/run/ublk/$id.rec" ] || fail "no record /run/ublk/$id.rec for a live device"
        kill -"$sig" "$server"
        t=$(wait_exit "$server" 10 "SIG$sig${recovery:+ with $recovery}")
        [ ! -e "$dev" ] || fail "SIG$sig: $dev still exists after its server exited"
        [ ! -e "/run/ublk/$id.rec" ] || fail "SIG$sig: record left after a graceful stop"
        nothing_left "SIG$sig"
        grep -q "SIG$sig: stopping device $id" /run/ublk/server.log || fail "SIG$sig: not in server.log"
        echo "$N: ok: SIG$sig${recovery:+ ($recovery)}: server stopped and deleted device $id in $((t / 10)).$((t % 10)) s"
    done
done

# (b)
add mem --size 256M --queues 2
start_fio
kill -TERM "$server"
t=$(wait_exit "$server" 15 "SIGTERM under load")
fio_failed "SIGTERM under load"
nothing_left "SIGTERM under load"
echo "$N: ok: SIGTERM under fio load: server gone in $((t / 10)).$((t % 10)) s, fio failed, nothing left"

# (c)
add mem --size 256M --queues 2
start_fio
rc=0
timeout 10 ublk del "$id" >/dev/null 2>/tmp/del.err || rc=$?
[ "$rc" -eq 0 ] || fail "ublk del under load exited $rc (124: took over 10 s): $(cat /tmp/del.err)"
fio_failed "ublk del under load"
wait_exit "$server" 10 "server after ublk del under load" >/dev/null
nothing_left "ublk del under load"
echo "$N: ok: ublk del under fio load returned, fio failed, server exited"

# (d)
add mem --size 256M --queues 2 --recovery reissue
start_fio
kill -9 "$server"
tries=0
until [ "$(field "$id" state)" = QUIESCED ]; do
    tries=$((tries + 1))
    [ "$tries" -le 600 ] || fail "device $id not QUIESCED 60 s after its server was killed"
    sleep 0.1
done
running "$fio_pid" || fail "fio exited although the device waits for recovery"
rc=0
timeout 10 ublk del "$id" >/dev/null 2>/tmp/del.err || rc=$?
[ "$rc" -eq 0 ] || fail "ublk del of a QUIESCED device exited $rc: $(cat /tmp/del.err)"
fio_failed "ublk del of a QUIESCED device"
nothing_left "ublk del of a QUIESCED device"
echo "$N: ok: ublk del of a QUIESCED device with waiting I/O returned, fio failed"
