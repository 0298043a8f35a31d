#!/bin/sh
# Harness self-check (cargo xtask vm-selftest): this scenario must be reported as SKIPPED. No
# kernel is Linux 99.0, so lib.sh's needs_linux prints the SKIP line and exits 77.
N=skip-justified
. /xtask/lib.sh
needs_linux 99.0 "a feature of the far future"
echo "$N: FAIL: needs_linux 99.0 did not skip on $(uname -r)" >&2
exit 1
