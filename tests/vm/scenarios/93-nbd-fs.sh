#!/bin/sh
# 93-nbd-fs: ext4 on an NBD device (nbdkit's memory plugin over a unix socket, 2 queues and
# 2 connections). mkfs.ext4, mount, a tree of files of varied sizes with their md5sums, umount;
# `e2fsck -fn` clean; the device deleted and added again (a new server process, new connections);
# mounted, every file there with its md5; e2fsck clean again; nothing left after del.
set -eu

N=93-nbd-fs
MNT=/mnt/$N
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
trap cleanup EXIT

nbdkit_up mem -U /tmp/$N.sock memory 256M
add_dev dev nbd --unix /tmp/$N.sock --queues 2
timeout 300 mkfs.ext4 -q -F "$dev_path" >/tmp/$N.mkfs 2>&1 || fail "mkfs.ext4: $(cat /tmp/$N.mkfs)"
mkdir -p "$MNT"
timeout 60 mount -t ext4 "$dev_path" "$MNT" || fail "mount $dev_path"
mkdir -p "$MNT/a/b" "$MNT/c"
n=0
for size in 0 1 511 512 4095 4096 65537 1048579 3000000; do
    head -c "$size" /dev/urandom >"$MNT/a/s$size" || fail "writing $MNT/a/s$size"
    n=$((n + 1))
done
i=0
while [ "$i" -lt 60 ]; do
    head -c $((i * 331 + 7)) /dev/urandom >"$MNT/c/f$i" || fail "writing $MNT/c/f$i"
    i=$((i + 1))
done
n=$((n + 60))
head -c $((16 << 20)) /dev/urandom >"$MNT/a/b/big" && n=$((n + 1)) || fail "writing big"
sync
(cd "$MNT" && find . -type f | sort | xargs md5sum) >/tmp/$N.md5 || fail "md5sum of the tree"
[ "$(wc -l </tmp/$N.md5)" -eq "$n" ] || fail "wrote $n files, found $(wc -l </tmp/$N.md5)"
timeout 60 umount "$MNT" || fail "umount"
timeout 120 e2fsck -fn "$dev_path" >/tmp/$N.fsck 2>&1 || fail "e2fsck: $(cat /tmp/$N.fsck)"
echo "$N: ok: $n files written, e2fsck -fn clean"

del_dev dev
add_dev dev nbd --unix /tmp/$N.sock --queues 2
timeout 60 mount -t ext4 "$dev_path" "$MNT" || fail "mount again"
(cd "$MNT" && md5sum -c /tmp/$N.md5) >/tmp/$N.check 2>&1 ||
    fail "md5 mismatch on the new device: $(grep -v ': OK$' /tmp/$N.check | head -5)"
timeout 60 umount "$MNT" || fail "umount again"
timeout 120 e2fsck -fn "$dev_path" >/tmp/$N.fsck 2>&1 || fail "e2fsck again: $(cat /tmp/$N.fsck)"
del_dev dev
nothing_left "after ublk del"
echo "$N: ok: a new device over the same export has every file; e2fsck clean; nothing left"
