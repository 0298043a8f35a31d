#!/bin/sh
# 69-per-io-daemons: --threads serves queues from more threads than there are queues (per-I/O
# daemons, Linux 6.16); refused naming Linux 6.16 on an older kernel, and with fewer threads
# than queues everywhere.
#  - loop over a tmpfs file, 1 queue x 4 threads: four queue threads run, COMMANDS is per-tag,
#    fio crc32c verify with 4 jobs over the whole device, device and file identical;
#  - mem, 2 queues x 3 threads: fio verify;
#  - loop --recovery reissue, 1 queue x 3 threads: killed under fio write+verify, recovered
#    with 3 threads again, 0 errors.
set -eu

N=69-per-io-daemons
FIO_LOG=/tmp/r69.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

IMG=/tmp/r69.img

refused "fewer threads than queues" "thread of its own" \
    timeout 30 ublk add null --size 1G --queues 2 --threads 1
if ! linux_at_least 6.16; then
    refused "4 threads for 1 queue on Linux $(uname -r)" "Linux 6.16" \
        timeout 60 ublk add null --size 1G --threads 4
    nothing_left "at the end"
    exit 0
fi

# queue_threads PID: the server's queue threads.
queue_threads() {
    cat /proc/"$1"/task/*/comm 2>/dev/null | grep -c '^ublk-q' || true
}

verify() {
    fio --eta=never --name=r69 --filename="$1" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=512-256k --iodepth=16 --numjobs=4 --offset_increment=25% --size=25% \
        --verify=crc32c --verify_fatal=1 --output="$FIO_LOG" || fail "$2: fio verify failed"
    grep -q "err= 0" "$FIO_LOG" || fail "$2: fio reported errors"
}

rm -f "$IMG"
add_dev dev loop --file "$IMG" --size 64M --threads 4
n=$(queue_threads "$(field "$dev_id" pid)")
[ "$n" -eq 4 ] || fail "1 queue x 4 threads: the server runs $n queue threads"
[ "$(field "$dev_id" commands)" = per-tag ] || fail "--threads 4 picked $(field "$dev_id" commands)"
verify "$dev_path" "loop, 1 queue x 4 threads"
[ "$(md5 "$dev_path" 0 64)" = "$(md5 "$IMG")" ] || fail "loop, 4 threads: the device and its file differ"
del_dev dev
echo "$N: ok: loop, 1 queue x 4 threads: fio verify clean, file identical"

add_dev dev mem --size 64M --queues 2 --threads 3
n=$(queue_threads "$(field "$dev_id" pid)")
[ "$n" -eq 3 ] || fail "2 queues x 3 threads: the server runs $n queue threads"
verify "$dev_path" "mem, 2 queues x 3 threads"
del_dev dev
echo "$N: ok: mem, 2 queues x 3 threads: fio verify clean"

rm -f "$IMG"
add_dev dev loop --file "$IMG" --size 64M --recovery reissue --threads 3
fio_write_verify_bg "$dev_path"
wait_io written "$dev_id" 2048
kill_and_recover dev "recovery"
n=$(queue_threads "$recovered_pid")
[ "$n" -eq 3 ] || fail "recovered with $n queue threads, not 3"
fio_clean "recovery"
del_dev dev
echo "$N: ok: 3 threads: killed under fio write+verify, recovered with 3 threads, 0 errors"
rm -f "$IMG"
no_kernel_warning "per-I/O daemons"
nothing_left "at the end"
