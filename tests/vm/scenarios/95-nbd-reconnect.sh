#!/bin/sh
# 95-nbd-reconnect: connection loss is not data loss. An NBD device over nbdkit's file plugin
# (a tmpfs file, so what nbdkit acknowledged survives it) with 2 queues and 2 connections takes
# fio random writes with crc32c verify. Twice during the run nbdkit is killed with SIGKILL and
# started again a second later on the same port: fio must keep running (I/O waits), the server
# log must show the connections lost and back, and fio must finish with no error, its verify pass
# (through the device) finding every block it wrote; after `ublk del`, a verify-only pass over the
# file itself too. Then a device with --reconnect-timeout 5 whose server is gone for good: I/O
# fails with EIO after about the timeout, at once after that, and `ublk del` returns promptly.
set -eu

N=95-nbd-reconnect
FIO_LOG=/tmp/$N.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
trap cleanup EXIT

IMG=/tmp/$N.img
dd if=/dev/zero of="$IMG" bs=1M count=0 seek=256 2>/dev/null
JOB="--name=r95 --rw=randwrite --bs=4k --size=96M --verify=crc32c --verify_fatal=1 --randrepeat=1"

nbdkit_up file -i 127.0.0.1 -p 10811 file "$IMG"
add_dev dev nbd --host 127.0.0.1 --port 10811 --queues 2 --connections 2
# shellcheck disable=SC2086 # JOB is a list of options.
fio --eta=never $JOB --filename="$dev_path" --ioengine=io_uring --direct=1 --iodepth=32 \
    --rate_iops=3000 --output="$FIO_LOG" &
fio_pid=$!

for round in 1 2; do
    wait_io written "$dev_id" 2048 # 1 MiB
    kill -9 "$file_pid" || fail "round $round: cannot kill nbdkit $file_pid"
    sleep 1
    running "$fio_pid" || fail "round $round: fio exited when the server died (I/O failed instead of waiting)"
    [ "$(field "$dev_id" state)" = LIVE ] || fail "round $round: device $(entry "$dev_id")"
    nbdkit_up file -i 127.0.0.1 -p 10811 file "$IMG"
    wait_io written "$dev_id" 2048
    echo "$N: ok: round $round: nbdkit killed and restarted, I/O goes on"
done
rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" "$FIO_LOG" || fail "fio reported errors"
grep -q "connection .* lost" /run/ublk/server.log || fail "the server log shows no lost connection"
grep -q "connection .* back after" /run/ublk/server.log || fail "the server log shows no reconnection"
echo "$N: ok: fio write+verify through 2 server restarts: no error, nothing lost"
del_dev dev
# shellcheck disable=SC2086
fio --eta=never $JOB --filename="$IMG" --ioengine=psync --verify_only --output="$FIO_LOG" ||
    fail "verify-only over the file failed"
grep -q "err= 0" "$FIO_LOG" || fail "verify-only over the file reported errors"
echo "$N: ok: the file holds every block fio wrote"

# A server gone for good: I/O fails after the reconnect timeout, the device stays deletable.
nbdkit_up gone -U /tmp/$N.sock memory 64M
add_dev dev nbd --unix /tmp/$N.sock --reconnect-timeout 5
kill -9 "$gone_pid"
# One direct read each (the page cache may hold what the partition scan read).
read_one() {
    fio --name=one --filename="$dev_path" --ioengine=psync --direct=1 --rw=read --bs=4k \
        --size=4k --offset="$1" --output=/tmp/$N.one >/dev/null 2>&1
}
t=$(now_us)
! read_one 0 || fail "a read succeeded with no server"
ms=$(ms_since "$t")
[ "$ms" -lt 20000 ] || fail "the read failed only after $ms ms"
t=$(now_us)
! read_one 65536 || fail "a second read succeeded"
ms2=$(ms_since "$t")
# Under 4 s: a second 5 s window is told apart even when the emulator is slow to start fio.
[ "$ms2" -lt 4000 ] || fail "after the timeout, I/O still waited $ms2 ms"
grep -q "no connection within the reconnect timeout" /run/ublk/server.log ||
    fail "the server log does not say it gave up"
t=$(now_us)
del_dev dev 30
echo "$N: ok: no server: EIO after $ms ms, then in $ms2 ms; ublk del took $(ms_since "$t") ms"
nothing_left "after ublk del"
