#!/bin/sh
# 81-safe-delete: `ublk del` refuses a device in use, naming who holds it, and leaves it alone:
# mounted (the mount point and file system), open by a process (its pid and name), or its
# partition mounted. Once nobody holds it, it is deleted; `--force` deletes one in use. The
# check is ublk's own on every kernel; from Linux 7.0 (SAFE_STOP_DEV) the kernel confirms it
# atomically (TRY_STOP_DEV).
set -eu

N=81-safe-delete
MNT=/tmp/r81.mnt
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

mkdir -p "$MNT"
add_dev dev mem --size 64M
mkfs.ext4 -q "$dev_path" || fail "mkfs.ext4"
mount "$dev_path" "$MNT" || fail "mount"
refused "mounted" "mounted at $MNT (ext4)" timeout 30 ublk del "$dev_id"
[ "$(field "$dev_id" state)" = LIVE ] || fail "the refused del touched the device"
umount "$MNT"

# A process holding the device open (fio reading one block a second).
hold() {
    fio --eta=never --name=hold --filename="$1" --rw=read --bs=4k --direct=1 --time_based \
        --runtime=300 --rate_iops=1 --output=/dev/null &
    fio_pid=$!
    holder=$fio_pid
    wait_io ios "$2" 1
}
hold "$dev_path" "$dev_id"
# fio forks its job into a process of its own: either may be the one named.
refused "open" "(fio)" timeout 30 ublk del "$dev_id"
grep -q "is open in pid [0-9]* (fio)" /tmp/bad.err || fail "the refusal does not name the holding pid: $(cat /tmp/bad.err)"
kill "$holder"
wait "$holder" 2>/dev/null || true
fio_pid=
del_dev dev
echo "$N: ok: mounted and open devices refused naming their holder; deleted once free"

add_dev dev mem --size 64M
hold "$dev_path" "$dev_id"
timeout 30 ublk del --force "$dev_id" >/dev/null 2>/tmp/r81.err || fail "del --force: $(cat /tmp/r81.err)"
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
fio_pid=
nothing_left "after del --force"
echo "$N: ok: --force deletes a device in use"
