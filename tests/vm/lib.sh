# Helpers the scenario scripts share (POSIX sh as busybox ash runs it). In the guest at
# /xtask/lib.sh; a scenario sets N (its name) first, and any of the settings below it uses, then
# sources it:
#     N=70-recovery-kill9-loop FIO_LOG=/tmp/r70.fio
#     . /xtask/lib.sh
#     trap cleanup EXIT
#
# Settings a scenario may give (before `trap cleanup EXIT` fires, i.e. any time):
#   FIO_LOG        a fio output file that fail() shows;
#   MNT            a mount point cleanup() unmounts before it deletes the devices;
#   AFTER_DEL      a command cleanup() runs last, after deleting the devices (remove files,
#                  detach a kernel loop device, reload a module);
#   REFUSED_CHECK  a command refused() runs after each refusal, with its label (15, 55: nothing_left);
#   fio_pid, server_pid  a background fio and a foreground server that cleanup() kills.
#
# Devices: `add_dev VAR ARGS...` runs `ublk add ARGS` and sets ${VAR}_id (the device id) and
# ${VAR}_path (/dev/ublkb<id>); `del_dev VAR` deletes that device again; `parse_dev` checks such a
# line from elsewhere (40: a --foreground server's stdout). Only 10 and 15, which
# test what `ublk add` prints, read its output themselves.
#
# Data: `fio_verify DEV LABEL` (fio crc32c verify over a whole device), `stripe_check` (a stripe's
# stores hold exactly their chunks).
#
# Helpers keep their working variables in globals with a two-letter prefix of their name (ash has
# `local`, POSIX sh does not), so they do not clobber a scenario's `id`, `rc` or `line`.

# fail MESSAGE...: reports the failure (with fio's output and the server log's tail) and exits 1.
fail() {
    echo "$N: FAIL: $*" >&2
    [ -n "${FIO_LOG:-}" ] && [ -f "$FIO_LOG" ] && sed "s/^/$N: fio: /" "$FIO_LOG" >&2
    tail -20 /run/ublk/server.log 2>/dev/null | sed "s/^/$N: server.log: /" >&2
    exit 1
}

# now_us: the wall clock in microseconds (busybox `date` has no %N; adjtimex shows tv_usec).
now_us() {
    adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d%06d\n", s, u }'
}

# ms_since T0: milliseconds since T0 (a now_us time).
ms_since() {
    echo $((($(now_us) - $1) / 1000))
}

# deadline SECS: the now_us time SECS seconds from now. past DEADLINE: whether it has come.
deadline() {
    echo $(($(now_us) + $1 * 1000000))
}
past() {
    [ "$(now_us)" -gt "$1" ]
}

# list_json: `ublk list --json` (at most 30 s); fails with its stderr if it fails.
list_json() {
    timeout 30 ublk list --json 2>/tmp/list.err || fail "ublk list --json failed ($?): $(cat /tmp/list.err)"
}

# entry ID: device ID's object in `ublk list --json`.
entry() {
    timeout 30 ublk list --json | tr '{' '\n' | grep "\"id\":$1,"
}

# field ID KEY: the value of scalar KEY in device ID's `ublk list --json` entry.
field() {
    entry "$1" | sed "s/.*\"$2\":\"\{0,1\}\([^,\"]*\).*/\1/"
}

# parse_dev VAR LINE WHAT: LINE must be what `ublk add` prints, `<id> /dev/ublkb<id>`, and name a
# block device; sets ${VAR}_id and ${VAR}_path. WHAT names the printer in the failure message.
parse_dev() {
    case $1 in '' | [0-9]* | *[!A-Za-z0-9_]*) fail "parse_dev: '$1' is not a variable name" ;; esac
    pd_id=${2%% *}
    pd_path=${2#* }
    case $pd_id in '' | *[!0-9]*) fail "$3 printed '$2', expected '<id> /dev/ublkb<id>'" ;; esac
    [ "$pd_path" = "/dev/ublkb$pd_id" ] || fail "$3 printed '$2', expected '$pd_id /dev/ublkb$pd_id'"
    [ -b "$pd_path" ] || fail "$3 printed '$2' but $pd_path is not a block device"
    eval "${1}_id=\$pd_id ${1}_path=\$pd_path"
}

