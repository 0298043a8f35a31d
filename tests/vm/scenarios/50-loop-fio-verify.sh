#!/bin/sh
# Loop target data integrity: fio verify=crc32c over the whole device, block sizes 512 B - 1 MiB,
# iodepth 1 and 128, 1 and 2 queues, direct and buffered backing, each with small reads and writes
# copied inline (the default on tmpfs) and, for direct backing, all as io_uring SQEs
# (--backing-io async);
# afterwards the backing file, read directly once the device is deleted, is byte-identical to what
# the device held.
set -eu

me=50-loop-fio-verify
SIZE=128M
id=""
img=""

fail() {
    echo "$me: FAIL: $*" >&2
    [ -n "$id" ] && ublk del "$id" >/dev/null 2>&1
    [ -n "$img" ] && rm -f "$img"
    exit 1
}

for mode in direct buffered direct-async; do
    for queues in 1 2; do
        img=/tmp/$me-$mode-$queues.img
        rm -f "$img"
        flag=""
        [ $mode = buffered ] && flag=--buffered
        [ $mode = direct-async ] && flag="--backing-io async"
        # shellcheck disable=SC2086 # flag is a list of options.
        out=$(ublk add loop --file "$img" --size $SIZE --queues $queues $flag) || fail "ublk add loop"
        id=${out%% *}
        dev=${out#* }
        line=$(grep "device $id: $img" /run/ublk/server.log | tail -1)
        case "$mode:$line" in
            direct:*"direct I/O, small copies inline"* | buffered:*"buffered I/O, small copies inline"*) ;;
            direct-async:*"direct I/O,"*) ;;
            *) fail "$mode backing not in effect: '$line'" ;;
        esac
        for qd in 1 128; do
            # The whole device, random order, every block once, then read back and checked.
            fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite \
                --bsrange=512-1M --iodepth=$qd --verify=crc32c --verify_fatal=1 \
                --randseed=$qd$queues --output-format=terse --terse-version=3 > /tmp/$me.fio \
                || fail "fio verify $mode queues=$queues iodepth=$qd: $(cat /tmp/$me.fio)"
            [ "$(cut -d';' -f5 /tmp/$me.fio)" = 0 ] || fail "fio reported an error ($mode, $queues, $qd)"
            echo "$me: $mode backing, $queues queue(s), iodepth $qd: verify ok"
        done
        want=$(md5sum < "$dev")
        ublk del "$id" > /dev/null || fail "ublk del $id"
        id=""
        got=$(md5sum < "$img")
        [ "$got" = "$want" ] || fail "backing file ($got) differs from the device ($want)"
        echo "$me: $mode backing, $queues queue(s): backing file identical to the device"
        rm -f "$img"
        img=""
    done
done
echo "$me: ok"
