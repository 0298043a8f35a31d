#!/bin/sh
# 90-stats: the server's counters agree exactly with fio's and the kernel's. On a quiet 2-queue
# mem device with merging off, fio (random reads and writes of 4-64 KiB) reports as many requests
# and bytes per direction as `ublk stats` counts (summed over queues) and as
# /sys/block/ublkbN/stat counts, and the kernel's totals since creation equal the server's;
# `blkdiscard` of 64 MiB is counted as the kernel counts it. `--json` and the table agree with
# the exposition, latency percentiles are given and a histogram counts every request, `--watch`
# prints a sample per interval. A device failing every request counts one error per failed read.
# With --no-stats only the queues' own figures are counted; with per-I/O daemons (Linux 6.16) a
# queue's threads count as one queue. Stats of a device whose server was killed, and of no
# device, are refused naming why (exit 1). (On Linux 7.0+ the devices use batch I/O commands.)
set -eu

N=90-stats
FIO_LOG=/tmp/r90.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

add_dev dev mem --size 256M --queues 2
# Each fio I/O must stay one request: no merging (the driver splits nothing up to 64 KiB).
echo 2 > "/sys/block/ublkb$dev_id/queue/nomerges"

# same WHAT A B: A and B must be equal (and numbers).
same() {
    case "$2$3" in '' | *[!0-9]*) fail "$1: '$2' and '$3' are not both counts" ;; esac
    [ "$2" -eq "$3" ] || fail "$1: $2 != $3"
}

# The kernel and the server count from the device's creation (its partition scan included).
counts() { # ID -> "kernel-reads kernel-read-bytes kernel-writes kernel-write-bytes server-..."
    echo "$(kstat "$1" 1) $(($(kstat "$1" 3) * 512)) $(kstat "$1" 5) $(($(kstat "$1" 7) * 512))" \
        "$(metric "$1" ublk_requests_total 'op="read"') $(metric "$1" ublk_bytes_total 'op="read"')" \
        "$(metric "$1" ublk_requests_total 'op="write"') $(metric "$1" ublk_bytes_total 'op="write"')"
}
set -- $(counts "$dev_id")
same "kernel and server reads since creation" "$1" "$5"
same "kernel and server read bytes since creation" "$2" "$6"
before="$*"

fio --name=r90 --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw --rwmixread=60 \
    --bsrange=4k-64k --io_size=48M --iodepth=16 --norandommap --randrepeat=0 \
    --output-format=json --output=/tmp/r90.fio 2>/tmp/r90.err || fail "fio failed: $(cat /tmp/r90.err)"
set -- $(counts "$dev_id")
after="$*"
fr=$(fio_ios /tmp/r90.fio read) frb=$(fio_bytes /tmp/r90.fio read)
fw=$(fio_ios /tmp/r90.fio write) fwb=$(fio_bytes /tmp/r90.fio write)
[ "$fr" -gt 300 ] && [ "$fw" -gt 200 ] || fail "fio did too little: $fr reads, $fw writes"
# delta I: field I of after minus before.
delta() {
    echo "$(($(echo "$after" | cut -d' ' -f"$1") - $(echo "$before" | cut -d' ' -f"$1")))"
}
same "fio's reads and the kernel's" "$fr" "$(delta 1)"
same "fio's read bytes and the kernel's" "$frb" "$(delta 2)"
same "fio's writes and the kernel's" "$fw" "$(delta 3)"
same "fio's write bytes and the kernel's" "$fwb" "$(delta 4)"
same "fio's reads and the server's" "$fr" "$(delta 5)"
same "fio's read bytes and the server's" "$frb" "$(delta 6)"
same "fio's writes and the server's" "$fw" "$(delta 7)"
same "fio's write bytes and the server's" "$fwb" "$(delta 8)"
same "kernel and server reads since creation" "$1" "$5"
same "kernel and server writes since creation" "$3" "$7"
same "kernel and server written bytes since creation" "$4" "$8"
echo "$N: ok: fio $fr reads ($frb bytes) and $fw writes ($fwb bytes): the kernel and the server count the same; since creation both count $1 reads and $3 writes"

[ "$(metric "$dev_id" ublk_requests_total 'queue="0"')" -gt 0 ] &&
    [ "$(metric "$dev_id" ublk_requests_total 'queue="1"')" -gt 0 ] ||
    echo "$N: note: fio's requests all went to one queue"
d0=$(kstat "$dev_id" 12) db0=$(kstat "$dev_id" 14)
s0=$(metric "$dev_id" ublk_requests_total 'op="discard"') sb0=$(metric "$dev_id" ublk_bytes_total 'op="discard"')
/usr/sbin/blkdiscard -o 0 -l $((64 << 20)) "$dev_path" || fail "blkdiscard failed"
kd=$(($(kstat "$dev_id" 12) - d0)) kdb=$((($(kstat "$dev_id" 14) - db0) * 512))
same "the kernel's and the server's discards" "$kd" "$(($(metric "$dev_id" ublk_requests_total 'op="discard"') - s0))"
same "discarded bytes" "$((64 << 20))" "$kdb"
same "the server's discarded bytes" "$kdb" "$(($(metric "$dev_id" ublk_bytes_total 'op="discard"') - sb0))"
echo "$N: ok: blkdiscard of 64 MiB: $kd discard requests, counted alike"

