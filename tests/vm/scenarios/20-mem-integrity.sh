#!/bin/sh
# 20-mem-integrity: what is written to a mem device reads back, byte for byte.
#  (a) a new 32 MiB device reads as zeroes; a 32 MiB /dev/urandom file written over the whole
#      device (O_DIRECT) reads back with the same md5;
#  (b) distinct 512-byte patterns in the first and the last sector read back exactly, and their
#      neighbours keep the data of (a);
#  (c) a write at the device's end fails, a read there returns 0 bytes, and afterwards the whole
#      device still holds exactly (a)+(b) and takes new writes;
#  (d) fio verify=crc32c random writes, block sizes 512 B to 1 MiB, io_uring O_DIRECT, iodepth 1
#      and 128, on devices with 1 and 2 queues; then 4 concurrent jobs interleaved over the whole
#      device (strided 1 MiB zones: they share every region but never a block), each job's data
#      verified by itself and again by a verify-only pass after all four finished (a pass that
#      must leave the device unchanged; with a corrupted sector in any job's zone it fails).
set -eu

N=20-mem-integrity
# shellcheck source=../lib.sh
. /xtask/lib.sh
trap cleanup EXIT

# MiB/s for $1 MiB in $2 microseconds.
rate() {
    echo "$(($1 * 1000000 / ($2 + 1))) MiB/s"
}

# dd_ok WHAT dd-ARGS...: dd must succeed.
dd_ok() {
    what=$1
    shift
    timeout 120 dd "$@" 2>/tmp/dd.err || fail "$what: dd $* exited $?: $(cat /tmp/dd.err)"
}

# same WHAT GOT WANT: the two files are identical.
same() {
    cmp "$2" "$3" >/tmp/cmp.out 2>&1 || fail "$1: $2 differs from $3: $(cat /tmp/cmp.out)"
}

MIB=32
add_dev dev mem --size "${MIB}M" --queues 2
bytes=$(blockdev --getsize64 "$dev_path")
[ "$bytes" -eq $((MIB << 20)) ] || fail "$dev_path is $bytes bytes, expected $((MIB << 20))"
ss=$(blockdev --getss "$dev_path")
[ "$ss" -eq 512 ] || fail "$dev_path has logical block size $ss, expected 512"
sectors=$((bytes / 512))
echo "$N: device $dev_id: $dev_path, $bytes bytes, $sectors sectors of $ss bytes, 2 queues"

# (a) zeroes, then the whole device from a random reference file.
dd_ok "zero reference" if=/dev/zero of=/tmp/zero bs=1M count=$MIB
dd_ok "random reference" if=/dev/urandom of=/tmp/ref bs=1M count=$MIB
[ "$(stat -c %s /tmp/ref)" -eq "$bytes" ] || fail "/tmp/ref is $(stat -c %s /tmp/ref) bytes, expected $bytes"
dd_ok "read the new device" if="$dev_path" of=/tmp/back bs=1M iflag=direct
same "(a) a new device reads as zeroes" /tmp/back /tmp/zero
echo "$N: ok: (a) the new device reads as $MIB MiB of zeroes"

t0=$(now_us)
dd_ok "(a) write the reference" if=/tmp/ref of="$dev_path" bs=1M oflag=direct conv=notrunc
t1=$(now_us)
dd_ok "(a) read back" if="$dev_path" of=/tmp/back bs=1M iflag=direct
t2=$(now_us)
ref_md5=$(md5 /tmp/ref)
back_md5=$(md5 /tmp/back)
[ "$back_md5" = "$ref_md5" ] || fail "(a) read-back md5 $back_md5 != reference md5 $ref_md5 ($(cmp /tmp/back /tmp/ref 2>&1 || true))"
echo "$N: ok: (a) $MIB MiB written and read back with O_DIRECT, md5 $ref_md5 (write $(rate $MIB $((t1 - t0))), read $(rate $MIB $((t2 - t1))))"

