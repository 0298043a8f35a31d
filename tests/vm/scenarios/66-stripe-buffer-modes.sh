#!/bin/sh
# 66-stripe-buffer-modes: a stripe moves data right in every buffer mode the kernel has, and a
# mode the kernel lacks is refused with the release that has it. For each of copy, need-get-data,
# user-copy, zero-copy and auto-register: over 3 tmpfs files in 16K chunks with 2 queues,
# `ublk list` shows the mode; fio crc32c verify over the whole device (512 B-1 MiB, so most
# requests are several pieces, each moved with its own SQE from the request's buffer or pages);
# after del each store holds exactly its chunks. In the newest mode the kernel has, the server
# is also killed under fio write+verify (`--recovery reissue`) and `ublk recover` brings the
# device back LIVE in the same mode, fio finishing with no error.
set -eu

N=66-stripe-buffer-modes
FIO_LOG=/tmp/r66.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

remove_stores() { rm -f /tmp/r66.*; }
AFTER_DEL=remove_stores
trap cleanup EXIT

STORES="/tmp/r66.s0 /tmp/r66.s1 /tmp/r66.s2"
fresh_stores() {
    remove_stores
    for s in $STORES; do truncate -s 4M "$s"; done
}

newest=
for mode in copy need-get-data user-copy zero-copy auto-register; do
    case $mode in
        copy | need-get-data) since=6.0 ;;
        user-copy) since=6.5 ;;
        zero-copy) since=6.15 ;;
        auto-register) since=6.16 ;;
    esac
    fresh_stores
    if ! linux_at_least "$since"; then
        # shellcheck disable=SC2086 # one argument per store
        refused "$mode on Linux $(uname -r)" "Linux $since" \
            timeout 30 ublk add stripe --buffer-mode "$mode" $STORES
        continue
    fi
    newest=$mode
    # shellcheck disable=SC2086
    add_dev dev stripe --chunk 16K --queues 2 --buffer-mode "$mode" $STORES
    [ "$(field "$dev_id" buffer_mode)" = "$mode" ] ||
        fail "$mode: ublk list says $(field "$dev_id" buffer_mode)"
    fio_verify "$dev_path" "stripe $mode"
    dd if="$dev_path" of=/tmp/r66.img bs=1M iflag=direct 2>/dev/null || fail "$mode: cannot read the device"
    del_dev dev
    # shellcheck disable=SC2086
    stripe_check "$mode" /tmp/r66.img 16384 $STORES
    echo "$N: ok: $mode: fio verify clean, each store holds exactly its chunks"
done

fresh_stores
# shellcheck disable=SC2086
add_dev dev stripe --chunk 16K --queues 2 --buffer-mode "$newest" --recovery reissue $STORES
fio --eta=never --name=r66 --filename="$dev_path" --ioengine=io_uring --direct=1 \
    --rw=randwrite --bsrange=4k-256k --size=12M --iodepth=16 --verify=crc32c \
    --verify_fatal=1 --rate=2m --output="$FIO_LOG" &
fio_pid=$!
wait_io written "$dev_id" 2048
kill -9 "$(field "$dev_id" pid)"
wait_state "$dev_id" QUIESCED
running "$fio_pid" || fail "$newest: fio exited when the server was killed"
out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/rec.err) ||
    fail "$newest: ublk recover exited $?: $(cat /tmp/rec.err)"
[ "$out" = "$dev_id $dev_path" ] || fail "$newest: ublk recover printed '$out'"
[ "$(field "$dev_id" buffer_mode)" = "$newest" ] ||
    fail "$newest: recovered in mode $(field "$dev_id" buffer_mode)"
rc=0
wait "$fio_pid" || rc=$?
fio_pid=
[ "$rc" -eq 0 ] || fail "$newest: fio exited $rc"
grep -q "err= 0" "$FIO_LOG" || fail "$newest: fio reported errors"
del_dev dev
echo "$N: ok: $newest: killed under fio write+verify, recovered in the same mode, 0 errors"
remove_stores
no_kernel_warning "stripe in every buffer mode"
nothing_left "at the end"
