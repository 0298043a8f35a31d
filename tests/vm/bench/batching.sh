# Request batching: ublk null with the default gather window (--batch 16 --batch-wait-us 50),
# with none (--batch 1), and with longer ones (32 x 200 µs, 64 x 400 µs), against null_blk and
# per-tag commands, at QD64, QD8 and QD1 (4K random reads, one queue, runs interleaved, REPS
# rounds). One RESULT line per run, then a table of medians: IOPS, the ratio to the default
# window in the same boot, and io_uring_enter calls per request. A longer window batches more
# requests per wake-up (fewer enters) at the cost of holding each one longer.
# Run: cargo xtask bench --debian-kernel newest --script tests/vm/bench/batching.sh
DEPTH=128
SECS=${SECS:-3}
REPS=${REPS:-3}
OUT=$B/batching.txt
: > "$OUT"

fiorun() { # dev qd
    fio_json "$1" --rw=randread --bs=4k --iodepth="$2" --ramp_time=1 | json_iops
}
one() { # label qd args...
    label=$1 qd=$2
    shift 2
    ublk_up U 1 null "$@" || return
    iops=$(fiorun "$U" "$qd")
    ublk_stop U
    result "qd$qd $label $iops $(enters_per_request U)"
}

nullb_up N 1 || { echo "bench: null_blk failed"; exit 1; }
for rep in $(seq "$REPS"); do
    for qd in 64 8 1; do
        result "qd$qd null_blk $(fiorun "$N" "$qd") -"
        one default "$qd"
        one off "$qd" --batch 1
        one 32x200us "$qd" --batch 32 --batch-wait-us 200
        one 64x400us "$qd" --batch 64 --batch-wait-us 400
        one per-tag "$qd" --commands per-tag
    done
done
nullb_down N

median_table depth default default null_blk < "$OUT"
