#!/bin/sh
# 91-metrics: `ublk add --metrics ADDR` serves the device's figures to Prometheus. Under I/O the
# exposition at http://ADDR/metrics, and `ublk stats --prometheus`, pass `promtool check metrics`
# (which fails a broken one), and count what the kernel counts. Other paths get 404, other
# methods 405, garbage 400; silent clients neither stall a scrape nor stay connected past 5 s.
# After kill -9 and `ublk recover`, and after `ublk restart` (Linux 6.16, QUIESCE), the new server
# serves the metrics again on the same address. A second device asking for an address in use is refused before it
# is made, and a malformed address is refused by name.
set -eu

N=91-metrics
FIO_LOG=/tmp/r91.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

ifconfig lo up
command -v promtool >/dev/null ||
    fail "promtool is not in the guest: xtask could not fetch Debian's prometheus package (see its warning)"
PORT=9190
URL=http://127.0.0.1:$PORT/metrics

# scrape FILE: GET $URL into FILE (10 s at most); fails if the server does not answer 200.
scrape() {
    timeout 10 wget -q -O "$1" "$URL" 2>/tmp/wget.err || fail "GET $URL failed: $(cat /tmp/wget.err)"
}

# checked FILE WHAT: promtool must accept the exposition in FILE.
checked() {
    promtool check metrics <"$1" >/tmp/promtool.out 2>&1 ||
        fail "promtool check metrics refuses $2 ($?): $(head -20 /tmp/promtool.out)"
}

# status REQUEST: the status line the server answers REQUEST (printf format) with.
status() {
    # shellcheck disable=SC2059
    printf "$1" | timeout 10 nc 127.0.0.1 "$PORT" | head -1 | tr -d '\r'
}

add_dev dev null --queues 2 --recovery reissue --metrics 127.0.0.1:$PORT
fio --name=r91 --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
    --io_size=16M --iodepth=8 --output="$FIO_LOG" 2>/tmp/r91.err || fail "fio failed: $(cat /tmp/r91.err)"
scrape /tmp/r91.metrics
checked /tmp/r91.metrics "GET /metrics"
timeout 30 ublk stats "$dev_id" --prometheus >/tmp/r91.stats || fail "ublk stats --prometheus failed"
checked /tmp/r91.stats "ublk stats --prometheus"
if { cat /tmp/r91.metrics; echo 'ublk_broken{op="read" 1'; } | promtool check metrics >/dev/null 2>&1; then
    fail "promtool accepts a broken exposition: it checks nothing"
fi
reads=$(awk '/^ublk_requests_total\{.*op="read"/ { s += $NF } END { print s + 0 }' /tmp/r91.metrics)
[ "$reads" -eq "$(kstat "$dev_id" 1)" ] || fail "the exposition counts $reads reads, the kernel $(kstat "$dev_id" 1)"
grep -q "^ublk_request_duration_seconds_count{device=\"$dev_id\",op=\"read\"} $reads\$" /tmp/r91.metrics ||
    fail "the read histogram does not count $reads: $(grep duration_seconds_count /tmp/r91.metrics)"
echo "$N: ok: $URL ($(wc -l </tmp/r91.metrics) lines) and ublk stats --prometheus pass promtool; $reads reads, as the kernel counts"

[ "$(status 'GET /nope HTTP/1.1\r\n\r\n')" = "HTTP/1.1 404 Not Found" ] || fail "GET /nope: $(status 'GET /nope HTTP/1.1\r\n\r\n')"
[ "$(status 'POST /metrics HTTP/1.1\r\n\r\n')" = "HTTP/1.1 405 Method Not Allowed" ] || fail "POST was not refused"
[ "$(status 'garbage\r\n\r\n')" = "HTTP/1.1 400 Bad Request" ] || fail "garbage: $(status 'garbage\r\n\r\n')"
[ "$(status 'GET /metrics HTTP/1.0\r\n\r\n')" = "HTTP/1.1 200 OK" ] || fail "HTTP/1.0 GET was not answered"
echo "$N: ok: 404, 405 and 400 where due"

# Three clients that connect and say nothing: a scrape still gets through at once, and the
# server drops them after its 5 s deadline (its side of their connections leaves ESTABLISHED).
held() {
    netstat -tn | awk -v a="127.0.0.1:$PORT" '$4 == a && $6 == "ESTABLISHED"' | wc -l
}
silent=
for i in 1 2 3; do
    sleep 60 | timeout 60 nc 127.0.0.1 "$PORT" >/tmp/r91.silent$i 2>&1 &
    silent="$silent $!"
done
sleep 1
[ "$(held)" -eq 3 ] || fail "expected 3 silent connections, netstat shows $(held): $(netstat -tn)"
t0=$(now_us)
scrape /tmp/r91.during
took=$(ms_since "$t0")
# Served one after another, the silent clients would hold it 5 s each (HEAD_DEADLINE).
[ "$took" -lt 4000 ] || fail "a scrape took $took ms with silent clients connected"
end=$(deadline 15)
until [ "$(held)" -eq 0 ]; do
    ! past "$end" || fail "the server still holds $(held) silent connections after 15 s"
    sleep 0.2
done
dropped=$(ms_since "$t0")
for pid in $silent; do kill "$pid" 2>/dev/null || true; done
[ ! -s /tmp/r91.silent1 ] || fail "a silent client got an answer: $(cat /tmp/r91.silent1)"
echo "$N: ok: a scrape took $took ms beside 3 silent clients, dropped within $dropped ms"

# The same address after a crash and recovery, and after a restart.
old=$(field "$dev_id" pid)
kill -9 "$old"
wait_state "$dev_id" QUIESCED
! timeout 10 wget -q -O /dev/null "$URL" 2>/dev/null || fail "metrics served with the server dead"
out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/r91.err) || fail "ublk recover failed: $(cat /tmp/r91.err)"
[ "$out" = "$dev_id $dev_path" ] || fail "ublk recover printed '$out'"
dd if="$dev_path" of=/dev/null bs=4k count=10 iflag=direct 2>/dev/null || fail "cannot read after recovery"
scrape /tmp/r91.recovered
checked /tmp/r91.recovered "GET /metrics after recovery"
echo "$N: ok: after kill -9 and ublk recover the new server serves $URL"
# `ublk restart` needs QUIESCE (Linux 6.16); scenario 82 proves the refusal before it.
if linux_at_least 6.16; then
    old=$(field "$dev_id" pid)
    out=$(timeout 120 ublk restart "$dev_id" 2>/tmp/r91.err) || fail "ublk restart failed: $(cat /tmp/r91.err)"
    new=$(field "$dev_id" pid)
    [ "$new" != "$old" ] && running "$new" || fail "no new server after restart (pid '$new')"
    scrape /tmp/r91.restarted
    checked /tmp/r91.restarted "GET /metrics after restart"
    echo "$N: ok: after ublk restart the new server (pid $new) serves $URL"
fi

before=$(ls /dev | grep -c '^ublkb' || true)
refused "an address in use" "127.0.0.1:$PORT" ublk add null --metrics "127.0.0.1:$PORT"
[ "$(ls /dev | grep -c '^ublkb' || true)" -eq "$before" ] || fail "the refused add left a device"
refused "a malformed address" "HOST:PORT" ublk add null --metrics localhost:9100
del_dev dev
nothing_left "at the end"
