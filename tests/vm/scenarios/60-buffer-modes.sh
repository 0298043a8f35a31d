#!/bin/sh
# 60-buffer-modes: every buffer mode moves data right, and a mode the kernel lacks is refused with
# the release that has it. For each of copy, need-get-data, user-copy, zero-copy and
# auto-register:
#  - on a kernel without it: `ublk add --buffer-mode MODE` fails naming the Linux release;
#  - loop over a tmpfs file, 1 and 2 queues: `ublk list` shows the mode; fio crc32c verify over
#    the whole device with 512 B-1 MiB requests; the device and its file hold the same bytes;
#  - mem: verified the same way in the modes that keep data in memory, refused (naming the modes
#    to use) in the zero-copy ones;
#  - null: serves fio in every mode.
set -eu

N=60-buffer-modes
FIO_LOG=/tmp/r60.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r60.img

verify() {
    fio --eta=never --name=r60 --filename="$1" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=512-1m --iodepth=16 --size=100% --verify=crc32c --verify_fatal=1 \
        --output="$FIO_LOG" || fail "$2: fio verify failed"
    grep -q "err= 0" "$FIO_LOG" || fail "$2: fio reported errors"
}

for mode in copy need-get-data user-copy zero-copy auto-register; do
    case $mode in
        copy | need-get-data) since=6.0 ;;
        user-copy) since=6.5 ;;
        zero-copy) since=6.15 ;;
        auto-register) since=6.16 ;;
    esac
    if ! linux_at_least "$since"; then
        rm -f "$IMG"
        refused "$mode on Linux $(uname -r)" "Linux $since" \
            timeout 30 ublk add loop --file "$IMG" --size 32M --buffer-mode "$mode"
        continue
    fi
    for queues in 1 2; do
        rm -f "$IMG"
        add_dev dev loop --file "$IMG" --size 32M --queues "$queues" --buffer-mode "$mode"
        [ "$(field "$dev_id" buffer_mode)" = "$mode" ] ||
            fail "$mode: ublk list says $(field "$dev_id" buffer_mode)"
        verify "$dev_path" "loop $mode, $queues queue(s)"
        [ "$(md5 "$dev_path" 0 32)" = "$(md5 "$IMG")" ] ||
            fail "loop $mode, $queues queue(s): the device and its file differ"
        del_dev dev
        echo "$N: ok: loop $mode, $queues queue(s): fio verify clean, file identical"
    done
    case $mode in
        zero-copy | auto-register)
            refused "mem in $mode" "copy or user-copy mode" \
                timeout 30 ublk add mem --size 16M --buffer-mode "$mode"
            ;;
        *)
            add_dev dev mem --size 32M --queues 2 --buffer-mode "$mode"
            verify "$dev_path" "mem $mode"
            del_dev dev
            echo "$N: ok: mem $mode: fio verify clean"
            ;;
    esac
    add_dev dev null --size 1G --buffer-mode "$mode"
    fio --eta=never --name=r60n --filename="$dev_path" --ioengine=io_uring --direct=1 \
        --rw=randrw --bs=4k --iodepth=16 --runtime=2 --time_based --output="$FIO_LOG" ||
        fail "null $mode: fio failed"
    del_dev dev
    echo "$N: ok: null $mode serves"
done
rm -f "$IMG"
no_kernel_warning "buffer modes"
nothing_left "at the end"