json=$(stat_json "$dev_id")
reads=$(echo "$json" | sed 's/.*"read":{"requests":\([0-9]*\),.*/\1/')
same "--json and --prometheus reads" "$reads" "$(metric "$dev_id" ublk_requests_total 'op="read"')"
echo "$json" | grep -q '"read":{[^}]*"latency_us":{"mean":[0-9.]*,"p50":[0-9.]*,"p99":[0-9.]*,"p999":[0-9.]*}' ||
    fail "no read latency percentiles in: $json"
same "read latencies counted" "$reads" \
    "$(metric "$dev_id" ublk_request_duration_seconds_count 'op="read"')"
same "the histogram's +Inf bucket" "$reads" \
    "$(metric "$dev_id" ublk_request_duration_seconds_bucket 'op="read",le="+Inf"')"
echo "$json" | grep -q '"queues":2,"in_flight":0,' || fail "expected 2 queues, 0 in flight: $json"
table=$(timeout 30 ublk stats "$dev_id") || fail "ublk stats $dev_id failed"
echo "$table" | grep -Eq "^read +$reads " || fail "the table shows no $reads reads: $table"
echo "$table" | grep -q "P99.9" || fail "the table has no percentiles: $table"
echo "$N: ok: json, table and exposition agree; read latency $(echo "$json" | sed 's/.*"read":{[^}]*"latency_us":{\([^}]*\)}.*/\1/') µs"

# --watch: a sample now, then one per interval over it, until stopped. 6 s for 3 samples: room
# for a slow start of ublk in a loaded emulator.
rc=0
timeout 6 ublk stats "$dev_id" --watch 1 >/tmp/r90.watch 2>&1 || rc=$?
# Busybox's timeout execs the command: it ends by the SIGTERM (143), not with 124.
[ "$rc" -eq 143 ] || [ "$rc" -eq 124 ] ||
    fail "ublk stats --watch exited $rc before being stopped: $(cat /tmp/r90.watch)"
samples=$(grep -c '^device ' /tmp/r90.watch)
[ "$samples" -ge 3 ] || fail "--watch 1 printed $samples samples in 6 s: $(cat /tmp/r90.watch)"
grep -q "over the last 1.0 s" /tmp/r90.watch || fail "--watch shows no interval: $(cat /tmp/r90.watch)"
echo "$N: ok: --watch 1 printed $samples samples in 6 s"

# Per-I/O daemons (Linux 6.16): a queue served by 3 threads is counted as one queue, exactly.
if linux_at_least 6.16; then
    add_dev pio null --threads 3 --commands per-tag
    echo 2 > "/sys/block/ublkb$pio_id/queue/nomerges"
    fio --name=r90p --filename="$pio_path" --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
        --io_size=8M --iodepth=32 --norandommap --output-format=json --output=/tmp/r90p.fio \
        2>/tmp/r90.err || fail "fio on 3 threads failed: $(cat /tmp/r90.err)"
    same "fio's reads on 3 threads" 2048 "$(fio_ios /tmp/r90p.fio read)"
    same "the kernel's and the server's reads on 3 threads" "$(kstat "$pio_id" 1)" \
        "$(metric "$pio_id" ublk_requests_total 'op="read"')"
    stat_json "$pio_id" | grep -q '"queues":1,' || fail "3 threads of one queue are not one queue: $(stat_json "$pio_id")"
    echo "$N: ok: 1 queue x 3 threads (per-I/O daemons): $(kstat "$pio_id" 1) reads counted alike, as one queue"
    del_dev pio
fi

# Errors: a device that fails every request; one direct 4 KiB read is one failed request.
add_dev flt fault --size 16M --every 1 --fail-errno EIO
e0=$(metric "$flt_id" ublk_errors_total 'op="read"') r0=$(metric "$flt_id" ublk_requests_total 'op="read"')
! dd if="$flt_path" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null || fail "a read of a failing device succeeded"
same "failed reads counted" 1 "$(($(metric "$flt_id" ublk_errors_total 'op="read"') - e0))"
same "reads counted" 1 "$(($(metric "$flt_id" ublk_requests_total 'op="read"') - r0))"
same "bytes of failed reads" 0 "$(metric "$flt_id" ublk_bytes_total 'op="read"')"
echo "$N: ok: a failed read counts one error and no bytes"

# Gone servers and missing devices have no figures.
server=$(field "$flt_id" pid)
kill -9 "$server"
wait_state "$flt_id" DEAD 30
refused "stats of a device whose server was killed" "is DEAD and its server is gone" ublk stats "$flt_id"
refused "stats of no device" "there is no device 4000" ublk stats 4000
del_dev flt

# --no-stats: the queues count requests, nothing per operation.
add_dev off null --no-stats
dd if="$off_path" of=/dev/null bs=4k count=100 iflag=direct 2>/dev/null || fail "cannot read the null device"
json=$(stat_json "$off_id")
echo "$json" | grep -q '"request_stats":false' || fail "--no-stats still counts: $json"
echo "$json" | grep -q '"read":{"requests":0,' || fail "--no-stats counted reads: $json"
[ "$(metric "$off_id" ublk_queue_requests_total)" -ge 100 ] || fail "the queues did not count: $(cat /tmp/metric.out)"
timeout 30 ublk stats "$off_id" | grep -q "request statistics are off" || fail "the table does not say statistics are off"
echo "$N: ok: --no-stats counts only the queues' figures"
del_dev off
del_dev dev
nothing_left "at the end"
