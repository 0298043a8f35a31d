#!/bin/sh
# 62-buffer-modes-stress: I/O racing the device's deletion and its server's death, in every
# buffer mode the kernel has (what the kernel's own stress_01-05 tests do): with fio running 4
# jobs of random I/O on a loop and a null device, (a) `ublk del --force` both (fio holds them
# open), (b) kill -9 their servers and `ublk del --force` the dead devices. Each time fio fails without hanging, no process is left in D
# state, nothing is left, and the kernel logs no warning.
set -eu

N=62-buffer-modes-stress
FIO_LOG=/tmp/r62.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r62.img
load() {
    fio --eta=never --name=a --filename="$1" --name=b --filename="$2" --ioengine=io_uring \
        --direct=1 --rw=randrw --bsrange=512-128k --iodepth=32 --numjobs=2 --time_based \
        --runtime=120 --output="$FIO_LOG" &
    fio_pid=$!
}

for mode in copy need-get-data user-copy zero-copy auto-register; do
    case $mode in
        zero-copy) linux_at_least 6.15 || continue ;;
        auto-register) linux_at_least 6.16 || continue ;;
    esac
    for how in del kill; do
        rm -f "$IMG"
        add_dev lo loop --file "$IMG" --size 64M --queues 2 --buffer-mode "$mode"
        add_dev nu null --size 4G --queues 2 --buffer-mode "$mode"
        load "$lo_path" "$nu_path"
        wait_io ios "$lo_id" 200
        if [ "$how" = kill ]; then
            kill -9 "$(field "$lo_id" pid)" "$(field "$nu_id" pid)"
        fi
        timeout 60 ublk del --force "$lo_id" >/dev/null 2>/tmp/del.err || fail "$mode $how: del of loop failed: $(cat /tmp/del.err)"
        timeout 60 ublk del --force "$nu_id" >/dev/null 2>/tmp/del.err || fail "$mode $how: del of null failed: $(cat /tmp/del.err)"
        fio_fails "$mode $how: fio" 60
        no_d_state "$mode $how"
        nothing_left "$mode $how"
        echo "$N: ok: $mode: $how under I/O: fio failed in ${waited_ms} ms, nothing stuck or left"
    done
    no_kernel_warning "$mode"
done
rm -f "$IMG"
