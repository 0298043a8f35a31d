#!/bin/sh
# 78-recover-changed-store: `ublk recover` serves only the store the device was made from. A loop
# device with `--recovery` over a file whose name is not UTF-8 is written, its server killed.
# Then recovery is refused, naming the file and what changed, and the file is left untouched:
#  (a) when a same-size copy was renamed over the file (another inode);
#  (b) when the file was truncated (it used to be grown back with zeroes by the recorded size);
#  (c) when it was replaced by a hard link to another file of the same size.
# With the original file back, the device recovers and reads back what was written.
set -eu

N=78-recover-changed-store
# shellcheck source=../lib.sh
. /xtask/lib.sh

trap cleanup EXIT

# A name with a byte that is not UTF-8 (0xff): recorded as bytes, never dropped or mangled.
IMG=$(printf '/tmp/r78-\377.img')
KEEP=/tmp/r78.keep
OTHER=/tmp/r78.other
dd if=/dev/zero of="$IMG" bs=1M count=0 seek=32 2>/dev/null || fail "cannot create the image"
add_dev dev loop --file "$IMG" --recovery
dd if=/dev/urandom of=/tmp/r78.data bs=1M count=4 2>/dev/null
dd if=/tmp/r78.data of="$dev_path" bs=1M oflag=direct conv=fsync 2>/dev/null || fail "cannot write the device"
want=$(md5 /tmp/r78.data)
srv=$(field "$dev_id" pid)
kill -9 "$srv"
wait_state "$dev_id" QUIESCED
ln "$IMG" "$KEEP"
echo "$N: device $dev_id written (4 MiB, md5 $want), server killed, QUIESCED"

# refused_recover CASE WORDS...: recovery must fail naming WORDS, the device stay QUIESCED.
refused_recover() {
    rr_rc=0
    timeout 60 ublk recover "$dev_id" >/tmp/rec.out 2>/tmp/rec.err || rr_rc=$?
    [ "$rr_rc" -eq 1 ] || fail "$1: ublk recover exited $rr_rc (want 1): $(cat /tmp/rec.err)"
    rr_case=$1
    shift
    for rr_word in "$@"; do
        grep -qF -- "$rr_word" /tmp/rec.err || fail "$rr_case: the error does not say '$rr_word': $(cat /tmp/rec.err)"
    done
    [ "$(field "$dev_id" state)" = QUIESCED ] || fail "$rr_case: device is $(field "$dev_id" state) after the refusal"
    echo "$N: ok: $rr_case: $(cat /tmp/rec.err)"
}

# (a) a same-size copy renamed over it
cp "$KEEP" "$OTHER"
mv "$OTHER" "$IMG"
refused_recover "(a) replaced" "is not the one the device was made from" "replaced" "untouched"
# (b) the original, truncated
rm "$IMG"
ln "$KEEP" "$IMG"
truncate -s 16M "$IMG"
refused_recover "(b) truncated" "size changed from 33554432 to 16777216"
[ "$(wc -c <"$IMG")" -eq 16777216 ] || fail "(b) the truncated file was changed: $(wc -c <"$IMG") bytes"
# (c) a hard link to another same-size file
truncate -s 32M "$KEEP"
dd if=/dev/zero of="$OTHER" bs=1M count=0 seek=32 2>/dev/null
rm "$IMG"
ln "$OTHER" "$IMG"
refused_recover "(c) re-linked" "replaced"

# The original back (restored to its size; its first 4 MiB were never touched).
rm "$IMG"
mv "$KEEP" "$IMG"
dd if="$IMG" of=/tmp/r78.head bs=1M count=4 2>/dev/null
[ "$(md5 /tmp/r78.head)" = "$want" ] || fail "the original file lost its data"
out=$(timeout 120 ublk recover "$dev_id" 2>/tmp/rec.err) || fail "ublk recover of the original failed: $(cat /tmp/rec.err)"
[ "$out" = "$dev_id $dev_path" ] || fail "ublk recover printed '$out'"
dd if="$dev_path" of=/tmp/r78.back bs=1M count=4 iflag=direct 2>/dev/null || fail "cannot read the device back"
[ "$(md5 /tmp/r78.back)" = "$want" ] || fail "the recovered device reads back other data"
del_dev dev
rm -f "$IMG" "$OTHER"
nothing_left "at the end"
echo "$N: ok: replaced, truncated and re-linked stores refused and left untouched; the original recovers"
