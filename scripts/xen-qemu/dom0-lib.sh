# Helpers for the dom0 side of the live-update scenarios (sourced by the
# dom0 commands here, after /xenqemu/lib.sh). Every xenstore call is
# bounded by `timeout`, so a daemon that hangs fails the step at once
# instead of running into the VM's overall timeout.
XSL_LOG=/tmp/xsl.log          # the daemon's stderr, across every exec
ACCESS_LOG=/tmp/access.log
GUEST=testguest               # the loop guest the helpers below act on
GUEST_CONSOLE=/var/log/xen/console/guest-$GUEST.log
XSCTL=/usr/lib/xen-4.17/bin/xenstore-control
D=""                          # the loop guest's domid
# The daemon logs "domain N released" when a destroyed guest goes (checked
# by destroy_guest); 0 for a daemon whose log says otherwise (the stub's).
RELEASE_LOGGED=1
WATCHER=""                    # pid of dom0's @releaseDomain watcher

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
t() { timeout 30 "$@"; }
# ring CMD...: a xenstore tool through dom0's kernel (/dev/xen/xenbus, which
# libxenstore opens as a device, not a socket), so over dom0's own ring.
ring() { env XENSTORED_PATH=/dev/xen/xenbus timeout 30 "$@"; }
# plain_log: the daemon's log without its colours (busybox sed has no \x1b).
plain_log() { sed "s/$(printf '\033')\[[0-9;]*m//g" "$XSL_LOG"; }

# fail WHY: print everything that helps understand it, and stop.
fail() {
  xq_log "FAIL: $*"
  xq_log "---- daemon log ($XSL_LOG) ----"
  plain_log 2>/dev/null
  xq_log "---- access log (last 60 requests) ----"
  tail -60 "$ACCESS_LOG" 2>/dev/null
  [ -n "$D" ] && { xq_log "---- access log: guest $D's last 30 requests ----"; grep " domid $D " "$ACCESS_LOG" 2>/dev/null | tail -30; }
  xq_log "---- guest console ($GUEST_CONSOLE) ----"
  sed 's/^/  guest| /' "$GUEST_CONSOLE" 2>/dev/null
  xq_log "---- processes ----"
  ps
  xq_log "---- xl list ----"
  timeout 20 xl list
  [ -n "$D" ] && { xq_log "---- guest's nodes ----"; t xenstore-ls -f /local/domain/$D; }
  exit 1
}

# wait_for SECS WHAT CMD...: run CMD every 0.5 s until it succeeds; fail
# with WHAT after SECS. (CMD's arguments are expanded once, at the call:
# what must be looked at again each time goes in a function.)
wait_for() {
  _secs=$1 _what=$2; shift 2
  _i=0
  while [ $_i -lt $((_secs * 2)) ]; do
    "$@" && return 0
    sleep 0.5; _i=$((_i + 1))
  done
  fail "$_what (waited ${_secs} s)"
}

daemon_pid() { cat /run/xen/xenstored.pid; }
daemon_exe() { readlink "/proc/$(daemon_pid)/exe"; }

# dom0_tools_work: dom0's tools over the socket (write, read back, list,
# `xenstore-control check`) and over dom0's own ring.
dom0_tools_work() {
  s=$(now)
  v="dom0-$s"
  t xenstore-write /tool/lu-test "$v" || fail "dom0: xenstore-write failed"
  [ "$(t xenstore-read /tool/lu-test)" = "$v" ] || fail "dom0: xenstore-read did not give back what it wrote"
  [ "$(t xenstore-read /local/domain/0/name)" = Domain-0 ] || fail "dom0: /local/domain/0/name is not Domain-0"
  ls_s=$(now)
  t xenstore-ls -f / > /tmp/ls.out || fail "dom0: xenstore-ls failed after $(since "$ls_s") s"
  ls_t=$(since "$ls_s")
  [ "$(t $XSCTL check | tr -d '\n')" = OK ] || fail "dom0: xenstore-control check"
  v="ring-$s"
  ring xenstore-write /tool/lu-ring "$v" || fail "dom0's ring: xenstore-write failed"
  [ "$(ring xenstore-read /tool/lu-ring)" = "$v" ] \
    || fail "dom0's ring: xenstore-read did not give back what it wrote"
  [ "$(t xenstore-read /tool/lu-ring)" = "$v" ] || fail "dom0's ring write not seen over the socket"
  xq_log "dom0 tools work: write, read, xenstore-ls ($(wc -l < /tmp/ls.out) nodes in $ls_t s), xenstore-control check; write and read over dom0's ring ($(since $s) s)"
}

