# dom0 command (run-vm.sh CMDFILE): the way back from xenstored-lite to
# Xen's C xenstored and forth again, with a guest alive (issue 18).
# xenstored-lite serves dom0 and a looping PV guest; a dom0 client holds
# an open transaction (the update is refused while it is open, and goes
# through once it has ended) and another holds a watch whose events it has
# not read; `xenstore-control live-update /usr/lib/xen-4.17/bin/xenstored`
# hands the daemon's process over to C, which serves with the same pid and
# the same store (`xenstore-ls -p` identical); then C live-updates back to
# xenstored-lite; the guest is destroyed (@releaseDomain, nodes gone) and a
# new one runs. The guest's loop must see no error across both switches.
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
BIN=/test/files/xenstored-lite
CXS=/usr/lib/xen-4.17/bin/xenstored

xq_log "xenstored-lite serves dom0 and a looping guest"
start_xenstored sh -c "exec $BIN -N 2>>$XSL_LOG" || fail "the daemon did not come up"
[ "$(daemon_exe)" = $BIN ] || fail "the daemon is $(daemon_exe), not $BIN"
start_xenconsoled
boot_loop_guest
poke before-update
start_release_watcher
guest_progress 2 "under xenstored-lite"
dom0_tools_work

xq_log "a dom0 client holds a transaction open: the update to C is refused"
# XS_TRANSACTION_START (type 6, req_id 1, tx_id 0, payload "\0") written
# straight on /dev/xen/xenbus, whose file keeps the transaction open until
# it is closed (Linux then ends it).
exec 8<>/dev/xen/xenbus
printf '\006\000\000\000\001\000\000\000\000\000\000\000\001\000\000\000\000' >&8
txid=$(timeout 10 dd bs=4096 count=1 <&8 2>/dev/null | tail -c +17 | tr -d '\000')
[ -n "$txid" ] || fail "no reply to the raw TRANSACTION_START"
xq_log "dom0's transaction $txid is open"
pid=$(daemon_pid)
out=$(timeout 60 $XSCTL live-update -t 3 $CXS 2>&1); rc=$?
xq_log "with a transaction open: rc=$rc output='$out'"
[ $rc != 0 ] || fail "the live update to C went through with a transaction open"
[ "$(daemon_exe)" = $BIN ] || fail "the daemon is $(daemon_exe) after a refused update"
grep "live-update: BUSY" "$XSL_LOG" | tail -1 | sed 's/^/  xsl| /'
grep -q "live-update: BUSY: .*has transaction" "$XSL_LOG" || fail "the daemon did not log the open transaction"
dom0_tools_work
# Closed: Linux ends the transaction.
exec 8>&-

xq_log "a dom0 client holds a watch with an unread event"
t xenstore-write /tool/held-watch start
( timeout 600 xenstore-watch /tool/held-watch > /tmp/held.out 2>&1 ) &
wait_for 10 "the held watch's first event" test -s /tmp/held.out
t xenstore-write /tool/held-watch before-switch

xq_log "xenstored-lite live-updates to C xenstored"
# The whole store but what the looping guest rewrites all the time.
store() {
  t xenstore-ls -f -p / | grep -v -e '^/tool/lu-' \
    -e "^/local/domain/$D/data/loop/" -e "^/local/domain/$D/data/count "
}
store > /tmp/ls-before.out
c0=$(guest_count)
s=$(now)
out=$(timeout 120 $XSCTL live-update $CXS 2>&1); rc=$?
xq_log "xenstore-control live-update $CXS: rc=$rc output='$out' in $(since $s) s (guest loop $c0 -> $(guest_count))"
[ $rc = 0 ] || fail "xenstore-control live-update to C failed (rc=$rc): $out"
kill -0 "$pid" 2>/dev/null || fail "the daemon's process $pid is gone after the update"
[ "$(daemon_exe)" = $CXS ] || fail "process $pid runs $(daemon_exe), not $CXS"
[ ! -e /var/run/xenstored/state_dump ] || fail "C did not take the state (state_dump is still there)"
grep "live-update: wrote .* for C xenstored" "$XSL_LOG" | tail -1 | sed 's/^/  xsl| /'
store > /tmp/ls-after.out
diff /tmp/ls-before.out /tmp/ls-after.out > /tmp/ls.diff \
  || { head -40 /tmp/ls.diff; fail "xenstore-ls -p differs after the update to C"; }
xq_log "C xenstored serves process $pid: xenstore-ls -p identical ($(wc -l < /tmp/ls-after.out) nodes)"
t xenstore-write /tool/held-watch after-switch
held_all() { [ "$(grep -c '^/tool/held-watch' /tmp/held.out)" -ge 3 ]; }
wait_for 20 "the held watch's events did not all arrive" held_all
xq_log "the held watch got $(grep -c '^/tool/held-watch' /tmp/held.out) events across the switch"
guest_progress 3 "under C xenstored"
poke under-c
dom0_tools_work

xq_log "C xenstored live-updates back to xenstored-lite"
live_update $BIN -c "-N" $BIN
guest_progress 3 "back under xenstored-lite"
poke back-to-lite
dom0_tools_work

xq_log "the guest is destroyed"
end_guest_loop
destroy_guest
dom0_tools_work

xq_log "a new guest, introduced after the round trip"
boot_loop_guest
poke new-guest
start_release_watcher
end_guest_loop
destroy_guest
dom0_tools_work
finish "LIVE-UPDATE-LITE-TO-C PASS"
