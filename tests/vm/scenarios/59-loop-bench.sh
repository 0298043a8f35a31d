#!/bin/sh
# Loop target vs the kernel's loop driver (direct I/O) over the same tmpfs file, same boot: fio 4K
# random read and write at QD64, runs interleaved, medians. In vm-e2e it is a short guard against
# gross regressions (ublk below FLOOR x kernel loop fails); for the real figures run e.g.
#   cargo xtask vm-run --release -- RUNS=7 SECS=10 sh /xtask/scenarios/59-loop-bench.sh
# (QUEUES=N and UBLK_ARGS="--poll-us 50" vary the ublk side)
# (with --release, build ublk first: cargo build --release -p ublk-cli).
set -eu
# busybox sh runs its own applets before PATH: util-linux tools are called by their full path.

RUNS=${RUNS:-1}
SECS=${SECS:-3}
QUEUES=${QUEUES:-1}
UBLK_ARGS=${UBLK_ARGS:-} # more `ublk add loop` options, e.g. "--poll-us 50"
FLOOR=${FLOOR:-25} # percent of the kernel loop driver's IOPS: a sanity floor (vm-e2e runs a debug build)
N=59-loop-bench
# shellcheck source=../lib.sh
. /xtask/lib.sh
img=/tmp/bench.img
kloop=""

# After `ublk del --all`: the file is no longer held open by the ublk server.
detach() {
    [ -z "$kloop" ] || /usr/sbin/losetup -d "$kloop" 2>/dev/null || true
    rm -f "$img"
}
AFTER_DEL=detach
trap cleanup EXIT

# An allocated 256 MiB file: both drivers read and write real tmpfs pages, not holes.
dd if=/dev/zero of=$img bs=1M count=256 2>/dev/null || fail "cannot create $img"
kloop=$(/usr/sbin/losetup --direct-io=on -f --show $img) || fail "losetup"
[ "$(cat /sys/block/${kloop#/dev/}/loop/dio)" = 1 ] || fail "kernel loop is not using direct I/O"
# shellcheck disable=SC2086 # UBLK_ARGS is a list of options.
add_dev ublk loop --file $img --queues "$QUEUES" $UBLK_ARGS
grep -q "device $ublk_id: $img (file, direct I/O" /run/ublk/server.log || fail "ublk loop is not using direct I/O"

# iops DEV RW: one fio run, its IOPS (terse v3: field 8 read IOPS, field 49 write IOPS).
iops() {
    fio --name=bench --filename="$1" --ioengine=io_uring --direct=1 --rw="$2" --bs=4k \
        --iodepth=64 --runtime="$SECS" --time_based --randrepeat=0 --norandommap \
        --output-format=terse --terse-version=3 > /tmp/bench.fio || fail "fio $1 $2"
    [ "$(cut -d';' -f5 /tmp/bench.fio)" = 0 ] || fail "fio $1 $2 reported an error"
    if [ "$2" = randread ]; then cut -d';' -f8 /tmp/bench.fio; else cut -d';' -f49 /tmp/bench.fio; fi
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for rw in randread randwrite; do
    : > /tmp/bench.k
    : > /tmp/bench.u
    run=1
    while [ $run -le "$RUNS" ]; do
        # Alternate which goes first, so drift in the emulator hits both alike.
        if [ $((run % 2)) = 1 ]; then
            iops "$kloop" $rw >> /tmp/bench.k
            iops "$ublk_path" $rw >> /tmp/bench.u
        else
            iops "$ublk_path" $rw >> /tmp/bench.u
            iops "$kloop" $rw >> /tmp/bench.k
        fi
        run=$((run + 1))
    done
    k=$(median < /tmp/bench.k)
    u=$(median < /tmp/bench.u)
    [ "$k" -gt 0 ] || fail "kernel loop $rw: 0 IOPS"
    ratio=$((u * 100 / k))
    echo "$N: 4k $rw QD64, $RUNS run(s) of ${SECS}s, medians: kernel loop $k IOPS," \
        "ublk loop $u IOPS ($ratio%); all runs: kernel $(tr '\n' ' ' < /tmp/bench.k)/" \
        "ublk $(tr '\n' ' ' < /tmp/bench.u)"
    [ $ratio -ge "$FLOOR" ] || fail "ublk loop $rw is below $FLOOR% of the kernel loop driver"
done
del_dev ublk
# The server logs its queues' io_uring_enter calls per request as it exits; ublk del waits for it.
grep "device $ublk_id queue" /run/ublk/server.log | tail -n "$QUEUES" || true
echo "$N: ok"
