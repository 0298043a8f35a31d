#!/bin/sh
# 83-no-part-scan: `--no-part-scan` (NO_AUTO_PART_SCAN, Linux 7.0): over an image with a
# partition table, the partition appears only when asked (`blockdev --rereadpt`); without the
# flag it appears at once. Kernels without the feature (it also went to some stable releases:
# `ublk features` tells) refuse the flag naming it and the release.
set -eu

N=83-no-part-scan
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r83.img
dd if=/dev/zero of="$IMG" bs=1M count=0 seek=64 2>/dev/null
# An MBR with one Linux partition (type 0x83) from sector 2048, 65536 sectors long.
printf '\000\000\000\000\203\000\000\000\000\010\000\000\000\000\001\000' |
    dd of="$IMG" bs=1 seek=446 conv=notrunc 2>/dev/null
printf '\125\252' | dd of="$IMG" bs=1 seek=510 conv=notrunc 2>/dev/null

if ! ublk features | grep -q NO_AUTO_PART_SCAN; then
    refused "--no-part-scan on Linux $(uname -r)" "Linux 7.0" timeout 30 ublk add loop --file "$IMG" --no-part-scan
    nothing_left "after the refusal"
    echo "$N: ok: --no-part-scan refused on $(uname -r), naming Linux 7.0"
    exit 0
fi

add_dev dev loop --file "$IMG"
[ -b "${dev_path}p1" ] || fail "without --no-part-scan the partition did not appear"
del_dev dev
add_dev dev loop --file "$IMG" --no-part-scan
[ ! -e "${dev_path}p1" ] || fail "with --no-part-scan the partition appeared anyway"
/usr/sbin/blockdev --rereadpt "$dev_path" || fail "blockdev --rereadpt"
[ -b "${dev_path}p1" ] || fail "the partition did not appear when asked"
[ "$(cat "/sys/block/ublkb$dev_id/ublkb${dev_id}p1/size")" -eq 65536 ] || fail "the partition has the wrong size"
del_dev dev
nothing_left "at the end"
echo "$N: ok: the partition appears at once without the flag, only when asked with it"
