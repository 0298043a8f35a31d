#!/bin/sh
# Loop target over block devices: a kernel loop device (512-byte and 4 KiB sectors) and null_blk.
# Size and logical block size come from the device; data written through /dev/ublkbN is on the
# kernel loop device's file; blkdiscard reaches it as a discard (its file gets a hole).
set -eu
# busybox sh runs its own applets before PATH: util-linux tools are called by their full path.
LOSETUP=/usr/sbin/losetup
BLKDISCARD=/usr/sbin/blkdiscard

N=54-loop-bdev
# shellcheck source=../lib.sh
. /xtask/lib.sh
img=/tmp/$N.img
kloop=""
M=1048576

# After `ublk del --all`: the kernel loop device is no longer held open.
detach() {
    [ -z "$kloop" ] || $LOSETUP -d "$kloop" 2>/dev/null || true
    rm -f "$img" /tmp/$N.fio
}
AFTER_DEL=detach
trap cleanup EXIT

for sector in 512 4096; do
    rm -f "$img"
    dd if=/dev/zero of="$img" bs=1M count=96 2>/dev/null || fail "make $img"
    kloop=$($LOSETUP --sector-size $sector -f --show "$img") || fail "losetup"
    add_dev dev loop --file "$kloop" --queues 2
    [ "$(blockdev --getsize64 "$dev_path")" = "$(blockdev --getsize64 "$kloop")" ] \
        || fail "size $(blockdev --getsize64 "$dev_path") != $(blockdev --getsize64 "$kloop")"
    [ "$(blockdev --getss "$dev_path")" = $sector ] || fail "logical block size $(blockdev --getss "$dev_path") != $sector"
    grep -q "device $dev_id: $kloop (block device, direct I/O, $sector-byte blocks)" /run/ublk/server.log \
        || fail "not served as a block device with direct I/O: $(grep "device $dev_id:" /run/ublk/server.log)"

    fio --name=verify --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=$sector-1M --iodepth=32 --verify=crc32c --verify_fatal=1 \
        --output-format=terse --terse-version=3 > /tmp/$N.fio \
        || fail "fio verify over $kloop: $(cat /tmp/$N.fio)"
    sync "$dev_path"
    want=$(md5 "$dev_path")

    # A discard of the ublk device is a discard of the kernel loop device: a hole in its file.
    before=$(stat -c %b "$img")
    $BLKDISCARD -o $((16 * M)) -l $((32 * M)) "$dev_path" || fail "blkdiscard"
    after=$(stat -c %b "$img")
    [ $((before - after)) -ge $((32 * 2048)) ] || fail "no hole in $img: $before -> $after blocks"
    [ "$(dd if="$dev_path" bs=1M skip=16 count=32 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)" = \
        "$(zeroes_md5 32)" ] || fail "discarded range is not zeroes"
    want=$(md5 "$dev_path")
    del_dev dev
    [ "$(md5 "$kloop")" = "$want" ] || fail "$kloop differs from what the device held"
    $LOSETUP -d "$kloop" || fail "losetup -d"
    kloop=""
    [ "$(md5 "$img")" = "$want" ] || fail "$img differs from what the device held"
    echo "$N: over a kernel loop device with $sector-byte sectors: verify, discard, contents ok"
done
rm -f "$img"

# null_blk: no data, no discard; the size and the block size are the device's.
add_dev dev loop --file /dev/nullb0
[ "$(blockdev --getsize64 "$dev_path")" = "$(blockdev --getsize64 /dev/nullb0)" ] || fail "nullb0 size"
[ "$(cat /sys/block/ublkb$dev_id/queue/discard_max_bytes)" = 0 ] || fail "discard advertised over null_blk"
fio --name=nullb --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k --iodepth=16 \
    --size=64M --output-format=terse --terse-version=3 > /tmp/$N.fio || fail "fio over null_blk"
[ "$(cut -d';' -f5 /tmp/$N.fio)" = 0 ] || fail "fio over null_blk reported an error"
del_dev dev
echo "$N: over null_blk: size from the device, no discard, I/O ok"
rm -f /tmp/$N.fio
echo "$N: ok"
