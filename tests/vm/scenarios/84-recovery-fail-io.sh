#!/bin/sh
# 84-recovery-fail-io: `--recovery fail-io` (USER_RECOVERY_FAIL_IO, Linux 6.13): while no server
# runs, I/O fails at once instead of waiting (the device is FAIL_IO); `ublk recover` makes it
# LIVE again with its data. (Older kernels refuse the mode: scenario 75.)
set -eu

N=84-recovery-fail-io
FIO_LOG=/tmp/r84.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

needs_linux 6.13 USER_RECOVERY_FAIL_IO
trap cleanup EXIT

IMG=/tmp/r84.img
rm -f "$IMG"
add_dev dev loop --file "$IMG" --size 32M --recovery fail-io
dd if=/dev/urandom of=/tmp/r84.data bs=1M count=2 2>/dev/null
dd if=/tmp/r84.data of="$dev_path" bs=1M oflag=direct 2>/dev/null || fail "write"
kill -9 "$(field "$dev_id" pid)"
wait_state "$dev_id" FAIL_IO
t0=$(now_us)
! dd if="$dev_path" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null || fail "a read succeeded with no server"
[ "$(ms_since "$t0")" -lt 10000 ] || fail "the read took $(ms_since "$t0") ms to fail (it waited)"
timeout 120 ublk recover "$dev_id" >/dev/null 2>/tmp/r84.err || fail "recover: $(cat /tmp/r84.err)"
[ "$(field "$dev_id" state)" = LIVE ] || fail "not LIVE after recover"
[ "$(md5 "$dev_path" 0 2)" = "$(md5 /tmp/r84.data)" ] || fail "the data did not survive"
del_dev dev
nothing_left "at the end"
echo "$N: ok: I/O failed at once while FAIL_IO; recovered LIVE with the data"
