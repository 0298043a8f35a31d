# Busy-poll windows: ublk null with the default (no polling) and --poll-us 20, 50 and 100 against
# null_blk, 4K random reads at QD1, QD8 and QD64 on one queue, and at QD64 with 2 jobs on 2 queues
# (where polling queue threads compete with fio for the 2 vCPUs). One RESULT line per run with
# IOPS, the server's CPU per I/O and the queue threads' io_uring_enter calls per request.
# Run: cargo xtask bench --script tests/vm/bench/poll-window.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-4}

fiorun() { # dev qd jobs
    fio_json "$1" --rw=randread --bs=4k --iodepth="$2" --numjobs="$3" --group_reporting | json_iops
}

one() { # label qd jobs args...
    label=$1 qd=$2 jobs=$3
    shift 3
    ublk_up U "$jobs" null "$@" || return
    t0=$(cpu_ticks "$pid_U")
    iops=$(fiorun "$U" "$qd" "$jobs")
    t1=$(cpu_ticks "$pid_U")
    ublk_stop U
    enters=$(enters_per_request U)
    echo "RESULT case=qd$qd-j$jobs null-$label iops=$iops server_us/io=$(awk -v t=$((t1 - t0)) -v n="$iops" -v s="$SECS" 'BEGIN { printf "%.1f", t * 10000 / (n * s) }') enters/io=$enters"
}

nullb_up N 2
for rep in 1 2 3; do
    for c in "64 1" "8 1" "1 1" "64 2"; do
        set -- $c
        echo "RESULT case=qd$1-j$2 null_blk iops=$(fiorun "$N" "$1" "$2")"
        one default "$1" "$2"
        one poll20 "$1" "$2" --poll-us 20
        one poll50 "$1" "$2" --poll-us 50
        one poll100 "$1" "$2" --poll-us 100
    done
done
nullb_down N
