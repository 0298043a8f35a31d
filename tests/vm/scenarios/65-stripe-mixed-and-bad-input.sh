#!/bin/sh
# 65-stripe-mixed-and-bad-input: a stripe over stores of different kinds, and what it refuses.
#  - a tmpfs file and a kernel loop device (over another tmpfs file) with 512-byte sectors, then
#    with 4 KiB sectors (the device takes the larger block size, 4096): fio crc32c verify over
#    the whole device, 1 and 2 queues; after del each store (the file, the loop device) holds
#    exactly its chunks;
#  - bad input, each refused before any device exists (exit 1 or 2, one error line naming the
#    problem, nothing on stdout, no device, node or server left): one store, a chunk that is not
#    a power of two, one below 4K, a malformed --chunk, a missing store, a store smaller than a
#    chunk, the same store twice (by a second name), a directory, a character device.
set -eu

N=65-stripe-mixed-and-bad-input
FIO_LOG=/tmp/r65.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

A=/tmp/r65.a
B=/tmp/r65.b
LOOPDEV=
detach() {
    [ -z "$LOOPDEV" ] || /usr/sbin/losetup -d "$LOOPDEV" 2>/dev/null || true
    rm -rf /tmp/r65.*
}
AFTER_DEL=detach
trap cleanup EXIT

for sector in 512 4096; do
    for queues in 1 2; do
        label="file + loop device ($sector-byte sectors), $queues queue(s)"
        rm -f "$A" "$B"
        truncate -s 16M "$A"
        truncate -s 16M "$B"
        LOOPDEV=$(/usr/sbin/losetup --sector-size "$sector" --direct-io=on -f --show "$B") ||
            fail "$label: losetup failed"
        add_dev dev stripe --chunk 64K --queues "$queues" "$A" "$LOOPDEV"
        bs=$(blockdev --getss "$dev_path")
        [ "$bs" -eq "$sector" ] || fail "$label: logical block size $bs, expected $sector"
        [ "$(blockdev --getsize64 "$dev_path")" -eq $((32 << 20)) ] ||
            fail "$label: size $(blockdev --getsize64 "$dev_path")"
        fio_verify "$dev_path" "$label" --bsrange="$bs"-1m
        dd if="$dev_path" of=/tmp/r65.img bs=1M iflag=direct 2>/dev/null || fail "$label: cannot read the device"
        del_dev dev
        stripe_check "$label" /tmp/r65.img 65536 "$A" "$LOOPDEV"
        /usr/sbin/losetup -d "$LOOPDEV" || fail "$label: losetup -d $LOOPDEV"
        LOOPDEV=
        echo "$N: ok: $label: fio verify clean, block size $bs, each store holds exactly its chunks"
    done
done
rm -f "$A" "$B" /tmp/r65.img

REFUSED_CHECK=nothing_left
truncate -s 4M "$A"
truncate -s 4M "$B"
refused "one store" "needs 2 to 64 stores, got 1" timeout 30 ublk add stripe "$A"
refused "chunk not a power of two" "chunk size 49152 is not a power of two" \
    timeout 30 ublk add stripe --chunk 48K "$A" "$B"
refused "chunk below 4K" "chunk size 2048 is not a power of two from 4096" \
    timeout 30 ublk add stripe --chunk 2K "$A" "$B"
refused "malformed --chunk" "--chunk" timeout 30 ublk add stripe --chunk 1X "$A" "$B"
refused "missing store" "/tmp/r65.missing: no such file or block device" \
    timeout 30 ublk add stripe "$A" /tmp/r65.missing
[ ! -e /tmp/r65.missing ] || fail "the missing store was created"
truncate -s 60K /tmp/r65.tiny
refused "store smaller than a chunk" "less than one 65536-byte chunk" \
    timeout 30 ublk add stripe "$A" /tmp/r65.tiny
ln "$B" /tmp/r65.b2
refused "same store twice" "/tmp/r65.b2: is the same store as $B" \
    timeout 30 ublk add stripe "$A" "$B" /tmp/r65.b2
mkdir -p /tmp/r65.dir
refused "a directory" "is a directory" timeout 30 ublk add stripe "$A" /tmp/r65.dir
refused "a character device" "is a character device" timeout 30 ublk add stripe "$A" /dev/null
rm -rf /tmp/r65.*
no_kernel_warning "stripe over mixed stores"
nothing_left "at the end"
