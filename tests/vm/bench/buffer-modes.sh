# Buffer modes side by side: ublk loop in every buffer mode this kernel has against the kernel loop
# driver (direct I/O) over one tmpfs file, 4K random reads and writes at QD64 and 128K sequential
# reads and writes at QD8; ublk null 4K random reads at QD64 in each mode; and the server's
# resident memory (VmRSS) after a 128K run, with depth 128 and 1 MiB requests. Runs interleaved
# (REPS rounds), one RESULT line each, then a table of medians.
# Run: cargo xtask bench --debian-kernel newest --script tests/vm/bench/buffer-modes.sh
DEPTH=128
SECS=${SECS:-3}
REPS=${REPS:-3}
OUT=$B/modes.txt
: > "$OUT"

modes="copy need-get-data user-copy"
linux_at 6.15 && modes="$modes zero-copy"
linux_at 6.16 && modes="$modes auto-register"

fiorun() { # dev qd rw bs
    fio_json "$1" --rw="$3" --bs="$4" --iodepth="$2" --ramp_time=1 | json_iops
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

dd if=/dev/zero of=$B/l.img bs=1M count=256 2>/dev/null
for rep in $(seq "$REPS"); do
    for spec in "randread 64 4k" "randwrite 64 4k" "read 8 128k" "write 8 128k"; do
        set -- $spec
        loop_up L $B/l.img
        result "$1/$3/qd$2 kernel-loop $(fiorun "$L" "$2" "$1" "$3")"
        loop_down L
        for mode in $modes; do
            ublk_up U 1 loop --file $B/l.img --max-io 1M --buffer-mode "$mode" || continue
            iops=$(fiorun "$U" "$2" "$1" "$3")
            [ "$3" = 128k ] && result "rss/$1 $mode $(rss_kib "$pid_U")"
            ublk_stop U
            result "$1/$3/qd$2 loop-$mode $iops"
        done
    done
    for mode in $modes; do
        ublk_up N 1 null --buffer-mode "$mode" || continue
        result "randread/4k/qd64 null-$mode $(fiorun "$N" 64 randread 4k)"
        ublk_stop N
    done
done

# Medians per case and subject, then each loop mode's ratio to the kernel loop driver.
echo "| case | subject | median IOPS (or RSS KiB) | vs kernel loop |"
echo "|---|---|---:|---:|"
sort "$OUT" | awk "$AWK_MEDIAN"'
    { key = $1 " " $2; v[key] = v[key] " " $3; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END {
        for (i = 1; i <= k; i++) { split(order[i], p, " "); m[order[i]] = median(v[order[i]]) }
        for (i = 1; i <= k; i++) {
            split(order[i], p, " "); base = p[1] " kernel-loop"
            ratio = (p[2] ~ /^loop-/ && (base in m) && m[base] > 0) ? sprintf("%.2fx", m[order[i]] / m[base]) : "-"
            printf "| %s | %s | %d | %s |\n", p[1], p[2], m[order[i]], ratio
        }
    }'
