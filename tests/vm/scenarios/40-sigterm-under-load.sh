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
cleanup() {
    for pid in ${FIO_PID:-} ${SERVER_PID:-}; do kill -9 "$pid" 2>/dev/null || true; done
    ublk del --all >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Wall clock in microseconds: busybox `date` has no %N, adjtimex shows tv_sec and tv_usec.
now_us() {
    adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d%06d\n", s, u }'
}

# deadline SECS: the time SECS seconds from now; past DEADLINE: whether it has come.
deadline() {
    echo $(($(now_us) + $1 * 1000000))
}
past() {
    [ "$(now_us)" -gt "$1" ]
}

# wait_exit PID SECS WHAT: waits for PID to exit (zombie or gone); on timeout kills it and fails.
wait_exit() {
    until=$(deadline "$2")
    while running "$1"; do
        if past "$until"; then
            kill -9 "$1" 2>/dev/null || true
            fail "$3 (pid $1) did not exit within $2 s (state $(proc_state "$1"), wchan $(cat "/proc/$1/wchan" 2>/dev/null))"
        fi
        sleep 0.1
    done
}


# under_load TARGET SIGNAL ADD-ARGS...
under_load() {
    target=$1 sig=$2
    shift 2
    what="$target, SIG$sig"
    : >/tmp/server.out
    ublk add "$target" "$@" --foreground >/tmp/server.out 2>/tmp/server.err &
    SERVER_PID=$!
    until=$(deadline 60)
    until grep -q ' /dev/ublkb' /tmp/server.out; do
        running "$SERVER_PID" || fail "$what: the server exited before its device went live: $(cat /tmp/server.err)"
        ! past "$until" || fail "$what: the device was not live within 60 s: $(cat /tmp/server.err)"
        sleep 0.1
    done
    line=$(head -1 /tmp/server.out)
    id=${line%% *}
    dev=${line#* }
    [ "$dev" = "/dev/ublkb$id" ] && [ -b "$dev" ] || fail "$what: the server printed '$line'"
    timeout 30 ublk list --json | grep -q "\"id\":$id,\"state\":\"LIVE\".*\"pid\":$SERVER_PID," ||
        fail "$what: ublk list --json does not show device $id LIVE with server pid $SERVER_PID: $(ublk list --json)"

    fio_start=$(now_us)
    # Mixed jobs: once the disk is deleted its capacity is 0, so reads see end-of-file (0 bytes,
    # no error) and a read-only job would spin to the end of its runtime; writes fail (ENOSPC).
    fio --filename="$dev" --ioengine=io_uring --direct=1 --bs=4k --iodepth=32 --time_based --runtime=60 \
        --rw=randrw --name=load1 --name=load2 >/tmp/fio.out 2>&1 &
    FIO_PID=$!
    # The load must be flowing before the signal: completed reads and writes in /sys/block/*/stat.
    until=$(deadline 30)
    until [ "$(awk '{ print ($1 > 0 && $5 > 0) }' "/sys/block/ublkb$id/stat" 2>/dev/null)" = 1 ]; do
        running "$FIO_PID" || fail "$what: fio exited before any I/O completed: $(cat /tmp/fio.out)"
        ! past "$until" || fail "$what: no I/O completed within 30 s of starting fio"
        sleep 0.1
    done
    sleep 2
    running "$FIO_PID" || fail "$what: fio stopped before the signal: $(cat /tmp/fio.out)"
    stat=$(awk '{ print $1 " reads, " $5 " writes done, " $9 " in flight" }' "/sys/block/ublkb$id/stat")

    signalled=$(now_us)
    kill -"$sig" "$SERVER_PID"
    wait_exit "$SERVER_PID" 20 "$what: the server"
    server_ms=$((($(now_us) - signalled) / 1000))
    rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    [ "$rc" -eq 0 ] || fail "$what: the server exited $rc after SIG$sig: $(tail -5 /tmp/server.err)"
    ! grep -q panicked /tmp/server.err || fail "$what: the server panicked: $(cat /tmp/server.err)"

    wait_exit "$FIO_PID" 30 "$what: fio"
    fio_ms=$((($(now_us) - signalled) / 1000))
    fio_total_s=$((($(now_us) - fio_start) / 1000000))
    fio_rc=0
    wait "$FIO_PID" || fio_rc=$?
    FIO_PID=
    [ "$fio_rc" -ne 0 ] || fail "$what: fio exited 0 although its device went away under it: $(tail -5 /tmp/fio.out)"
    [ "$fio_total_s" -lt 45 ] || fail "$what: fio ran ${fio_total_s} s of its 60 s despite the device going away"

    # d_state waits up to 5 s for transient D states to clear.
    stuck=$(d_state)
    [ -z "$stuck" ] || fail "$what: processes in D state 5 s after fio exited: $stuck"
    [ ! -e "$dev" ] || fail "$what: $dev still exists after the server exited"
    [ ! -e "/dev/ublkc$id" ] || fail "$what: /dev/ublkc$id still exists after the server exited"
    json=$(timeout 30 ublk list --json) || fail "$what: ublk list --json failed"
    [ "$json" = "[]" ] || fail "$what: ublk list --json still shows $json"
    left=$(ublk_processes)
    [ -z "$left" ] || fail "$what: ublk processes left: $left"
    fio_error=$(grep -m1 -iE 'error|err=' /tmp/fio.out || true)
    echo "$N: ok: $what at $stat: server exited 0 after $server_ms ms; fio exited $fio_rc after $fio_ms ms (${fio_total_s} s into its 60 s run): $fio_error"
    echo "$N: ok: $what: no D-state process, $dev and /dev/ublkc$id gone, ublk list empty, no ublk process"
}

under_load mem TERM --size 256M --queues 2
under_load null INT --queues 2
