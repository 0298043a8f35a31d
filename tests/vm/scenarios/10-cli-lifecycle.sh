#!/bin/sh
# 10-cli-lifecycle: `ublk add` / `ublk list` / `ublk del`, 8 rounds in a row, for mem and null
# devices with 1 and with 4 queues. Each round: add prints `<id> /dev/ublkb<id>`, the block device
# exists, `ublk list --json` shows it LIVE with the right target and queue count; after del the
# device is gone from the listing and from /dev and its server process has exited. Every round gets
# the id of the first (the lowest free id comes back: nothing leaks), and at the end no device and
# no `ublk` process is left. Also prints how long `ublk add` takes to bring a 4-queue, depth-128
# mem device live (median of 5; informational, no assertion).
set -eu

N=10-cli-lifecycle
ROUNDS=8
# shellcheck source=../lib.sh
. /xtask/lib.sh
# A failure must not leave devices behind for the next scenario.
trap cleanup EXIT

CPUS=$(nproc)
before=$(list_json)
[ "$before" = "[]" ] || fail "devices exist before the scenario starts: $before"

# One add/list/del round; sets $id.
round() {
    target=$1 queues=$2 what=$3
    # ublk_drv caps nr_hw_queues at the number of CPUs (ublk_ctrl_add_dev).
    want_queues=$queues
    [ "$queues" -le "$CPUS" ] || want_queues=$CPUS

    out=$(timeout 60 ublk add "$target" --size 64M --queues "$queues" 2>/tmp/add.err) ||
        fail "$what: ublk add exited $?: $(cat /tmp/add.err)"
    id=${out%% *}
    dev=${out#* }
    case $id in '' | *[!0-9]*) fail "$what: ublk add printed '$out', expected '<id> /dev/ublkb<id>'" ;; esac
    [ "$dev" = "/dev/ublkb$id" ] || fail "$what: ublk add printed '$out', expected '$id /dev/ublkb$id'"
    [ -b "$dev" ] || fail "$what: $dev is not a block device after ublk add returned"

    json=$(list_json)
    entry=$(echo "$json" | tr '{' '\n' | grep "\"id\":$id,") ||
        fail "$what: device $id missing from ublk list --json: $json"
    for field in '"state":"LIVE"' "\"queues\":$want_queues," '"depth":128,' "\"target\":\"$target\"" \
        "\"block_device\":\"$dev\""; do
        case $entry in *"$field"*) ;; *) fail "$what: ublk list --json entry lacks $field: {$entry" ;; esac
    done
    pid=$(echo "$entry" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
    [ -n "$pid" ] || fail "$what: ublk list --json shows no server pid: {$entry"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ublk ] ||
        fail "$what: the listed server pid $pid is not a running ublk process"

    timeout 60 ublk del "$id" >/tmp/del.out 2>/tmp/del.err ||
        fail "$what: ublk del $id exited $?: $(cat /tmp/del.err)"
    after=$(list_json)
    [ "$after" = "[]" ] || fail "$what: after ublk del $id, ublk list --json still shows $after"
    [ ! -e "$dev" ] || fail "$what: $dev still exists after ublk del $id"
    [ ! -e "/dev/ublkc$id" ] || fail "$what: /dev/ublkc$id still exists after ublk del $id"
    # `ublk del` returns once the server has exited (so whatever it held is released).
    ! running "$pid" || fail "$what: server pid $pid still running when ublk del $id returned"
}

for target in mem null; do
    for queues in 1 4; do
        first=
        i=1
        while [ "$i" -le "$ROUNDS" ]; do
            round "$target" "$queues" "$target, $queues queue(s), round $i"
            [ -n "$first" ] || first=$id
            [ "$id" = "$first" ] ||
                fail "$target, $queues queue(s): round $i got id $id but round 1 got $first: ids are not reused"
            i=$((i + 1))
        done
        echo "$N: ok: $target, $queues queue(s): $ROUNDS x add/list/del, id $first every round, device and server gone after each del"
    done
done

# add -> live wall time of a 4-queue, depth-128 mem device: `ublk add` returns once it is live.
times=
i=1
while [ "$i" -le 5 ]; do
    t0=$(now_us)
    add_dev timed mem --size 256M --queues 4 --depth 128
    t1=$(now_us)
    times="$times $((t1 - t0))"
    del_dev timed
    i=$((i + 1))
done
median=$(echo "$times" | tr ' ' '\n' | grep . | sort -n | sed -n 3p)
echo "$N: info: add->live, mem 256M, 4 queues (capped to $CPUS), depth 128: median $((median / 1000)).$((median / 100 % 10)) ms of 5 (us:$times)"

tries=0
while left=$(ublk_processes) && [ -n "$left" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fail "ublk processes left 10 s after the last del: $left"
    sleep 0.1
done
nothing_left "at the end"
echo "$N: ok: no devices, no /dev/ublk[bc]* nodes and no ublk processes left"
