# Loop backing I/O: ublk loop with --backing-io async and auto (small copies inline on tmpfs)
# against the kernel loop driver (direct I/O) over one tmpfs file; 4K random reads and writes at
# QD1 and QD64, 128K sequential reads at QD8, runs interleaved; one RESULT line per run.
# Run: cargo xtask bench --script tests/vm/bench/loop-backing-io.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-3}
fiorun() { # dev qd rw bs
    fio --name=x --filename="$1" --ioengine=io_uring --direct=1 --rw="$3" --bs="${4:-4k}" \
        --iodepth="$2" --time_based --runtime="$SECS" --ramp_time=1 --eta=never \
        --output-format=json 2>/dev/null | awk -F: '/"iops"/ { v=$2; gsub(/[ ,]/, "", v); if (v+0 > 0) { print int(v); exit } }'
}
one() { # label qd rw bs args...
    label=$1 qd=$2 rw=$3 bs=$4; shift 4
    ublk_up U 1 loop --file /tmp/bench/l.img "$@" || return
    t0=$(cpu_ticks "$pid_U")
    iops=$(fiorun "$U" "$qd" "$rw" "$bs")
    t1=$(cpu_ticks "$pid_U")
    ublk del "$id_U" >/dev/null; wait "$pid_U"
    echo "RESULT $rw/$bs qd=$qd loop-$label iops=$iops ticks=$((t1 - t0)) enters=$(grep -o '([0-9.]* per request)' "$B/U.log" | tail -1)"
    id_U= pid_U=
}
dd if=/dev/zero of=/tmp/bench/l.img bs=1M count=256 2>/dev/null
for rep in 1 2 3 4; do
  for spec in "randread 64 4k" "randwrite 64 4k" "randread 1 4k" "randwrite 1 4k" "read 8 128k"; do
    set -- $spec
    loop_up L /tmp/bench/l.img
    echo "RESULT $1/$3 qd=$2 kloop iops=$(fiorun "$L" $2 $1 $3)"
    loop_down L
    one async $2 $1 $3 --backing-io async
    one auto $2 $1 $3
  done
done
