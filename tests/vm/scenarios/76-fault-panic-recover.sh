#!/bin/sh
# 76-fault-panic-recover: a queue that fails does not take a recoverable device with it. A
# `fault` device over a tmpfs file, added with `--recovery reissue`, panics its queue thread at
# its 300th request while fio writes and verifies. The server must say why and exit non-zero,
# leaving the device QUIESCED (not deleted) with fio waiting and the device's record in place;
# `ublk recover` must bring it LIVE (the new server does not panic again) and fio must finish
# with no error, its verify clean. With the device deleted, a verify-only pass over the
# backing file proves nothing fio was told was written is missing.
set -eu

N=76-fault-panic-recover
FIO_LOG=/tmp/r76.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r76.img
JOB="--name=r76 --rw=randwrite --bsrange=512-64k --size=32M --verify=crc32c --verify_fatal=1 --randrepeat=1"

dd if=/dev/zero of="$IMG" bs=1M count=0 seek=64 2>/dev/null || fail "cannot create $IMG"
add_dev dev fault --file "$IMG" --recovery reissue --panic-after 300
echo "$N: device $dev_id: fault over $IMG, the queue panics at its 300th request"
old=$(field "$dev_id" pid)

# shellcheck disable=SC2086 # JOB is a list of options.
fio --eta=never $JOB --filename="$dev_path" --ioengine=io_uring --direct=1 --iodepth=16 \
    --output=/tmp/r76.fio &
fio_pid=$!

wait_exit "$old" 60 "the server whose queue panicked"
wait_state "$dev_id" QUIESCED
running "$fio_pid" || fail "fio exited when the queue panicked (I/O failed instead of waiting)"
grep -q "panic at request 300" /run/ublk/server.log || fail "the panic is not in the server log"
grep -q "device $dev_id: .*left for a new server" /run/ublk/server.log ||
    fail "the server did not say it left device $dev_id for a new server"
[ -f "/run/ublk/$dev_id.rec" ] || fail "the device's record was removed: ublk recover would refuse"
echo "$N: queue panicked; server $old gone, device QUIESCED with fio waiting, record kept"

out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/recover.err) ||
    fail "ublk recover $dev_id exited $?: $(cat /tmp/recover.err)"
[ "$out" = "$dev_id $dev_path" ] || fail "ublk recover printed '$out', expected '$dev_id $dev_path'"
wait_state "$dev_id" LIVE 10
new=$(field "$dev_id" pid)
[ "$new" != "$old" ] && running "$new" || fail "server pid after recovery is '$new' (was $old)"
echo "$N: recovered, LIVE with server $new"

rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" /tmp/r76.fio || fail "fio reported errors"
running "$new" || fail "the recovered server died: it panicked again"

del_dev dev
# shellcheck disable=SC2086
fio --eta=never $JOB --filename="$IMG" --ioengine=psync --verify_only --output=/tmp/r76.fio ||
    fail "verify-only over the backing file failed"
grep -q "err= 0" /tmp/r76.fio || fail "verify-only over the backing file reported errors"
nothing_left "after del"
echo "$N: ok: a panicking queue left the device for recovery; recovered under fio verify with 0 errors"
