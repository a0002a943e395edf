# dom0 command (run-vm.sh CMDFILE): xenstored-lite started in place of C
# xenstored serves dom0's ring and socket (step 1); a PV guest loops on
# xenstore requests over its ring (step 2) while `xenstore-control
# live-update` replaces the daemon with a second copy of its binary, three
# times (step 3); the guest is destroyed and released (step 4).
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
BIN=/test/files/xenstored-lite
BIN2=/tmp/xenstored-lite-2
cp $BIN $BIN2

xq_log "STEP 1: xenstored-lite serves dom0's ring and socket"
start_xenstored sh -c "exec $BIN -N -T $ACCESS_LOG 2>>$XSL_LOG" || fail "the daemon did not come up"
grep -q "serving dom0's own ring" $XSL_LOG || fail "dom0's own ring (xsd_kva) not served"
dom0_tools_work
grep -q '^/local/domain/0/name = "Domain-0"' /tmp/ls.out || fail "xenstore-ls does not show xen-init-dom0's entries"
head -8 /tmp/ls.out

xq_log "STEP 2: a PV guest's kernel xenbus talks over its ring"
start_xenconsoled
boot_loop_guest
t xenstore-ls -f /local/domain/$D/data | head -5
poke before-update
guest_progress 2 "before the update"

xq_log "STEP 3: live update to a second copy of the binary while the guest loops"
start_release_watcher    # a socket client whose watch must survive the updates
live_update $BIN2 $BIN2
guest_progress 1 "after the update"
# Twice more (back to the first copy, then the second again): each hand-over
# is another chance to catch the guest's requests half-way.
live_update $BIN $BIN
live_update $BIN2 $BIN2
guest_progress 3 "after three updates"
poke after-update
dom0_tools_work

xq_log "STEP 4: the guest is destroyed"
stop_guest_loop
destroy_guest
dom0_tools_work
finish "LIVE-UPDATE-LITE PASS"