# (b) first and last sector.
dd_ok "(b) pattern" if=/dev/urandom of=/tmp/first bs=512 count=1
dd_ok "(b) pattern" if=/dev/urandom of=/tmp/last bs=512 count=1
! cmp -s /tmp/first /tmp/last || fail "(b) /dev/urandom gave the same 512 bytes twice"
last=$((sectors - 1))
dd_ok "(b) write sector 0" if=/tmp/first of="$dev_path" bs=512 seek=0 count=1 oflag=direct conv=notrunc
dd_ok "(b) write sector $last" if=/tmp/last of="$dev_path" bs=512 seek=$last count=1 oflag=direct conv=notrunc
cp /tmp/ref /tmp/expect
dd_ok "(b) expected image" if=/tmp/first of=/tmp/expect bs=512 seek=0 count=1 conv=notrunc
dd_ok "(b) expected image" if=/tmp/last of=/tmp/expect bs=512 seek=$last count=1 conv=notrunc
for s in 0 1 $((last - 1)) $last; do
    dd_ok "(b) read sector $s" if="$dev_path" of=/tmp/got bs=512 skip=$s count=1 iflag=direct
    dd_ok "(b) expected sector $s" if=/tmp/expect of=/tmp/want bs=512 skip=$s count=1
    same "(b) sector $s" /tmp/got /tmp/want
done
echo "$N: ok: (b) sectors 0 and $last hold their own patterns; sectors 1 and $((last - 1)) kept the reference"

# (c) past the end.
rc=0
timeout 30 dd if=/tmp/first of="$dev_path" bs=512 seek=$sectors count=1 oflag=direct conv=notrunc 2>/tmp/dd.err || rc=$?
[ "$rc" -ne 0 ] || fail "(c) a write of sector $sectors (the device's end) succeeded"
[ "$rc" -eq 1 ] || fail "(c) the write past the end exited $rc (timeout or signal?): $(cat /tmp/dd.err)"
echo "$N: ok: (c) writing sector $sectors fails: $(grep -v records /tmp/dd.err | head -1)"
dd_ok "(c) read at the end" if="$dev_path" of=/tmp/got bs=512 skip=$sectors count=1 iflag=direct
[ "$(stat -c %s /tmp/got)" -eq 0 ] || fail "(c) a read of sector $sectors returned $(stat -c %s /tmp/got) bytes, expected 0"
echo "$N: ok: (c) reading sector $sectors returns 0 bytes"
dd_ok "(c) read the whole device" if="$dev_path" of=/tmp/back bs=1M iflag=direct
same "(c) the device after the write past its end" /tmp/back /tmp/expect
dd_ok "(c) new write" if=/tmp/last of="$dev_path" bs=512 seek=1000 count=1 oflag=direct conv=notrunc
dd_ok "(c) read it" if="$dev_path" of=/tmp/got bs=512 skip=1000 count=1 iflag=direct
same "(c) a write after the failed one" /tmp/got /tmp/last
echo "$N: ok: (c) afterwards the device holds exactly (a)+(b) and takes new writes"
del_dev dev
rm -f /tmp/zero /tmp/ref /tmp/back /tmp/expect

