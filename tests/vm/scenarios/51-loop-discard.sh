#!/bin/sh
# Loop target DISCARD and WRITE_ZEROES: the device advertises them (and a write-back cache with
# FUA); `blkdiscard` of a range makes the backing file sparse there and the range reads as zeroes;
# `blkdiscard -z` reads back zeroes; the data around is untouched, through the device and in the file.
set -eu
# busybox sh runs its own applets before PATH: util-linux tools are called by their full path.
BLKDISCARD=/usr/sbin/blkdiscard

me=51-loop-discard
img=/tmp/$me.img
id=""
M=1048576

fail() {
    echo "$me: FAIL: $*" >&2
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    rm -f "$img"
    exit 1
}
# md5 DEV_OR_FILE FIRST_MIB COUNT_MIB
md5() { dd if="$1" bs=1M skip="$2" count="$3" 2>/dev/null | md5sum | cut -d' ' -f1; }
zeroes() { dd if=/dev/zero bs=1M count="$1" 2>/dev/null | md5sum | cut -d' ' -f1; }
blocks() { stat -c %b "$img"; }

rm -f "$img"
out=$(ublk add loop --file "$img" --size 64M) || fail "ublk add loop"
id=${out%% *}
dev=${out#* }
q=/sys/block/${dev#/dev/}/queue
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "DISCARD not advertised"
[ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] || fail "WRITE_ZEROES not advertised"
[ "$(cat $q/write_cache)" = "write back" ] || fail "no volatile write cache: $(cat $q/write_cache)"
[ "$(cat $q/fua)" = 1 ] || fail "FUA not advertised"

dd if=/dev/urandom of="$dev" bs=1M count=64 oflag=direct 2>/dev/null || fail "fill the device"
sync "$dev"
full=$(blocks)
[ "$full" -ge $((64 * 2048)) ] || fail "backing file not allocated after the fill: $full blocks"
before_head=$(md5 "$dev" 0 8)
before_mid=$(md5 "$dev" 24 8)
before_tail=$(md5 "$dev" 40 24)

# DISCARD 16 MiB at 8 MiB: a hole in the file, zeroes on the device.
$BLKDISCARD -o $((8 * M)) -l $((16 * M)) "$dev" || fail "blkdiscard"
after=$(blocks)
[ $((full - after)) -ge $((16 * 2048)) ] || fail "no hole after blkdiscard: $full -> $after blocks"
[ "$(md5 "$dev" 8 16)" = "$(zeroes 16)" ] || fail "discarded range does not read as zeroes"
echo "$me: blkdiscard 16 MiB: backing file $full -> $after blocks, range reads zeroes"

# WRITE_ZEROES (BLKZEROOUT, NOUNMAP) 8 MiB at 32 MiB: zeroes, space kept.
before=$(blocks)
$BLKDISCARD -z -o $((32 * M)) -l $((8 * M)) "$dev" || fail "blkdiscard -z"
[ "$(md5 "$dev" 32 8)" = "$(zeroes 8)" ] || fail "zeroed range does not read as zeroes"
[ "$(blocks)" -ge "$before" ] || fail "blkdiscard -z freed space: $before -> $(blocks) blocks"
echo "$me: blkdiscard -z 8 MiB: range reads zeroes, $(blocks) blocks kept"

[ "$(md5 "$dev" 0 8)" = "$before_head" ] || fail "data before the discarded range changed"
[ "$(md5 "$dev" 24 8)" = "$before_mid" ] || fail "data between the ranges changed"
[ "$(md5 "$dev" 40 24)" = "$before_tail" ] || fail "data after the zeroed range changed"

ublk del "$id" > /dev/null || fail "ublk del"
id=""
# The file itself, read directly.
[ "$(md5 "$img" 8 16)" = "$(zeroes 16)" ] || fail "discarded range in the file is not zero"
[ "$(md5 "$img" 32 8)" = "$(zeroes 8)" ] || fail "zeroed range in the file is not zero"
[ "$(md5 "$img" 0 8)" = "$before_head" ] || fail "file head differs from the device"
[ "$(md5 "$img" 40 24)" = "$before_tail" ] || fail "file tail differs from the device"

# Discarding the whole device leaves an (almost) empty file.
out=$(ublk add loop --file "$img") || fail "ublk add loop (again)"
id=${out%% *}
dev=${out#* }
$BLKDISCARD "$dev" || fail "blkdiscard of the whole device"
ublk del "$id" > /dev/null || fail "ublk del"
id=""
[ "$(blocks)" -le 2048 ] || fail "whole-device discard left $(blocks) blocks allocated"
[ "$(stat -c %s "$img")" = $((64 * M)) ] || fail "discard changed the file size"
echo "$me: whole-device blkdiscard: $(blocks) blocks left, size unchanged"
rm -f "$img"
echo "$me: ok"
