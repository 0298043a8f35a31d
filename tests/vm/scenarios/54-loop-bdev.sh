#!/bin/sh
# Loop target over block devices: a kernel loop device (512-byte and 4 KiB sectors) and null_blk.
# Size and logical block size come from the device; data written through /dev/ublkbN is on the
# kernel loop device's file; blkdiscard reaches it as a discard (its file gets a hole).
set -eu
# busybox sh runs its own applets before PATH: util-linux tools are called by their full path.
LOSETUP=/usr/sbin/losetup
BLKDISCARD=/usr/sbin/blkdiscard

me=54-loop-bdev
img=/tmp/$me.img
id=""
kloop=""
M=1048576

fail() {
    echo "$me: FAIL: $*" >&2
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    [ -n "$kloop" ] && $LOSETUP -d "$kloop" 2>/dev/null
    rm -f "$img"
    exit 1
}

for sector in 512 4096; do
    rm -f "$img"
    dd if=/dev/zero of="$img" bs=1M count=96 2>/dev/null || fail "make $img"
    kloop=$($LOSETUP --sector-size $sector -f --show "$img") || fail "losetup"
    out=$(ublk add loop --file "$kloop" --queues 2) || fail "ublk add loop over $kloop"
    id=${out%% *}
    dev=${out#* }
    [ "$(blockdev --getsize64 "$dev")" = "$(blockdev --getsize64 "$kloop")" ] \
        || fail "size $(blockdev --getsize64 "$dev") != $(blockdev --getsize64 "$kloop")"
    [ "$(blockdev --getss "$dev")" = $sector ] || fail "logical block size $(blockdev --getss "$dev") != $sector"
    grep -q "device $id: $kloop (block device, direct I/O, $sector-byte blocks)" /run/ublk/server.log \
        || fail "not served as a block device with direct I/O: $(grep "device $id:" /run/ublk/server.log)"

    fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=$sector-1M --iodepth=32 --verify=crc32c --verify_fatal=1 \
        --output-format=terse --terse-version=3 > /tmp/$me.fio \
        || fail "fio verify over $kloop: $(cat /tmp/$me.fio)"
    sync "$dev"
    want=$(md5sum < "$dev")

    # A discard of the ublk device is a discard of the kernel loop device: a hole in its file.
    before=$(stat -c %b "$img")
    $BLKDISCARD -o $((16 * M)) -l $((32 * M)) "$dev" || fail "blkdiscard"
    after=$(stat -c %b "$img")
    [ $((before - after)) -ge $((32 * 2048)) ] || fail "no hole in $img: $before -> $after blocks"
    [ "$(dd if="$dev" bs=1M skip=16 count=32 iflag=direct 2>/dev/null | md5sum)" = \
        "$(dd if=/dev/zero bs=1M count=32 2>/dev/null | md5sum)" ] || fail "discarded range is not zeroes"
    want=$(md5sum < "$dev")
    ublk del "$id" > /dev/null || fail "ublk del"
    id=""
    [ "$(md5sum < "$kloop")" = "$want" ] || fail "$kloop differs from what the device held"
    $LOSETUP -d "$kloop" || fail "losetup -d"
    kloop=""
    [ "$(md5sum < "$img")" = "$want" ] || fail "$img differs from what the device held"
    echo "$me: over a kernel loop device with $sector-byte sectors: verify, discard, contents ok"
done
rm -f "$img"

# null_blk: no data, no discard; the size and the block size are the device's.
out=$(ublk add loop --file /dev/nullb0) || fail "ublk add loop over /dev/nullb0"
id=${out%% *}
dev=${out#* }
[ "$(blockdev --getsize64 "$dev")" = "$(blockdev --getsize64 /dev/nullb0)" ] || fail "nullb0 size"
[ "$(cat /sys/block/${dev#/dev/}/queue/discard_max_bytes)" = 0 ] || fail "discard advertised over null_blk"
fio --name=nullb --filename="$dev" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k --iodepth=16 \
    --size=64M --output-format=terse --terse-version=3 > /tmp/$me.fio || fail "fio over null_blk"
[ "$(cut -d';' -f5 /tmp/$me.fio)" = 0 ] || fail "fio over null_blk reported an error"
ublk del "$id" > /dev/null || fail "ublk del (null_blk)"
id=""
echo "$me: over null_blk: size from the device, no discard, I/O ok"
rm -f /tmp/$me.fio
echo "$me: ok"
