#!/bin/sh
# 61-buffer-modes-recover: recovery works in every buffer mode the kernel has. A loop device over a
# tmpfs file with `--recovery reissue` in each mode takes fio random writes with crc32c verify;
# its server is killed with SIGKILL, the device goes QUIESCED with fio waiting, `ublk recover`
# brings it LIVE in the same mode, and fio ends with no error and a clean verify.
set -eu

N=61-buffer-modes-recover
FIO_LOG=/tmp/r61.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r61.img
for mode in copy need-get-data user-copy zero-copy auto-register; do
    case $mode in
        zero-copy) linux_at_least 6.15 || continue ;;
        auto-register) linux_at_least 6.16 || continue ;;
    esac
    rm -f "$IMG"
    add_dev dev loop --file "$IMG" --size 64M --recovery reissue --buffer-mode "$mode"
    fio_write_verify_bg "$dev_path"
    wait_io written "$dev_id" 2048
    kill_and_recover dev "$mode"
    [ "$(field "$dev_id" buffer_mode)" = "$mode" ] ||
        fail "$mode: recovered in mode $(field "$dev_id" buffer_mode)"
    fio_clean "$mode"
    del_dev dev
    echo "$N: ok: $mode: killed under fio write+verify, recovered, 0 errors"
done
rm -f "$IMG"
no_kernel_warning "recovery in every mode"
nothing_left "at the end"
