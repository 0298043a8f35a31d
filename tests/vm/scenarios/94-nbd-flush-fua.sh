#!/bin/sh
# 94-nbd-flush-fua: what the block layer asks of an NBD device reaches the server as the same
# command, counted in nbdkit's log filter: the device declares a write-back cache, FUA, discard and
# write-zeroes (the export has them); an O_SYNC write goes out with the FUA flag, fsync as FLUSH,
# blkdiscard as TRIM, blkdiscard -z as WRITE_ZEROES with NO_HOLE (nbdkit logs it trim=0); a
# read-only export makes a read-only device.
set -eu

N=94-nbd-flush-fua
LOG=/tmp/$N.log
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
trap cleanup EXIT

nbdkit_up mem -U /tmp/$N.sock --filter=log memory 64M logfile=$LOG
add_dev dev nbd --unix /tmp/$N.sock
q=/sys/block/ublkb$dev_id/queue
[ "$(cat $q/write_cache)" = "write back" ] || fail "write_cache is '$(cat $q/write_cache)'"
[ "$(cat $q/fua)" = 1 ] || fail "fua is $(cat $q/fua)"
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "no discard"
[ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] || fail "no write zeroes"
echo "$N: ok: write-back cache, FUA, discard and write zeroes declared"

fua0=$(nbd_log_count 'Write .*fua=1' $LOG)
fio --name=fua --filename="$dev_path" --ioengine=psync --direct=1 --sync=1 --rw=write \
    --bs=4k --size=64k --output=/tmp/$N.fio >/dev/null || fail "fio O_SYNC: $(cat /tmp/$N.fio)"
fua=$(($(nbd_log_count 'Write .*fua=1' $LOG) - fua0))
[ "$fua" -ge 16 ] || fail "16 O_SYNC writes, $fua FUA writes in the server's log"
echo "$N: ok: 16 O_SYNC writes reached the server as $fua writes with FUA"

flush0=$(nbd_log_count Flush $LOG)
# fio's --fsync=1 syncs after every write but the last; --end_fsync=1 adds that one.
fio --name=flush --filename="$dev_path" --ioengine=psync --direct=1 --fsync=1 --end_fsync=1 \
    --rw=write --bs=4k --size=32k --offset=1M --output=/tmp/$N.fio >/dev/null ||
    fail "fio fsync: $(cat /tmp/$N.fio)"
flush=$(($(nbd_log_count Flush $LOG) - flush0))
[ "$flush" -ge 8 ] || fail "8 fsyncs, $flush FLUSHes in the server's log"
echo "$N: ok: 8 fsyncs reached the server as $flush FLUSH commands"

trim0=$(nbd_log_count Trim $LOG)
/usr/sbin/blkdiscard -o 4194304 -l 1048576 "$dev_path" || fail "blkdiscard"
[ "$(($(nbd_log_count Trim $LOG) - trim0))" -ge 1 ] || fail "blkdiscard sent no TRIM"
zero0=$(nbd_log_count 'Zero .*trim=0' $LOG)
/usr/sbin/blkdiscard -z -o 8388608 -l 1048576 "$dev_path" || fail "blkdiscard -z"
[ "$(($(nbd_log_count 'Zero .*trim=0' $LOG) - zero0))" -ge 1 ] ||
    fail "blkdiscard -z sent no WRITE_ZEROES with NO_HOLE: $(grep Zero $LOG | tail -3)"
[ "$(md5 "$dev_path" 8 1)" = "$(zeroes_md5 1)" ] || fail "the zeroed range does not read as zeroes"
echo "$N: ok: blkdiscard sent TRIM, blkdiscard -z WRITE_ZEROES with NO_HOLE"
del_dev dev

nbdkit_up ro -U /tmp/$N-ro.sock -r memory 64M
add_dev dev nbd --unix /tmp/$N-ro.sock
[ "$(cat /sys/block/ublkb$dev_id/ro)" = 1 ] || fail "a read-only export made a writable device"
! dd if=/dev/zero of="$dev_path" bs=4k count=1 2>/dev/null || fail "a write succeeded"
del_dev dev
echo "$N: ok: a read-only export is a read-only device"
