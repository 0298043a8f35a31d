# The null target in each buffer mode and command mode this kernel has, against null_blk: 4K
# random reads and writes at QD64 on one queue, and 4K random reads with 2 jobs on 2 queues (the
# queue-scaling case). Separates what a mode costs from what a kernel costs: run it on both
# kernels and compare the ratios. Runs interleaved (REPS rounds), one RESULT line each, then a
# table of medians with each subject's ratio to null_blk and its io_uring_enter calls per request.
# Run: cargo xtask bench --debian-kernel newest --script tests/vm/bench/null-modes.sh
DEPTH=128
SECS=${SECS:-3}
REPS=${REPS:-3}
OUT=$B/null-modes.txt
: > "$OUT"

# "buffer-mode/commands" pairs.
subjects="copy/per-tag"
linux_at 6.16 && subjects="$subjects auto-register/per-tag"
linux_at 7.0 && subjects="$subjects copy/batch auto-register/batch"

for rep in $(seq "$REPS"); do
    for spec in "randread 1 1" "randwrite 1 1" "randread 2 2"; do
        set -- $spec
        case="$1/q$2j$3"
        fio_args="--rw=$1 --bs=4k --iodepth=64 --numjobs=$3 --group_reporting --ramp_time=1"
        nullb_up K "$2" || { echo "bench: null_blk failed"; exit 1; }
        # shellcheck disable=SC2086
        result "$case null_blk $(fio_json "$K" $fio_args | json_iops) -"
        nullb_down K
        for s in $subjects; do
            ublk_up U "$2" null --buffer-mode "${s%/*}" --commands "${s#*/}" || continue
            # shellcheck disable=SC2086
            iops=$(fio_json "$U" $fio_args | json_iops)
            ublk_stop U
            result "$case $s $iops $(enters_per_request U)"
        done
    done
done

sort "$OUT" | median_table case null_blk null_blk null_blk
