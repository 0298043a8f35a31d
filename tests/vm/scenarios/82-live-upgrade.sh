#!/bin/sh
# 82-live-upgrade: `ublk restart` hands a live device to a new server while fio writes and
# verifies: no I/O fails, nothing is lost, the old server is gone and a new one serves.
#  - a loop device with `--recovery` and with `--recovery reissue`: on Linux 6.16+ (QUIESCE)
#    the kernel drains what is in flight first; older kernels refuse both naming QUIESCE
#    (Linux 6.16): on 6.12 queues that left while their server ran on could leave the driver's
#    device lock held for good (this scenario hung there).
#  - a RAM disk: refused (its data would be lost).
set -eu

N=82-live-upgrade
FIO_LOG=/tmp/r82.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r82.img

upgrade() {
    rm -f "$IMG"
    add_dev dev loop --file "$IMG" --size 64M $1
    fio_write_verify_bg "$dev_path"
    wait_io written "$dev_id" 2048
    old=$(field "$dev_id" pid)
    out=$(timeout 120 ublk restart "$dev_id" 2>/tmp/r82.err) || fail "$1: ublk restart failed: $(tr '\n' ' ' </tmp/r82.err)"
    [ "$out" = "$dev_id $dev_path" ] || fail "$1: ublk restart printed '$out'"
    ! running "$old" || fail "$1: the old server $old still runs"
    new=$(field "$dev_id" pid)
    [ "$new" != "$old" ] && running "$new" || fail "$1: no new server (pid '$new')"
    fio_clean "$1: across the restart"
    del_dev dev
    echo "$N: ok: $1: restarted under fio write+verify (server $old -> $new), 0 errors"
}

if linux_at_least 6.16; then
    upgrade "--recovery reissue"
    upgrade "--recovery"
else
    for recovery in "--recovery" "--recovery reissue"; do
        rm -f "$IMG"
        # shellcheck disable=SC2086 # recovery is two words.
        add_dev dev loop --file "$IMG" --size 64M $recovery
        refused "restart without QUIESCE ($recovery)" "QUIESCE (Linux 6.16)" timeout 60 ublk restart "$dev_id"
        [ "$(field "$dev_id" state)" = LIVE ] || fail "the refused restart touched the device"
        del_dev dev
    done
fi
add_dev dev mem --size 16M --recovery reissue
refused "restart of a RAM disk" "would be lost" timeout 60 ublk restart "$dev_id"
del_dev dev
nothing_left "at the end"
