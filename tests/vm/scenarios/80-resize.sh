#!/bin/sh
# 80-resize: `ublk resize` gives a live device a new size (UPDATE_SIZE, Linux 6.16).
#  - older kernels: refused naming UPDATE_SIZE and the release, the device untouched;
#  - loop: 64 MiB with ext4 and fio-verified data, grown to 128 MiB: `blockdev --getsize64`
#    and the file follow, resize2fs grows the file system (online), the data still verifies,
#    new data verifies past the old end; shrinking below data is refused naming --force;
#  - mem: grown, and shrunk back over space never written; shrinking over written data is
#    refused, then done with --force;
#  - the resized loop device survives kill -9 and `ublk recover` at its new size.
set -eu

N=80-resize
FIO_LOG=/tmp/r80.fio
MNT=/tmp/r80.mnt
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r80.img
rm -f "$IMG"
add_dev dev loop --file "$IMG" --size 64M --recovery reissue
if ! linux_at_least 6.16; then
    refused "resize on Linux $(uname -r)" "UPDATE_SIZE (Linux 6.16)" timeout 30 ublk resize "$dev_id" 128M
    [ "$(blockdev --getsize64 "$dev_path")" -eq $((64 << 20)) ] || fail "the refused resize changed the device"
    del_dev dev
    nothing_left "at the end"
    echo "$N: ok: resize refused on $(uname -r), naming UPDATE_SIZE (Linux 6.16)"
    exit 0
fi

mkfs.ext4 -q "$dev_path" || fail "mkfs.ext4"
mkdir -p "$MNT"
mount "$dev_path" "$MNT" || fail "mount"
fio --eta=never --name=r80 --directory="$MNT" --size=24M --rw=write --bs=64k --verify=crc32c \
    --do_verify=0 --output="$FIO_LOG" || fail "fio write"
before=$(df -k "$MNT" | awk 'NR == 2 { print $2 }')

out=$(timeout 60 ublk resize "$dev_id" 128M 2>/tmp/r80.err) || fail "ublk resize 128M failed: $(cat /tmp/r80.err)"
echo "$N: $out"
[ "$(blockdev --getsize64 "$dev_path")" -eq $((128 << 20)) ] || fail "the device is $(blockdev --getsize64 "$dev_path") bytes"
[ "$(wc -c <"$IMG")" -eq $((128 << 20)) ] || fail "the backing file is $(wc -c <"$IMG") bytes"
resize2fs "$dev_path" >/tmp/r80.rs 2>&1 || fail "resize2fs: $(cat /tmp/r80.rs)"
after=$(df -k "$MNT" | awk 'NR == 2 { print $2 }')
[ "$after" -gt $((before + 50000)) ] || fail "the file system did not grow: $before KiB, then $after KiB"
fio --eta=never --name=r80 --directory="$MNT" --size=24M --rw=write --bs=64k --verify=crc32c \
    --verify_only --output="$FIO_LOG" || fail "the data written before the resize does not verify"
fio --eta=never --name=r80b --directory="$MNT" --size=60M --rw=write --bs=64k --verify=crc32c \
    --output="$FIO_LOG" || fail "fio write+verify after the resize"
echo "$N: ok: grown to 128 MiB under a mounted ext4 ($before -> $after KiB with resize2fs), data verified"
umount "$MNT"
refused "shrinking over data" "--force" timeout 60 ublk resize "$dev_id" 32M
[ "$(blockdev --getsize64 "$dev_path")" -eq $((128 << 20)) ] || fail "the refused shrink changed the device"

# The resized device keeps its size across a crash and recovery.
kill -9 "$(field "$dev_id" pid)"
wait_state "$dev_id" QUIESCED
timeout 120 ublk recover "$dev_id" >/dev/null 2>/tmp/r80.err || fail "recover after resize: $(cat /tmp/r80.err)"
[ "$(blockdev --getsize64 "$dev_path")" -eq $((128 << 20)) ] || fail "recovered at another size"
e2fsck -fn "$dev_path" >/tmp/r80.fsck 2>&1 || fail "e2fsck after recovery: $(cat /tmp/r80.fsck)"
del_dev dev
echo "$N: ok: shrink below data refused; the resized device recovered at 128 MiB, file system clean"

add_dev mem mem --size 64M
timeout 60 ublk resize "$mem_id" 256M >/dev/null || fail "mem grow"
[ "$(blockdev --getsize64 "$mem_path")" -eq $((256 << 20)) ] || fail "mem did not grow"
dd if=/dev/urandom of="$mem_path" bs=1M count=1 seek=200 oflag=direct 2>/dev/null || fail "write past the old end"
timeout 60 ublk resize "$mem_id" 201M >/dev/null || fail "shrinking over unwritten space"
refused "mem shrink over data" "--force" timeout 60 ublk resize "$mem_id" 100M
timeout 60 ublk resize --force "$mem_id" 100M >/dev/null || fail "mem forced shrink"
[ "$(blockdev --getsize64 "$mem_path")" -eq $((100 << 20)) ] || fail "mem did not shrink"
del_dev mem
nothing_left "at the end"
echo "$N: ok: mem grown, shrunk over unwritten space, shrink over data refused then forced"
