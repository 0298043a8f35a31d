#!/bin/sh
# 75-recovery-bad-input: `ublk recover` and `--recovery` refuse what they cannot do, with one clear
# error line and without touching the device: recover of an unknown id, of a LIVE device whose
# server runs, of a device created without recovery, of a device with no record, of a device whose
# record is stale (written for another server pid; the record is removed, never trusted); and
# `--recovery fail-io` on a kernel without USER_RECOVERY_FAIL_IO (before 6.13), `--recovery bogus`.
set -eu

N=75-recovery-bad-input
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

refused "unknown id" "no ublk device with id 4242" timeout 30 ublk recover 4242

add_dev dev mem --size 64M --recovery
server=$(field "$dev_id" pid)
refused "LIVE device" "pid $server) is running" timeout 30 ublk recover "$dev_id"
[ "$(field "$dev_id" state)" = LIVE ] && [ "$(field "$dev_id" pid)" = "$server" ] ||
    fail "LIVE device touched: $(entry "$dev_id")"

kill -9 "$server"
wait_state "$dev_id" QUIESCED
mv "/run/ublk/$dev_id.rec" /tmp/r75.rec
refused "no record" "no record" timeout 30 ublk recover "$dev_id"
# A record written for another server of this id is stale.
sed 's/"pid": *[0-9-]*/"pid": 1/' /tmp/r75.rec >"/run/ublk/$dev_id.rec"
grep -q '"pid": 1,' "/run/ublk/$dev_id.rec" || fail "could not rewrite the record's pid"
refused "stale record" "stale" timeout 30 ublk recover "$dev_id"
[ ! -e "/run/ublk/$dev_id.rec" ] || fail "the stale record was kept"
[ "$(field "$dev_id" state)" = QUIESCED ] || fail "device $dev_id changed state: $(entry "$dev_id")"
mv /tmp/r75.rec "/run/ublk/$dev_id.rec"
out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/recover.err) ||
    fail "recover with the record back: $(cat /tmp/recover.err)"
[ "$(field "$dev_id" state)" = LIVE ] || fail "device $dev_id not LIVE after recover: $(entry "$dev_id")"
echo "$N: ok: with its record back, device $dev_id recovered"
del_dev dev

add_dev dev mem --size 64M
refused "created without recovery (LIVE)" "without user recovery" timeout 30 ublk recover "$dev_id"
del_dev dev

if timeout 30 ublk features | grep -q '^USER_RECOVERY_FAIL_IO'; then
    echo "$N: skip: this kernel has USER_RECOVERY_FAIL_IO, so --recovery fail-io is not refused"
else
    refused "--recovery fail-io before 6.13" "USER_RECOVERY_FAIL_IO (it needs Linux 6.13" \
        timeout 60 ublk add mem --size 64M --recovery fail-io
    refused "--recovery fail-io before 6.13, foreground" "USER_RECOVERY_FAIL_IO" \
        timeout 60 ublk add mem --size 64M --recovery fail-io --foreground
fi
refused "--recovery bogus" "bogus" timeout 30 ublk add mem --size 64M --recovery bogus
nothing_left "at the end"
