#!/bin/sh
# 96-nbd-recovery: `ublk recover` brings an NBD device back after its server (the ublk process)
# dies. A device added with `--recovery reissue` over nbdkit's file plugin takes fio random
# writes with crc32c verify; its ublk server is killed with SIGKILL: the device goes QUIESCED with
# fio waiting, `ublk recover` starts a new server that connects to nbdkit again (as the record
# says) and the device is LIVE; fio finishes with no error, and the file holds every block.
set -eu

N=96-nbd-recovery
FIO_LOG=/tmp/$N.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
trap cleanup EXIT

IMG=/tmp/$N.img
dd if=/dev/zero of="$IMG" bs=1M count=0 seek=128 2>/dev/null
JOB="--name=r96 --rw=randwrite --bs=4k --size=64M --verify=crc32c --verify_fatal=1 --randrepeat=1"
rm -f /tmp/$N.sock # a killed nbdkit leaves its socket, and a new one will not listen there
# One thread per connection: nbdkit 1.32 (Debian 12's) can abort when a client vanishes while
# several of a connection's threads are replying (one gets EPIPE and shuts the socket, the next
# asserts `sock >= 0` in raw_send_socket), which is what killing the ublk server does; with one
# thread the reply that fails is the last. CI saw it on both kernels.
nbdkit_up file -U /tmp/$N.sock --threads 1 file "$IMG"
add_dev dev nbd --unix /tmp/$N.sock --recovery reissue
# shellcheck disable=SC2086 # JOB is a list of options.
fio --eta=never $JOB --filename="$dev_path" --ioengine=io_uring --direct=1 --iodepth=16 \
    --rate_iops=2000 --output="$FIO_LOG" &
fio_pid=$!
wait_io written "$dev_id" 2048
old=$(field "$dev_id" pid)
kill -9 "$old" || fail "cannot kill server $old"
wait_state "$dev_id" QUIESCED
running "$fio_pid" || fail "fio exited when the server was killed"
# The NBD server must have outlived the ublk server: if it did not, say so rather than blame
# recovery (once, on 6.12 in CI, recovery found nothing listening on the socket).
running "$file_pid" || fail "nbdkit died with the ublk server: $(cat /tmp/nbdkit-file.out)"
out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/$N.err) ||
    fail "ublk recover exited $?: $(cat /tmp/$N.err); nbdkit $(running "$file_pid" && echo running ||
        echo gone): $(cat /tmp/nbdkit-file.out)"
[ "$out" = "$dev_id $dev_path" ] || fail "ublk recover printed '$out'"
[ "$(field "$dev_id" state)" = LIVE ] || fail "after recover: $(entry "$dev_id")"
[ "$(field "$dev_id" server)" = "unix:/tmp/$N.sock" ] || fail "after recover: $(entry "$dev_id")"
new=$(field "$dev_id" pid)
[ "$new" != "$old" ] || fail "the same server pid after recovery"
echo "$N: ok: server $old killed, recovered by $new, LIVE"
rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" "$FIO_LOG" || fail "fio reported errors"
del_dev dev
# shellcheck disable=SC2086
fio --eta=never $JOB --filename="$IMG" --ioengine=psync --verify_only --output="$FIO_LOG" ||
    fail "verify-only over the file failed"
grep -q "err= 0" "$FIO_LOG" || fail "verify-only over the file reported errors"
echo "$N: ok: fio through the recovery clean; the file holds every block"