# add_dev VAR ARGS...: `ublk add ARGS` must succeed within 60 s and print a device (see parse_dev);
# sets ${VAR}_id and ${VAR}_path. Fails with the command's output otherwise.
add_dev() {
    ad_var=$1
    shift
    ad_rc=0
    ad_out=$(timeout 60 ublk add "$@" 2>/tmp/add.err) || ad_rc=$?
    [ "$ad_rc" -eq 0 ] || fail "ublk add $* exited $ad_rc: $(cat /tmp/add.err)${ad_out:+ (stdout: $ad_out)}"
    [ ! -s /tmp/add.err ] || sed "s/^/$N: ublk add: /" /tmp/add.err >&2
    parse_dev "$ad_var" "$ad_out" "ublk add $*"
}

# del_dev VAR [SECS]: `ublk del ${VAR}_id` must succeed within SECS (60) seconds and leave neither
# ${VAR}_path nor /dev/ublkc<id> behind (it returns once the server has exited).
del_dev() {
    eval "dd_id=\$${1}_id dd_path=\$${1}_path"
    dd_rc=0
    timeout "${2:-60}" ublk del "$dd_id" >/dev/null 2>/tmp/del.err || dd_rc=$?
    [ "$dd_rc" -eq 0 ] ||
        fail "ublk del $dd_id exited $dd_rc (124: took over ${2:-60} s): $(cat /tmp/del.err)"
    [ ! -e "$dd_path" ] || fail "$dd_path still exists after ublk del $dd_id"
    [ ! -e "/dev/ublkc$dd_id" ] || fail "/dev/ublkc$dd_id still exists after ublk del $dd_id"
}

# wait_state ID STATE [SECS]: waits until device ID is in STATE, at most SECS (60) seconds of wall
# time (a full queue is noticed only at the 30 s request timeout).
wait_state() {
    ws_end=$(deadline "${3:-60}")
    until [ "$(field "$1" state)" = "$2" ]; do
        ! past "$ws_end" || fail "device $1 is $(field "$1" state), not $2, after ${3:-60} s"
        sleep 0.1
    done
}

# state_of PID: sets st to the state letter of PID (R, S, D, Z ...), empty if it is gone. The
# comm field may hold spaces, so take what follows its last closing parenthesis. Shell builtins
# only: the helpers below run it for every process, and under TCG each fork and exec of a
# tool costs milliseconds.
state_of() {
    st=
    { read -r so_line <"/proc/$1/stat"; } 2>/dev/null || return 0
    so_rest=${so_line##*) }
    st=${so_rest%% *}
}

# proc_state PID: prints state_of's letter.
proc_state() {
    state_of "$1"
    echo "$st"
}

# comm_of PID: sets comm to PID's command name, empty if it is gone.
comm_of() {
    comm=
    { read -r comm <"/proc/$1/comm"; } 2>/dev/null || comm=
}

# running PID: whether PID exists and is not a zombie.
running() {
    state_of "$1"
    case $st in '' | Z) return 1 ;; esac
}

# wait_exit PID SECS WHAT: waits until PID has exited (gone or a zombie), at most SECS seconds of
# wall time, and sets waited_ms; past that it kills PID and fails, naming its state and wait channel.
wait_exit() {
    we_t0=$(now_us)
    we_end=$((we_t0 + $2 * 1000000))
    while running "$1"; do
        if past "$we_end"; then
            we_comm=$(cat "/proc/$1/comm" 2>/dev/null || true)
            we_state="state $(proc_state "$1"), wchan $(cat "/proc/$1/wchan" 2>/dev/null || true)"
            kill -9 "$1" 2>/dev/null || true
            fail "$3: pid $1 ($we_comm) still running after $2 s ($we_state)"
        fi
        sleep 0.1
    done
    waited_ms=$(ms_since "$we_t0")
}

# ublk_processes: the pids of running (not zombie) processes named `ublk`.
ublk_processes() {
    for up_d in /proc/[0-9]*; do
        comm_of "${up_d#/proc/}"
        [ "$comm" = ublk ] && running "${up_d#/proc/}" && echo "${up_d#/proc/}"
    done
    true
}

