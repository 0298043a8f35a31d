#!/bin/sh
# 68-batch-io: batch I/O (Linux 7.0) moves data right in every buffer mode it goes with, survives
# kill -9 + recover under fio verify, and I/O racing deletion and server death; on an older
# kernel it is refused naming Linux 7.0 and auto picks per-tag commands.
#  - auto picks batch (`ublk list` COMMANDS), need-get-data or --threads above --queues with
#    --commands batch are refused naming why;
#  - loop over a tmpfs file in copy, user-copy, zero-copy, auto-register, 1 and 2 queues: fio
#    crc32c verify over the whole device with 512 B-1 MiB requests, device and file identical;
#    mem (copy, user-copy) verified; null serves fio;
#  - loop --recovery reissue: killed under fio write+verify, recovered still in batch mode, 0
#    errors;
#  - fio on a loop and a null device: ublk del --force both; then kill -9 both servers and del:
#    fio fails without hanging, nothing in D state, nothing left, no kernel warning.
set -eu

N=68-batch-io
FIO_LOG=/tmp/r68.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r68.img

if ! linux_at_least 7.0; then
    refused "batch on Linux $(uname -r)" "Linux 7.0" \
        timeout 30 ublk add null --size 1G --commands batch
    add_dev dev null --size 1G
    [ "$(field "$dev_id" commands)" = per-tag ] ||
        fail "auto on Linux $(uname -r) picked $(field "$dev_id" commands)"
    del_dev dev
    echo "$N: ok: auto picks per-tag commands on Linux $(uname -r)"
    nothing_left "at the end"
    exit 0
fi

verify() {
    fio --eta=never --name=r68 --filename="$1" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=512-1m --iodepth=32 --size=100% --verify=crc32c --verify_fatal=1 \
        --output="$FIO_LOG" || fail "$2: fio verify failed"
    grep -q "err= 0" "$FIO_LOG" || fail "$2: fio reported errors"
}

add_dev dev null --size 1G
[ "$(field "$dev_id" commands)" = batch ] || fail "auto picked $(field "$dev_id" commands)"
del_dev dev
echo "$N: ok: auto picks batch"
refused "batch with need-get-data" "need-get-data" \
    timeout 30 ublk add null --size 1G --commands batch --buffer-mode need-get-data
refused "batch with more threads than queues" "per-tag commands" \
    timeout 30 ublk add null --size 1G --commands batch --threads 2

for mode in copy user-copy zero-copy auto-register; do
    for queues in 1 2; do
        rm -f "$IMG"
        add_dev dev loop --file "$IMG" --size 32M --queues "$queues" --buffer-mode "$mode" \
            --commands batch
        [ "$(field "$dev_id" commands)" = batch ] || fail "loop $mode: not in batch mode"
        [ "$(field "$dev_id" buffer_mode)" = "$mode" ] || fail "loop $mode: in $(field "$dev_id" buffer_mode)"
        verify "$dev_path" "loop $mode, $queues queue(s)"
        [ "$(md5 "$dev_path" 0 32)" = "$(md5 "$IMG")" ] ||
            fail "loop $mode, $queues queue(s): the device and its file differ"
        del_dev dev
        echo "$N: ok: batch loop $mode, $queues queue(s): fio verify clean, file identical"
    done
    case $mode in
        copy | user-copy)
            add_dev dev mem --size 32M --queues 2 --buffer-mode "$mode" --commands batch
            verify "$dev_path" "mem $mode"
            del_dev dev
            echo "$N: ok: batch mem $mode: fio verify clean"
            ;;
    esac
    add_dev dev null --size 1G --buffer-mode "$mode" --commands batch
    fio --eta=never --name=r68n --filename="$dev_path" --ioengine=io_uring --direct=1 \
        --rw=randrw --bs=4k --iodepth=64 --runtime=2 --time_based --output="$FIO_LOG" ||
        fail "null $mode: fio failed"
    del_dev dev
    echo "$N: ok: batch null $mode serves"
done

rm -f "$IMG"
add_dev dev loop --file "$IMG" --size 64M --recovery reissue --commands batch
fio_write_verify_bg "$dev_path"
wait_io written "$dev_id" 2048
kill_and_recover dev "recovery"
[ "$(field "$dev_id" commands)" = batch ] || fail "recovered in $(field "$dev_id" commands) mode"
fio_clean "recovery"
del_dev dev
echo "$N: ok: batch: killed under fio write+verify, recovered, 0 errors"

for how in del kill; do
    rm -f "$IMG"
    add_dev lo loop --file "$IMG" --size 64M --queues 2 --commands batch
    add_dev nu null --size 4G --queues 2 --commands batch
    fio --eta=never --name=a --filename="$lo_path" --name=b --filename="$nu_path" \
        --ioengine=io_uring --direct=1 --rw=randrw --bsrange=512-128k --iodepth=32 --numjobs=2 \
        --time_based --runtime=120 --output="$FIO_LOG" &
    fio_pid=$!
    wait_io ios "$lo_id" 200
    if [ "$how" = kill ]; then
        kill -9 "$(field "$lo_id" pid)" "$(field "$nu_id" pid)"
    fi
    timeout 60 ublk del --force "$lo_id" >/dev/null 2>/tmp/del.err || fail "$how: del of loop failed: $(cat /tmp/del.err)"
    timeout 60 ublk del --force "$nu_id" >/dev/null 2>/tmp/del.err || fail "$how: del of null failed: $(cat /tmp/del.err)"
    fio_fails "batch $how: fio" 60
    no_d_state "batch $how"
    nothing_left "batch $how"
    echo "$N: ok: batch: $how under I/O: fio failed in ${waited_ms} ms, nothing stuck or left"
done
rm -f "$IMG"
no_kernel_warning "batch I/O"
nothing_left "at the end"
