#!/bin/sh
# Loop target DISCARD and WRITE_ZEROES: the device advertises them (and a write-back cache with
# FUA); `blkdiscard` of a range makes the backing file sparse there and the range reads as zeroes;
# `blkdiscard -z` reads back zeroes; the data around is untouched, through the device and in the file.
set -eu
# busybox sh runs its own applets before PATH: util-linux tools are called by their full path.
BLKDISCARD=/usr/sbin/blkdiscard

N=51-loop-discard
# shellcheck source=../lib.sh
. /xtask/lib.sh
img=/tmp/$N.img
M=1048576

remove_image() { rm -f "$img"; }
AFTER_DEL=remove_image
trap cleanup EXIT

blocks() { stat -c %b "$img"; }

rm -f "$img"
add_dev dev loop --file "$img" --size 64M
q=/sys/block/ublkb$dev_id/queue
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "DISCARD not advertised"
[ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] || fail "WRITE_ZEROES not advertised"
[ "$(cat $q/write_cache)" = "write back" ] || fail "no volatile write cache: $(cat $q/write_cache)"
[ "$(cat $q/fua)" = 1 ] || fail "FUA not advertised"

dd if=/dev/urandom of="$dev_path" bs=1M count=64 oflag=direct 2>/dev/null || fail "fill the device"
sync "$dev_path"
full=$(blocks)
[ "$full" -ge $((64 * 2048)) ] || fail "backing file not allocated after the fill: $full blocks"
before_head=$(md5 "$dev_path" 0 8)
before_mid=$(md5 "$dev_path" 24 8)
before_tail=$(md5 "$dev_path" 40 24)

# DISCARD 16 MiB at 8 MiB: a hole in the file, zeroes on the device.
$BLKDISCARD -o $((8 * M)) -l $((16 * M)) "$dev_path" || fail "blkdiscard"
after=$(blocks)
[ $((full - after)) -ge $((16 * 2048)) ] || fail "no hole after blkdiscard: $full -> $after blocks"
[ "$(md5 "$dev_path" 8 16)" = "$(zeroes_md5 16)" ] || fail "discarded range does not read as zeroes"
echo "$N: blkdiscard 16 MiB: backing file $full -> $after blocks, range reads zeroes"

# WRITE_ZEROES (BLKZEROOUT, NOUNMAP) 8 MiB at 32 MiB: zeroes, space kept.
before=$(blocks)
$BLKDISCARD -z -o $((32 * M)) -l $((8 * M)) "$dev_path" || fail "blkdiscard -z"
[ "$(md5 "$dev_path" 32 8)" = "$(zeroes_md5 8)" ] || fail "zeroed range does not read as zeroes"
[ "$(blocks)" -ge "$before" ] || fail "blkdiscard -z freed space: $before -> $(blocks) blocks"
echo "$N: blkdiscard -z 8 MiB: range reads zeroes, $(blocks) blocks kept"

[ "$(md5 "$dev_path" 0 8)" = "$before_head" ] || fail "data before the discarded range changed"
[ "$(md5 "$dev_path" 24 8)" = "$before_mid" ] || fail "data between the ranges changed"
[ "$(md5 "$dev_path" 40 24)" = "$before_tail" ] || fail "data after the zeroed range changed"

del_dev dev
# The file itself, read directly.
[ "$(md5 "$img" 8 16)" = "$(zeroes_md5 16)" ] || fail "discarded range in the file is not zero"
[ "$(md5 "$img" 32 8)" = "$(zeroes_md5 8)" ] || fail "zeroed range in the file is not zero"
[ "$(md5 "$img" 0 8)" = "$before_head" ] || fail "file head differs from the device"
[ "$(md5 "$img" 40 24)" = "$before_tail" ] || fail "file tail differs from the device"

# Discarding the whole device leaves an (almost) empty file.
add_dev dev loop --file "$img"
$BLKDISCARD "$dev_path" || fail "blkdiscard of the whole device"
del_dev dev
[ "$(blocks)" -le 2048 ] || fail "whole-device discard left $(blocks) blocks allocated"
[ "$(stat -c %s "$img")" = $((64 * M)) ] || fail "discard changed the file size"
echo "$N: whole-device blkdiscard: $(blocks) blocks left, size unchanged"
rm -f "$img"
echo "$N: ok"
