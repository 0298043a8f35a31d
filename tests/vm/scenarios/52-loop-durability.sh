#!/bin/sh
# Loop target durability: writes followed by a completed flush (dd conv=fsync) and FUA writes
# (O_DSYNC, which the block layer sends as FUA to a device with a write-back cache and FUA) are in
# the backing file even when the server is killed with SIGKILL right after; the dead device is
# then removed by `ublk del`.
set -eu

me=52-loop-durability
img=/tmp/$me.img
src=/tmp/$me.src
id=""

fail() {
    echo "$me: FAIL: $*" >&2
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    rm -f "$img" "$src"
    exit 1
}

rm -f "$img"
dd if=/dev/urandom of="$src" bs=1M count=16 2>/dev/null || fail "make the source data"
out=$(ublk add loop --file "$img" --size 64M) || fail "ublk add loop"
id=${out%% *}
dev=${out#* }
pid=$(ublk list | awk -v id="$id" '$1 == id { print $6 }')
[ -n "$pid" ] && [ "$pid" -gt 0 ] || fail "no server pid for device $id"

# 16 MiB written, then flushed (fsync on the block device sends FLUSH).
dd if="$src" of="$dev" bs=1M count=16 oflag=direct conv=fsync 2>/dev/null || fail "dd + fsync"
# 16 MiB more at 16 MiB, every write O_DSYNC (FUA), with fio's checksummed headers to check later.
fio --name=fua --filename="$dev" --ioengine=psync --direct=1 --sync=dsync --rw=write --bs=64k \
    --offset=16M --size=16M --verify=crc32c --do_verify=0 --output-format=terse \
    --terse-version=3 > /tmp/$me.fio || fail "fio FUA writes: $(cat /tmp/$me.fio)"
kill -9 "$pid" || fail "kill -9 $pid"
# The server is gone: the kernel marks the device dead once its queues are torn down.
n=0
while [ "$(ublk list | awk -v id="$id" '$1 == id { print $2 }')" != DEAD ]; do
    n=$((n + 1))
    [ $n -lt 100 ] || fail "device $id not DEAD after the server was killed: $(ublk list)"
    sleep 0.1
done
ublk del "$id" > /dev/null || fail "ublk del of the dead device"
[ -z "$(ublk list | awk -v id="$id" '$1 == id')" ] || fail "device $id still listed after ublk del"
id=""

want=$(md5sum < "$src" | cut -d' ' -f1)
got=$(dd if="$img" bs=1M count=16 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "flushed data is not in the backing file"
echo "$me: 16 MiB written + flushed before SIGKILL: in the backing file"
fio --name=fua --filename="$img" --ioengine=psync --rw=write --bs=64k --offset=16M --size=16M \
    --verify=crc32c --verify_only --verify_fatal=1 --output-format=terse --terse-version=3 \
    > /tmp/$me.fio || fail "FUA-written data is not in the backing file: $(cat /tmp/$me.fio)"
echo "$me: 16 MiB of FUA writes before SIGKILL: in the backing file"
rm -f "$img" "$src"
echo "$me: ok"
