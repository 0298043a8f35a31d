# Request batching at three depths: ublk null with --batch off, 16 x 50 µs (the default),
# 16 x 100 µs and 32 x 100 µs, against null_blk; 4K random reads, runs interleaved; prints one
# RESULT line per run with IOPS and the queue thread's io_uring_enter calls per request.
# Run: cargo xtask bench --script tests/vm/bench/batching.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-3}
fiorun() { # dev qd
    fio --name=x --filename="$1" --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
        --iodepth="$2" --time_based --runtime="$SECS" --ramp_time=1 --eta=never \
        --output-format=json 2>/dev/null | awk -F: '/"iops"/ { v=$2; gsub(/[ ,]/, "", v); if (v+0 > 0) { print int(v); exit } }'
}
one() { # label qd args...
    label=$1 qd=$2; shift 2
    ublk_up U 1 null "$@" || return
    iops=$(fiorun "$U" "$qd")
    ublk del "$id_U" >/dev/null; wait "$pid_U"
    echo "RESULT qd=$qd null-$label iops=$iops enters=$(grep -o '([0-9.]* per request)' "$B/U.log" | tail -1)"
    id_U= pid_U=
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