# (d) fio verify. run_fio MODE LABEL JOBS FIO-ARGS...: fio exits 0, every job reports error 0,
# wrote something and read back (verified) exactly that; MODE write prints each job's write IOPS.
run_fio() {
    mode=$1 label=$2 jobs=$3
    shift 3
    t0=$(now_us)
    rc=0
    timeout 300 fio --output-format=terse --terse-version=3 --output=/tmp/fio.terse "$@" \
        >/tmp/fio.out 2>&1 || rc=$?
    t1=$(now_us)
    [ "$rc" -eq 0 ] || fail "$label: fio exited $rc: $(head -c 2000 /tmp/fio.out) $(grep -v '^3;' /tmp/fio.terse | head -20)"
    ! grep -iqE 'verify|bad magic|crc' /tmp/fio.out || fail "$label: fio reported: $(head -c 2000 /tmp/fio.out)"
    # Terse v3: 3 job name, 5 error, 6 read KiB, 47 write KiB, 49 write IOPS.
    grep '^3;' /tmp/fio.terse >/tmp/fio.jobs || fail "$label: no terse lines from fio: $(head -c 2000 /tmp/fio.terse)"
    [ "$(wc -l </tmp/fio.jobs)" -eq "$jobs" ] || fail "$label: fio reported $(wc -l </tmp/fio.jobs) jobs, expected $jobs"
    summary=
    while read -r line; do
        name=$(echo "$line" | cut -d';' -f3)
        err=$(echo "$line" | cut -d';' -f5)
        read_kib=$(echo "$line" | cut -d';' -f6)
        write_kib=$(echo "$line" | cut -d';' -f47)
        write_iops=$(echo "$line" | cut -d';' -f49)
        [ "$err" = 0 ] || fail "$label: job $name reported error $err"
        # A verify-only pass counts the writes it replays without doing them.
        [ "$write_kib" -gt 0 ] || fail "$label: job $name wrote nothing"
        [ "$read_kib" -eq "$write_kib" ] ||
            fail "$label: job $name wrote $write_kib KiB but verified $read_kib KiB"
        if [ "$mode" = verify-only ]; then
            summary="$summary $name verified ${read_kib} KiB;"
        else
            summary="$summary $name ${write_kib} KiB written+verified, write $write_iops IOPS;"
        fi
    done </tmp/fio.jobs
    echo "$N: ok: (d) $label:$summary $(((t1 - t0) / 1000)) ms"
}

# Counted by number: mostly small blocks, by bytes mostly large ones.
BSSPLIT=512/15:4k/35:16k/20:64k/15:256k/10:1m/5
seed=1
for queues in 1 2; do
    add_dev dev mem --size 64M --queues "$queues"
    for depth in 1 128; do
        run_fio write "$queues queue(s), iodepth $depth, randwrite bs 512-1m" 1 \
            --name="q$queues-qd$depth" --filename="$dev_path" --ioengine=io_uring --direct=1 \
            --rw=randwrite --bssplit=$BSSPLIT --iodepth=$depth --io_size=16m --randseed=$seed \
            --verify=crc32c --verify_fatal=1
        seed=$((seed + 1))
    done
    [ "$queues" -eq 2 ] || del_dev dev
done

# Four jobs over the whole 64 MiB device: job i owns the 1 MiB zones starting at i MiB, i+4 MiB,
# ... (zonesize=zonerange=1m, zoneskip=3m). Each job's block size divides 1 MiB, so no block
# crosses into a neighbour's zone and verify stays meaningful while all four run at once.
# Options after the first --name belong to that job only: global ones (--verify_only) go before.
STRIDED="--filename=$dev_path --ioengine=io_uring --direct=1 --rw=randwrite --iodepth=16 \
 --zonemode=strided --zonerange=1m --zonesize=1m --zoneskip=3m --size=61m --io_size=16m \
 --verify=crc32c --verify_fatal=1"
JOBS="--name=j512 --offset=0 --bs=512 --name=j4k --offset=1m --bs=4k \
 --name=j64k --offset=2m --bs=64k --name=j1m --offset=3m --bs=1m"
# shellcheck disable=SC2086 # word splitting of $STRIDED and $JOBS is intended
run_fio write "2 queues, 4 interleaved jobs (bs 512, 4k, 64k, 1m), iodepth 16" 4 $STRIDED $JOBS
dd_ok "(d) image before verify-only" if="$dev_path" of=/tmp/before bs=1M iflag=direct
# shellcheck disable=SC2086
run_fio verify-only "2 queues, the 4 jobs' data re-verified after all finished" 4 $STRIDED --verify_only $JOBS
dd_ok "(d) image after verify-only" if="$dev_path" of=/tmp/after bs=1M iflag=direct
same "(d) the verify-only pass must not write" /tmp/after /tmp/before
del_dev dev
