#!/bin/sh
# Loop target with a bad backing store: each case gets a clear error from `ublk add` (exit 1 or 2,
# one error line naming the problem, nothing on stdout, no panic) and no device, device node or
# server is left (nor a file created). Then the good cases next to them: --read-only on a read-only
# file and on a read-only mount, --size creating and growing a file.
set -eu

N=55-loop-errors
REFUSED_CHECK=nothing_left
# shellcheck source=../lib.sh
. /xtask/lib.sh
dir=/tmp/$N

# After `ublk del --all`: no server holds a file on the read-only mount any more.
remove_files() {
    umount "$dir/ro" 2>/dev/null || true
    rm -rf "$dir"
}
AFTER_DEL=remove_files
trap cleanup EXIT

rm -rf "$dir"
mkdir -p "$dir/ro"
refused "missing file" "no such file; give a size" timeout 30 ublk add loop --file "$dir/missing.img"
[ ! -e "$dir/missing.img" ] || fail "a file was created without --size"
refused "directory" "is a directory" timeout 30 ublk add loop --file "$dir"
refused "character device" "is a character device" timeout 30 ublk add loop --file /dev/null
dd if=/dev/zero of="$dir/odd.img" bs=1000 count=1 2>/dev/null
refused "size not a multiple of the block size" "not a non-zero multiple of the logical block size" \
    timeout 30 ublk add loop --file "$dir/odd.img"
refused "empty file" "not a non-zero multiple" timeout 30 ublk add loop --file "$dir/odd.img" --size 0
refused "--size not a multiple" "not a non-zero multiple" \
    timeout 30 ublk add loop --file "$dir/new.img" --size 1000
[ ! -e "$dir/new.img" ] || fail "a file was created for a bad --size"
refused "--block-size not a power of two" "logical block size 3000" \
    timeout 30 ublk add loop --file "$dir/odd.img" --size 512 --block-size 3000

dd if=/dev/zero of="$dir/ro.img" bs=1M count=4 2>/dev/null
chmod 444 "$dir/ro.img"
refused "read-only file" "cannot open for writing" timeout 30 ublk add loop --file "$dir/ro.img"
# A read-only mount refuses even root.
mount -t tmpfs -o size=8m tmpfs "$dir/ro" || fail "mount tmpfs"
dd if=/dev/zero of="$dir/ro/disk.img" bs=1M count=4 2>/dev/null
mount -o remount,ro "$dir/ro" || fail "remount read-only"
refused "file on a read-only mount" "cannot open for writing" \
    timeout 30 ublk add loop --file "$dir/ro/disk.img"
refused "growing a read-only file" "cannot grow" \
    timeout 30 ublk add loop --file "$dir/ro/disk.img" --read-only --size 8M

for f in "$dir/ro.img" "$dir/ro/disk.img"; do
    add_dev dev loop --file "$f" --read-only
    [ "$(blockdev --getro "$dev_path")" = 1 ] || fail "$dev_path is not read-only"
    dd if="$dev_path" of=/dev/null bs=1M 2>/dev/null || fail "reading $dev_path"
    del_dev dev
    echo "$N: --read-only over $f serves a read-only device"
done
# `ublk del` returns once the server has exited and so closed the backing file.
umount "$dir/ro" || fail "the read-only mount is still busy after ublk del returned"

# --size creates a missing file sparse, and grows a short one.
add_dev dev loop --file "$dir/new.img" --size 32M
[ "$(stat -c %s "$dir/new.img")" = 33554432 ] || fail "created with the wrong size"
[ "$(stat -c %b "$dir/new.img")" = 0 ] || fail "not created sparse: $(stat -c %b "$dir/new.img") blocks"
del_dev dev
add_dev dev loop --file "$dir/new.img" --size 48M
[ "$(blockdev --getsize64 "$dev_path")" = 50331648 ] || fail "grown device has the wrong size"
del_dev dev
echo "$N: --size creates a sparse file and grows a short one"
rm -rf "$dir"
echo "$N: ok"