guest_ready() { [ "$(t xenstore-read /local/domain/$D/data/ready 2>/dev/null)" = 1 ]; }
guest_count() { t xenstore-read /local/domain/$D/data/count 2>/dev/null || echo 0; }
guest_errors() { grep -a "GUEST: ERROR" "$GUEST_CONSOLE" 2>/dev/null; }
count_above() { [ "$(guest_count)" -gt "$1" ]; }

# select_guest NAME [DOMID]: the helpers below act on guest NAME (several
# loop guests run at once in stubdom.sh).
select_guest() {
  GUEST=$1
  GUEST_CONSOLE=/var/log/xen/console/guest-$GUEST.log
  D=${2:-}
}

# xl_list_works [NAME...]: xl list answers and lists Domain-0 and each NAME.
xl_list_works() {
  timeout 30 xl list > /tmp/xl.out 2>&1 || fail "xl list: $(cat /tmp/xl.out)"
  for xl_name in Domain-0 "$@"; do
    awk 'NR > 1 { print $1 }' /tmp/xl.out | grep -qx "$xl_name" \
      || fail "xl list has no $xl_name: $(cat /tmp/xl.out)"
  done
  xq_log "xl list: $(awk 'NR > 1 { printf "%s(%s) ", $1, $2 }' /tmp/xl.out)"
}

# second_guest_cfg NAME: a copy of /guest/guest.cfg for a guest named NAME
# (the same kernel and initramfs, so the same loop), printed as its path.
second_guest_cfg() {
  sed "s/^name = .*/name = \"$1\"/" /guest/guest.cfg > "/tmp/$1.cfg" || fail "cannot write /tmp/$1.cfg"
  echo "/tmp/$1.cfg"
}

# boot_loop_guest [CFG]: xl create the guest $GUEST of CFG (default
# /guest/guest.cfg; its /test/guest.sh is guest-loop.sh) and wait until its
# loop runs.
boot_loop_guest() {
  s=$(now)
  timeout 180 xl create "${1:-/guest/guest.cfg}" || fail "xl create"
  D=$(xl domid $GUEST) || fail "xl domid $GUEST"
  xq_log "guest $GUEST is domain $D (xl create: $(since $s) s)"
  wait_for 120 "the guest never wrote data/ready over its ring" guest_ready
  wait_for 30 "the guest's loop does not advance" count_above 2
  xq_log "guest $GUEST's loop running: data/count=$(guest_count) ($(since $s) s after xl create)"
}

# guest_progress N WHY: the guest's loop must do N more iterations.
guest_progress() {
  c0=$(guest_count)
  wait_for 60 "the guest's loop stalled at data/count=$c0 ($2)" count_above $((c0 + $1))
  e=$(guest_errors) && fail "the guest's loop saw errors ($2): $e"
  xq_log "guest $GUEST's loop advanced $c0 -> $(guest_count) ($2), no errors"
}

seen_is() { [ "$(t xenstore-read /local/domain/$D/data/seen 2>/dev/null)" = "$1" ]; }

# poke VALUE: dom0 writes the guest's data/fromdom0; the guest's watch must
# fire and the guest write the value back to data/seen.
poke() {
  s=$(now)
  t xenstore-write /local/domain/$D/data/fromdom0 "$1" || fail "dom0 cannot write data/fromdom0"
  wait_for 60 "the guest's watch did not report dom0's write data/fromdom0=$1" seen_is "$1"
  xq_log "guest's watch saw dom0's write '$1' and wrote it back ($(since $s) s)"
}

# start_release_watcher: a dom0 client watching @releaseDomain (its first
# line is the event every new watch fires).
start_release_watcher() {
  xenstore-watch @releaseDomain > /tmp/release.out 2>&1 &
  WATCHER=$!
  wait_for 10 "dom0's @releaseDomain watch never fired its first event" test -s /tmp/release.out
}

