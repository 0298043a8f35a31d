# Guest side of `cargo xtask bench`: the functions the generated run.sh calls (busybox ash).
#
# Every result goes to the console between markers carrying the run's nonce ($NONCE):
#   === XTASK-BENCH run=N run case=C subject=S rep=R ===   fio's JSON   === XTASK-BENCH run=N run-end status=X cpus=N busy=B ===
#   === XTASK-BENCH run=N log case=C subject=S ===          a ublk server's log (and its `ublk stats --json`)    === XTASK-BENCH run=N log-end ===
#   === XTASK-BENCH run=N skip subject=S reason=... ===
#   === XTASK-BENCH run=N created queues=Q hw_queues=H ===  (then that server's log)
# The host (xtask/src/bench/) reads them back; nothing else on the console matters to it.

B=/tmp/bench
mkdir -p "$B"
# The guest's CPU count, for cpus_busy and the run-end marker.
NCPUS=$(grep -c '^cpu[0-9]' /proc/stat)

mark() { echo "=== XTASK-BENCH run=$NONCE $* ==="; }

# Kernel block-layer settings shared by every subject: no I/O scheduler (ublk, null_blk and loop
# would otherwise get different defaults), so the figures compare drivers, not schedulers.
tune() {
    name=${1#/dev/}
    [ -w "/sys/block/$name/queue/scheduler" ] && echo none > "/sys/block/$name/queue/scheduler"
    return 0
}

# ublk_up VAR QUEUES TARGET [ARGS...]: `ublk add TARGET --foreground`, in the background; returns
# once the device is live and sets $VAR to its block device. Its stderr (the server log) goes to
# $B/VAR.log; ublk_down prints it.
ublk_up() {
    var=$1 queues=$2 target=$3
    shift 3
    rm -f "$B/$var.fifo" "$B/$var.log"
    mkfifo "$B/$var.fifo"
    ublk add "$target" --queues "$queues" --depth "$DEPTH" --foreground "$@" \
        > "$B/$var.fifo" 2> "$B/$var.log" &
    pid=$!
    eval "pid_$var=$pid"
    # The server prints "ID /dev/ublkbID" once the device is live; EOF means it failed.
    read -r id dev < "$B/$var.fifo" || true
    rm -f "$B/$var.fifo"
    if [ -z "$dev" ] || [ ! -b "$dev" ]; then
        echo "bench: ublk add $target failed:"
        cat "$B/$var.log"
        eval "$var="
        return 1
    fi
    eval "id_$var=$id $var=$dev ticks_$var=$(cpu_ticks "$pid")"
    tune "$dev"
}

# The CPU time process PID has used (utime + stime of all its threads), in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null
}

# ublk_stop VAR: deletes the device ublk_up started as VAR and waits for its server to exit; its
# log stays in $B/VAR.log.
ublk_stop() {
    eval "id=\$id_$1 pid=\$pid_$1"
    [ -n "$id" ] && ublk del "$id" > /dev/null
    [ -n "$pid" ] && wait "$pid"
    eval "id_$1= pid_$1= $1="
}

# ublk_down VAR CASE SUBJECT: ublk_stop, then prints the server's log, the CPU time it used
# while live (clock ticks; USER_HZ is 100 on Linux) and its own figures (`ublk stats --json`,
# taken before it stops: latency percentiles per operation over its whole life).
ublk_down() {
    var=$1
    eval "pid=\$pid_$var ticks=\$ticks_$var id=\$id_$var"
    ticks=$(( $(cpu_ticks "$pid") - ${ticks:-0} ))
    stats=$(ublk stats "$id" --json 2>&1 | head -1)
    ublk_stop "$var"
    mark log case=$2 subject=$3
    cat "$B/$var.log"
    echo "bench: server cpu_ticks=$ticks hz=100"
    echo "bench: server stats $stats"
    mark log-end
}

# For the experiment scripts (cargo xtask bench --script):

