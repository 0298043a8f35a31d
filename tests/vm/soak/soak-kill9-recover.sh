#!/bin/sh
# soak-kill9-recover: ROUNDS (default 10) rounds of kill -9 and `ublk recover` under fio random
# writes of mixed sizes (512 B - 1 MiB) with crc32c verify, on a loop device over a tmpfs file
# with `--recovery reissue`: fio must end with no error and a clean verify, and a verify-only
# pass over the backing file after del must find every block fio wrote (no acknowledged write
# lost). Prints the rounds and the time each took. Not part of the default suite (it takes
# minutes): `cargo xtask vm-e2e --no-tests --scenario-dir tests/vm/soak`.
set -eu

N=soak-kill9-recover
FIO_LOG=/tmp/soak.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

ROUNDS=${ROUNDS:-10}
IMG=/tmp/soak.img
JOB="--name=soak --rw=randwrite --bsrange=512-1m --size=96M --verify=crc32c --verify_fatal=1 --randrepeat=1"

dd if=/dev/zero of="$IMG" bs=1M count=0 seek=128 2>/dev/null || fail "cannot create $IMG"
add_dev dev loop --file "$IMG" --recovery reissue --queues 2 --depth 64
t_all=$(now_us)
# shellcheck disable=SC2086 # JOB is a list of options.
fio --eta=never $JOB --filename="$dev_path" --ioengine=io_uring --direct=1 --iodepth=32 \
    --rate_iops=1500 --output=/tmp/soak.fio &
fio_pid=$!

round=0
while [ "$round" -lt "$ROUNDS" ]; do
    round=$((round + 1))
    t0=$(now_us)
    wait_io written "$dev_id" 1024
    old=$(field "$dev_id" pid)
    kill -9 "$old" || fail "round $round: cannot kill server $old"
    wait_state "$dev_id" QUIESCED
    running "$fio_pid" || fail "round $round: fio exited when the server was killed"
    out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/recover.err) ||
        fail "round $round: ublk recover exited $?: $(cat /tmp/recover.err)"
    [ "$out" = "$dev_id $dev_path" ] || fail "round $round: ublk recover printed '$out'"
    echo "$N: round $round: server $old killed, recovered as $(field "$dev_id" pid) in $(ms_since "$t0") ms"
done

rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "fio exited $rc"
grep -q "err= 0" /tmp/soak.fio || fail "fio reported errors"
del_dev dev
# shellcheck disable=SC2086
fio --eta=never $JOB --filename="$IMG" --ioengine=psync --verify_only --output=/tmp/soak.fio ||
    fail "verify-only over the backing file failed"
grep -q "err= 0" /tmp/soak.fio || fail "verify-only over the backing file reported errors"
nothing_left "at the end"
echo "$N: ok: $ROUNDS rounds of kill -9 and recover under mixed-size fio verify in $(($(ms_since "$t_all") / 1000)) s: 0 errors, nothing lost"
