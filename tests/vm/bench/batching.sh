# Request batching at three depths: ublk null with --batch off, 16 x 50 µs (the default),
# 16 x 100 µs and 32 x 100 µs, against null_blk; 4K random reads, runs interleaved; prints one
# RESULT line per run with IOPS and the queue thread's io_uring_enter calls per request.
# Run: cargo xtask bench --script tests/vm/bench/batching.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-3}
fiorun() { # dev qd
    fio_json "$1" --rw=randread --bs=4k --iodepth="$2" --ramp_time=1 | json_iops
}
one() { # label qd args...
    label=$1 qd=$2; shift 2
    ublk_up U 1 null "$@" || return
    iops=$(fiorun "$U" "$qd")
    ublk_stop U
    echo "RESULT qd=$qd null-$label iops=$iops enters/io=$(enters_per_request U)"
}
nullb_up N 1
for rep in 1 2 3 4 5 6 7; do
    echo "RESULT qd=64 null_blk iops=$(fiorun "$N" 64)"
    one off 64 --batch 1
    one b16w50 64 --batch 16 --batch-wait-us 50
    one b16w100 64 --batch 16 --batch-wait-us 100
    one b32w100 64 --batch 32 --batch-wait-us 100
done
for rep in 1 2 3; do
  for qd in 8 1; do
    echo "RESULT qd=$qd null_blk iops=$(fiorun "$N" $qd)"
    one off $qd --batch 1
    one b16w50 $qd --batch 16 --batch-wait-us 50
    one b16w100 $qd --batch 16 --batch-wait-us 100
  done
done
nullb_down N
