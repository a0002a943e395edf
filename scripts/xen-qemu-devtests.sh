#!/bin/bash
# Runs the evtchn and gnttab tests on real Xen 4.17 (Debian) inside QEMU/TCG,
# in a PV dom0, with a PV guest to map, bind to and watch die.
#
#   scripts/xen-qemu-devtests.sh                        # image in /var/tmp/xenqemu
#   XENQEMU_DIR=/path/to/image scripts/xen-qemu-devtests.sh
#
# The image is built by scripts/xen-qemu/build-image.sh into $XENQEMU_DIR
# when missing or out of date. Exits 1 when a test fails; prints
# "SKIPPED: <reason>" and exits 77 only when QEMU or the Debian packages
# cannot be installed or downloaded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKSPACE=${WORKSPACE:-$ROOT}              # where to build the tests from
. "$ROOT/scripts/xen-qemu-image.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-devices}

WORK=$(mktemp -d /tmp/xen-qemu-devtests.XXXXXX)
XENQEMU_CLEANUP="$WORK"
mkdir -p "$WORK/files" "$WORK/guest" "$WORK/out"

# Baseline x86-64 test binaries (the VM's CPU is qemu64: no target-cpu=native).
echo "building test binaries"
(cd "$WORKSPACE" && RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=x86-64" \
  cargo test -p evtchn -p gnttab --no-run --message-format=json) \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$WORK/files/$name"; done
ls "$WORK/files/evtchn" "$WORK/files/gnttab" >/dev/null

# The guest says it is up, then powers itself off (SHUTDOWN_poweroff).
cat > "$WORK/guest/guest.sh" <<'G'
xenstore-write data/ready 1
echo "GUEST: devtest guest up, sleeping before poweroff"
sleep 30
exit 0
G

cat > "$WORK/cmd.sh" <<'C'
. /xenqemu/lib.sh
rc=0
T=/test/files
# run_exact BIN TEST [VAR=VALUE...]: one device test of test binary BIN by
# its exact name, with XSL_REQUIRE_XEN=1 (a missing /dev/xen node or
# XENQEMU_* variable fails it instead of skipping). It counts as passed only
# if libtest ran exactly that one test and it passed, and nothing skipped.
run_exact() {
  bin=$1 name=$2; shift 2
  xq_log "RUN $bin $name $*"
  env XSL_REQUIRE_XEN=1 "$@" $T/$bin --exact "$name" --test-threads=1 --nocapture \
    > /tmp/test.out 2>&1
  trc=$?
  sed 's/^/  | /' /tmp/test.out
  why=""
  [ $trc = 0 ] || why="exit status $trc"
  grep -q '^running 1 test$' /tmp/test.out || why="$why; libtest did not run exactly one test"
  grep -q '^test result: ok\. 1 passed;' /tmp/test.out || why="$why; no 'test result: ok. 1 passed'"
  grep -q '^skipping: ' /tmp/test.out && why="$why; it skipped"
  if [ -z "$why" ]; then xq_log "PASS $bin $name"; else xq_log "FAIL $bin $name: ${why#; }"; rc=1; fi
}
# 1. Everything that needs dom0 only (devices, VIRQ, xsd_kva, loopback,
#    exec), before any xenstored holds VIRQ_DOM_EXC.
run_exact evtchn linux::tests::test_real_bind_virq_dom_exc_returns_port
run_exact evtchn linux::tests::test_real_unbind_unknown_port_ioctl_error
run_exact evtchn linux::tests::test_real_loopback_notify_delivers_then_masks_until_unmask
# (runs linux::tests::test_real_exec_child_adopts_handle_ports_still_bound
# in a child and checks that it ran)
run_exact evtchn linux::tests::test_real_exec_inherited_handle_keeps_ports_bound
run_exact gnttab dominfo::tests::test_real_list_contains_dom0
run_exact gnttab linux::tests::test_real_map_local_xenstore_reads_indices
start_xenstored c || exit 1
start_xenconsoled   # xl create waits for the guest console

# 2. A guest served by C xenstored: map its grant 1 (xenstored maps it too)
#    and its store mfn; its store port is xenstored's, so binding it fails.
boot_guest() { # NAME -> prints the domid once the guest's userspace is up
  sed "s/^name *=.*/name = \"$1\"/" /guest/guest.cfg > /tmp/$1.cfg
  xl create /tmp/$1.cfg >/dev/null || return 1
  gd=$(xl domid $1) || return 1
  i=0
  while [ $i -lt 240 ] && ! xenstore-read /local/domain/$gd/data/ready >/dev/null 2>&1; do
    sleep 0.5; i=$((i+1))
  done
  echo $gd
}
d=$(boot_guest devtest) || { xq_log "xl create failed"; exit 1; }
port=$(xenstore-read /local/domain/$d/store/port)
mfn=$(xenstore-read /local/domain/$d/store/ring-ref)
xq_log "guest devtest domid=$d store port=$port mfn=$mfn"
run_exact gnttab linux::tests::test_real_guest_grant_and_mfn_map_same_page \
    XENQEMU_GUEST_DOMID=$d XENQEMU_GUEST_STORE_MFN=$mfn
run_exact evtchn linux::tests::test_real_guest_store_port_held_by_xenstored_bind_rejected \
    XENQEMU_GUEST_DOMID=$d XENQEMU_GUEST_STORE_PORT=$port

# 3. A second guest, then xenstored exits: the guest's store port is unbound
#    again and a new daemon can bind it (what a restart relies on), and
#    VIRQ_DOM_EXC is free to watch the guest power off and be destroyed.
d2=$(boot_guest devtest2) || { xq_log "xl create failed"; exit 1; }
port2=$(xenstore-read /local/domain/$d2/store/port)
# xenconsoled goes too: its mapping of the console page would keep the
# destroyed guest a zombie, and without xenstore nobody tells it to let go.
kill "$(cat /run/xen/xenstored.pid)" "$(cat /run/xen/xenconsoled.pid)"; sleep 1
xq_log "xenstored and xenconsoled stopped; guest devtest2 domid=$d2 store port=$port2"
run_exact evtchn linux::tests::test_real_guest_store_port_free_bind_interdomain_succeeds \
    XENQEMU_FREE_GUEST_DOMID=$d2 XENQEMU_FREE_GUEST_STORE_PORT=$port2
run_exact gnttab dominfo::tests::test_real_guest_lifecycle_seen_through_virq_dom_exc \
    XENQEMU_LIFECYCLE_DOMID=$d2

xq_log "devtests rc=$rc"
exit $rc
C

# Every device test (test_real_*) of the two binaries must be run above by
# its exact name; the exec child runs inside its parent test.
CHILD=linux::tests::test_real_exec_child_adopts_handle_ports_still_bound
uncovered=""
for bin in evtchn gnttab; do
  "$WORK/files/$bin" --list 2>/dev/null | sed -n 's/^\(.*test_real_[a-z0-9_]*\): test$/\1/p' > "$WORK/$bin.tests"
  [ -s "$WORK/$bin.tests" ] || { echo "$bin --list shows no test_real_* test"; exit 1; }
  while read -r name; do
    [ "$bin $name" = "evtchn $CHILD" ] && continue
    grep -qx "run_exact $bin $name\( .*\)\{0,1\}" "$WORK/cmd.sh" || uncovered="$uncovered $bin:$name"
  done < "$WORK/$bin.tests"
done
[ -z "$uncovered" ] || { echo "device tests the real-Xen tier does not run:$uncovered"; exit 1; }
echo "device tests to run in dom0: $(grep -c '^run_exact ' "$WORK/cmd.sh")"

echo "booting Xen in QEMU"
start=$(date +%s)
set +e
bash "$RUN_VM" -t 900 -d "$WORK/files" -g "$WORK/guest" -l "$WORK/console.log" \
  "$IMAGE" "$WORK/cmd.sh" | tee "$WORK/stdout.log"
rc=${PIPESTATUS[0]}
set -e
echo "==== summary (wall $(( $(date +%s) - start )) s, rc=$rc) ===="
tr -d '\r' < "$WORK/stdout.log" \
  | grep -aE 'XENQEMU\[.*\]: (RUN|PASS|FAIL|guest|devtests|xenstored)|^  \| (test result:|test .* \.\.\. (ok|FAILED))' || true
# The tier passes only if every test passed, as dom0 saw it.
if [ "$rc" -eq 0 ]; then
  npass=$(tr -d '\r' < "$WORK/stdout.log" | grep -ac 'XENQEMU\[.*\]: PASS ') || true
  nwant=$(grep -c '^run_exact ' "$WORK/cmd.sh")
  [ "$npass" = "$nwant" ] || { echo "only $npass of $nwant device tests passed in dom0"; rc=1; }
fi
echo "==== devtests: rc=$rc in $(( $(date +%s) - start )) s ===="
# Each failed test named again on the last lines.
[ "$rc" -eq 0 ] || tr -d '\r' < "$WORK/stdout.log" \
  | sed -n 's/^XENQEMU\[[0-9.]*\]: FAIL \(.*\)$/FAILED: devtests: \1/p' | head -10
exit "$rc"
