#!/bin/sh
# 30-filesystem: ext4 on a 256 MiB mem device. mkfs.ext4, mount, write a tree of directories and
# files of varied sizes (0 B to 24 MiB, from /dev/urandom) and record their md5sums; umount;
# `e2fsck -fn` finds the file system clean; after dropping caches and mounting again every file
# is there with its md5 (and nothing else is); umount; ublk del leaves no device.
set -eu

N=30-filesystem
MNT=/mnt/ublk-fs
# shellcheck source=../lib.sh
. /xtask/lib.sh
trap cleanup EXIT

add_dev dev mem --size 256M --queues 2
echo "$N: device $dev_id: $dev_path (256 MiB mem, 2 queues)"

t=$(now_us)
timeout 120 mkfs.ext4 -q -F "$dev_path" >/tmp/mkfs.out 2>&1 || fail "mkfs.ext4 $dev_path exited $?: $(cat /tmp/mkfs.out)"
echo "$N: ok: mkfs.ext4 in $(ms_since "$t") ms"
mkdir -p "$MNT"
timeout 60 mount -t ext4 "$dev_path" "$MNT" 2>/tmp/mount.err || fail "mount $dev_path exited $?: $(cat /tmp/mount.err)"

# The tree: a few nested directories; sizes around block and page boundaries, a few large files.
t=$(now_us)
mkdir -p "$MNT/a/b/c" "$MNT/d" "$MNT/e/f"
n=0
for size in 0 1 511 512 513 4095 4096 4097 65537 1048576 1048579; do
    head -c "$size" /dev/urandom >"$MNT/a/s$size" || fail "writing $MNT/a/s$size"
    n=$((n + 1))
done
for mib in 3 8 24; do
    head -c $((mib << 20)) /dev/urandom >"$MNT/a/b/big$mib" || fail "writing $MNT/a/b/big$mib"
    n=$((n + 1))
done
i=0
while [ "$i" -lt 200 ]; do
    head -c $((i * 97 + 1)) /dev/urandom >"$MNT/d/small$i" || fail "writing $MNT/d/small$i"
    i=$((i + 1))
done
n=$((n + 200))
head -c 777777 /dev/urandom >"$MNT/a/b/c/deep" && n=$((n + 1)) || fail "writing $MNT/a/b/c/deep"
head -c 123456 /dev/urandom >"$MNT/e/f/deeper" && n=$((n + 1)) || fail "writing $MNT/e/f/deeper"
sync
(cd "$MNT" && find . -type f | sort | xargs md5sum) >/tmp/fs.md5 || fail "md5sum of the tree failed"
files=$(wc -l </tmp/fs.md5)
[ "$files" -eq "$n" ] || fail "wrote $n files but found $files"
kib=$(du -sk "$MNT" | cut -f1)
echo "$N: ok: wrote $files files in 6 directories, $kib KiB, in $(ms_since "$t") ms"

timeout 60 umount "$MNT" 2>/tmp/umount.err || fail "umount $MNT exited $?: $(cat /tmp/umount.err)"
t=$(now_us)
timeout 120 e2fsck -fn "$dev_path" >/tmp/fsck.out 2>&1 || fail "e2fsck -fn $dev_path exited $?: $(cat /tmp/fsck.out)"
echo "$N: ok: e2fsck -fn clean in $(ms_since "$t") ms: $(tail -1 /tmp/fsck.out)"

# Nothing may come from the page cache: every byte is read from the device again.
sync
echo 3 >/proc/sys/vm/drop_caches
timeout 60 mount -t ext4 "$dev_path" "$MNT" 2>/tmp/mount.err || fail "second mount of $dev_path exited $?: $(cat /tmp/mount.err)"
t=$(now_us)
(cd "$MNT" && md5sum -c /tmp/fs.md5) >/tmp/check.out 2>&1 ||
    fail "md5 mismatch after remount: $(grep -v ': OK$' /tmp/check.out | head -10)"
(cd "$MNT" && find . -type f | sort) >/tmp/fs.list
cut -d' ' -f3- /tmp/fs.md5 | cmp -s - /tmp/fs.list || fail "the file list changed after remount"
echo "$N: ok: after remount all $files files match their md5 (checked in $(ms_since "$t") ms)"
timeout 60 umount "$MNT" 2>/tmp/umount.err || fail "second umount exited $?: $(cat /tmp/umount.err)"

del_dev dev
nothing_left "after ublk del"
echo "$N: ok: unmounted, device $dev_id deleted, none left"
