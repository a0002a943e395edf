#!/bin/bash
# xenstored-lite on real Xen 4.17 (Debian) in QEMU/TCG, in place of Xen's
# own xenstored (the Linux-backend device tests are in
# scripts/xen-qemu-devtests.sh), and in a stub domain. One boot each:
#
#  lite       xenstored-lite started in dom0 in place of C xenstored (Linux
#             backends, no mock) serves dom0's own ring (xsd_kva) and its
#             socket; xen-init-dom0, xenstore-ls; `xl create` of a PV guest
#             whose kernel xenbus loops on writes and reads over its ring
#             and watches a key dom0 changes (scripts/xen-qemu/guest-loop.sh);
#             `xenstore-control live-update` replaces the daemon with a
#             second copy of its binary while the guest loops: the loop sees
#             no error, its watch and a dom0 watch still fire, dom0's tools
#             work; `xl destroy`: the guest's nodes go and @releaseDomain
#             reaches a dom0 watcher.             (scripts/xen-qemu/lite.sh)
#  c-to-lite  the same guest under Xen's C xenstored, which live-updates to
#             xenstored-lite (`xenstore-control live-update -c ARGS BINARY`:
#             C writes its state and execs us with -U); the guest keeps
#             looping without error; then xenstored-lite updates itself, and
#             the guest is destroyed as above.  (scripts/xen-qemu/c-to-lite.sh)
#  lite-to-c  the way back: xenstored-lite live-updates to Xen's C
#             xenstored (refused while a dom0 transaction is open, then
#             done; a held watch's events arrive; same pid, `xenstore-ls
#             -p` identical), C live-updates back, the guest loops on
#             without error; destroy and a new guest.
#             (scripts/xen-qemu/lite-to-c.sh)
#  crash      xenstored-lite survives its own crash: `kill -9` while the
#             guest loops (once in one of its transactions, once between
#             two), started again with the same command line, it recovers
#             from its journal (--journal=auto, the run directory on a
#             tmpfs): the loop sees no error, its watch fires, dom0's ring
#             and tools work; xl list, `xl create` of a second looping
#             guest, `xl destroy` of both (@releaseDomain, nodes gone); a
#             clean stop removes the journal.  (scripts/xen-qemu/crash.sh)
#  deb        the Debian package: dpkg -i in dom0, XENSTORED= in
#             /etc/default/xen, Debian's /etc/init.d/xen starts it (fork, pid
#             file), a PV guest over its ring, start-stop-daemon --stop.
#             (scripts/xen-qemu/deb.sh; files from scripts/xen-qemu/deb-files.sh)
#  stubdom    xenstore in a stub domain: the xenstored-stubdom PV kernel
#             (`cargo build --release -p xenstored-stubdom`) started by
#             Debian's init-xenstore-domain with no daemon in dom0; dom0's
#             tools through /dev/xen/xenbus, two looping PV guests, xl
#             destroy of one.                  (scripts/xen-qemu/stubdom.sh)
#
#   scripts/xen-qemu-daemon.sh [lite] [c-to-lite] [lite-to-c] [crash] [deb] [stubdom]
#   (default: all)
#
# The image is built by scripts/xen-qemu/build-image.sh into $XENQEMU_DIR
# (default /var/tmp/xenqemu) when missing or out of date.
# XENQEMU_KEEP_LOGS=DIR keeps each boot's console log in DIR.
# XENQEMU_STUB_KERNEL=ELF boots that stub kernel instead of building one.
# Prints "SKIPPED: <reason>" and exits 77 only when QEMU or the Debian
# packages cannot be installed or downloaded; when a step fails, prints the
# daemon's log, the guest's console and dom0's console, and at the end a
# line "FAILED: <scenario>: <the step's reason>" for each failed scenario,
# and exits 1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/xen-qemu-image.sh"
TARGET=${XENQEMU_TARGET_DIR:-$ROOT/target/deb-build}
SCENARIOS=${*:-lite c-to-lite lite-to-c crash deb stubdom}