# nothing_left LABEL: no device in `ublk list`, no /dev/ublk[bc]N node and no ublk process.
nothing_left() {
    nl_json=$(list_json) || fail "$1: ublk list --json failed"
    [ "$nl_json" = "[]" ] || fail "$1: devices left behind: $nl_json"
    nl_nodes=$(ls /dev | grep -E '^ublk[bc][0-9]+$' || true)
    [ -z "$nl_nodes" ] || fail "$1: device nodes left behind: $nl_nodes"
    nl_procs=$(ublk_processes)
    [ -z "$nl_procs" ] || fail "$1: ublk processes left behind: $nl_procs"
}

# d_state: processes in D state, as pid:comm; waits up to 5 s for transient ones to leave it.
d_state() {
    ds_tries=0
    while :; do
        ds_found=
        for ds_d in /proc/[0-9]*; do
            state_of "${ds_d#/proc/}"
            [ "$st" = D ] || continue
            comm_of "${ds_d#/proc/}"
            ds_found="$ds_found ${ds_d#/proc/}:$comm"
        done
        [ -n "$ds_found" ] && [ "$ds_tries" -lt 50 ] || break
        ds_tries=$((ds_tries + 1))
        sleep 0.1
    done
    echo "$ds_found"
}

# no_d_state LABEL: fails if a process is still in D state after d_state's 5 s.
no_d_state() {
    ns_stuck=$(d_state)
    [ -z "$ns_stuck" ] || fail "$1: processes in D state:$ns_stuck"
}

# written ID: sectors written to /dev/ublkbID so far (field 7 of the block stat file).
written() {
    awk '{ print $7 }' "/sys/block/ublkb$1/stat"
}

# ios ID: requests completed on /dev/ublkbID so far (reads plus writes, fields 1 and 5).
ios() {
    awk '{ print $1 + $5 }' "/sys/block/ublkb$1/stat"
}

# kstat ID FIELD: field FIELD of /sys/block/ublkbID/stat (1 reads, 3 sectors read, 5 writes,
# 7 sectors written, 12 discards, 14 sectors discarded: Documentation/block/stat.rst).
kstat() {
    awk -v f="$2" '{ print $f }' "/sys/block/ublkb$1/stat"
}

# metric ID NAME [MATCH]: the sum, over the lines of `ublk stats ID --prometheus` for family NAME
# whose labels contain MATCH (say op="read"), of their values; fails if `ublk stats` does.
metric() {
    timeout 30 ublk stats "$1" --prometheus >/tmp/metric.out 2>/tmp/metric.err ||
        fail "ublk stats $1 --prometheus failed: $(cat /tmp/metric.err)"
    awk -v n="$2{" -v m="${3:-}" 'index($0, n) == 1 && (m == "" || index($0, m)) { s += $NF } END { printf "%.0f\n", s }' /tmp/metric.out
}

# stat_json ID: `ublk stats ID --json` (one line); fails with its stderr if it fails.
stat_json() {
    timeout 30 ublk stats "$1" --json 2>/tmp/stat.err || fail "ublk stats $1 --json failed: $(cat /tmp/stat.err)"
}

# fio_ios FILE DIR: requests (total_ios) of direction DIR (read, write) in fio's JSON in FILE;
# fio_bytes FILE DIR: their bytes (io_bytes).
fio_ios() {
    awk -v d="\"$2\" : {" 'index($0, d) { on = 1 } on && /"total_ios"/ { gsub(/[^0-9]/, ""); print; exit }' "$1"
}
fio_bytes() {
    awk -v d="\"$2\" : {" 'index($0, d) { on = 1 } on && /"io_bytes"/ { gsub(/[^0-9]/, ""); print; exit }' "$1"
}

# wait_io COUNTER ID MORE: waits up to 60 s, while fio ($fio_pid) runs, until `COUNTER ID`
# (written or ios) has grown by MORE from now; fails if fio exits first or the count stalls.
wait_io() {
    wi_from=$("$1" "$2")
    wi_tries=0
    while [ "$("$1" "$2")" -lt $((wi_from + $3)) ]; do
        running "$fio_pid" || fail "fio exited before $1 on device $2 grew by $3"
        wi_tries=$((wi_tries + 1))
        [ "$wi_tries" -le 600 ] || fail "no I/O reaches device $2 ($1 grew by less than $3 in 60 s)"
        sleep 0.1
    done
}

