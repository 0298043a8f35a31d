#!/bin/sh
# Loop target durability: writes followed by a completed flush (dd conv=fsync) and FUA writes
# (O_DSYNC, which the block layer sends as FUA to a device with a write-back cache and FUA) are in
# the backing file even when the server is killed with SIGKILL right after; the dead device is
# then removed by `ublk del`.
set -eu

N=52-loop-durability
# shellcheck source=../lib.sh
. /xtask/lib.sh
img=/tmp/$N.img
src=/tmp/$N.src

remove_files() { rm -f "$img" "$src"; }
AFTER_DEL=remove_files
trap cleanup EXIT

rm -f "$img"
dd if=/dev/urandom of="$src" bs=1M count=16 2>/dev/null || fail "make the source data"
add_dev dev loop --file "$img" --size 64M
pid=$(field "$dev_id" pid)
[ -n "$pid" ] && [ "$pid" -gt 0 ] || fail "no server pid for device $dev_id"

# 16 MiB written, then flushed (fsync on the block device sends FLUSH).
dd if="$src" of="$dev_path" bs=1M count=16 oflag=direct conv=fsync 2>/dev/null || fail "dd + fsync"
# 16 MiB more at 16 MiB, every write O_DSYNC (FUA), with fio's checksummed headers to check later.
fio --name=fua --filename="$dev_path" --ioengine=psync --direct=1 --sync=dsync --rw=write --bs=64k \
    --offset=16M --size=16M --verify=crc32c --do_verify=0 --output-format=terse \
    --terse-version=3 > /tmp/$N.fio || fail "fio FUA writes: $(cat /tmp/$N.fio)"
kill -9 "$pid" || fail "kill -9 $pid"
# The server is gone: the kernel marks the device dead once its queues are torn down.
wait_state "$dev_id" DEAD 10
del_dev dev
nothing_left "after ublk del of the dead device"

want=$(md5 "$src")
got=$(md5 "$img" 0 16)
[ "$got" = "$want" ] || fail "flushed data is not in the backing file"
echo "$N: 16 MiB written + flushed before SIGKILL: in the backing file"
fio --name=fua --filename="$img" --ioengine=psync --rw=write --bs=64k --offset=16M --size=16M \
    --verify=crc32c --verify_only --verify_fatal=1 --output-format=terse --terse-version=3 \
    > /tmp/$N.fio || fail "FUA-written data is not in the backing file: $(cat /tmp/$N.fio)"
echo "$N: 16 MiB of FUA writes before SIGKILL: in the backing file"
rm -f "$img" "$src"
echo "$N: ok"
