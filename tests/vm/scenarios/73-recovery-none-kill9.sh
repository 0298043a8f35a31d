#!/bin/sh
# 73-recovery-none-kill9: without recovery a crash must fail I/O, not hang it. A mem device added
# without --recovery serves fio when its server is killed with SIGKILL: fio must exit with I/O
# errors within 30 s, the device must show DEAD in `ublk list`, `ublk recover` must refuse it
# (created without user recovery), `ublk del` must remove it, and no process may be left in D state.
set -eu

N=73-recovery-none-kill9
FIO_LOG=/tmp/r73.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

add_dev dev mem --size 256M --queues 2
fio --eta=never --name=r73 --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
    --iodepth=32 --time_based --runtime=60 --output=/tmp/r73.fio 2>/tmp/r73.err &
fio_pid=$!
wait_io ios "$dev_id" 1000

server=$(field "$dev_id" pid)
kill -9 "$server" || fail "cannot kill server $server"
fio_fails "server killed without recovery (I/O must fail, not hang)" 30
echo "$N: server $server killed: fio exited $fio_rc with I/O errors after $waited_ms ms"

state=$(field "$dev_id" state)
[ "$state" = DEAD ] || fail "device $dev_id is '$state' after its server was killed, expected DEAD"
timeout 30 ublk list | grep -q "^$dev_id  *DEAD " || fail "ublk list does not show DEAD: $(ublk list)"

rc=0
timeout 30 ublk recover "$dev_id" >/tmp/recover.out 2>/tmp/recover.err || rc=$?
[ "$rc" -eq 1 ] || fail "ublk recover of a device without recovery exited $rc: $(cat /tmp/recover.err)"
grep -q "without user recovery" /tmp/recover.err || fail "unclear error: $(cat /tmp/recover.err)"
echo "$N: ublk recover refused: $(cat /tmp/recover.err)"

del_dev dev 30
nothing_left "after ublk del of the DEAD device"
[ ! -e "/run/ublk/$dev_id.rec" ] || fail "record of device $dev_id left after ublk del"
no_d_state "at the end"
echo "$N: ok: I/O failed (no hang), device DEAD, recover refused, deleted, no D state"
