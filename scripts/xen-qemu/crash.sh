# dom0 command (run-vm.sh CMDFILE): xenstored-lite survives its own crash
# (issue 19). It serves dom0 and a looping PV guest (steps 1, 2); it is
# killed with SIGKILL while the guest loops, once with a transaction of the
# guest open and once between two, and each time started again with the
# same command line: it recovers from its journal and logs "crash recovery:
# ... in N ms"; the guest's loop sees no error, its watch still fires, dom0's
# ring and tools work (step 3). Then xl list, a second guest created,
# looping and destroyed, the first destroyed (@releaseDomain, nodes gone,
# freed) (step 4); a clean stop (SIGTERM) removes the journal (step 5).
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
BIN=/test/files/xenstored-lite
# The command line, the same at every start.
DAEMON="exec $BIN -N -T $ACCESS_LOG 2>>$XSL_LOG"
RUNDIR=/run/xenstored        # the default run directory (/var/run links to /run)
JOURNAL=$RUNDIR/journal/xenstored-lite.rec
G1=testguest G2=testguest2
# sock CMD...: a xenstore tool over the socket only (libxenstore would fall
# back to dom0's ring, which the daemon serves again too).
sock() { env XENSTORED_PATH=$RUNDIR/socket timeout 30 "$@"; }

# in_tx / between_tx: the guest's last request in the access log was in a
# transaction / outside one (its tx field, the 8th, is not / is 0).
in_tx() { tail -1 "$ACCESS_LOG" | awk -v d="$D" '$5 == d && $8 != 0 { f = 1 } END { exit !f }'; }
between_tx() { tail -1 "$ACCESS_LOG" | awk -v d="$D" '$5 == d && $8 == 0 { f = 1 } END { exit !f }'; }
# The line a recovery ends with (an earlier one may say the journal was cut).
recoveries() { plain_log | grep -c 'crash recovery: .* in [0-9][0-9]* ms$'; }

# crash WHEN: kill -9 the daemon once WHEN (in_tx or between_tx; after 20 s
# without, at whatever moment) while the guest loops, start it again with
# the same command line, and check that it recovered from its journal.
crash() {
  pid=$(daemon_pid)
  [ -s $JOURNAL ] || fail "no journal at $JOURNAL before the kill"
  rec0=$(recoveries)
  c0=$(guest_count)    # (once it is killed, a read would wait for the new one)
  xq_wait 20 "$1" || xq_log "the guest's last request was not $1 within 20 s: killing anyway"
  kill -9 "$pid" || fail "kill -9 $pid"
  s=$(now)
  wait "$pid" 2>/dev/null    # our child (start_xenstored's or ours): reaped
  [ -d /proc/$pid ] && fail "the daemon $pid still runs after kill -9"
  xq_log "daemon $pid killed with SIGKILL; the guest's last request: $(grep " domid $D " "$ACCESS_LOG" | tail -1); journal $(wc -c < $JOURNAL) bytes"
  # Its socket clients lost their connection, among them xenconsoled, which
  # would no longer see new guests (their consoles would then fill up).
  cons=$(cat /run/xen/xenconsoled.pid)
  kill "$cons" 2>/dev/null
  sh -c "$DAEMON" &
  echo $! > /run/xen/xenstored.pid
  answers() { sock xenstore-read / > /dev/null 2>&1; }
  wait_for 30 "the restarted daemon does not answer on its socket" answers
  up=$(since "$s")
  recovered() { [ "$(recoveries)" -gt "$rec0" ]; }
  wait_for 10 "the restarted daemon did not log 'crash recovery: ... in N ms'" recovered
  line=$(plain_log | grep 'crash recovery: .* in [0-9][0-9]* ms$' | tail -1)
  xq_log "daemon $(daemon_pid) answers $up s after the kill (guest loop $c0 -> $(guest_count)): ${line#*crash recovery: }"
  [ "$(daemon_exe)" = $BIN ] || fail "the daemon is $(daemon_exe), not $BIN"
  gone() { [ ! -d "/proc/$cons" ] || grep -q '^State:.*Z' "/proc/$cons/status"; }
  wait_for 10 "xenconsoled does not stop" gone
  start_xenconsoled || fail "xenconsoled did not start again"
}

xq_log "STEP 1: xenstored-lite serves dom0's ring and socket, journalling"
# The run directory on a tmpfs, as /run is on a host: the default
# --journal=auto then journals (no journal option on the command line).
mkdir -p $RUNDIR && mount -t tmpfs tmpfs $RUNDIR || fail "cannot mount a tmpfs on $RUNDIR"
start_xenstored sh -c "$DAEMON" || fail "the daemon did not come up"
[ -e $JOURNAL ] || fail "--journal=auto on a tmpfs run directory: no journal at $JOURNAL"
dom0_tools_work

xq_log "STEP 2: a PV guest loops over its ring"
start_xenconsoled
select_guest $G1
boot_loop_guest
D1=$D
poke before-crash
guest_progress 2 "before the crash"

xq_log "STEP 3: kill -9 while the guest loops, twice; the same command line again"
crash in_tx
guest_progress 3 "after the crash in a transaction"
poke after-crash-1
dom0_tools_work
crash between_tx
guest_progress 3 "after the crash between transactions"
poke after-crash-2
dom0_tools_work

xq_log "STEP 4: xl list, xl create of a second guest, xl destroy of both"
xl_list_works $G1
cfg2=$(second_guest_cfg $G2)
select_guest $G2
boot_loop_guest "$cfg2"
poke second-guest
guest_progress 2 "beside $G1"
xl_list_works $G1 $G2
stop_guest_loop
start_release_watcher
destroy_guest
select_guest $G1 $D1
guest_progress 2 "after $G2's destroy"
stop_guest_loop
start_release_watcher
destroy_guest
dom0_tools_work
xl_list_works

xq_log "STEP 5: a clean stop (SIGTERM) removes the journal"
pid=$(daemon_pid)
kill "$pid"
wait "$pid"
rc=$?
xq_log "the daemon exited with status $rc on SIGTERM"
[ -e $JOURNAL ] && fail "the journal $JOURNAL is still there after a clean stop"
finish "CRASH PASS"
