# What request statistics cost: ublk null with them (the default) and with --no-stats, 4K random
# reads at QD64 on one queue, REPS interleaved runs each in one boot (both devices stay up; fio
# alternates between them). One RESULT line per run with IOPS and the server's CPU per I/O; then
# the median IOPS of each and their ratio (`RESULT median ...`), and the `ublk stats` of the
# device that counted.
# Run: cargo xtask bench --script tests/vm/bench/stats-overhead.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-4}
REPS=${REPS:-11}
QD=${QD:-64}

echo "bench: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
ublk_up ON 1 null || exit 1
ublk_up OFF 1 null --no-stats || exit 1

one() { # label var
    eval "dev=\$$2 pid=\$pid_$2"
    t0=$(cpu_ticks "$pid")
    iops=$(fio_json "$dev" --rw=randread --bs=4k --iodepth="$QD" --ramp_time=1 | json_iops)
    t1=$(cpu_ticks "$pid")
    us=$(awk -v t=$((t1 - t0)) -v n="$iops" -v s="$SECS" 'BEGIN { printf "%.1f", t * 10000 / (n * s) }')
    echo "RESULT qd=$QD $1 iops=$iops server_us/io=$us"
    echo "$iops" >> "$B/$1.iops"
}

rm -f "$B/stats.iops" "$B/no-stats.iops"
for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) -eq 1 ]; then
        one stats ON
        one no-stats OFF
    else
        one no-stats OFF
        one stats ON
    fi
done

median() {
    sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
on=$(median "$B/stats.iops")
off=$(median "$B/no-stats.iops")
echo "RESULT median qd=$QD runs=$REPS stats=$on no-stats=$off ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.4f", a / b }')"
ublk stats "$id_ON"
ublk_stop ON
ublk_stop OFF