# live_update BINARY [XENSTORE-CONTROL ARGS...]: run `xenstore-control
# live-update` and check that the daemon's process now runs BINARY and
# says it restored the state.
live_update() {
  bin=$1; shift
  pid=$(daemon_pid)
  c0=$(guest_count)
  restored0=$(grep -c "live-update: restored" "$XSL_LOG")
  s=$(now)
  out=$(timeout 120 $XSCTL live-update "$@" 2>&1); rc=$?
  took=$(since $s)
  c1=$(guest_count)
  xq_log "xenstore-control live-update $*: rc=$rc output='$out' in $took s (guest loop $c0 -> $c1 meanwhile)"
  [ $rc = 0 ] || fail "xenstore-control live-update failed (rc=$rc): $out"
  kill -0 "$pid" 2>/dev/null || fail "the daemon's process $pid is gone after the live update"
  [ "$(daemon_exe)" = "$bin" ] || fail "process $pid runs $(daemon_exe), not $bin"
  [ "$(grep -c "live-update: restored" "$XSL_LOG")" -gt "$restored0" ] \
    || fail "the new daemon did not log its restore"
  xq_log "daemon process $pid now runs $bin: $(grep "live-update: restored" "$XSL_LOG" | tail -1 | sed 's/.*live-update: //')"
}

# destroy_guest: xl destroy while its loop is idle; its nodes must go and
# @releaseDomain reach the dom0 watcher.
destroy_guest() {
  n0=$(wc -l < /tmp/release.out)
  s=$(now)
  timeout 60 xl destroy $GUEST || fail "xl destroy"
  released() { [ "$(wc -l < /tmp/release.out)" -gt "$n0" ]; }
  wait_for 30 "@releaseDomain did not reach dom0's watcher" released
  xq_log "@releaseDomain reached dom0's watcher $(since $s) s after xl destroy"
  [ "$RELEASE_LOGGED" = 0 ] \
    || wait_for 30 "the daemon did not release domain $D" grep -q "domain $D released" "$XSL_LOG"
  gone() { t xenstore-list /local/domain > /tmp/doms && ! grep -qx "$D" /tmp/doms; }
  wait_for 30 "/local/domain/$D is still there" gone
  t xenstore-ls -f / > /tmp/ls.out || fail "xenstore-ls after the destroy"
  grep "^/local/domain/$D/" /tmp/ls.out && fail "nodes of the destroyed guest remain"
  # Nothing may still map its pages (the daemon's ring mapping, across the
  # exec, included): the hypervisor then frees it, no zombie stays.
  freed() {
    l=$(timeout 20 xl list) || return 1
    ! echo "$l" | awk 'NR > 1 { print $2 }' | grep -qx "$D"
  }
  wait_for 60 "domain $D stays a zombie in xl list (something still maps its pages)" freed
  xq_log "guest destroyed: its nodes are gone, the daemon released it, the hypervisor freed it"
  kill "$WATCHER" 2>/dev/null
  D=""
}

# guest_transactions DOMID: the guest's transactions in the daemon's access
# log ($ACCESS_LOG, lines "TIME conn C domid D TYPE tx T PATH -> RESULT").
# Xen's xenstore-write and xenstore-read run several keys in a transaction
# and, when its end gets EAGAIN, silently start it again: the guest's loop
# cannot see that, the log can. Prints every EAGAIN the guest got and the
# TRANSACTION_START of the retry after it, and on the last line
# "STARTS ENDS LOOP_OK EAGAIN RETRIES LOOP_BAD SHAPE": the guest's
# transaction starts and ends, its loop transactions (those touching
# data/loop/) that committed, its EAGAIN replies, its retries, loop
# transactions that ended other than committed, and the committed loop
# transactions in order, W for the one writing data/loop/k0..k7 and R for
# the one reading them back (x for one doing both or another request),
# "-" when there are none. Keyed by transaction id, not connection: a live
# update renumbers connections (the access log's "conn" changes) while a
# transaction open across it keeps its id, and the guest has one ring.
guest_transactions() {
  awk -v d="$1" '
    $4 == "domid" && $5 == d {
      ty = $6; tx = $8
      r = $0; sub(/^.* -> /, "", r)
      p = (NF >= 11) ? $9 : ""
      if (r ~ /EAGAIN/) { eagain++; retry = 1; print "EAGAIN: " $0 }
      if (ty == "XS_TRANSACTION_START") {
        starts++
        if (retry) { retries++; retry = 0; print "RETRY:  " $0 }
      } else if (ty == "XS_TRANSACTION_END") {
        ends++
        if (tx in loop) {
          if (r == "OK" && p == "T") { ok++; shape = shape loop[tx] }
          else { bad++; print "LOOP TRANSACTION NOT COMMITTED: " $0 }
          delete loop[tx]
        }
      } else if (tx != 0 && p ~ /^data\/loop\//) {
        k = "x"
        if (ty == "XS_WRITE") k = "W"
        if (ty == "XS_READ") k = "R"
        if ((tx in loop) && loop[tx] != k) k = "x"
        loop[tx] = k
      }
    }
    END { printf "%d %d %d %d %d %d %s\n", starts, ends, ok, eagain, retries, bad, shape == "" ? "-" : shape }
  ' "$ACCESS_LOG"
}

