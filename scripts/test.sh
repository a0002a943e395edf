#!/usr/bin/env bash
# The whole test suite: installs what the tests need, runs every test of the
# workspace, then on real Xen 4.17 booted in QEMU the Linux-backend tests
# and xenstored-lite serving dom0 and a looping PV guest across live updates,
# from itself and from C xenstored (both print "skipping: <reason>" and pass
# only where QEMU or its Debian packages cannot be had). This is the README's
# test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
bash scripts/xen-qemu-devtests.sh
bash scripts/xen-qemu-daemon.sh
