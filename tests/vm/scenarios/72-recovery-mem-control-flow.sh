#!/bin/sh
# 72-recovery-mem-control-flow: the recovery control flow on a mem device (its data lives in the
# server and dies with it, so this proves no data integrity: 70 does, on loop). A mem device with
# `--recovery reissue` serves a time-based fio random read/write load (no verify) when its server
# is killed with SIGKILL. The device goes QUIESCED with fio still running, `ublk list` says so,
# `ublk recover` brings it LIVE under a new pid, and fio finishes with no I/O error. Then the same
# again (kill, recover) to show a recovered server is recoverable too, and `ublk del` removes the
# device and its server.
set -eu

N=72-recovery-mem-control-flow
FIO_LOG=/tmp/r72.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

add_dev dev mem --size 256M --recovery reissue --queues 2
timeout 30 ublk list | grep -q "^$dev_id  *LIVE " ||
    fail "ublk list does not show device $dev_id LIVE: $(ublk list)"

fio --eta=never --name=r72 --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
    --iodepth=32 --time_based --runtime=20 --output=/tmp/r72.fio &
fio_pid=$!

for round in 1 2; do
    wait_io ios "$dev_id" 1000
    old=$(field "$dev_id" pid)
    kill -9 "$old" || fail "round $round: cannot kill server $old"
    wait_state "$dev_id" QUIESCED
    timeout 30 ublk list | grep -q "^$dev_id  *QUIESCED " ||
        fail "ublk list does not show QUIESCED: $(ublk list)"
    running "$fio_pid" || fail "round $round: fio exited when the server was killed"
    out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/recover.err) ||
        fail "round $round: ublk recover $dev_id exited $?: $(cat /tmp/recover.err)"
    [ "$out" = "$dev_id $dev_path" ] || fail "round $round: ublk recover printed '$out'"
    new=$(field "$dev_id" pid)
    [ "$(field "$dev_id" state)" = LIVE ] && [ "$new" != "$old" ] && running "$new" ||
        fail "round $round: after recover: $(entry "$dev_id")"
    echo "$N: round $round: killed $old under load, QUIESCED, recovered by $new"
done

rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" /tmp/r72.fio || fail "fio reported errors"
server=$(field "$dev_id" pid)
del_dev dev
wait_exit "$server" 10 "the server after ublk del"
echo "$N: ok: 2 kills under fio load, no I/O error, recovered twice, deleted"