# check_guest_transactions ITERATIONS [BEFORE]: the daemon committed each of
# the loop's 2 transactions per iteration at the first try, in the loop's
# order: no EAGAIN, no retry, every transaction the guest started ended,
# and the committed ones alternate write, read (none lost, none twice).
# BEFORE: iterations done before the access log began, as dom0 read
# data/count right after the hand-over (C xenstored served them, see
# c-to-lite.sh); without it the log covers the whole loop and the count is
# exact.
check_guest_transactions() {
  tx_n=$1 tx_before=${2:-}
  guest_transactions "$D" > /tmp/tx.out || fail "cannot read the access log $ACCESS_LOG"
  sed '$d' /tmp/tx.out | sed 's/^/  tx| /'
  set -- $(tail -1 /tmp/tx.out)
  starts=$1 ends=$2 ok=$3 eagain=$4 retries=$5 bad=$6 shape=$7
  # The log may begin with the read of an iteration whose write C
  # committed; from there on, write and read alternate.
  case $shape in
    -) body="" lead=0 first="" ;;
    R*) body=${shape#R} lead=1 first=read ;;
    W*) body=$shape lead=0 first=write ;;
    *) body=$shape lead=0 first="" ;;
  esac
  xq_log "guest $D's transactions in the access log: $starts started, $ends ended, $ok loop transactions committed${first:+, the first a $first} (loop: $tx_n iterations${tx_before:+, $tx_before of them before the log began}), $eagain EAGAIN, $retries retries, $bad loop transactions not committed"
  [ "$eagain" = 0 ] && [ "$retries" = 0 ] && [ "$bad" = 0 ] \
    || fail "the daemon answered the guest EAGAIN $eagain times (retries $retries, loop transactions not committed $bad)"
  [ "$starts" = "$ends" ] || fail "the guest started $starts transactions and ended $ends"
  echo "$body" | grep -qxE '(WR)*' \
    || fail "the loop transactions committed are not write, read in turn: $shape"
  if [ -z "$tx_before" ]; then
    [ "$lead" = 0 ] || fail "the log begins with a loop read: $shape"
    [ "$ok" = $((2 * tx_n)) ] || fail "$ok loop transactions committed for $tx_n iterations, not $((2 * tx_n))"
  else
    # Iterations whose read the log has. C may have committed both of the
    # next iteration's transactions and handed over before its data/count
    # write, which dom0's read right after the hand-over may still miss:
    # then the log lacks one iteration more than BEFORE says.
    reads=$(( ${#body} / 2 + lead ))
    [ "$reads" -ge $((tx_n - tx_before - 1)) ] && [ "$reads" -le "$tx_n" ] \
      || fail "the log has the reads of $reads iterations, not $((tx_n - tx_before - 1)) to $tx_n: $shape"
  fi
}

# end_guest_loop: the loop ends on data/fromdom0=stop and reports
# data/done = "ITERATIONS ERRORS"; fails on any error.
end_guest_loop() {
  t xenstore-write /local/domain/$D/data/fromdom0 stop || fail "dom0 cannot write data/fromdom0"
  wait_for 60 "the guest's loop did not report data/done" \
    t xenstore-read /local/domain/$D/data/done
  done=$(t xenstore-read /local/domain/$D/data/done)
  xq_log "guest $GUEST's loop done: iterations and errors = $done"
  [ "${done#* }" = 0 ] || fail "the guest's loop counted errors: $done"
  e=$(guest_errors) && fail "the guest's loop saw errors: $e"
}

# stop_guest_loop [BEFORE]: end_guest_loop, then the guest's transactions
# are checked in the daemon's access log (check_guest_transactions).
stop_guest_loop() {
  end_guest_loop
  check_guest_transactions "${done% *}" "$@"
}

# finish MARKER: the guest's console, the daemon's log checked for
# warnings, then MARKER.
finish() {
  xq_log "---- guest console ----"
  grep -a "GUEST" "$GUEST_CONSOLE" | sed 's/^/  guest| /'
  xq_log "---- daemon log ----"
  plain_log > /tmp/xsl.plain
  sed 's/^/  xsl| /' /tmp/xsl.plain
  w=$(grep -E ' (WARN|ERROR) ' /tmp/xsl.plain) && fail "the daemon logged warnings: $w"
  xq_log "$1"
}
