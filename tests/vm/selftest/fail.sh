#!/bin/sh
# Harness self-check (cargo xtask vm-selftest): this scenario must be reported as FAILING.
# It is deliberate; it lives outside tests/vm/scenarios so plain vm-e2e never runs it.
echo "fail: FAIL: fail.sh exits 1 on purpose" >&2
exit 1
