#!/bin/sh
# Smoke: the guest kernel has ublk_drv and null_blk, and fio drives io_uring I/O on null_blk.
set -eu

N=00-smoke FIO_LOG=/tmp/smoke.fio
# shellcheck source=../lib.sh
. /xtask/lib.sh

[ -d /sys/module/ublk_drv ] || fail "ublk_drv is not loaded (/sys/module/ublk_drv missing)"
[ -c /dev/ublk-control ] || fail "/dev/ublk-control is missing or not a character device"
echo "$N: ublk_drv loaded, /dev/ublk-control present"

[ -b /dev/nullb0 ] || fail "/dev/nullb0 missing (null_blk not loaded with nr_devices=1?)"
fio --name=smoke --filename=/dev/nullb0 --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
    --iodepth=16 --runtime=2 --time_based --output-format=terse --terse-version=3 > /tmp/smoke.fio \
    || fail "fio failed"
# Terse v3 fields: 1 version, 2 fio version, 3 job name, 4 group, 5 error, 6-8 read KiB, KiB/s, IOPS.
err=$(cut -d';' -f5 /tmp/smoke.fio)
iops=$(cut -d';' -f8 /tmp/smoke.fio)
[ "$err" = 0 ] || fail "fio reported error $err"
[ "${iops:-0}" -gt 0 ] || fail "fio completed with zero read IOPS"
echo "$N: null_blk 4k randread io_uring QD16: $iops IOPS"