WORK=$(mktemp -d /tmp/xen-qemu-daemon.XXXXXX)
XENQEMU_CLEANUP="$WORK"
mkdir -p "$WORK/files" "$WORK/guest"
echo "building xenstored-lite for the VM (baseline x86-64)"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release -q -p xenstored-lite)
cp "$TARGET/release/xenstored-lite" "$ROOT/scripts/xen-qemu/dom0-lib.sh" "$WORK/files/"
cp "$ROOT/scripts/xen-qemu/guest-loop.sh" "$WORK/guest/guest.sh"
case " $SCENARIOS " in
  *" deb "*) bash "$ROOT/scripts/xen-qemu/deb-files.sh" "$WORK/files/deb" "$TARGET" ;;
esac
case " $SCENARIOS " in
  *" stubdom "*)
    # Alone (-p), so that its dependencies are without std; without the
    # RUSTFLAGS above, which would replace the kernel's own build flags.
    if [ -z "${XENQEMU_STUB_KERNEL:-}" ]; then
      echo "building the xenstored-stubdom kernel"
      (cd "$ROOT" && env -u RUSTFLAGS CARGO_TARGET_DIR="$TARGET" \
        cargo build --release -q -p xenstored-stubdom)
      XENQEMU_STUB_KERNEL=$TARGET/release/xenstored-stubdom
    fi
    cp "$XENQEMU_STUB_KERNEL" "$WORK/files/xenstored-stubdom" ;;
esac

passed=0 failed=0
failures=()
for scenario in $SCENARIOS; do
  cmd=$ROOT/scripts/xen-qemu/$scenario.sh
  [ -f "$cmd" ] || { echo "unknown scenario $scenario"; exit 2; }
  case $scenario in
    stubdom | crash) marker="$(echo "$scenario" | tr a-z A-Z) PASS" ;;
    *) marker="LIVE-UPDATE-$(echo "$scenario" | tr a-z A-Z) PASS" ;;
  esac
  log=$WORK/$scenario.console.log
  echo "==== $scenario: booting Xen 4.17 + dom0 in QEMU ===="
  start=$(date +%s)
  set +e
  bash "$RUN_VM" -q -t 900 -d "$WORK/files" -g "$WORK/guest" -l "$log" "$IMAGE" "$cmd"
  rc=$?
  set -e
  wall=$(( $(date +%s) - start ))
  [ -z "${XENQEMU_KEEP_LOGS:-}" ] || { mkdir -p "$XENQEMU_KEEP_LOGS"; cp "$log" "$XENQEMU_KEEP_LOGS/"; }
  if [ "$rc" -eq 0 ] && grep -aq "$marker" "$log"; then
    tr -d '\r' < "$log" | grep -a -e 'XENQEMU\[' -e '^  xsl| ' -e '^  guest| ' -e '^  tx| ' -e '^  stub| ' -e '^  init-xenstore-domain| '
    echo "==== $scenario: PASS in $wall s ===="
    passed=$((passed + 1))
  else
    echo "---- $scenario: dom0's console (the hypervisor's (XEN) lines at the end) ----"
    tr -d '\r' < "$log" | grep -av '^(XEN)' | tail -400
    echo "---- $scenario: the hypervisor's last lines ----"
    tr -d '\r' < "$log" | grep -a '^(XEN)' | tail -40
    echo "==== $scenario: FAIL (rc=$rc) in $wall s ===="
    failed=$((failed + 1))
    # The step that failed, again at the end: the console above may be
    # more than a reader of the output's last lines sees.
    why=$(tr -d '\r' < "$log" | grep -a -m1 'XENQEMU\[[0-9.]*\]: FAIL: ' | sed 's/^.*\]: FAIL: //' || true)
    failures+=("FAILED: $scenario: ${why:-no step said why (rc=$rc: the VM timed out or crashed)}")
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || printf '%s\n' "${failures[@]}"
[ "$failed" -eq 0 ]
