# Loop backing I/O: ublk loop with --backing-io async and auto (small copies inline on tmpfs)
# against the kernel loop driver (direct I/O) over one tmpfs file; 4K random reads and writes at
# QD1 and QD64, 128K sequential reads at QD8, runs interleaved; one RESULT line per run.
# Run: cargo xtask bench --script tests/vm/bench/loop-backing-io.sh   (lib.sh is sourced first)
DEPTH=128
SECS=${SECS:-3}
fiorun() { # dev qd rw bs
    fio_json "$1" --rw="$3" --bs="${4:-4k}" --iodepth="$2" --ramp_time=1 | json_iops
}
one() { # label qd rw bs args...
    label=$1 qd=$2 rw=$3 bs=$4; shift 4
    ublk_up U 1 loop --file /tmp/bench/l.img "$@" || return
    t0=$(cpu_ticks "$pid_U")
    iops=$(fiorun "$U" "$qd" "$rw" "$bs")
    t1=$(cpu_ticks "$pid_U")
    ublk_stop U
    echo "RESULT $rw/$bs qd=$qd loop-$label iops=$iops ticks=$((t1 - t0)) enters/io=$(enters_per_request U)"
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