# fio_fails WHAT SECS: the background fio ($fio_pid), whose device went away or lost its server
# (WHAT says which), must exit within SECS seconds (wait_exit: sets waited_ms) with a non-zero
# status, left in fio_rc; clears fio_pid.
fio_fails() {
    wait_exit "$fio_pid" "$2" "$1: fio"
    fio_rc=0
    wait "$fio_pid" || fio_rc=$?
    fio_pid=
    [ "$fio_rc" -ne 0 ] || fail "$1: fio exited 0 instead of failing its I/O"
}

# fio_write_verify_bg PATH: starts fio in the background ($fio_pid, report in $FIO_LOG): 32 MiB
# of random writes of 4-256 KiB with crc32c verify, paced at 2000 IOPS so that a server change
# happens while it runs.
fio_write_verify_bg() {
    fio --eta=never --name=bgw --filename="$1" --ioengine=io_uring --direct=1 \
        --rw=randwrite --bsrange=4k-256k --size=32M --iodepth=16 --verify=crc32c \
        --verify_fatal=1 --rate_iops=2000 --output="$FIO_LOG" &
    fio_pid=$!
}

# fio_clean WHAT: the background fio ($fio_pid) must end with status 0 and report no error in
# $FIO_LOG; clears fio_pid.
fio_clean() {
    fc_rc=0
    wait "$fio_pid" || fc_rc=$?
    fio_pid=
    [ "$fc_rc" -eq 0 ] || fail "$1: fio exited $fc_rc"
    grep -q "err= 0" "$FIO_LOG" || fail "$1: fio reported errors"
}

# kill_and_recover VAR WHAT: kills device ${VAR}'s server with SIGKILL while the background fio
# ($fio_pid) uses it; the device must go QUIESCED with fio waiting, and `ublk recover` must bring
# it back under the same id and path (in $recovered_pid, the new server).
kill_and_recover() {
    eval "kr_id=\$${1}_id kr_path=\$${1}_path"
    kill -9 "$(field "$kr_id" pid)"
    wait_state "$kr_id" QUIESCED
    running "$fio_pid" || fail "$2: fio exited when the server was killed"
    kr_out=$(timeout 120 ublk recover "$kr_id" 2>/tmp/rec.err) ||
        fail "$2: ublk recover exited $?: $(cat /tmp/rec.err)"
    [ "$kr_out" = "$kr_id $kr_path" ] || fail "$2: ublk recover printed '$kr_out'"
    recovered_pid=$(field "$kr_id" pid)
}

# md5 FILE [FIRST_MIB COUNT_MIB]: the md5 of FILE (fails if it cannot be read), or of COUNT_MIB
# MiB of it from FIRST_MIB MiB on.
md5() {
    if [ $# -eq 1 ]; then
        m5_sum=$(md5sum <"$1") || fail "cannot read $1 (md5sum exited $?)"
    else
        m5_sum=$(dd if="$1" bs=1M skip="$2" count="$3" 2>/dev/null | md5sum)
    fi
    echo "${m5_sum%% *}"
}

# zeroes_md5 MIB: the md5 of MIB MiB of zeroes.
zeroes_md5() {
    dd if=/dev/zero bs=1M count="$1" 2>/dev/null | md5sum | cut -d' ' -f1
}

# refused LABEL WORDS COMMAND...: COMMAND must fail (exit 1 for our errors, 2 for clap's) with one
# stderr line containing "error" (in any case) and WORDS (exactly: case-sensitive, no pattern),
# print nothing on stdout and not panic. Then, if the scenario set REFUSED_CHECK,
# `$REFUSED_CHECK LABEL` runs (15 and 55 check that nothing was left behind).
refused() {
    rf_label=$1 rf_words=$2
    shift 2
    rf_rc=0
    "$@" >/tmp/bad.out 2>/tmp/bad.err || rf_rc=$?
    rf_shown="'$*' (exit $rf_rc, stderr: $(cat /tmp/bad.err))"
    [ "$rf_rc" -ne 0 ] || fail "$rf_label: $rf_shown succeeded; stdout: $(cat /tmp/bad.out)"
    [ "$rf_rc" -eq 1 ] || [ "$rf_rc" -eq 2 ] ||
        fail "$rf_label: $rf_shown: expected exit status 1 or 2 (124+ means timeout or a signal)"
    ! grep -q panicked /tmp/bad.out /tmp/bad.err || fail "$rf_label: $rf_shown panicked"
    [ ! -s /tmp/bad.out ] || fail "$rf_label: $rf_shown printed on stdout: $(cat /tmp/bad.out)"
    rf_errors=$(grep -ci error /tmp/bad.err || true)
    [ "$rf_errors" -eq 1 ] || fail "$rf_label: $rf_shown: expected one error line on stderr, got $rf_errors"
    rf_line=$(grep -i error /tmp/bad.err)
    # clap names a missing argument on the line after its error line, so search all of stderr.
    grep -qF -- "$rf_words" /tmp/bad.err ||
        fail "$rf_label: $rf_shown: stderr does not mention '$rf_words'"
    case $rf_line in
        *"$rf_words"*) ;;
        *) rf_line="$rf_line $(grep -F -- "$rf_words" /tmp/bad.err | head -1)" ;;
    esac
    [ -z "${REFUSED_CHECK:-}" ] || "$REFUSED_CHECK" "$rf_label"
    echo "$N: ok: $rf_label: exit $rf_rc: $rf_line"
}

