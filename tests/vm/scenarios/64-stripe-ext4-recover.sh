#!/bin/sh
# 64-stripe-ext4-recover: a stripe carries a file system and survives its server's death.
#  - ext4 on a stripe over 3 tmpfs files (64K chunks, 2 queues, `--recovery reissue`): mkfs.ext4, a tree of
#    136 files written and md5-summed, umount, `e2fsck -fn` clean; the stores served again by a
#    new device (same order) mount with the same md5s;
#  - fio random writes of 4 KiB-1 MiB with crc32c verify; the server is killed with SIGKILL,
#    the device goes QUIESCED with fio waiting, `ublk recover` brings it LIVE; fio ends with no
#    error and a clean verify;
#  - killed again: `ublk recover` refuses while one store was replaced by a same-size copy
#    (naming that store, the device left QUIESCED), and recovers once the original is back;
#  - after del, each store holds exactly its chunks of what the device read last.
set -eu

N=64-stripe-ext4-recover
FIO_LOG=/tmp/r64.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

MNT=/tmp/r64.mnt
S0=/tmp/r64.s0
S1=/tmp/r64.s1
S2=/tmp/r64.s2
remove_files() { rm -rf /tmp/r64.s* /tmp/r64.keep /tmp/r64.img /tmp/r64.sums "$MNT"; }
AFTER_DEL=remove_files
trap cleanup EXIT

remove_files
mkdir -p "$MNT"
for s in "$S0" "$S1" "$S2"; do truncate -s 32M "$s"; done
add_dev dev stripe --chunk 64K --queues 2 --recovery reissue "$S0" "$S1" "$S2"
mkfs.ext4 -q -F "$dev_path" >/tmp/mkfs.out 2>&1 || fail "mkfs.ext4: $(cat /tmp/mkfs.out)"
mount -t ext4 "$dev_path" "$MNT" || fail "mount"
i=0
while [ $i -lt 8 ]; do
    mkdir -p "$MNT/dir$i/sub"
    dd if=/dev/urandom of="$MNT/dir$i/big" bs=1M count=$((i + 1)) 2>/dev/null || fail "write big$i"
    j=0
    while [ $j -lt 16 ]; do
        dd if=/dev/urandom of="$MNT/dir$i/sub/f$j" bs=1k count=$((j * 7 + 1)) 2>/dev/null ||
            fail "write f$j"
        j=$((j + 1))
    done
    i=$((i + 1))
done
(cd "$MNT" && find . -type f | sort | xargs md5sum) >/tmp/r64.sums || fail "checksums"
files=$(wc -l </tmp/r64.sums)
umount "$MNT" || fail "umount"
e2fsck -fn "$dev_path" >/tmp/fsck.out 2>&1 || fail "e2fsck -fn: $(cat /tmp/fsck.out)"
del_dev dev
add_dev dev stripe --chunk 64K --queues 2 --recovery reissue "$S0" "$S1" "$S2"
mount -t ext4 "$dev_path" "$MNT" || fail "mount the stores served again"
(cd "$MNT" && md5sum -c /tmp/r64.sums >/dev/null) || fail "files differ on the stores served again"
umount "$MNT" || fail "umount (served again)"
e2fsck -fn "$dev_path" >/tmp/fsck.out 2>&1 || fail "e2fsck -fn (served again): $(cat /tmp/fsck.out)"
echo "$N: ok: ext4: $files files, e2fsck -fn clean, the same md5s from the stores served again"

# kill_server WHAT: SIGKILL to the device's server while fio runs; the device must go QUIESCED
# with fio still waiting.
kill_server() {
    wait_io written "$dev_id" 4096
    ks_pid=$(field "$dev_id" pid)
    kill -9 "$ks_pid"
    wait_state "$dev_id" QUIESCED
    running "$fio_pid" || fail "$1: fio exited when the server was killed"
}

# recover WHAT: `ublk recover` must print the device and make it LIVE.
recover() {
    rc_out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/rec.err) ||
        fail "$1: ublk recover exited $?: $(cat /tmp/rec.err)"
    [ "$rc_out" = "$dev_id $dev_path" ] || fail "$1: ublk recover printed '$rc_out'"
    [ "$(field "$dev_id" state)" = LIVE ] || fail "$1: device is $(field "$dev_id" state) after recover"
}

fio --eta=never --name=r64 --filename="$dev_path" --ioengine=io_uring --direct=1 \
    --rw=randwrite --bsrange=4k-1m --size=64M --iodepth=16 --verify=crc32c --verify_fatal=1 \
    --rate=4m --output="$FIO_LOG" &
fio_pid=$!
kill_server "first kill"
recover "first kill"
echo "$N: ok: killed under fio write+verify, QUIESCED, recovered LIVE"

kill_server "second kill"
mv "$S1" /tmp/r64.keep
cp /tmp/r64.keep "$S1"
rc=0
timeout 60 ublk recover "$dev_id" >/dev/null 2>/tmp/rec.err || rc=$?
[ "$rc" -eq 1 ] || fail "recover with a replaced store exited $rc (want 1): $(cat /tmp/rec.err)"
grep -qF "$S1" /tmp/rec.err || fail "the refusal does not name $S1: $(cat /tmp/rec.err)"
grep -qF "is not the one the device was made from" /tmp/rec.err ||
    fail "the refusal does not say the store changed: $(cat /tmp/rec.err)"
[ "$(field "$dev_id" state)" = QUIESCED ] || fail "device is $(field "$dev_id" state) after the refusal"
echo "$N: ok: a replaced store refused: $(cat /tmp/rec.err)"
mv /tmp/r64.keep "$S1"
recover "second kill, original store back"

rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" "$FIO_LOG" || fail "fio reported errors"
echo "$N: ok: recovered with the original store; fio finished, 0 errors"
dd if="$dev_path" of=/tmp/r64.img bs=1M iflag=direct 2>/dev/null || fail "cannot read the device"
del_dev dev
stripe_check "after recovery" /tmp/r64.img 65536 "$S0" "$S1" "$S2"
echo "$N: ok: each store holds exactly its chunks"
remove_files
no_kernel_warning "stripe ext4 and recovery"
nothing_left "at the end"
