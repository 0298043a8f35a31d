# Where a null request's time goes: ublk null (batching default, off, and polling) against null_blk
# at QD64 and QD8, 4K random reads. Per run: IOPS, fio's CPU (user + system, % of one CPU) and its
# context switches per I/O, and the server's CPU and context switches per I/O (all its threads,
# from /proc), and the queue thread's io_uring_enter calls per request. One RESULT line per run.
# Run: cargo xtask bench --script tests/vm/bench/profile-null.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-4}

# fio on $1 at depth $2: "iops usr% sys% ctx" from its JSON.
fiorun() {
    fio_json "$1" --rw=randread --bs=4k --iodepth="$2" | awk -F: '
        /"iops"/ && !iops { v=$2; gsub(/[ ,]/, "", v); if (v+0 > 0) iops=int(v) }
        /"usr_cpu"/ { u=$2; gsub(/[ ,]/, "", u) }
        /"sys_cpu"/ { s=$2; gsub(/[ ,]/, "", s) }
        /"ctx"/ { c=$2; gsub(/[ ,]/, "", c) }
        END { print iops, u, s, c }'
}

# Voluntary + involuntary context switches of every thread of process $1.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# report LABEL QD "iops usr sys ctx" [SERVER_TICKS SERVER_SWITCHES ENTERS]
report() {
    echo "$3 ${4:-}" | awk -v l="$1" -v qd="$2" -v secs="$SECS" '{
        ios = $1 * secs
        line = sprintf("RESULT qd=%s %s iops=%d fio_cpu=%.0f%% fio_ctx/io=%.3f", qd, l, $1, $2 + $3, $4 / ios)
        if (NF >= 6) line = line sprintf(" server_us/io=%.1f server_ctx/io=%.3f", $5 * 10000 / ios, $6 / ios)
        print line, $7 }'
}

one() { # label qd args...
    label=$1 qd=$2
    shift 2
    ublk_up U 1 null "$@" || return
    t0=$(cpu_ticks "$pid_U") s0=$(switches "$pid_U")
    f=$(fiorun "$U" "$qd")
    t1=$(cpu_ticks "$pid_U") s1=$(switches "$pid_U")
    ublk_stop U
    report "null-$label" "$qd" "$f" "$((t1 - t0)) $((s1 - s0)) enters/io=$(enters_per_request U)"
}

nullb_up N 1
for rep in 1 2 3 4 5; do
    for qd in 64 8; do
        report null_blk "$qd" "$(fiorun "$N" "$qd")"
        one default "$qd"
        one off "$qd" --batch 1
        one poll100 "$qd" --poll-us 100
    done
done
nullb_down N
