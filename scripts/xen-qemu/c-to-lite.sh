# dom0 command (run-vm.sh CMDFILE): switching from Xen's C xenstored to
# xenstored-lite with a guest alive. C xenstored serves dom0 and a looping
# PV guest; `xenstore-control live-update -c ARGS xenstored-lite` makes C
# write its state and exec xenstored-lite with -U, which takes over. Then xenstored-lite updates itself
# once more, the guest is destroyed, and a new guest runs under it.
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
BIN=/test/files/xenstored-lite
BIN2=/tmp/xenstored-lite-2
cp $BIN $BIN2
CXS=/usr/lib/xen-4.17/bin/xenstored

xq_log "C xenstored serves dom0 and a looping guest"
# In the foreground (-N), so that its stderr, which it passes on to
# xenstored-lite with the exec, is our log.
start_xenstored sh -c "exec $CXS -N 2>>$XSL_LOG" || fail "C xenstored did not come up"
[ "$(daemon_exe)" = $CXS ] || fail "the daemon is $(daemon_exe), not C xenstored"
start_xenconsoled
boot_loop_guest
poke before-update
start_release_watcher
guest_progress 2 "under C xenstored"

xq_log "STEP 6: C xenstored live-updates to xenstored-lite"
live_update $BIN -c "-N -T $ACCESS_LOG" $BIN
# xenstored-lite's access log begins here. C xenstored 4.17 execs only when
# no transaction is open (it answers BUSY until then), so it carries none
# over: in the log, every transaction of the guest starts and ends, and
# none gets EAGAIN, as across xenstored-lite's own updates.
BEFORE=$c1
guest_progress 3 "after C -> xenstored-lite"
poke after-c-update
dom0_tools_work

xq_log "xenstored-lite, restored from C's state, updates itself"
live_update $BIN2 $BIN2
guest_progress 3 "after xenstored-lite -> xenstored-lite"
poke after-second-update
dom0_tools_work

xq_log "the guest is destroyed"
stop_guest_loop "$BEFORE"
destroy_guest
dom0_tools_work

xq_log "a new guest, introduced to xenstored-lite after the switch"
boot_loop_guest
poke new-guest
start_release_watcher
stop_guest_loop
destroy_guest
dom0_tools_work
finish "LIVE-UPDATE-C-TO-LITE PASS"
