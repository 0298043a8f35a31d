#!/bin/sh
# 97-nbd-bad-input: `ublk add nbd` refuses what cannot work before any device exists, with one
# error line naming the problem: no server listening, a unix path with no socket, an export the
# server does not have (qemu-nbd), a server that requires TLS (nbdkit --tls=require), two
# connections or two queues where the server does not advertise CAN_MULTI_CONN (nbdkit's
# multi-conn filter), more queues than connections, more threads than queues (per-I/O daemons:
# an NBD queue's connections are one thread's), --host with --unix; `ublk resize` of an NBD
# device is refused. Nothing is left behind after any of them.
set -eu

N=97-nbd-bad-input
# shellcheck source=../lib.sh
. /xtask/lib.sh
AFTER_DEL=nbd_stop_all
REFUSED_CHECK=nothing_left
trap cleanup EXIT

refused "no server" "cannot connect to the NBD server at 127.0.0.1:1" \
    ublk add nbd --host 127.0.0.1 --port 1
refused "no socket" "unix:/tmp/$N.none" ublk add nbd --unix /tmp/$N.none
refused "host and unix" "--unix" ublk add nbd --host 127.0.0.1 --unix /tmp/x

dd if=/dev/zero of=/tmp/$N.img bs=1M count=0 seek=16 2>/dev/null
qemu-nbd -t -f raw -x disk -b 127.0.0.1 -p 10812 /tmp/$N.img >/tmp/$N.qemu-nbd 2>&1 &
wait_listen 10812
refused "unknown export" 'no export named "nope"' \
    ublk add nbd --host 127.0.0.1 --port 10812 --export nope

printf 'ublk:%s\n' 0123456789abcdef0123456789abcdef >/tmp/$N.psk
nbdkit_up tls -U /tmp/$N-tls.sock --tls=require --tls-psk=/tmp/$N.psk memory 16M
refused "TLS required" "requires TLS" ublk add nbd --unix /tmp/$N-tls.sock

nbdkit_up single -U /tmp/$N.sock --filter=multi-conn memory 64M multi-conn-mode=disable
refused "two connections" "CAN_MULTI_CONN" ublk add nbd --unix /tmp/$N.sock --connections 2
refused "two queues" "one queue it is" ublk add nbd --unix /tmp/$N.sock --queues 2
nbdkit_up multi -U /tmp/$N-multi.sock memory 64M
refused "more queues than connections" "2 queues need a connection each" \
    ublk add nbd --unix /tmp/$N-multi.sock --queues 2 --connections 1
refused "more threads than queues" "no more threads than queues" \
    ublk add nbd --unix /tmp/$N-multi.sock --threads 2

add_dev dev nbd --unix /tmp/$N-multi.sock
REFUSED_CHECK=
if linux_at_least 6.16; then
    refused "resize" "resize the export on the server" ublk resize "$dev_id" 32M
else
    refused "resize" "UPDATE_SIZE" ublk resize "$dev_id" 32M
fi
[ "$(field "$dev_id" size)" = $((64 << 20)) ] || fail "the size changed: $(entry "$dev_id")"
del_dev dev
nothing_left "at the end"
echo "$N: ok"
