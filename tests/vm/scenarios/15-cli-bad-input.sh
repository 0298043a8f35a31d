#!/bin/sh
# 15-cli-bad-input: `ublk` refuses bad input cleanly. For each case: a non-zero exit (1 for our
# errors, 2 for clap's), exactly one line on stderr that says "error", the problem named on it
# (or, for clap's missing-argument error, on the line below), nothing on stdout, no "panicked"
# anywhere, and no device, device node or server process left.
# Then `ublk features` names USER_RECOVERY and CMD_IOCTL_ENCODE, a non-root user gets a clear
# error instead of a device, and with ublk_drv unloaded `ublk add`/`ublk features` say to load it
# (the module is reloaded from /lib/modules/xtask afterwards).
set -eu

N=15-cli-bad-input
REFUSED_CHECK=nothing_left
# shellcheck source=../lib.sh
. /xtask/lib.sh

MODULE=/lib/modules/xtask/ublk_drv.ko
# A failure while ublk_drv is unloaded must not leave the next scenario without it.
reload_module() {
    [ -e /dev/ublk-control ] || insmod "$MODULE" || echo "$N: cannot reload $MODULE" >&2
}
AFTER_DEL=reload_module
trap cleanup EXIT

nothing_left "before the first case"

refused "size 0" "invalid device size 0" timeout 30 ublk add mem --size 0
refused "size 0, foreground" "invalid device size 0" timeout 30 ublk add mem --size 0 --foreground
refused "size not a block multiple" "invalid device size 1000" timeout 30 ublk add mem --size 1000
refused "size not a 4K multiple" "invalid device size 6144" timeout 30 ublk add mem --size 6144 --block-size 4096
refused "null size not a block multiple" "invalid device size 1000" timeout 30 ublk add null --size 1000
refused "depth 0" "invalid queue depth 0" timeout 30 ublk add mem --size 1M --depth 0
refused "depth 5000" "invalid queue depth 5000" timeout 30 ublk add mem --size 1M --depth 5000
refused "depth beyond u16" "70000" timeout 30 ublk add mem --size 1M --depth 70000
refused "max I/O not whole pages" "invalid max I/O size 1000 bytes" timeout 30 ublk add mem --size 1M --max-io 1000
refused "max I/O beyond 32 MiB" "at most 32 MiB" timeout 30 ublk add mem --size 1M --max-io 64M
refused "queues 0" "invalid number of queues 0" timeout 30 ublk add null --queues 0
refused "queues 5000" "invalid number of queues 5000" timeout 30 ublk add null --queues 5000
refused "block size 1000" "invalid block size 1000" timeout 30 ublk add mem --size 1M --block-size 1000
refused "block size 8192" "invalid block size 8192" timeout 30 ublk add mem --size 1M --block-size 8192
refused "unknown id" "no ublk device with id 12345" timeout 30 ublk del 12345
refused "mem without --size" "--size" timeout 30 ublk add mem
refused "bad size suffix" "unknown size suffix" timeout 30 ublk add mem --size 1X
refused "size not a number" "not a size" timeout 30 ublk add mem --size lots
refused "id beyond the driver's numbering" "invalid device id 1048576" timeout 30 ublk add null --id 1048576
refused "id u32::MAX (the kernel's 'any id')" "invalid device id 4294967295" timeout 30 ublk add null --id 4294967295
refused "mem bigger than its chunk table can be" "too big" timeout 30 ublk add mem --size 64T
# Values no deadline can hold are refused by name, never a panic.
refused "recover --timeout beyond a year" "--timeout" timeout 30 ublk recover 0 --timeout 18446744073709551615
refused "del --timeout beyond a year" "--timeout" timeout 30 ublk del 0 --timeout 99999999999
refused "poll window beyond a second" "--poll-us" timeout 30 ublk add null --poll-us 18446744073709551615
refused "fault without a store" "--size" timeout 30 ublk add fault
refused "fault with an unknown errno" "is not an errno" timeout 30 ublk add fault --size 1M --fail-errno EWHAT

# A taken id is refused and the device holding it is untouched.
out=$(timeout 60 ublk add null --id 7) || fail "ublk add null --id 7 failed"
[ "$out" = "7 /dev/ublkb7" ] || fail "ublk add null --id 7 printed '$out'"
rc=0
timeout 30 ublk add null --id 7 >/tmp/bad.out 2>/tmp/bad.err || rc=$?
[ "$rc" -eq 1 ] || fail "a second ublk add --id 7 exited $rc: $(cat /tmp/bad.err)"
grep -qi "id 7 is already in use" /tmp/bad.err || fail "id in use: unclear error: $(cat /tmp/bad.err)"
! grep -q panicked /tmp/bad.err || fail "id in use: panicked: $(cat /tmp/bad.err)"
timeout 30 ublk list --json | grep -q '"id":7,"state":"LIVE"' || fail "device 7 is not LIVE after the refused add"
timeout 60 ublk del 7 >/dev/null || fail "ublk del 7 failed"
nothing_left "id in use"
echo "$N: ok: id in use: exit 1: $(cat /tmp/bad.err)"

timeout 30 ublk features >/tmp/features 2>/tmp/features.err || fail "ublk features failed: $(cat /tmp/features.err)"
for feature in USER_RECOVERY CMD_IOCTL_ENCODE; do
    grep -q "^$feature[[:space:]]" /tmp/features || fail "ublk features does not list $feature: $(cat /tmp/features)"
done
echo "$N: ok: ublk features lists USER_RECOVERY and CMD_IOCTL_ENCODE ($(wc -l </tmp/features) features)"

# Not root: the guest has only root in /etc/passwd; add an unprivileged user for busybox su.
grep -q '^nobody:' /etc/passwd || echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>/etc/passwd
grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >>/etc/group
as_nobody() {
    timeout 30 su -s /bin/sh nobody -c "PATH=$PATH $*"
}
refused "not root: add" "/dev/ublk-control" as_nobody ublk add null
refused "not root: features" "/dev/ublk-control" as_nobody ublk features
# Without CAP_SYS_ADMIN (a new user namespace) the control device opens but ADD_DEV is refused.
refused "no CAP_SYS_ADMIN: add" "CAP_SYS_ADMIN" timeout 30 unshare -U ublk add null

# Without ublk_drv. Only possible with no device left, which nothing_left just checked, and no
# file of it open. A process's last references can outlive it briefly: io_uring frees an exited
# process's rings (and the files their requests hold) from a kernel worker, so allow 10 s.
refs() { cat /sys/module/ublk_drv/refcnt 2>/dev/null || echo "?"; }
tries=0
until [ "$(refs)" = 0 ]; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fail "ublk_drv still has $(refs) reference(s) 10 s after its last device was deleted"
    sleep 0.1
done
rmmod ublk_drv || fail "cannot unload ublk_drv (references: $(refs))"
refused "no ublk_drv: add" "modprobe ublk_drv" timeout 30 ublk add null
refused "no ublk_drv: features" "modprobe ublk_drv" timeout 30 ublk features
insmod "$MODULE" || fail "cannot reload $MODULE"
[ -c /dev/ublk-control ] || fail "/dev/ublk-control missing after reloading ublk_drv"
add_dev dev null
del_dev dev
nothing_left "after reloading ublk_drv"
echo "$N: ok: ublk_drv reloaded, add/del work again"
