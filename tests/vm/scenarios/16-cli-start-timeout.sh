#!/bin/sh
# 16-cli-start-timeout: a background start that gives up leaves nothing behind. A fault device
# whose queues take 20 s to open cannot go live within `--start-timeout 3`: `ublk add` must then
# stop its server (SIGTERM, then SIGKILL), delete the device the server had made, say so, and
# exit 1; no device, node or ublk process may be left.
set -eu

N=16-cli-start-timeout
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

t0=$(now_us)
rc=0
timeout 120 ublk add fault --size 64M --open-delay-ms 20000 --start-timeout 3 >/tmp/r16.out 2>/tmp/r16.err || rc=$?
took=$(ms_since "$t0")
[ "$rc" -eq 1 ] || fail "ublk add exited $rc (want 1): $(cat /tmp/r16.err)"
[ ! -s /tmp/r16.out ] || fail "ublk add printed a device: $(cat /tmp/r16.out)"
grep -q "did not report within 3s" /tmp/r16.err || fail "the error does not name the timeout: $(cat /tmp/r16.err)"
grep -q "which it had made, was deleted" /tmp/r16.err || fail "the error does not say the device was deleted: $(cat /tmp/r16.err)"
[ "$took" -lt 60000 ] || fail "ublk add took $took ms to give up"
nothing_left "after the abandoned start"
no_d_state "after the abandoned start"
echo "$N: ok: gave up after $took ms: $(cat /tmp/r16.err)"
