#!/bin/sh
# Loop target with a bad backing store: each case gets a clear error from `ublk add` and no device
# is created (nor a file left behind). Then the good cases next to them: --read-only on a read-only
# file and on a read-only mount, --size creating and growing a file.
set -eu

me=55-loop-errors
dir=/tmp/$me
id=""

fail() {
    echo "$me: FAIL: $*" >&2
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    umount "$dir/ro" 2>/dev/null || true
    rm -rf "$dir"
    exit 1
}
devices() { ls /sys/class/ublk-char 2>/dev/null | wc -l; }
# refused WHAT EXPECTED_TEXT -- ARGS...: `ublk add loop ARGS` fails saying EXPECTED_TEXT, makes nothing.
refused() {
    what=$1
    text=$2
    shift 3
    before=$(devices)
    if ublk add loop "$@" > /tmp/$me.out 2>&1; then
        fail "$what: accepted: $(cat /tmp/$me.out)"
    fi
    grep -q "$text" /tmp/$me.out || fail "$what: unclear error: $(cat /tmp/$me.out)"
    [ "$(devices)" = "$before" ] || fail "$what: a device was left behind"
    echo "$me: $what: $(cat /tmp/$me.out)"
}

rm -rf "$dir"
mkdir -p "$dir/ro"
refused "missing file" "no such file; give a size" -- --file "$dir/missing.img"
[ ! -e "$dir/missing.img" ] || fail "a file was created without --size"
refused "directory" "is a directory" -- --file "$dir"
refused "character device" "is a character device" -- --file /dev/null
dd if=/dev/zero of="$dir/odd.img" bs=1000 count=1 2>/dev/null
refused "size not a multiple of the block size" "not a non-zero multiple of the logical block size" \
    -- --file "$dir/odd.img"
refused "empty file" "not a non-zero multiple" -- --file "$dir/odd.img" --size 0
refused "--size not a multiple" "not a non-zero multiple" -- --file "$dir/new.img" --size 1000
[ ! -e "$dir/new.img" ] || fail "a file was created for a bad --size"
refused "--block-size not a power of two" "logical block size 3000" \
    -- --file "$dir/odd.img" --size 512 --block-size 3000

dd if=/dev/zero of="$dir/ro.img" bs=1M count=4 2>/dev/null
chmod 444 "$dir/ro.img"
refused "read-only file" "cannot open for writing" -- --file "$dir/ro.img"
# A read-only mount refuses even root.
mount -t tmpfs -o size=8m tmpfs "$dir/ro" || fail "mount tmpfs"
dd if=/dev/zero of="$dir/ro/disk.img" bs=1M count=4 2>/dev/null
mount -o remount,ro "$dir/ro" || fail "remount read-only"
refused "file on a read-only mount" "cannot open for writing" \
    -- --file "$dir/ro/disk.img"
refused "growing a read-only file" "cannot grow" -- --file "$dir/ro/disk.img" --read-only --size 8M

for f in "$dir/ro.img" "$dir/ro/disk.img"; do
    out=$(ublk add loop --file "$f" --read-only) || fail "--read-only on $f refused"
    id=${out%% *}
    dev=${out#* }
    [ "$(blockdev --getro "$dev")" = 1 ] || fail "$dev is not read-only"
    dd if="$dev" of=/dev/null bs=1M 2>/dev/null || fail "reading $dev"
    ublk del "$id" > /dev/null || fail "ublk del"
    id=""
    echo "$me: --read-only over $f serves a read-only device"
done
# `ublk del` returns once the server has exited and so closed the backing file.
umount "$dir/ro" || fail "the read-only mount is still busy after ublk del returned"

# --size creates a missing file sparse, and grows a short one.
out=$(ublk add loop --file "$dir/new.img" --size 32M) || fail "--size did not create the file"
id=${out%% *}
[ "$(stat -c %s "$dir/new.img")" = 33554432 ] || fail "created with the wrong size"
[ "$(stat -c %b "$dir/new.img")" = 0 ] || fail "not created sparse: $(stat -c %b "$dir/new.img") blocks"
ublk del "$id" > /dev/null
out=$(ublk add loop --file "$dir/new.img" --size 48M) || fail "--size did not grow the file"
id=${out%% *}
dev=${out#* }
[ "$(blockdev --getsize64 "$dev")" = 50331648 ] || fail "grown device has the wrong size"
ublk del "$id" > /dev/null
id=""
echo "$me: --size creates a sparse file and grows a short one"
rm -rf "$dir" /tmp/$me.out
echo "$me: ok"
