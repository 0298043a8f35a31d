# Stripe bandwidth: ublk stripe over two null_blk devices against one of them alone and against
# the kernel's md RAID-0 (mdadm --build --level=0) over the same two; 128K sequential reads at
# QD16, runs interleaved. Each null_blk is capped at $MBPS MB/s (configfs `mbps`), so a store has
# a bandwidth of its own, as a disk does, and striping over two can double it; without a cap
# null_blk is bound by the (emulated) CPU, not by its bandwidth. Prints a RESULT line per run
# and a SUMMARY of the medians: stripe / one store (goal 1.8x) and stripe / md (goal 0.9x).
# Run: cargo xtask bench --script tests/vm/bench/stripe.sh   (lib.sh is sourced first)
# Knobs (the guest gets no environment from the host: edit the defaults below): RUNS, SECS, MBPS,
# CHUNK_KB, QUEUES.
DEPTH=128
RUNS=${RUNS:-5}
SECS=${SECS:-5}
MBPS=${MBPS:-200}
CHUNK_KB=${CHUNK_KB:-64}
QUEUES=${QUEUES:-1}

# 128K sequential reads at QD16 on DEV: MiB/s.
fiorun() {
    fio_json "$1" --rw=read --bs=128k --iodepth=16 --ramp_time=1 | json_iops |
        awk '{ printf "%d\n", $1 / 8 }'
}

# median FILE: the median of the numbers in FILE, one a line.
median() {
    sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

if ! grep -q raid0 /proc/mdstat 2>/dev/null && ! grep -qw raid0 /proc/modules; then
    echo "bench: no md RAID-0 in this kernel (md_mod, raid0): the md comparison is skipped"
    have_md=
else
    have_md=1
fi
nullb_up N1 1 mbps="$MBPS" memory_backed=0 || { echo "bench: null_blk N1 failed"; exit 1; }
nullb_up N2 1 mbps="$MBPS" memory_backed=0 || { echo "bench: null_blk N2 failed"; exit 1; }
echo "bench: stores $N1 and $N2, $MBPS MB/s each; chunk ${CHUNK_KB}K; ublk queues $QUEUES; $RUNS runs of $SECS s"
rm -f "$B"/r.*
for rep in $(seq "$RUNS"); do
    v=$(fiorun "$N1")
    echo "$v" >> "$B/r.one"
    echo "RESULT rep=$rep one-store MiB/s=$v"

    if ublk_up S "$QUEUES" stripe --chunk "${CHUNK_KB}K" "$N1" "$N2"; then
        v=$(fiorun "$S")
        ublk_stop S
        echo "$v" >> "$B/r.stripe"
        echo "RESULT rep=$rep ublk-stripe MiB/s=$v"
    fi

    if [ -n "$have_md" ]; then
        # --build: an array without superblocks. `mdadm --create` writes one to each member and the
        # kernel reads it back when the member is added, which a null_blk without memory
        # (memory_backed=0 discards writes, reads zeros) cannot give: RUN_ARRAY then fails with
        # "Possibly your kernel doesn't support RAID0 layouts".
        if mdadm --build /dev/md0 --level=0 --raid-devices=2 --chunk="$CHUNK_KB" \
            "$N1" "$N2" > "$B/md.log" 2>&1; then
            tune /dev/md0
            v=$(fiorun /dev/md0)
            mdadm --stop /dev/md0 > /dev/null 2>&1
            echo "$v" >> "$B/r.md"
            echo "RESULT rep=$rep md-raid0 MiB/s=$v"
        else
            echo "bench: mdadm --create failed:"
            cat "$B/md.log"
            have_md=
        fi
    fi
done
one=$(median "$B/r.one")
stripe=$(median "$B/r.stripe")
echo "SUMMARY medians of $RUNS: one store $one MiB/s, ublk stripe $stripe MiB/s," \
    "stripe/one $(awk -v a="$stripe" -v b="$one" 'BEGIN { printf "%.2f", a / b }')x (goal 1.8x)"
if [ -s "$B/r.md" ]; then
    md=$(median "$B/r.md")
    echo "SUMMARY medians of $RUNS: md RAID-0 $md MiB/s," \
        "stripe/md $(awk -v a="$stripe" -v b="$md" 'BEGIN { printf "%.2f", a / b }')x (goal 0.9x)"
fi
nullb_down N1
nullb_down N2