# linux_at X.Y: whether the running kernel (uname -r) is at least X.Y.
linux_at() {
    awk -v want="$1" -v have="$(uname -r)" 'BEGIN {
        split(want, w, "."); split(have, h, "[.-]");
        exit !(h[1] > w[1] || (h[1] == w[1] && h[2] >= w[2])) }'
}

# result WORDS...: one result line, on the console (RESULT WORDS) and appended to $OUT.
result() {
    echo "RESULT $*"
    echo "$*" >> "$OUT"
}

# AWK_MEDIAN: an awk function for the scripts' tables, median(" v1 v2 ..."): awk "$AWK_MEDIAN"'...'
AWK_MEDIAN='
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}'

# median_table KEY-NAME BASE BASE-NAME YARDSTICK: a table of medians from "KEY SUBJECT IOPS
# ENTERS" lines on stdin, rows in the order they first appear: each subject's median IOPS, its
# ratio to BASE's median for the same KEY, and its median io_uring_enter calls per request.
# YARDSTICK is the kernel's driver: no enters figure, and no ratio where it is the base itself.
median_table() {
    echo "| $1 | subject | median IOPS | vs $3 | enters/request (median) |"
    echo "|---|---|---:|---:|---:|"
    awk -v base="$2" -v yard="$4" "$AWK_MEDIAN"'
        { key = $1 " " $2; v[key] = v[key] " " $3; e[key] = e[key] " " $4
          if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
        END {
            for (i = 1; i <= k; i++) m[order[i]] = median(v[order[i]])
            for (i = 1; i <= k; i++) {
                split(order[i], p, " "); b = p[1] " " base
                ratio = (!(p[2] == base && p[2] == yard) && m[b] > 0) ? sprintf("%.2fx", m[order[i]] / m[b]) : "-"
                en = (p[2] != yard) ? sprintf("%.3f", median(e[order[i]])) : "-"
                printf "| %s | %s | %d | %s | %s |\n", p[1], p[2], m[order[i]], ratio, en
            }
        }'
}

# enters_per_request VAR: the io_uring_enter calls per request of VAR's queue threads (the mean
# over its queues), from the log of a server that has stopped.
enters_per_request() {
    grep -o '([0-9.]* per request)' "$B/$1.log" | tr -d '()' |
        awk '{ s += $1; n++ } END { if (n) printf "%.3f", s / n }'
}

# fio_json DEV FIO-ARGS...: one time-based fio run of $SECS s on DEV (io_uring, direct I/O); its
# JSON report on stdout.
fio_json() {
    dev=$1
    shift
    fio --name=x --filename="$dev" --ioengine=io_uring --direct=1 --time_based --runtime="$SECS" \
        --eta=never --output-format=json "$@" 2>/dev/null
}

# json_iops: the IOPS of the fio JSON report on stdin (its first non-zero "iops").
json_iops() {
    awk -F: '/"iops"/ { v=$2; gsub(/[ ,]/, "", v); if (v+0 > 0) { print int(v); exit } }'
}

# nullb_up VAR QUEUES [ATTR=VALUE...]: a null_blk device (configfs) with QUEUES submit queues of
# depth $DEPTH, and any other configfs attributes given (mbps=200 caps its bandwidth).
nullb_up() {
    var=$1
    d=/sys/kernel/config/nullb/$var
    mkdir "$d" || return 1
    echo "$2" > "$d/submit_queues"
    echo "$DEPTH" > "$d/hw_queue_depth"
    echo 256000 > "$d/size" # MB, as large as ublk null's default 250G
    shift 2
    for attr; do
        echo "${attr#*=}" > "$d/${attr%%=*}" || return 1
    done
    echo 1 > "$d/power" || return 1
    # Named nullb<index> by 6.12; later kernels may name it after the configfs directory.
    dev=/dev/nullb$(cat "$d/index")
    [ -b "$dev" ] || dev=/dev/$var
    eval "$var=$dev"
    tune "$dev"
}

nullb_down() {
    echo 0 > "/sys/kernel/config/nullb/$1/power"
    rmdir "/sys/kernel/config/nullb/$1"
}

# loop_up VAR FILE: the kernel loop driver over FILE with direct I/O. util-linux's losetup by its
# path: busybox's sh prefers its own applet, which has no --direct-io.
loop_up() {
    dev=$(/usr/sbin/losetup --direct-io=on -f --show "$2") || return 1
    eval "$1=$dev"
    tune "$dev"
    echo "bench: $dev over $2, direct I/O $(cat /sys/block/${dev#/dev/}/loop/dio 2>/dev/null)"
}

loop_down() {
    eval "/usr/sbin/losetup -d \$$1"
}

# cpu_times: the guest's "busy idle" clock ticks summed over its CPUs since boot (/proc/stat's
# first line: busy is user, nice, system, irq, softirq and steal; idle is idle and iowait).
cpu_times() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat
}

