#!/bin/sh
# 40-sigterm-under-load: a foreground server stopped by a signal while fio drives its device.
# `ublk add mem --foreground` (then `ublk add null --foreground`) is started by this script; fio
# runs a 60 s time-based random read/write load (2 jobs, QD32 each) on the device; 2 s after the
# load is flowing, the server gets SIGTERM (SIGINT for null). Then: the server exits 0 within
# 20 s, fio exits with an error long before its 60 s, no process is left in D state, the device
# is gone from /dev and from `ublk list`, and no `ublk` process is left.
set -eu

N=40-sigterm-under-load
# shellcheck source=../lib.sh
. /xtask/lib.sh
trap cleanup EXIT

# under_load TARGET SIGNAL ADD-ARGS...
under_load() {
    target=$1 sig=$2
    shift 2
    what="$target, SIG$sig"
    : >/tmp/server.out
    ublk add "$target" "$@" --foreground >/tmp/server.out 2>/tmp/server.err &
    server_pid=$!
    end=$(deadline 60)
    until grep -q ' /dev/ublkb' /tmp/server.out; do
        running "$server_pid" || fail "$what: the server exited before its device went live: $(cat /tmp/server.err)"
        ! past "$end" || fail "$what: the device was not live within 60 s: $(cat /tmp/server.err)"
        sleep 0.1
    done
    parse_dev dev "$(head -1 /tmp/server.out)" "$what: the server"
    timeout 30 ublk list --json | grep -q "\"id\":$dev_id,\"state\":\"LIVE\".*\"pid\":$server_pid," ||
        fail "$what: ublk list --json does not show device $dev_id LIVE with server pid $server_pid: $(ublk list --json)"

    fio_start=$(now_us)
    # Mixed jobs: once the disk is deleted its capacity is 0, so reads see end-of-file (0 bytes,
    # no error) and a read-only job would spin to the end of its runtime; writes fail (ENOSPC).
    fio --filename="$dev_path" --ioengine=io_uring --direct=1 --bs=4k --iodepth=32 --time_based --runtime=60 \
        --rw=randrw --name=load1 --name=load2 >/tmp/fio.out 2>&1 &
    fio_pid=$!
    # The load must be flowing before the signal: completed reads and writes in /sys/block/*/stat.
    end=$(deadline 30)
    until [ "$(awk '{ print ($1 > 0 && $5 > 0) }' "/sys/block/ublkb$dev_id/stat" 2>/dev/null)" = 1 ]; do
        running "$fio_pid" || fail "$what: fio exited before any I/O completed: $(cat /tmp/fio.out)"
        ! past "$end" || fail "$what: no I/O completed within 30 s of starting fio"
        sleep 0.1
    done
    sleep 2
    running "$fio_pid" || fail "$what: fio stopped before the signal: $(cat /tmp/fio.out)"
    stat=$(awk '{ print $1 " reads, " $5 " writes done, " $9 " in flight" }' "/sys/block/ublkb$dev_id/stat")

    signalled=$(now_us)
    kill -"$sig" "$server_pid"
    wait_exit "$server_pid" 20 "$what: the server"
    server_ms=$(ms_since "$signalled")
    rc=0
    wait "$server_pid" || rc=$?
    server_pid=
    [ "$rc" -eq 0 ] || fail "$what: the server exited $rc after SIG$sig: $(tail -5 /tmp/server.err)"
    ! grep -q panicked /tmp/server.err || fail "$what: the server panicked: $(cat /tmp/server.err)"

    wait_exit "$fio_pid" 30 "$what: fio"
    fio_ms=$(ms_since "$signalled")
    fio_total_s=$((($(now_us) - fio_start) / 1000000))
    fio_rc=0
    wait "$fio_pid" || fio_rc=$?
    fio_pid=
    [ "$fio_rc" -ne 0 ] || fail "$what: fio exited 0 although its device went away under it: $(tail -5 /tmp/fio.out)"
    [ "$fio_total_s" -lt 45 ] || fail "$what: fio ran ${fio_total_s} s of its 60 s despite the device going away"

    no_d_state "$what: 5 s after fio exited"
    nothing_left "$what: after the server exited"
    fio_error=$(grep -m1 -iE 'error|err=' /tmp/fio.out || true)
    echo "$N: ok: $what at $stat: server exited 0 after $server_ms ms; fio exited $fio_rc after $fio_ms ms (${fio_total_s} s into its 60 s run): $fio_error"
    echo "$N: ok: $what: no D-state process, $dev_path and /dev/ublkc$dev_id gone, ublk list empty, no ublk process"
}

under_load mem TERM --size 256M --queues 2
under_load null INT --queues 2
