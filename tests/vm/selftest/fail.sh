#!/bin/sh
# Harness self-check (cargo xtask vm-selftest): this scenario must be reported as FAILING.
# It is deliberate; it lives outside tests/vm/scenarios so plain vm-e2e never runs it.
echo "selftest: fail.sh exits 1 on purpose"
exit 1
