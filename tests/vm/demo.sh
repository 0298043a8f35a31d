#!/bin/sh
# `cargo xtask demo`: what `ublk` does, step by step, in a guest with a real ublk kernel.
# A RAM-backed block device served by a Rust process in user space gets a file system, files,
# and a short fio run; then it is deleted. Any failing step stops the demo with its status.
set -eu

MNT=/mnt/demo
step=0
section() {
    step=$((step + 1))
    printf '\n==== %d. %s ====\n' "$step" "$*"
}
# Shows a command, then runs it.
run() {
    echo "\$ $*"
    "$@"
}

section "What this kernel's ublk driver supports"
run ublk features

section "Create a 256 MiB RAM disk with 2 queues (the server keeps running in the background)"
echo "\$ ublk add mem --size 256M --queues 2"
out=$(ublk add mem --size 256M --queues 2)
echo "$out"
id=${out%% *}
dev=${out#* }

section "List ublk devices"
run ublk list

section "Make an ext4 file system on $dev and mount it"
run mkfs.ext4 -q "$dev"
mkdir -p "$MNT"
run mount -t ext4 "$dev" "$MNT"
run df -h "$MNT"

section "Write some files, then read them back"
echo "Hello from a block device served by a Rust process in user space." >"$MNT/hello.txt"
mkdir -p "$MNT/photos"
for i in 1 2 3 4 5; do
    head -c $((i * 300000)) /dev/urandom >"$MNT/photos/img$i.raw"
done
head -c $((32 << 20)) /dev/urandom >"$MNT/big.bin"
sync
(cd "$MNT" && md5sum hello.txt photos/* big.bin) >/tmp/demo.md5
run ls -l "$MNT" "$MNT/photos"
run cat "$MNT/hello.txt"
echo "(page cache dropped: the reads below go through ublk to the server)"
echo 3 >/proc/sys/vm/drop_caches
echo "\$ md5sum -c (7 files)"
(cd "$MNT" && md5sum -c /tmp/demo.md5)

section "fio: 4 KiB random reads, io_uring, O_DIRECT, queue depth 32, 5 seconds"
echo "\$ fio --name=randread --filename=$dev --rw=randread --bs=4k --ioengine=io_uring --direct=1 --iodepth=32 --runtime=5 --time_based"
fio --name=randread --filename="$dev" --rw=randread --bs=4k --ioengine=io_uring --direct=1 \
    --iodepth=32 --runtime=5 --time_based >/tmp/demo.fio
grep -E 'IOPS=|^ *lat \([a-z]+\): min=' /tmp/demo.fio
echo "(under QEMU software emulation these numbers are far below real hardware)"

section "Unmount and delete the device"
run umount "$MNT"
run ublk del "$id"

section "List ublk devices again: none left"
run ublk list
echo "(the server's log, /run/ublk/server.log:)"
sed 's/^/    /' /run/ublk/server.log

printf '\n==== demo finished: every step succeeded ====\n'
