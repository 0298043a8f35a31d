#!/bin/sh
# Harness self-check (cargo xtask vm-selftest): this scenario must be reported as FAILING. It
# claims a feature needs Linux 1.0, which every guest kernel has, so its skip is unjustified.
echo "SKIP: needs a feature every kernel has (Linux 1.0)"
exit 77
