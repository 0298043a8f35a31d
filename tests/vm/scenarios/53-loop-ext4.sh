#!/bin/sh
# Loop target under a file system: mkfs.ext4, mount, write a file tree, umount, `e2fsck -fn` clean;
# the same image exported again later (another server, no --size) mounts and holds the same tree,
# and the image file itself checks clean.
set -eu

N=53-loop-ext4
# shellcheck source=../lib.sh
. /xtask/lib.sh
img=/tmp/$N.img
MNT=/tmp/$N.mnt

remove_files() { rm -rf "$img" "$MNT" /tmp/$N.sums /tmp/$N.fsck; }
AFTER_DEL=remove_files
trap cleanup EXIT

rm -rf "$img" "$MNT"
mkdir -p "$MNT"
add_dev dev loop --file "$img" --size 192M --queues 2
mkfs.ext4 -q -F "$dev_path" || fail "mkfs.ext4"
mount -t ext4 "$dev_path" "$MNT" || fail "mount"
i=0
while [ $i -lt 8 ]; do
    mkdir -p "$MNT/dir$i/sub"
    dd if=/dev/urandom of="$MNT/dir$i/big" bs=1M count=$((i + 1)) 2>/dev/null || fail "write big$i"
    j=0
    while [ $j -lt 16 ]; do
        dd if=/dev/urandom of="$MNT/dir$i/sub/f$j" bs=1k count=$((j * 7 + 1)) 2>/dev/null \
            || fail "write f$j"
        j=$((j + 1))
    done
    i=$((i + 1))
done
ln -s dir0/big "$MNT/link"
(cd "$MNT" && find . -type f | sort | xargs md5sum) > /tmp/$N.sums || fail "checksums"
files=$(wc -l < /tmp/$N.sums)
umount "$MNT" || fail "umount"
e2fsck -fn "$dev_path" > /tmp/$N.fsck 2>&1 || fail "e2fsck after umount: $(cat /tmp/$N.fsck)"
echo "$N: mkfs, $files files written, umount, e2fsck -fn clean"
del_dev dev

# The image alone, read directly.
e2fsck -fn "$img" > /tmp/$N.fsck 2>&1 || fail "e2fsck of the image file: $(cat /tmp/$N.fsck)"

# Re-exported: the size comes from the file now.
add_dev dev loop --file "$img"
mount -t ext4 "$dev_path" "$MNT" || fail "mount the re-exported image"
(cd "$MNT" && md5sum -c /tmp/$N.sums > /dev/null) || fail "files differ after re-export"
[ "$(readlink "$MNT/link")" = dir0/big ] || fail "symlink lost"
umount "$MNT" || fail "umount (re-export)"
e2fsck -fn "$dev_path" > /tmp/$N.fsck 2>&1 || fail "e2fsck after re-export: $(cat /tmp/$N.fsck)"
del_dev dev
echo "$N: re-exported image mounts, $files files match, e2fsck -fn clean"
rm -rf "$img" "$MNT" /tmp/$N.sums /tmp/$N.fsck /tmp/$N.fio
echo "$N: ok"
