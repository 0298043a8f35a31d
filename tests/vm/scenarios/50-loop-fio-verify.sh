#!/bin/sh
# Loop target data integrity: fio verify=crc32c over the whole device, block sizes 512 B - 1 MiB,
# iodepth 1 and 128, 1 and 2 queues, direct and buffered backing, each with small reads and writes
# copied inline (the default on tmpfs) and, for direct backing, all as io_uring SQEs
# (--backing-io async);
# afterwards the backing file, read directly once the device is deleted, is byte-identical to what
# the device held.
set -eu

N=50-loop-fio-verify
# shellcheck source=../lib.sh
. /xtask/lib.sh
# Each pass writes and reads back the whole device: 32 MiB keeps 12 passes near a minute.
SIZE=32M

remove_images() { rm -f /tmp/$N-*.img; }
AFTER_DEL=remove_images
trap cleanup EXIT

for mode in direct buffered direct-async; do
    for queues in 1 2; do
        img=/tmp/$N-$mode-$queues.img
        rm -f "$img"
        flag=""
        [ $mode = buffered ] && flag=--buffered
        [ $mode = direct-async ] && flag="--backing-io async"
        # shellcheck disable=SC2086 # flag is a list of options.
        add_dev dev loop --file "$img" --size $SIZE --queues $queues $flag
        line=$(grep "device $dev_id: $img" /run/ublk/server.log | tail -1)
        case "$mode:$line" in
            direct:*"direct I/O, small copies inline"* | buffered:*"buffered I/O, small copies inline"*) ;;
            direct-async:*"direct I/O,"*) ;;
            *) fail "$mode backing not in effect: '$line'" ;;
        esac
        for qd in 1 128; do
            # The whole device, random order, every block once, then read back and checked.
            fio --name=verify --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randwrite \
                --bsrange=512-1M --iodepth=$qd --verify=crc32c --verify_fatal=1 \
                --randseed=$qd$queues --output-format=terse --terse-version=3 > /tmp/$N.fio \
                || fail "fio verify $mode queues=$queues iodepth=$qd: $(cat /tmp/$N.fio)"
            [ "$(cut -d';' -f5 /tmp/$N.fio)" = 0 ] || fail "fio reported an error ($mode, $queues, $qd)"
            echo "$N: $mode backing, $queues queue(s), iodepth $qd: verify ok"
        done
        want=$(md5 "$dev_path")
        del_dev dev
        got=$(md5 "$img")
        [ "$got" = "$want" ] || fail "backing file ($got) differs from the device ($want)"
        echo "$N: $mode backing, $queues queue(s): backing file identical to the device"
        rm -f "$img"
    done
done
echo "$N: ok"
