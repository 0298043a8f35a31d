#!/bin/sh
# 77-del-stuck-server: `ublk del` never hangs on a server that cannot answer, and never leaves an
# unkillable process. Removing a disk waits for the requests its server holds; a server that
# is stopped (SIGSTOP) or stuck never completes them, and a STOP_DEV sent then would sleep in the
# kernel where not even SIGKILL reaches it.
#  (a) a SIGSTOPped server under fio: `ublk del` refuses at once, naming the server and what to
#      do; nothing is left in D state; after SIGCONT `ublk del --force` (fio still has the
#      device open) deletes the device, its server stopping by itself.
#  (b) the same with `ublk del --force` while stopped: the server is killed and the device
#      deleted.
#  (c) a running server stuck on a request (the fault target holds it for 30 s) that fio has
#      open: `ublk del` refuses at once naming fio as the holder; `ublk del --force --timeout 5`
#      kills the server at once (asking it to stop would have it send STOP_DEV, which sleeps
#      in the kernel behind the stuck request and makes the server unkillable) and deletes the
#      device.
set -eu

N=77-del-stuck-server
FIO_LOG=/tmp/r77.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

load() {
    fio --eta=never --name=r77 --filename="$1" --ioengine=io_uring --direct=1 --rw=randrw \
        --bs=4k --iodepth=8 --time_based --runtime=120 --output=/tmp/r77.fio &
    fio_pid=$!
}

# del_refused ID SECS WORDS...: `ublk del ARGS` (in DEL_ARGS) must fail within SECS naming WORDS.
del_refused() {
    dr_t0=$(now_us)
    dr_rc=0
    # shellcheck disable=SC2086 # DEL_ARGS is a list of options.
    timeout 90 ublk del $DEL_ARGS "$1" >/tmp/del.out 2>/tmp/del.err || dr_rc=$?
    dr_ms=$(ms_since "$dr_t0")
    [ "$dr_rc" -eq 1 ] || fail "ublk del $DEL_ARGS $1 exited $dr_rc (want 1): $(cat /tmp/del.err)"
    [ "$dr_ms" -le $(($2 * 1000)) ] || fail "ublk del $DEL_ARGS $1 took $dr_ms ms (more than $2 s)"
    shift 2
    for dr_word in "$@"; do
        grep -qF -- "$dr_word" /tmp/del.err || fail "ublk del's error does not say '$dr_word': $(cat /tmp/del.err)"
    done
    echo "$N: ok: refused in $dr_ms ms: $(cat /tmp/del.err)"
}

# (a) stopped, then resumed
add_dev dev mem --size 64M
load "$dev_path"
wait_io ios "$dev_id" 50
srv=$(field "$dev_id" pid)
kill -STOP "$srv"
DEL_ARGS=
del_refused "$dev_id" 10 "pid $srv" "stopped" "kill -CONT $srv" "ublk del --force $dev_id"
[ "$(field "$dev_id" state)" = LIVE ] || fail "(a) the refused del changed the device: $(entry "$dev_id")"
[ "$(proc_state "$srv")" = T ] || fail "(a) the server is $(proc_state "$srv"), not stopped"
no_d_state "(a) after the refused del"
kill -CONT "$srv"
timeout 60 ublk del --force "$dev_id" >/dev/null 2>/tmp/del.err || fail "(a) ublk del after SIGCONT failed: $(cat /tmp/del.err)"
wait_exit "$srv" 15 "(a) the resumed server"
fio_fails "(a) fio on the deleted device" 30
nothing_left "(a)"
echo "$N: ok: (a) refused while stopped, deleted after SIGCONT"

# (b) stopped, forced
add_dev dev mem --size 64M
load "$dev_path"
wait_io ios "$dev_id" 50
srv=$(field "$dev_id" pid)
kill -STOP "$srv"
timeout 60 ublk del --force "$dev_id" >/dev/null 2>/tmp/del.err || fail "(b) ublk del --force failed: $(cat /tmp/del.err)"
wait_exit "$srv" 15 "(b) the killed server"
fio_fails "(b) fio on the deleted device" 30
no_d_state "(b)"
nothing_left "(b)"
echo "$N: ok: (b) --force killed the stopped server and deleted the device"

# (c) running but stuck: every 100th request is held 30 s on the queue thread
add_dev dev fault --size 64M --every 100 --delay-us 30000000
load "$dev_path"
wait_io ios "$dev_id" 50
srv=$(field "$dev_id" pid)
# The 100th request holds the queue thread: requests stop completing.
sleep 3
before=$(ios "$dev_id")
sleep 1
[ "$(ios "$dev_id")" = "$before" ] || fail "(c) requests still complete: the server is not stuck"
DEL_ARGS=
del_refused "$dev_id" 10 "is in use" "(fio)" "ublk del --force $dev_id"
no_d_state "(c) after the refused del"
t0=$(now_us)
timeout 60 ublk del --force --timeout 5 "$dev_id" >/dev/null 2>/tmp/del.err || fail "(c) ublk del --force failed: $(cat /tmp/del.err)"
[ "$(ms_since "$t0")" -lt 20000 ] || fail "(c) ublk del --force --timeout 5 took $(ms_since "$t0") ms"
wait_exit "$srv" 15 "(c) the killed server"
fio_fails "(c) fio on the deleted device" 30
nothing_left "(c)"
echo "$N: ok: (c) an in-use device refused naming fio; --force killed the stuck server after 5 s and deleted"
