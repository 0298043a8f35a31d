#!/bin/sh
# 98-nbd-bench: ublk nbd vs the kernel's NBD client (nbd-client, as many connections as ublk has
# queues) on the same nbdkit memory export over the loopback, same boot: fio 4K random read and
# write at QD64 and 128K sequential reads at QD8, runs interleaved, medians. In vm-e2e it is a
# short guard against gross regressions (ublk below FLOOR% of the kernel's client fails); for
# figures, `cargo xtask bench --filter nbd`, or this with more runs:
#   cargo xtask vm-run --release -- RUNS=5 SECS=5 QUEUES=2 sh /xtask/scenarios/98-nbd-bench.sh
set -eu

RUNS=${RUNS:-1}
SECS=${SECS:-3}
QUEUES=${QUEUES:-1}
FLOOR=${FLOOR:-25} # percent of the kernel client's IOPS: a sanity floor (vm-e2e runs a debug build)
N=98-nbd-bench
# shellcheck source=../lib.sh
. /xtask/lib.sh
knbd=""
disconnect() {
    [ -z "$knbd" ] || nbd-client -d "$knbd" >/dev/null 2>&1 || true
    nbd_stop_all
}
AFTER_DEL=disconnect
trap cleanup EXIT

nbdkit_up mem -i 127.0.0.1 -p 10813 memory 256M
for n in $(seq 0 15); do
    [ "$(cat /sys/block/nbd$n/size 2>/dev/null)" = 0 ] || continue
    knbd=/dev/nbd$n
    break
done
[ -n "$knbd" ] || fail "no free /dev/nbdN (is nbd.ko loaded?)"
nbd-client 127.0.0.1 10813 "$knbd" -connections "$QUEUES" -block-size 512 >/tmp/$N.client 2>&1 ||
    fail "nbd-client: $(cat /tmp/$N.client)"
add_dev ublk nbd --host 127.0.0.1 --port 10813 --queues "$QUEUES" --connections "$QUEUES"
for dev in "$knbd" "$ublk_path"; do
    echo none >"/sys/block/${dev#/dev/}/queue/scheduler" 2>/dev/null || true
done

# iops DEV RW BS QD: one fio run, its IOPS (terse v3: field 8 read IOPS, field 49 write IOPS).
iops() {
    fio --name=bench --filename="$1" --ioengine=io_uring --direct=1 --rw="$2" --bs="$3" \
        --iodepth="$4" --numjobs="$QUEUES" --group_reporting --size=256M --runtime="$SECS" \
        --time_based --randrepeat=0 --norandommap --output-format=terse --terse-version=3 \
        >/tmp/$N.fio || fail "fio $*"
    [ "$(cut -d';' -f5 /tmp/$N.fio)" = 0 ] || fail "fio $* reported an error"
    case $2 in
        *write) cut -d';' -f49 /tmp/$N.fio ;;
        *) cut -d';' -f8 /tmp/$N.fio ;;
    esac
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for case in "randread 4k 64" "randwrite 4k 64" "read 128k 8"; do
    # shellcheck disable=SC2086 # case is three words.
    set -- $case
    : >/tmp/$N.k
    : >/tmp/$N.u
    run=1
    while [ $run -le "$RUNS" ]; do
        # Alternate which goes first, so drift in the emulator hits both alike.
        if [ $((run % 2)) = 1 ]; then
            iops "$knbd" "$@" >>/tmp/$N.k
            iops "$ublk_path" "$@" >>/tmp/$N.u
        else
            iops "$ublk_path" "$@" >>/tmp/$N.u
            iops "$knbd" "$@" >>/tmp/$N.k
        fi
        run=$((run + 1))
    done
    k=$(median </tmp/$N.k)
    u=$(median </tmp/$N.u)
    [ "$k" -gt 0 ] || fail "kernel nbd $case: 0 IOPS"
    ratio=$((u * 100 / k))
    echo "$N: $2 $1 QD$3, $QUEUES connection(s), $RUNS run(s) of ${SECS}s, medians: kernel nbd" \
        "$k IOPS, ublk nbd $u IOPS ($ratio%); all runs: kernel $(tr '\n' ' ' </tmp/$N.k)/" \
        "ublk $(tr '\n' ' ' </tmp/$N.u)"
    [ $ratio -ge "$FLOOR" ] || fail "ublk nbd $case is below $FLOOR% of the kernel's NBD client"
done
del_dev ublk
grep "device $ublk_id queue" /run/ublk/server.log | tail -n "$QUEUES" || true
echo "$N: ok"
