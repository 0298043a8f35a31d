# The nbd target's command modes and request batching against the kernel's NBD client, on one
# nbdkit memory export over the loopback: 4K random reads and writes at QD64 and 128K sequential
# reads at QD8, one queue and one connection each. Separates what batch commands and the gather
# window cost the nbd target from what the kernel costs. Runs interleaved (REPS rounds), one
# RESULT line each, then a table of medians with each subject's ratio to the kernel's client and
# its io_uring_enter calls per request.
# Run: cargo xtask bench --debian-kernel newest --script tests/vm/bench/nbd-modes.sh
DEPTH=128
SECS=${SECS:-4}
REPS=${REPS:-3}
PORT=10809
OUT=$B/nbd-modes.txt
: > "$OUT"

# label=ARGS pairs (commas for spaces).
subjects="per-tag=--commands,per-tag per-tag,no-window=--commands,per-tag,--batch,1"
linux_at 7.0 && subjects="batch=--commands,batch batch,no-window=--commands,batch,--batch,1 $subjects"

nbd_server_up "$PORT" 256M || { echo "bench: nbdkit failed"; exit 1; }
for rep in $(seq "$REPS"); do
    for spec in "rr4k randread 4k 64" "rw4k randwrite 4k 64" "sr128k read 128k 8"; do
        set -- $spec
        case=$1
        fio_args="--rw=$2 --bs=$3 --iodepth=$4 --ramp_time=1"
        knbd_up K "$PORT" 1 || exit 1
        # shellcheck disable=SC2086
        result "$case kernel $(fio_json "$K" $fio_args | json_iops) -"
        knbd_down K
        for s in $subjects; do
            # shellcheck disable=SC2046 # the subject's arguments, split on purpose
            ublk_up U 1 nbd --host 127.0.0.1 --port "$PORT" $(echo "${s#*=}" | tr , ' ') || continue
            # shellcheck disable=SC2086
            iops=$(fio_json "$U" $fio_args | json_iops)
            ublk_stop U
            result "$case ${s%%=*} $iops $(enters_per_request U)"
        done
    done
done

median_table case kernel "kernel nbd" kernel < "$OUT"
