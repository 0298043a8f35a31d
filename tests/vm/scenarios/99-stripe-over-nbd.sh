#!/bin/sh
# 99-stripe-over-nbd: one device striped over two NBD exports (two nbdkit file servers on their
# own TCP ports, as two machines would be), each served as a block device by `ublk add nbd`, and
# `ublk add stripe` over those: fio crc32c verify over the whole device with 512 B-1 MiB writes;
# after `ublk del` each export's file holds exactly its chunks (the reference layout lib.sh's
# stripe_check computes). A store written as an NBD URL is refused, naming the way to do it.
set -eu

N=99-stripe-over-nbd
FIO_LOG=/tmp/$N.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh
remove_files() { rm -f /tmp/r99.*; }
after_del() {
    nbd_stop_all
    remove_files
}
AFTER_DEL=after_del
trap cleanup EXIT

ublk add nbd --help >/dev/null 2>&1 || fail "this ublk has no nbd target"
remove_files
for i in 0 1; do
    truncate -s 8M "/tmp/r99.e$i"
    nbdkit_up "e$i" -i 127.0.0.1 -p "1082$i" file "/tmp/r99.e$i"
done
add_dev e0 nbd --host 127.0.0.1 --port 10820
add_dev e1 nbd --host 127.0.0.1 --port 10821
chunk=65536
add_dev dev stripe --chunk "$chunk" --queues 2 "$e0_path" "$e1_path"
[ "$(blockdev --getsize64 "$dev_path")" -eq $((16 << 20)) ] ||
    fail "stripe over two 8 MiB exports: size $(blockdev --getsize64 "$dev_path"), not 16 MiB"
fio_verify "$dev_path" "stripe over 2 NBD exports"
dd if="$dev_path" of=/tmp/r99.img bs=1M iflag=direct 2>/dev/null || fail "cannot read the stripe"
del_dev dev
del_dev e0
del_dev e1
nbd_stop_all
stripe_check "stripe over 2 NBD exports" /tmp/r99.img "$chunk" /tmp/r99.e0 /tmp/r99.e1
echo "$N: ok: stripe over 2 NBD exports: fio verify clean, each export holds exactly its chunks"

refused "an NBD URL as a stripe store" "ublk add nbd" \
    timeout 30 ublk add stripe /tmp/r99.e0 nbd://127.0.0.1:10820/disk
remove_files
no_kernel_warning "stripe over NBD"
nothing_left "at the end"