# fio_verify DEV LABEL [FIO-ARGS...]: fio random writes of 512 B to 1 MiB over all of DEV, QD16,
# each block verified (crc32c) as it is read back; fails naming LABEL on an error. FIO-ARGS
# replace or add to these (e.g. --size=16M). Output in $FIO_LOG if set.
fio_verify() {
    fv_dev=$1 fv_label=$2
    shift 2
    fio --eta=never --name=verify --filename="$fv_dev" --ioengine=io_uring --direct=1 \
        --rw=randwrite --bsrange=512-1m --iodepth=16 --size=100% --verify=crc32c \
        --verify_fatal=1 --output="${FIO_LOG:-/tmp/fio_verify.out}" "$@" ||
        fail "$fv_label: fio verify failed"
    grep -q "err= 0" "${FIO_LOG:-/tmp/fio_verify.out}" || fail "$fv_label: fio reported errors"
}

# stripe_check LABEL IMAGE CHUNK STORE...: the stores of a stripe device hold exactly its chunks.
# IMAGE is what the device read (dd of it before `ublk del`), CHUNK the chunk size in bytes, the
# STOREs in the order `ublk add stripe` got them. The reference layout, computed here: device
# chunk c is chunk c / n of store c % n (n stores); past its share (the image's rows) a store
# reads as zeroes, as it was before the device was made.
stripe_check() {
    sc_label=$1 sc_img=$2 sc_chunk=$3
    shift 3
    sc_n=$#
    sc_chunks=$(($(stat -c %s "$sc_img") / sc_chunk))
    sc_rows=$((sc_chunks / sc_n))
    [ $((sc_rows * sc_n * sc_chunk)) -eq "$(stat -c %s "$sc_img")" ] ||
        fail "$sc_label: the image is not whole rows of $sc_n chunks of $sc_chunk bytes"
    rm -f /tmp/stripe-check.*
    # Deal the image's chunks to the stores, reading it once, in order.
    sc_c=0
    exec 9<"$sc_img"
    while [ "$sc_c" -lt "$sc_chunks" ]; do
        dd bs="$sc_chunk" count=1 <&9 >>"/tmp/stripe-check.$((sc_c % sc_n))" 2>/dev/null ||
            fail "$sc_label: cannot read chunk $sc_c of $sc_img"
        sc_c=$((sc_c + 1))
    done
    exec 9<&-
    sc_s=0
    for sc_store; do
        sc_want=$(md5 "/tmp/stripe-check.$sc_s")
        sc_got=$(dd if="$sc_store" bs="$sc_chunk" count="$sc_rows" 2>/dev/null | md5sum)
        [ "${sc_got%% *}" = "$sc_want" ] ||
            fail "$sc_label: store $sc_s ($sc_store) does not hold its $sc_rows chunks"
        sc_extra=$(dd if="$sc_store" bs="$sc_chunk" skip="$sc_rows" 2>/dev/null | tr -d '\000' | wc -c)
        [ "$sc_extra" -eq 0 ] ||
            fail "$sc_label: store $sc_s ($sc_store) has $sc_extra non-zero bytes past its share"
        sc_s=$((sc_s + 1))
    done
    rm -f /tmp/stripe-check.*
}

# cleanup: what a scenario's EXIT trap does: kill fio ($fio_pid) and a foreground server
# ($server_pid) if they run, unmount $MNT, delete every device, then run $AFTER_DEL.
cleanup() {
    for cl_pid in ${fio_pid:-} ${server_pid:-}; do kill -9 "$cl_pid" 2>/dev/null || true; done
    [ -z "${MNT:-}" ] || umount "$MNT" 2>/dev/null || true
    ublk del --all --force >/dev/null 2>&1 || true
    [ -z "${AFTER_DEL:-}" ] || "$AFTER_DEL" || true
}

