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

out=$(timeout 60 ublk add mem --size 256M --queues 2 2>/tmp/add.err) || fail "ublk add mem exited $?: $(cat /tmp/add.err)"
id=${out%% *}
dev=${out#* }
fio --eta=never --name=r73 --filename="$dev" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k --iodepth=32 \
    --time_based --runtime=60 --output=/tmp/r73.fio 2>/tmp/r73.err &
fio_pid=$!
wait_io ios "$id" 1000

server=$(field "$id" pid)
kill -9 "$server" || fail "cannot kill server $server"
tries=0
while running "$fio_pid"; do
    tries=$((tries + 1))
    [ "$tries" -le 300 ] || fail "fio still running 30 s after its device's server was killed (I/O hangs)"
    sleep 0.1
done
rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -ne 0 ] || fail "fio succeeded although its device's server was killed"
echo "$N: server $server killed: fio exited $rc with I/O errors after $((tries / 10)).$((tries % 10)) s"

state=$(field "$id" state)
[ "$state" = DEAD ] || fail "device $id is '$state' after its server was killed, expected DEAD"
timeout 30 ublk list | grep -q "^$id  *DEAD " || fail "ublk list does not show DEAD: $(ublk list)"

rc=0
timeout 30 ublk recover "$id" >/tmp/recover.out 2>/tmp/recover.err || rc=$?
[ "$rc" -eq 1 ] || fail "ublk recover of a device without recovery exited $rc: $(cat /tmp/recover.err)"
grep -q "without user recovery" /tmp/recover.err || fail "unclear error: $(cat /tmp/recover.err)"
echo "$N: ublk recover refused: $(cat /tmp/recover.err)"

timeout 30 ublk del "$id" >/dev/null 2>/tmp/del.err || fail "ublk del of a DEAD device exited $?: $(cat /tmp/del.err)"
[ ! -e "$dev" ] && [ ! -e "/dev/ublkc$id" ] || fail "device nodes of $id left after ublk del"
[ "$(timeout 30 ublk list --json)" = "[]" ] || fail "devices left: $(ublk list --json)"
[ ! -e "/run/ublk/$id.rec" ] || fail "record of device $id left after ublk del"
stuck=$(d_state)
[ -z "$stuck" ] || fail "processes in D state:$stuck"
echo "$N: ok: I/O failed (no hang), device DEAD, recover refused, deleted, no D state"
