#!/bin/bash
# Issue 17's figures for the stub domain, on Debian's Xen 4.17 in QEMU/TCG
# (BENCHMARKS.md, "Stub domain"):
#
#   scripts/xen-qemu/stubdom-figures.sh [OUTDIR]   # default target/stubdom-figures
#
# Three boots, one after the other:
#   dom0    dom0's xenstore-read and -write rates through /dev/xen/xenbus
#           served by C xenstored in dom0, then by xenstored-lite in dom0 (C
#           live-updates to it)                     (figures-dom0.sh)
#   stub8   the same rates served by the stub (init-xenstore-domain
#           --memory 8); its memreport after boot, with 1,000 and 10,000
#           nodes and when full; nodes written until a write fails
#   stub32  nodes until a write fails with --memory 32 (figures-stub.sh)
# A stub cannot take dom0's ring over from a dom0 daemon in the same boot:
# Linux 6.1's IOCTL_XENBUS_BACKEND_SETUP (drivers/xen/xenbus/
# xenbus_dev_backend.c) answers EEXIST once the kernel has talked to a
# xenstore (xenstored_ready), and a stub domain is started only once
# (init-xenstore-domain refuses a second), hence a boot each.
#
# Writes OUTDIR/figures.txt (every FIGURE and MEMREPORT line, the machine)
# and OUTDIR/<boot>.console.log, and prints the ratios. Not part of
# scripts/test.sh (about 15-30 minutes of TCG).
# Env: XENQEMU_DIR (the image, as the other harnesses), XENQEMU_STUB_KERNEL
# (an ELF instead of building one), FIGURES_BOOTS (default "dom0 stub8
# stub32"), READS ROUNDS REPEATS BATCH (figures-lib.sh), MID FULL
# (figures-stub.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/xen-qemu-image.sh"
OUT=${1:-$ROOT/target/stubdom-figures}
TARGET=${XENQEMU_TARGET_DIR:-$ROOT/target/deb-build}
BOOTS=${FIGURES_BOOTS:-dom0 stub8 stub32}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

WORK=$(mktemp -d /tmp/xen-qemu-figures.XXXXXX)
# shellcheck disable=SC2034
XENQEMU_CLEANUP="$WORK"
mkdir -p "$WORK/files"
echo "building xenstored-lite for the VM (baseline x86-64)"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release -q -p xenstored-lite)
cp "$TARGET/release/xenstored-lite" "$HARNESS/dom0-lib.sh" "$HARNESS/figures-lib.sh" "$WORK/files/"
if [ -z "${XENQEMU_STUB_KERNEL:-}" ]; then
  echo "building the xenstored-stubdom kernel"
  (cd "$ROOT" && env -u RUSTFLAGS CARGO_TARGET_DIR="$TARGET" \
    cargo build --release -q -p xenstored-stubdom)
  XENQEMU_STUB_KERNEL=$TARGET/release/xenstored-stubdom
fi
cp "$XENQEMU_STUB_KERNEL" "$WORK/files/xenstored-stubdom"

fig=$OUT/figures.txt
{
  echo "# stubdom-figures.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# host: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# QEMU: $("$IMAGE/qemu/usr/bin/qemu-system-x86_64" --version | head -1), TCG, -cpu qemu64, 2 vCPUs, 1536 MB (dom0 512 MB)"
  echo "# Xen $(ls "$IMAGE/debs" | sed -n 's/^xen-hypervisor-4.17-amd64_\(.*\)_amd64.deb$/\1/p'), dom0 Linux $(cat "$IMAGE/kernel-version")"
  echo "# stub kernel: $(stat -c %s "$WORK/files/xenstored-stubdom") bytes"
  echo "# READS=${READS:-1000} ROUNDS=${ROUNDS:-5} REPEATS=${REPEATS:-3} BATCH=${BATCH:-500} MID=${MID:-10000} FULL=${FULL:-1}"
} > "$fig"

failed=0
for boot in $BOOTS; do
  case $boot in
    dom0) src=figures-dom0.sh pre="" ;;
    stub*) src=figures-stub.sh pre="STUB_MEM=${boot#stub}"
           [ "$boot" = stub8 ] || pre="$pre RATES=0" ;;
    *) echo "unknown boot $boot"; exit 2 ;;
  esac
  # The settings first, then the command.
  { for v in READS ROUNDS REPEATS BATCH MID FULL; do
      [ -z "${!v:-}" ] || echo "$v=${!v}"
    done
    for v in $pre; do echo "$v"; done
    cat "$HARNESS/$src"
  } > "$WORK/$boot.sh"
  log=$OUT/$boot.console.log
  echo "==== $boot: booting Xen 4.17 + dom0 in QEMU ===="
  start=$(date +%s)
  set +e
  bash "$RUN_VM" -q -t 2400 -d "$WORK/files" -l "$log" "$IMAGE" "$WORK/$boot.sh"
  rc=$?
  set -e
  tr -d '\r' < "$log" | grep -a -e '^FIGURE ' -e '^MEMREPORT ' -e '^XL | ' | sed "s/^/$boot: /" | tee -a "$fig"
  if [ "$rc" != 0 ]; then
    echo "---- $boot: dom0's console ----"
    tr -d '\r' < "$log" | grep -av '^(XEN)' | tail -150
    echo "---- $boot: the hypervisor's last lines ----"
    tr -d '\r' < "$log" | grep -a '^(XEN)' | tail -30
    echo "==== $boot: FAIL (rc=$rc) in $(( $(date +%s) - start )) s ===="
    failed=$((failed + 1))
  else
    echo "==== $boot: done in $(( $(date +%s) - start )) s ===="
  fi
done

# val NAME: a figure's value.
val() { sed -n "s/^[a-z0-9]*: FIGURE $1 \([^ ]*\).*/\1/p" "$fig" | tail -1; }
ratio() {
  local a b
  a=$(val "$1") b=$(val "$2")
  [ -n "$a" ] && [ -n "$b" ] || { echo "n/a"; return; }
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'
}
{
  echo "# ratios"
  echo "reads/s, lite in dom0 / C in dom0: $(ratio lite-read c-read)"
  echo "reads/s, stub / C in dom0:         $(ratio stub-read c-read)"
  echo "reads/s, stub / lite in dom0:      $(ratio stub-read lite-read)"
  echo "writes/s (9,000 new nodes), stub / C in dom0: $(ratio stub-write-more c-write-more)"
  echo "writes/s (9,000 new nodes), lite / C in dom0: $(ratio lite-write-more c-write-more)"
} | tee -a "$fig"
echo "figures in $fig"
[ "$failed" = 0 ]
