# Batch against per-tag commands at depth 1: ublk null, 4K random reads and writes on one queue,
# the two command modes back to back in each of REPS rounds, so each round gives a paired ratio
# that boot-to-boot and minute-to-minute drift mostly cancel out of. Per run: IOPS and the
# server's user and system CPU per request (all its threads, from /proc). One RESULT line per
# run, then per case the median IOPS, the median of the rounds' batch/per-tag ratios and the
# median CPU per request of each mode. Needs batch commands (Linux 7.0): on an older kernel the
# first `ublk add --commands batch` is refused and the script stops with its message.
# Run: cargo xtask bench --debian-kernel newest --script tests/vm/bench/qd1-commands.sh
DEPTH=128
SECS=${SECS:-4}
REPS=${REPS:-9}
OUT=$B/qd1-commands.txt
: > "$OUT"

# The user and system clock ticks process $1 has used.
ticks() {
    awk '{ print $14, $15 }' "/proc/$1/stat"
}

for rep in $(seq "$REPS"); do
    for rw in randread randwrite; do
        for mode in batch per-tag; do
            ublk_up U 1 null --commands "$mode" || exit 1
            pid=$pid_U
            # shellcheck disable=SC2046 # two numbers, split on purpose
            set -- $(ticks "$pid")
            u0=$1 s0=$2
            iops=$(fio_json "$U" --rw="$rw" --bs=4k --iodepth=1 --ramp_time=1 | json_iops)
            # shellcheck disable=SC2046
            set -- $(ticks "$pid")
            ublk_stop U
            # A tick is 10 ms (USER_HZ 100); the figures are µs per request over the measured
            # seconds (the ramp's second adds its ticks too, a bias both modes share).
            n=$((iops * SECS))
            [ "$n" -gt 0 ] || n=1
            result "$rw $rep $mode $iops $(( ($1 - u0) * 10000 / n )) $(( ($2 - s0) * 10000 / n ))"
        done
    done
done

echo "| case | mode | median IOPS | batch/per-tag (median of rounds) | server user µs/req | server system µs/req |"
echo "|---|---|---:|---:|---:|---:|"
awk "$AWK_MEDIAN"'
    { key = $1 " " $3; v[key] = v[key] " " $4; u[key] = u[key] " " $5; s[key] = s[key] " " $6
      iops[$1 " " $2 " " $3] = $4
      if (!(key in seen)) { seen[key] = 1; order[++k] = key }
      if (!(($1 " " $2) in round)) { round[$1 " " $2] = 1; rounds[$1] = rounds[$1] " " $2 } }
    END {
        for (i = 1; i <= k; i++) {
            split(order[i], p, " ")
            r = "-"
            if (p[2] == "batch") {
                n = split(rounds[p[1]], rr, " "); list = ""
                for (j = 1; j <= n; j++) {
                    b = iops[p[1] " " rr[j] " batch"]; t = iops[p[1] " " rr[j] " per-tag"]
                    if (b > 0 && t > 0) list = list " " b / t
                }
                if (list != "") r = sprintf("%.2fx", median(list))
            }
            printf "| %s | %s | %d | %s | %d | %d |\n", p[1], p[2], median(v[order[i]]), r,
                median(u[order[i]]), median(s[order[i]])
        }
    }' "$OUT"
