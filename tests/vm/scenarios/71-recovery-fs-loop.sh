#!/bin/sh
# 71-recovery-fs-loop: recovery under a mounted filesystem. ext4 on a loop device (tmpfs file,
# `--recovery reissue`) is mounted and a file is being written with fio (crc32c verify, fsync at
# the end) when the server is killed with SIGKILL. The device goes QUIESCED with the filesystem
# still mounted and the writer waiting; `ublk recover` brings it LIVE; the writer finishes and
# its verify pass is clean; the files written before the crash read back with the same md5;
# after umount, `e2fsck -fn` finds the filesystem clean.
set -eu

N=71-recovery-fs-loop
FIO_LOG=/tmp/r71.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

MNT=/tmp/r71.mnt
IMG=/tmp/r71.img
trap cleanup EXIT

ublk add loop --help >/dev/null 2>&1 || fail "this ublk has no loop target (ublk add loop --file)"

dd if=/dev/zero of="$IMG" bs=1M count=0 seek=256 2>/dev/null || fail "cannot create $IMG"
add_dev dev loop --file "$IMG" --recovery reissue --queues 2
mkfs.ext4 -q -F "$dev_path" >/tmp/mkfs.out 2>&1 || fail "mkfs.ext4 $dev_path: $(cat /tmp/mkfs.out)"
mkdir -p "$MNT"
mount -t ext4 "$dev_path" "$MNT" || fail "mount $dev_path"
dd if=/dev/urandom of="$MNT/before" bs=1M count=8 2>/dev/null || fail "writing $MNT/before"
sync
before=$(md5 "$MNT/before")
echo "$N: device $dev_id: ext4 mounted on $MNT, 8 MiB file written and synced"

fio --eta=never --name=r71 --directory="$MNT" --rw=write --bs=64k --size=64M --ioengine=psync \
    --rate=8m --fsync_on_close=1 --verify=crc32c --verify_fatal=1 --output=/tmp/r71.fio &
fio_pid=$!
wait_io written "$dev_id" 8192 # 4 MiB

old=$(field "$dev_id" pid)
kill -9 "$old" || fail "cannot kill server $old"
wait_state "$dev_id" QUIESCED
grep -q " $MNT " /proc/mounts || fail "$MNT is no longer mounted after the kill"
running "$fio_pid" || fail "fio exited when the server was killed"
echo "$N: server $old killed while fio writes into the mounted filesystem; device QUIESCED"

out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/recover.err) ||
    fail "ublk recover $dev_id exited $?: $(cat /tmp/recover.err)"
[ "$(field "$dev_id" state)" = LIVE ] || fail "device $dev_id is $(field "$dev_id" state) after recover"
echo "$N: recovered while mounted: LIVE with server $(field "$dev_id" pid)"

rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" /tmp/r71.fio || fail "fio reported errors"
[ "$(md5 "$MNT/before")" = "$before" ] || fail "the file written before the crash changed"
sync
umount "$MNT" || fail "umount $MNT"
e2fsck -fn "$dev_path" >/tmp/fsck.out 2>&1 || fail "e2fsck -fn $dev_path exited $?: $(cat /tmp/fsck.out)"
del_dev dev
echo "$N: ok: fio in the filesystem verified, earlier file intact, e2fsck -fn clean"