# cpus_busy BEFORE-BUSY BEFORE-IDLE AFTER-BUSY AFTER-IDLE: how many of the guest's CPUs were busy
# on average between two cpu_times, to two decimals.
cpus_busy() {
    awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" -v n="$NCPUS" \
        'BEGIN { t = (b1 - b0) + (i1 - i0); if (t > 0) printf "%.2f", n * (b1 - b0) / t }'
}

# run CASE SUBJECT REP DEV FIO-ARGS...: one fio run, its JSON on the console between markers; the
# end marker says how many of the guest's CPUs the run kept busy (all of it: fio, the server,
# the kernel, nbdkit), which bounds what more jobs or queues can gain on this guest.
run() {
    case=$1 subject=$2 rep=$3 dev=$4
    shift 4
    mark run case=$case subject=$subject rep=$rep
    before=$(cpu_times)
    fio --name="$case" --filename="$dev" "$@" --eta=never --output-format=json --output="$B/fio.json" \
        2> "$B/fio.err"
    status=$?
    # shellcheck disable=SC2086 # two numbers each, split on purpose
    busy=$(cpus_busy $before $(cpu_times))
    # Leading blanks stripped: the JSON stays valid and the console carries a third less.
    sed 's/^[[:space:]]*//' "$B/fio.json"
    mark run-end status=$status cpus=$NCPUS busy=${busy:-none}
    [ $status -eq 0 ] || cat "$B/fio.err"
}

# nbd_server_up PORT SIZE: nbdkit's memory plugin (SIZE, e.g. 256M) on 127.0.0.1:PORT, the export
# both NBD subjects use; returns once it listens (its pid file), or fails after 20 s.
nbd_server_up() {
    command -v nbdkit >/dev/null || return 1
    rm -f "$B/nbdkit.pid"
    nbdkit -f -P "$B/nbdkit.pid" -i 127.0.0.1 -p "$1" memory "$2" > "$B/nbdkit.log" 2>&1 &
    i=0
    until [ -s "$B/nbdkit.pid" ]; do
        i=$((i + 1))
        [ $i -le 200 ] || { echo "bench: nbdkit did not start:"; cat "$B/nbdkit.log"; return 1; }
        sleep 0.1
    done
    echo "bench: nbdkit $(nbdkit --version 2>&1 | head -1), memory $2 on 127.0.0.1:$1"
}

# knbd_up VAR PORT CONNECTIONS: the kernel's NBD client on the first free /dev/nbdN, connected
# to 127.0.0.1:PORT with CONNECTIONS connections (as many hardware queues), 512-byte blocks.
knbd_up() {
    var=$1
    for n in $(seq 0 15); do
        [ "$(cat /sys/block/nbd$n/size 2>/dev/null)" = 0 ] || continue
        nbd-client 127.0.0.1 "$2" "/dev/nbd$n" -connections "$3" -block-size 512 \
            > "$B/$var.nbd-client" 2>&1 || { cat "$B/$var.nbd-client"; return 1; }
        eval "$var=/dev/nbd$n"
        tune "/dev/nbd$n"
        echo "bench: /dev/nbd$n: $(ls /sys/block/nbd$n/mq | wc -l) hardware queue(s)"
        return 0
    done
    echo "bench: no free /dev/nbdN"
    return 1
}

knbd_down() {
    eval "nbd-client -d \$$1 > /dev/null 2>&1"
    eval "$1="
}
