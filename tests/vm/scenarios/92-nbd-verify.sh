#!/bin/sh
# 92-nbd-verify: an NBD export served as a ublk device keeps every byte. fio writes the first
# 16 MiB in random order with mixed sizes (512 B - 1 MiB, crc32c in every block) at QD 32 and
# reads it back, through nbdkit's memory plugin over TCP on the loopback and over a unix socket,
# with 1 queue and 1 connection and with 2 queues and 2 connections; `ublk list` names the
# server and export; after `ublk del`, a new device over the same export reads the same bytes (they
# live on the server, not in ublk). Then qemu-nbd exporting a file by name (structured replies,
# no CAN_MULTI_CONN): verified, and the file holds what the device showed.
set -eu

N=92-nbd-verify
FIO_LOG=/tmp/$N.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
trap cleanup EXIT

ublk add nbd --help >/dev/null 2>&1 || fail "this ublk has no nbd target"

nbdkit_up tcp -i 127.0.0.1 -p 10809 memory 256M
nbdkit_up unix -U /tmp/$N.sock memory 256M

verify() {
    fio --name=verify --filename="$dev_path" --ioengine=io_uring --direct=1 --rw=randwrite \
        --bsrange=512-1M --size=16M --iodepth=32 --verify=crc32c --verify_fatal=1 \
        --randseed="$1" --output-format=terse --terse-version=3 >"$FIO_LOG" ||
        fail "fio verify ($2): $(cat "$FIO_LOG")"
    [ "$(cut -d';' -f5 "$FIO_LOG")" = 0 ] || fail "fio reported an error ($2)"
}

seed=1
for server in "--host 127.0.0.1" "--unix /tmp/$N.sock"; do
    for q in 1 2; do
        what="$server, $q queue(s)"
        # shellcheck disable=SC2086 # server is a list of options.
        add_dev dev nbd $server --queues "$q" --connections "$q"
        [ "$(field "$dev_id" target)" = nbd ] || fail "$what: target is $(field "$dev_id" target)"
        case $server in
            --host*) want=127.0.0.1:10809 ;;
            *) want=unix:/tmp/$N.sock ;;
        esac
        [ "$(field "$dev_id" server)" = "$want" ] ||
            fail "$what: ublk list says server '$(field "$dev_id" server)', not '$want'"
        [ "$(field "$dev_id" queues)" = "$q" ] || fail "$what: $(entry "$dev_id")"
        verify "$seed" "$what"
        sum=$(md5 "$dev_path" 0 16)
        del_dev dev
        # shellcheck disable=SC2086
        add_dev again nbd $server
        [ "$(md5 "$again_path" 0 16)" = "$sum" ] || fail "$what: the export lost data across devices"
        del_dev again
        echo "$N: ok: $what: fio verify clean, the data stays on the server"
        seed=$((seed + 1))
    done
done

# qemu-nbd: a file by export name, one connection (it does not advertise CAN_MULTI_CONN).
IMG=/tmp/$N.img
dd if=/dev/zero of="$IMG" bs=1M count=0 seek=128 2>/dev/null
qemu-nbd -t -f raw -x disk -b 127.0.0.1 -p 10810 --cache=none --aio=threads "$IMG" \
    >/tmp/$N.qemu-nbd 2>&1 &
wait_listen 10810
add_dev dev nbd --host 127.0.0.1 --port 10810 --export disk
[ "$(field "$dev_id" export)" = disk ] || fail "qemu-nbd: $(entry "$dev_id")"
verify 9 qemu-nbd
sum=$(md5 "$dev_path" 0 16)
del_dev dev
[ "$(md5 "$IMG" 0 16)" = "$sum" ] || fail "qemu-nbd: the file differs from what the device read"
echo "$N: ok: qemu-nbd export 'disk': fio verify clean, the file holds the data"
echo "$N: ok"
