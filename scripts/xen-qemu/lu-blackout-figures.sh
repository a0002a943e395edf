#!/bin/bash
# Issue 18's live-update blackout figures, on Debian's Xen 4.17 in QEMU/TCG
# (BENCHMARKS.md, "Live-update blackout with C xenstored (issue 18)"):
#
#   scripts/xen-qemu/lu-blackout-figures.sh [OUTDIR]   # default target/lu-blackout-figures
#
# One boot (so that the ratios are of one run): xenstored-lite in dom0,
# NODES nodes written by dom0, then on the same store lite -> C xenstored,
# C -> C, C -> lite, lite -> lite, each timed, with a gap meter reading one
# key over the socket all along (scripts/xen-qemu/lu-blackout-dom0.sh).
# Writes OUTDIR/figures.txt (every FIGURE line, the machine) and
# OUTDIR/console.log. Not part of scripts/test.sh (about 2 minutes of TCG
# with NODES=2000, far more with the default).
# Env: XENQEMU_DIR (the image, as the other harnesses), NODES (120000),
# BATCH (500), LITE2 (1: lite -> lite too), QUIET (10 s of metering before
# the first update), VM_TIMEOUT (run-vm.sh -t, 5400 s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/xen-qemu-image.sh"
OUT=${1:-$ROOT/target/lu-blackout-figures}
TARGET=${XENQEMU_TARGET_DIR:-$ROOT/target/deb-build}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

WORK=$(mktemp -d /tmp/xen-qemu-lu-blackout.XXXXXX)
# shellcheck disable=SC2034
XENQEMU_CLEANUP="$WORK"
mkdir -p "$WORK/files"
echo "building xenstored-lite for the VM (baseline x86-64)"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release -q -p xenstored-lite)
cp "$TARGET/release/xenstored-lite" "$HARNESS/dom0-lib.sh" "$HARNESS/figures-lib.sh" "$WORK/files/"

# The settings first (as lines of the command), then the command.
{ echo "LU_NODES=${NODES:-120000}"
  echo "BATCH=${BATCH:-500}"
  echo "LU_LITE2=${LITE2:-1}"
  echo "LU_QUIET=${QUIET:-10}"
  cat "$HARNESS/lu-blackout-dom0.sh"
} > "$WORK/cmd.sh"

fig=$OUT/figures.txt
{
  echo "# lu-blackout-figures.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(cd "$ROOT" && git rev-parse --short HEAD)"
  echo "# host: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# QEMU: $("$IMAGE/qemu/usr/bin/qemu-system-x86_64" --version | head -1), TCG, -cpu qemu64, 2 vCPUs, 1536 MB (dom0 512 MB)"
  echo "# Xen $(ls "$IMAGE/debs" | sed -n 's/^xen-hypervisor-4.17-amd64_\(.*\)_amd64.deb$/\1/p'), dom0 Linux $(cat "$IMAGE/kernel-version")"
  echo "# NODES=${NODES:-120000} BATCH=${BATCH:-500} LITE2=${LITE2:-1} QUIET=${QUIET:-10}"
} > "$fig"

log=$OUT/console.log
echo "==== booting Xen 4.17 + dom0 in QEMU ===="
start=$(date +%s)
set +e
bash "$RUN_VM" -q -t "${VM_TIMEOUT:-5400}" -d "$WORK/files" -l "$log" "$IMAGE" "$WORK/cmd.sh"
rc=$?
set -e
tr -d '\r' < "$log" | grep -a '^FIGURE ' | tee -a "$fig"
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg); boot and run $(( $(date +%s) - start )) s; rc=$rc" >> "$fig"
if [ "$rc" != 0 ] || ! tr -d '\r' < "$log" | grep -aq 'LU-BLACKOUT DONE'; then
  echo "---- dom0's console ----"
  tr -d '\r' < "$log" | grep -av '^(XEN)' | tail -150
  echo "---- the hypervisor's last lines ----"
  tr -d '\r' < "$log" | grep -a '^(XEN)' | tail -30
  echo "==== FAIL (rc=$rc) in $(( $(date +%s) - start )) s; figures in $fig ===="
  exit 1
fi
tr -d '\r' < "$log" | grep -a 'XENQEMU\['
echo "==== done in $(( $(date +%s) - start )) s; figures in $fig ===="
