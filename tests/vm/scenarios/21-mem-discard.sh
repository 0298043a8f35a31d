#!/bin/sh
# 21-mem-discard: a RAM disk gives memory back. `ublk add mem` advertises DISCARD and
# WRITE_ZEROES; after 64 MiB are written the server's resident memory has grown by about that
# much, and a whole-device `blkdiscard` (and then `blkdiscard -z` after writing again) gives it
# back and reads as zeroes, while data outside the discarded range stays. A 256 GiB RAM disk can
# be discarded whole (the block layer splits the request into pieces of at most 1 GiB).
set -eu

N=21-mem-discard
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

# rss_mb PID: the process's resident memory in MiB.
rss_mb() {
    awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$1/status"
}

add_dev dev mem --size 256M
srv=$(field "$dev_id" pid)
q=/sys/block/ublkb$dev_id/queue
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "DISCARD is not advertised"
[ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] || fail "WRITE_ZEROES is not advertised"
base=$(rss_mb "$srv")

dd if=/dev/urandom of="$dev_path" bs=1M count=64 oflag=direct 2>/dev/null || fail "cannot write"
dd if=/dev/urandom of=/tmp/r21.tail bs=1M count=1 2>/dev/null
dd if=/tmp/r21.tail of="$dev_path" bs=1M seek=200 oflag=direct 2>/dev/null || fail "cannot write the tail"
full=$(rss_mb "$srv")
[ $((full - base)) -ge 60 ] || fail "writing 65 MiB grew the server by $((full - base)) MiB only"
echo "$N: server $srv: $base MiB idle, $full MiB after writing 65 MiB"

/usr/sbin/blkdiscard -o 0 -l $((128 << 20)) "$dev_path" || fail "blkdiscard of the first 128 MiB failed"
freed=$(rss_mb "$srv")
[ $((full - freed)) -ge 60 ] || fail "discarding 64 written MiB freed $((full - freed)) MiB"
[ "$(md5 "$dev_path" 0 64)" = "$(zeroes_md5 64)" ] || fail "the discarded range does not read as zeroes"
[ "$(md5 "$dev_path" 200 1)" = "$(md5 /tmp/r21.tail)" ] || fail "data beyond the discarded range changed"
echo "$N: ok: blkdiscard gave back $((full - freed)) MiB and reads as zeroes; the tail kept its data"

dd if=/dev/urandom of="$dev_path" bs=1M count=64 oflag=direct 2>/dev/null || fail "cannot write again"
/usr/sbin/blkdiscard -z -o 0 -l $((64 << 20)) "$dev_path" || fail "blkdiscard -z failed"
[ "$(md5 "$dev_path" 0 64)" = "$(zeroes_md5 64)" ] || fail "the zeroed range does not read as zeroes"
zeroed=$(rss_mb "$srv")
[ $((zeroed - freed)) -le 8 ] || fail "after WRITE_ZEROES the server holds $((zeroed - freed)) MiB more"
echo "$N: ok: blkdiscard -z reads as zeroes and gives the memory back"
del_dev dev

add_dev big mem --size 256G
dd if=/dev/urandom of="$big_path" bs=1M count=8 seek=$((128 << 10)) oflag=direct 2>/dev/null || fail "cannot write at 128 GiB"
/usr/sbin/blkdiscard "$big_path" || fail "whole-device blkdiscard of 256 GiB failed"
[ "$(md5 "$big_path" $((128 << 10)) 8)" = "$(zeroes_md5 8)" ] || fail "the 256 GiB device does not read as zeroes after its discard"
del_dev big
nothing_left "at the end"
echo "$N: ok: a 256 GiB RAM disk was discarded whole"