# --- Skips (the protocol vm-e2e judges; see tests/vm/README.md) -------------------------------
# linux_at_least X.Y: whether the guest's kernel (`uname -r`) is Linux X.Y or newer.
# needs_linux X.Y FEATURE: if the guest's kernel (`uname -r`) is older than Linux X.Y, which
# brings FEATURE, prints `SKIP: needs FEATURE (Linux X.Y)` and exits 77: vm-e2e counts the
# scenario as skipped. Name the release that really brings the feature: on a kernel that is
# X.Y or newer a skip is a failure.
linux_at_least() {
    _nl_have=$(uname -r)
    _nl_have_major=${_nl_have%%.*}
    _nl_have_minor=${_nl_have#*.}
    _nl_have_minor=${_nl_have_minor%%[!0-9]*}
    _nl_want_major=${1%%.*}
    _nl_want_minor=${1#*.}
    [ "$_nl_have_major" -gt "$_nl_want_major" ] ||
        { [ "$_nl_have_major" -eq "$_nl_want_major" ] && [ "$_nl_have_minor" -ge "$_nl_want_minor" ]; }
}

needs_linux() {
    if ! linux_at_least "$1"; then
        echo "SKIP: needs $2 (Linux $1)"
        exit 77
    fi
}

# no_kernel_warning WHAT: fails if the kernel log holds a warning, a BUG or an oops.
no_kernel_warning() {
    nk_found=$(dmesg | grep -E 'WARNING:|BUG:|Oops|general protection' | head -3 || true)
    [ -z "$nk_found" ] || fail "$1: the kernel complained: $nk_found"
}

# --- NBD servers (92-98) ----------------------------------------------------------------------
# nbdkit_up VAR ARGS...: starts `nbdkit -f ARGS` in the background (foreground mode: its pid is
# ours to kill), waits up to 20 s for its pid file (written once it listens) and sets
# ${VAR}_pid; its output goes to /tmp/nbdkit-VAR.out. Every server started so is remembered for
# nbd_stop_all, which scenarios run after deleting their devices (AFTER_DEL=nbd_stop_all).
NBDKIT_PIDS=
nbdkit_up() {
    nk_var=$1
    shift
    rm -f "/tmp/nbdkit-$nk_var.pid"
    nbdkit -f -P "/tmp/nbdkit-$nk_var.pid" "$@" >"/tmp/nbdkit-$nk_var.out" 2>&1 &
    nk_pid=$!
    NBDKIT_PIDS="$NBDKIT_PIDS $nk_pid"
    nk_end=$(deadline 20)
    until [ -s "/tmp/nbdkit-$nk_var.pid" ]; do
        running "$nk_pid" || fail "nbdkit $* exited: $(cat "/tmp/nbdkit-$nk_var.out")"
        ! past "$nk_end" || fail "nbdkit $* did not listen within 20 s"
        sleep 0.1
    done
    eval "${nk_var}_pid=\$nk_pid"
}

# nbd_stop_all: kills every nbdkit nbdkit_up started, and any qemu-nbd.
nbd_stop_all() {
    for ns_pid in $NBDKIT_PIDS; do kill -9 "$ns_pid" 2>/dev/null || true; done
    NBDKIT_PIDS=
    pkill -9 -x qemu-nbd 2>/dev/null || true
}

# wait_listen PORT [SECS]: waits up to SECS (20) seconds until a TCP socket listens on PORT.
wait_listen() {
    wl_hex=$(printf '%04X' "$1")
    wl_end=$(deadline "${2:-20}")
    until grep -q ":$wl_hex 00000000:0000 0A" /proc/net/tcp 2>/dev/null; do
        ! past "$wl_end" || fail "nothing listens on port $1 after ${2:-20} s"
        sleep 0.1
    done
}

# nbd_log_count WORD LOG: how many lines of nbdkit's log filter output LOG record the action WORD
# (Write, Flush, Trim, Zero ...); `WORD.*fua=1` and the like narrow it down.
nbd_log_count() {
    grep -c "connection=[0-9]* $1" "$2" || true
}
