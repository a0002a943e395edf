# dom0 command (run-vm.sh CMDFILE): xenstore in a stub domain of its own,
# the xenstored-stubdom PV kernel (/test/files/xenstored-stubdom), started by
# Debian's unmodified init-xenstore-domain with no xenstore daemon in dom0.
#  STEP 1  init-xenstore-domain --kernel STUB --memory 8 exits 0 and writes
#          /var/run/xen/xenstored.pid = domid:N; xen-init-dom0 runs;
#          xenconsoled logs the stub's console, which shows its start-up line.
#  STEP 2  dom0's tools work through /dev/xen/xenbus (no socket exists):
#          xenstore-ls, -write, -read, -watch, xenstore-control check.
#  STEP 3  two PV guests (xl create) loop on reads, writes and a watch over
#          their rings without error while dom0's tools and xl list work.
#  STEP 4  xl destroy of one: its nodes go, @releaseDomain reaches a dom0
#          watcher, the hypervisor frees it; the other loops on, then ends.
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
STUB=/test/files/xenstored-stubdom
STUB_NAME=Xenstore           # init-xenstore-domain's default --name
STUB_CONSOLE=/var/log/xen/console/guest-$STUB_NAME.log
# The stub's console is its log: fail() prints it as the daemon's log
# (both are read by dom0-lib.sh).
# shellcheck disable=SC2034
XSL_LOG=$STUB_CONSOLE RELEASE_LOGGED=0
# What the stub prints once it serves (part SERVER's start-up line).
STUB_STARTED=${STUB_STARTED:-xenstored-stubdom}
G1=testguest G2=testguest2

stub_console() { tr -d '\r' < "$STUB_CONSOLE" 2>/dev/null | sed 's/^/  stub| /'; }
stub_started() { grep -aq "$STUB_STARTED" "$STUB_CONSOLE" 2>/dev/null; }
stub_domid() { sed -n 's/^domid:\([0-9][0-9]*\)$/\1/p' /var/run/xen/xenstored.pid 2>/dev/null; }
# dom0_watch_works: a dom0 xenstore-watch over dom0's ring sees dom0's write.
dom0_watch_works() {
  s=$(now)
  v="w-$s"
  : > /tmp/w.out
  xenstore-watch /tool/stub-watch > /tmp/w.out 2>&1 &
  wpid=$!
  wait_for 10 "dom0's watch on /tool/stub-watch never fired its first event" test -s /tmp/w.out
  t xenstore-write /tool/stub-watch "$v" || fail "dom0: xenstore-write /tool/stub-watch"
  two_events() { [ "$(wc -l < /tmp/w.out)" -ge 2 ]; }
  wait_for 10 "dom0's watch did not fire on dom0's write" two_events
  kill $wpid 2>/dev/null
  xq_log "dom0's watch fired on dom0's write ($(since $s) s)"
}

xq_log "STEP 1: init-xenstore-domain starts the stub, no xenstore daemon in dom0"
[ -s $STUB ] || fail "no stub kernel at $STUB"
xq_log "stub kernel: $(wc -c < $STUB) bytes"
ps | grep -v grep | grep -q 'xenstored' && fail "a xenstored runs in dom0 before the stub"
[ -e /run/xenstored/socket ] && fail "a xenstore socket exists before the stub"
mkdir -p /var/lib/xen /var/run/xen
s=$(now)
timeout 120 $XENBIN/init-xenstore-domain --kernel $STUB --memory 8 > /tmp/init-xs.out 2>&1
rc=$?
sed 's/^/  init-xenstore-domain| /' /tmp/init-xs.out
[ $rc = 0 ] || fail "init-xenstore-domain exited $rc"
SD=$(stub_domid)
[ -n "$SD" ] || fail "/var/run/xen/xenstored.pid is not domid:N: '$(cat /var/run/xen/xenstored.pid 2>&1)'"
xq_log "init-xenstore-domain exited 0 in $(since $s) s; the stub is domain $SD"
[ "$(t xenstore-read /tool/xenstored/domid)" = "$SD" ] || fail "/tool/xenstored/domid is not $SD"
[ "$(t xenstore-read /local/domain/$SD/name)" = "$STUB_NAME" ] || fail "/local/domain/$SD/name is not $STUB_NAME"
t $XENBIN/xen-init-dom0 || fail "xen-init-dom0 failed"
xq_log "xen-init-dom0 wrote dom0's entries"
start_xenconsoled || fail "xenconsoled did not start"
wait_for 30 "the stub's console ($STUB_CONSOLE) shows no start-up line '$STUB_STARTED'" stub_started
xq_log "the stub's console: $(grep -a -m1 "$STUB_STARTED" "$STUB_CONSOLE" | tr -d '\r')"
xl_list_works $STUB_NAME

xq_log "STEP 2: dom0's tools through /dev/xen/xenbus"
[ -e /run/xenstored/socket ] && fail "a xenstore socket exists: dom0's tools would not use the ring"
dom0_tools_work
grep -q '^/local/domain/0/name = "Domain-0"' /tmp/ls.out || fail "xenstore-ls does not show xen-init-dom0's entries"
grep -q "^/local/domain/$SD/name = \"$STUB_NAME\"" /tmp/ls.out || fail "xenstore-ls does not show the stub's own entries"
head -8 /tmp/ls.out
dom0_watch_works

xq_log "STEP 3: two PV guests loop over their rings"
start_release_watcher
select_guest $G1
boot_loop_guest /guest/guest.cfg
D1=$D
cfg2=$(second_guest_cfg $G2)
select_guest $G2
boot_loop_guest "$cfg2"
D2=$D
[ "$D1" != "$D2" ] || fail "both guests are domain $D1"
select_guest $G1 $D1; poke g1-first; guest_progress 2 "beside $G2"
select_guest $G2 $D2; poke g2-first; guest_progress 2 "beside $G1"
dom0_tools_work
dom0_watch_works
xl_list_works $STUB_NAME

xq_log "STEP 4: xl destroy of $G2; $G1 loops on"
select_guest $G2 $D2
end_guest_loop
destroy_guest
select_guest $G1 $D1
guest_progress 2 "after $G2's destroy"
poke g1-after
dom0_tools_work
xl_list_works $STUB_NAME
end_guest_loop
start_release_watcher
destroy_guest
dom0_tools_work
xl_list_works $STUB_NAME

xq_log "---- guests' consoles ----"
for g in $G1 $G2; do
  grep -a "GUEST" /var/log/xen/console/guest-$g.log | sed "s/^/  guest| $g: /"
done
xq_log "---- the stub's console ----"
stub_console
xq_log "STUBDOM PASS"
