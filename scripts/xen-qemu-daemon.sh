#!/bin/bash
# xenstored-lite on real Xen 4.17 (Debian) in QEMU/TCG: started in dom0 in
# place of the C xenstored (Linux backends, no mock), it must serve dom0's
# own ring and socket (xen-init-dom0, xenstore-ls), let `xl create` start a
# PV guest whose kernel xenbus writes and reads over its ring (the guest
# writes data/hello, waits for dom0's data/ack, powers off), notice the
# guest's death, and pass `xenstore-control check`.
#
# Prints "skipping: <reason>" and exits 0 only when QEMU or the Debian
# packages cannot be had; prints the consoles of dom0 and the guest when a
# step fails. (The full scenario with live update is roadmap step 8.)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${XENQEMU_SHARED:-$ROOT/../shared/xen-qemu}
[ -d "$SHARED" ] || SHARED=/work/shared/xen-qemu
IMAGE=${XENQEMU_DIR:-/var/tmp/xenqemu}
TARGET=${XENQEMU_TARGET_DIR:-/tmp/target-xenqemu-daemon}

skip() { echo "skipping: $*"; exit 0; }
[ -f "$SHARED/run.sh" ] || skip "xen-qemu harness not found (looked in $SHARED)"
if [ ! -f "$IMAGE/xen" ] || [ ! -f "$IMAGE/dom0.cpio" ]; then
  [ "$(id -u)" = 0 ] || skip "no image in $IMAGE and not root (build.sh needs apt)"
  if ! bash "$SHARED/build.sh" "$IMAGE" > "$IMAGE.build.log" 2>&1; then
    tail -20 "$IMAGE.build.log"
    skip "building the Xen/QEMU image failed (Debian packages unavailable?)"
  fi
fi

WORK=$(mktemp -d /tmp/xen-qemu-daemon.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/files"
echo "building xenstored-lite for the VM (baseline x86-64)"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release -q -p xenstored-lite)
cp "$TARGET/release/xenstored-lite" "$WORK/files/"

cat > "$WORK/cmd.sh" <<'C'
. /xenqemu/lib.sh
fail() { xq_log "FAIL: $*"; xq_log "daemon log:"; cat /tmp/xsl.log; exit 1; }
start_xenstored sh -c '/test/files/xenstored-lite -N -T /tmp/access.log 2>/tmp/xsl.log' || fail "daemon did not come up"
grep -q "serving dom0's own ring" /tmp/xsl.log || fail "dom0's own ring (xsd_kva) not served"
[ "$(xenstore-read /local/domain/0/name)" = Domain-0 ] || fail "xen-init-dom0's entries missing"
xenstore-ls -f | head -5
start_xenconsoled
run_test_guest || fail "the PV guest's xenstore round trip failed"
i=0
while [ $i -lt 60 ] && ! grep -q "domain 1 released" /tmp/xsl.log; do sleep 0.5; i=$((i+1)); done
grep -q "domain 1 released" /tmp/xsl.log || fail "the guest's death was not noticed"
xenstore-read /local/domain/1/name >/dev/null 2>&1 && fail "the dead guest's home is still there"
[ "$(/usr/lib/xen-4.17/bin/xenstore-control check | tr -d '\n')" = OK ] || fail "xenstore-control check"
xq_log "DAEMON-SMOKE PASS"
C

start=$(date +%s)
set +e
bash "$SHARED/run.sh" -q -t 600 -d "$WORK/files" -l "$WORK/console.log" "$IMAGE" "$WORK/cmd.sh"
rc=$?
set -e
echo "==== xenstored-lite on Xen 4.17 in QEMU: rc=$rc, $(( $(date +%s) - start )) s ===="
if [ "$rc" -ne 0 ] || ! grep -aq "DAEMON-SMOKE PASS" "$WORK/console.log"; then
  echo "---- console (dom0 and guest) ----"
  tr -d '\r' < "$WORK/console.log" | grep -av '^(XEN)' | tail -150
  exit 1
fi
grep -aE 'XENQEMU\[|GUEST' "$WORK/console.log" | tr -d '\r'
echo "1 passed, 0 failed"
