#!/bin/sh
# Loop target under a file system: mkfs.ext4, mount, write a file tree, umount, `e2fsck -fn` clean;
# the same image exported again later (another server, no --size) mounts and holds the same tree,
# and the image file itself checks clean.
set -eu

me=53-loop-ext4
img=/tmp/$me.img
mnt=/tmp/$me.mnt
id=""

fail() {
    echo "$me: FAIL: $*" >&2
    umount "$mnt" 2>/dev/null || true
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    rm -rf "$img" "$mnt" /tmp/$me.sums
    exit 1
}

add() {
    out=$(ublk add loop --file "$img" "$@") || fail "ublk add loop $*"
    id=${out%% *}
    dev=${out#* }
}

rm -rf "$img" "$mnt"
mkdir -p "$mnt"
add --size 192M --queues 2
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
mount -t ext4 "$dev" "$mnt" || fail "mount"
i=0
while [ $i -lt 8 ]; do
    mkdir -p "$mnt/dir$i/sub"
    dd if=/dev/urandom of="$mnt/dir$i/big" bs=1M count=$((i + 1)) 2>/dev/null || fail "write big$i"
    j=0
    while [ $j -lt 16 ]; do
        dd if=/dev/urandom of="$mnt/dir$i/sub/f$j" bs=1k count=$((j * 7 + 1)) 2>/dev/null \
            || fail "write f$j"
        j=$((j + 1))
    done
    i=$((i + 1))
done
ln -s dir0/big "$mnt/link"
(cd "$mnt" && find . -type f | sort | xargs md5sum) > /tmp/$me.sums || fail "checksums"
files=$(wc -l < /tmp/$me.sums)
umount "$mnt" || fail "umount"
e2fsck -fn "$dev" > /tmp/$me.fsck 2>&1 || fail "e2fsck after umount: $(cat /tmp/$me.fsck)"
echo "$me: mkfs, $files files written, umount, e2fsck -fn clean"
ublk del "$id" > /dev/null || fail "ublk del"
id=""

# The image alone, read directly.
e2fsck -fn "$img" > /tmp/$me.fsck 2>&1 || fail "e2fsck of the image file: $(cat /tmp/$me.fsck)"

# Re-exported: the size comes from the file now.
add
mount -t ext4 "$dev" "$mnt" || fail "mount the re-exported image"
(cd "$mnt" && md5sum -c /tmp/$me.sums > /dev/null) || fail "files differ after re-export"
[ "$(readlink "$mnt/link")" = dir0/big ] || fail "symlink lost"
umount "$mnt" || fail "umount (re-export)"
e2fsck -fn "$dev" > /tmp/$me.fsck 2>&1 || fail "e2fsck after re-export: $(cat /tmp/$me.fsck)"
ublk del "$id" > /dev/null || fail "ublk del (re-export)"
id=""
echo "$me: re-exported image mounts, $files files match, e2fsck -fn clean"
rm -rf "$img" "$mnt" /tmp/$me.sums /tmp/$me.fsck /tmp/$me.fio
echo "$me: ok"
