#!/bin/sh
# 82-live-upgrade: `ublk restart` hands a live device to a new server while fio writes and
# verifies: no I/O fails, nothing is lost, the old server is gone and a new one serves.
#  - a loop device with `--recovery` and with `--recovery reissue`: on Linux 6.16+ (QUIESCE)
#    the kernel drains what is in flight first. Older kernels refuse both naming QUIESCE
#    (Linux 6.16): on 6.12 queues that left while their server ran on could leave the driver's
#    device lock held for good (this scenario hung there).
#  - a server that holds requests when the kernel cancels its fetches (fault over a file, every
#    request delayed 20 ms on the queue thread, so that fio's 16 are always in its hands;
#    6.16+): it serves and commits them, then leaves, though the kernel never answers those
#    commits (it once waited for that answer, and the restart timed out whenever a request was
#    in flight at the hand-over).
#  - a RAM disk: refused (its data would be lost).
set -eu

N=82-live-upgrade
FIO_LOG=/tmp/r82.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r82.img

# upgrade LABEL TARGET [OPTION...]: adds TARGET over $IMG with the options, restarts it under
# fio write+verify.
upgrade() {
    up_label=$1
    shift
    rm -f "$IMG"
    add_dev dev "$@"
    fio_write_verify_bg "$dev_path"
    wait_io written "$dev_id" 2048
    old=$(field "$dev_id" pid)
    out=$(timeout 120 ublk restart "$dev_id" 2>/tmp/r82.err) || fail "$up_label: ublk restart failed: $(tr '\n' ' ' </tmp/r82.err)"
    [ "$out" = "$dev_id $dev_path" ] || fail "$up_label: ublk restart printed '$out'"
    ! running "$old" || fail "$up_label: the old server $old still runs"
    new=$(field "$dev_id" pid)
    [ "$new" != "$old" ] && running "$new" || fail "$up_label: no new server (pid '$new')"
    fio_clean "$up_label: across the restart"
    del_dev dev
    echo "$N: ok: $up_label: restarted under fio write+verify (server $old -> $new), 0 errors"
}

if linux_at_least 6.16; then
    upgrade "--recovery reissue" loop --file "$IMG" --size 64M --recovery reissue
    upgrade "--recovery" loop --file "$IMG" --size 64M --recovery
    upgrade "requests held at the hand-over" fault --file "$IMG" --size 64M --delay-us 20000 --recovery
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
