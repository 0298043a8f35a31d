#!/bin/sh
# 74-recovery-shutdown: graceful shutdown and delete under load never hang.
#  (a) SIGTERM, then SIGINT, to an idle background server (the same binary run with --foreground
#      --ready-fd): it stops and deletes its device, removes its record and exits, within 10 s;
#      also for a device added with --recovery (a graceful stop is not a crash: the device goes).
#  (b) SIGTERM to a background server while fio runs on its device: the device goes, fio exits
#      with errors, the server exits, all within 15 s.
#  (c) `ublk del` while fio runs: returns within 10 s, fio exits with errors, the server exits.
#  (d) `ublk del` of a device with --recovery reissue whose server was killed (QUIESCED) while fio
#      waits on it: returns within 10 s and fio exits with errors instead of waiting forever.
# After each: no device, device node or ublk process left and no process in D state.
set -eu

N=74-recovery-shutdown
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

# add ARGS...: add_dev dev ARGS, and its server's pid as $server.
add() {
    add_dev dev "$@"
    server=$(field "$dev_id" pid)
    running "$server" || fail "ublk add $*: server '$server' not running"
}
# start_fio: random read/write on $dev_path in the background until stopped; waits until I/O flows.
start_fio() {
    fio --eta=never --name=r74 --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw \
        --bs=4k --iodepth=32 --time_based --runtime=120 --output=/tmp/r74.fio 2>/tmp/r74.err &
    fio_pid=$!
    wait_io ios "$dev_id" 1000
}

# (a)
for sig in TERM INT; do
    for recovery in "" "--recovery reissue"; do
        # shellcheck disable=SC2086 # $recovery is zero or two words.
        add mem --size 64M $recovery
        [ -e "/run/ublk/$dev_id.rec" ] || fail "no record /run/ublk/$dev_id.rec for a live device"
        kill -"$sig" "$server"
        wait_exit "$server" 10 "SIG$sig${recovery:+ with $recovery}"
        [ ! -e "$dev_path" ] || fail "SIG$sig: $dev_path still exists after its server exited"
        [ ! -e "/run/ublk/$dev_id.rec" ] || fail "SIG$sig: record left after a graceful stop"
        nothing_left "SIG$sig"
        no_d_state "SIG$sig"
        grep -q "SIG$sig: stopping device $dev_id" /run/ublk/server.log || fail "SIG$sig: not in server.log"
        echo "$N: ok: SIG$sig${recovery:+ ($recovery)}: server stopped and deleted device $dev_id" \
            "in $waited_ms ms"
    done
done

# (b)
add mem --size 256M --queues 2
start_fio
kill -TERM "$server"
wait_exit "$server" 15 "SIGTERM under load"
server_ms=$waited_ms
fio_fails "SIGTERM under load" 15
nothing_left "SIGTERM under load"
no_d_state "SIGTERM under load"
echo "$N: ok: SIGTERM under fio load: server gone in $server_ms ms, fio failed, nothing left"

# (c)
add mem --size 256M --queues 2
start_fio
rc=0
timeout 10 ublk del --force "$dev_id" >/dev/null 2>/tmp/del.err || rc=$?
[ "$rc" -eq 0 ] || fail "ublk del under load exited $rc (124: took over 10 s): $(cat /tmp/del.err)"
fio_fails "ublk del under load" 15
wait_exit "$server" 10 "server after ublk del under load"
nothing_left "ublk del under load"
no_d_state "ublk del under load"
echo "$N: ok: ublk del under fio load returned, fio failed, server exited"

# (d)
add mem --size 256M --queues 2 --recovery reissue
start_fio
kill -9 "$server"
wait_state "$dev_id" QUIESCED
running "$fio_pid" || fail "fio exited although the device waits for recovery"
rc=0
timeout 10 ublk del --force "$dev_id" >/dev/null 2>/tmp/del.err || rc=$?
[ "$rc" -eq 0 ] || fail "ublk del of a QUIESCED device exited $rc: $(cat /tmp/del.err)"
fio_fails "ublk del of a QUIESCED device" 15
nothing_left "ublk del of a QUIESCED device"
no_d_state "ublk del of a QUIESCED device"
echo "$N: ok: ublk del of a QUIESCED device with waiting I/O returned, fio failed"
