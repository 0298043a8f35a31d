#!/bin/sh
# 63-stripe-fio-verify: a stripe device keeps every byte, and each store holds exactly its chunks.
# Over 2, 3 and 4 tmpfs files (of different sizes: the device is the smallest's whole chunks on
# every store), with 1 and 2 queues and chunks of 4K to 128K: `ublk list` shows the stripe and
# its size; fio random writes of 512 B-1 MiB (most crossing chunks) over the whole device with
# crc32c verify; then the device is read whole, deleted, and each store is checked against the
# reference layout computed here (chunk c of the device is chunk c / n of store c % n; past its
# share a store is still zeroes, so nothing was written past the device's end).
set -eu

N=63-stripe-fio-verify
FIO_LOG=/tmp/r63.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

remove_stores() { rm -f /tmp/r63.s* /tmp/r63.img; }
AFTER_DEL=remove_stores
trap cleanup EXIT

# stores, queues, chunk (bytes): 6 combinations, each store 4 MiB (the first 5 MiB and a bit).
for spec in "2 1 4096" "2 2 65536" "3 1 16384" "3 2 131072" "4 1 65536" "4 2 8192"; do
    set -- $spec
    n=$1 queues=$2 chunk=$3
    label="$n stores, $queues queue(s), chunk $chunk"
    remove_stores
    stores=
    i=0
    while [ "$i" -lt "$n" ]; do
        size=4M
        [ "$i" -eq 0 ] && size=$(((5 << 20) + 12345))
        truncate -s "$size" "/tmp/r63.s$i"
        stores="$stores /tmp/r63.s$i"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086 # one argument per store
    add_dev dev stripe --chunk "$chunk" --queues "$queues" $stores
    want=$((n * (4 << 20)))
    [ "$(field "$dev_id" target)" = stripe ] || fail "$label: ublk list says $(field "$dev_id" target)"
    [ "$(blockdev --getsize64 "$dev_path")" -eq "$want" ] ||
        fail "$label: size $(blockdev --getsize64 "$dev_path"), expected $want"
    fio_verify "$dev_path" "$label"
    dd if="$dev_path" of=/tmp/r63.img bs=1M iflag=direct 2>/dev/null || fail "$label: cannot read the device"
    del_dev dev
    # shellcheck disable=SC2086
    stripe_check "$label" /tmp/r63.img "$chunk" $stores
    echo "$N: ok: $label: fio verify clean, each store holds exactly its chunks"
done
remove_stores
no_kernel_warning "stripe fio verify"
nothing_left "at the end"
