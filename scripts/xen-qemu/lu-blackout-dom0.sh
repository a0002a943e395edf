# dom0 command of lu-blackout-figures.sh (issue 18): how long dom0's
# clients go unanswered while the daemon live-updates between xenstored-lite
# and Xen's C xenstored 4.17, with a large store, in one boot.
#
# xenstored-lite starts in dom0 (as lite-to-c.sh), dom0 writes LU_NODES
# nodes (figures-lib.sh's fill_to, BATCH a process); a "gap meter" (a
# background loop of xenstore-read of one key over the socket) writes one
# timestamp (dom0's uptime, 10 ms resolution) per successful read; then,
# on the same store: lite -> C, C -> C, C -> lite, lite -> lite (a copy of
# the binary). An update's blackout is the longest interval between two
# consecutive timestamps that overlaps the xenstore-control command; the
# command's own time is measured too. After each update: the same process
# runs the expected binary and `xenstore-ls -f /` gives as many lines.
# Figures: "FIGURE <name> <value> <words>" console lines.
# Settings (lines put before this file by the host): LU_NODES (120000),
# BATCH (500), LU_LITE2 (1: do lite -> lite too), LU_QUIET (10: seconds of
# metering before the first update, for the meter's own interval).
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
. /test/files/figures-lib.sh
BIN=/test/files/xenstored-lite
BIN2=/tmp/xenstored-lite-2
CXS=$XENBIN/xenstored
LU_NODES=${LU_NODES:-120000}
LU_LITE2=${LU_LITE2:-1}
LU_QUIET=${LU_QUIET:-10}
GAP=/tmp/gap.out              # the meter's timestamps, one a line
GAP_KEY=/tool/gap-meter
METER=""                      # the meter's pid
cp $BIN $BIN2 || fail "cannot copy $BIN to $BIN2"

# figure NAME VALUE WORDS: figures-lib.sh's, keeping VALUE for the ratios
# (val NAME).
figure() {
  echo "FIGURE $*"
  eval "FIG_$(echo "$1" | tr -c 'a-z0-9\n' _)=\$2"
}
val() { eval "echo \${FIG_$(echo "$1" | tr -c 'a-z0-9\n' _):-}"; }

# gap_meter: read GAP_KEY over the socket forever; a timestamp a success.
gap_meter() {
  while :; do
    if timeout 900 xenstore-read $GAP_KEY > /dev/null 2>&1; then now >> $GAP; fi
  done
}

# meter_past T: the meter has a timestamp after T.
meter_past() { [ -s $GAP ] && awk -v t="$1" -v l="$(tail -1 $GAP)" 'BEGIN { exit !(l + 0 > t + 0) }'; }

# gap_in S E: "LONGEST FROM TO READS": the longest interval between
# consecutive timestamps that overlaps [S, E] (a pair (p, q) with q >= S
# and p <= E), its two ends, and how many reads ended in [S, E].
gap_in() {
  awk -v s="$1" -v e="$2" '
    NR > 1 && $1 + 0 >= s + 0 && p + 0 <= e + 0 {
      g = $1 - p; if (g > best) { best = g; a = p; b = $1 } }
    $1 + 0 >= s + 0 && $1 + 0 <= e + 0 { n++ }
    { p = $1 }
    END { printf "%.2f %s %s %d\n", best, a, b, n }' $GAP
}

# count_nodes: the lines of `xenstore-ls -f /` over the socket go to
# COUNT, the time it took to LS_T.
count_nodes() {
  _s=$(now)
  timeout 900 xenstore-ls -f / > /tmp/ls-all.out || fail "xenstore-ls -f / failed"
  LS_T=$(since "$_s")
  COUNT=$(wc -l < /tmp/ls-all.out)
}

# rss: the daemon's resident memory, kB.
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$(daemon_pid)/status"; }

# update NAME BINARY ARGS...: `xenstore-control live-update ARGS...`,
# timed and metered; the daemon's process must then run BINARY and list as
# many nodes as before (COUNT0).
update() {
  _name=$1 _bin=$2; shift 2
  _args="$*"
  _pid=$(daemon_pid)
  _from=$(daemon_exe)
  xq_log "$_name: $_from live-updates to $_bin ($XSCTL live-update $_args)"
  _s=$(now)
  _out=$(timeout 900 $XSCTL live-update "$@" 2>&1); _rc=$?
  _e=$(now)
  _took=$(awk -v a="$_s" -v b="$_e" 'BEGIN { printf "%.2f", b - a }')
  xq_log "$_name: rc=$_rc output='$_out' in $_took s ($_s .. $_e)"
  [ $_rc = 0 ] || fail "$_name: xenstore-control live-update $_args failed (rc=$_rc): $_out"
  kill -0 "$_pid" 2>/dev/null || fail "$_name: the daemon's process $_pid is gone"
  [ "$(daemon_pid)" = "$_pid" ] || fail "$_name: the pid file names $(daemon_pid), not $_pid"
  [ "$(daemon_exe)" = "$_bin" ] || fail "$_name: process $_pid runs $(daemon_exe), not $_bin"
  wait_for 120 "$_name: the gap meter read nothing after the update" meter_past "$_e"
  # shellcheck disable=SC2046
  set -- $(gap_in "$_s" "$_e")
  figure "$_name-blackout" "$1" "s: the gap meter's longest interval between reads, $2 .. $3 (command $_s .. $_e; $4 reads answered during it)"
  figure "$_name-command" "$_took" "s: xenstore-control live-update $_args"
  figure "$_name-rss-kb" "$(rss)" "kB resident, $_bin after the update"
  count_nodes
  figure "$_name-ls" "$LS_T" "s: xenstore-ls -f / of $COUNT lines after the update"
  [ "$COUNT" = "$COUNT0" ] || fail "$_name: xenstore-ls -f / gives $COUNT lines after the update, $COUNT0 before"
  xq_log "$_name: process $_pid runs $_bin, $COUNT nodes as before"
}

xq_log "xenstored-lite serves dom0"
start_xenstored sh -c "exec $BIN -N 2>>$XSL_LOG" || fail "the daemon did not come up"
[ "$(daemon_exe)" = $BIN ] || fail "the daemon is $(daemon_exe), not $BIN"
timed_fill lite-fill "$LU_NODES"
t xenstore-write $GAP_KEY metered || fail "cannot write $GAP_KEY"
count_nodes
COUNT0=$COUNT
figure nodes "$COUNT0" "lines of xenstore-ls -f / ($LU_NODES written by dom0)"
figure lite-ls "$LS_T" "s: xenstore-ls -f / of $COUNT0 lines under xenstored-lite, before the updates"
figure lite-rss-kb "$(rss)" "kB resident, xenstored-lite before the updates"

xq_log "the gap meter starts"
: > $GAP
gap_meter &
METER=$!
wait_for 60 "the gap meter never read $GAP_KEY" test -s $GAP
q0=$(now)
sleep "$LU_QUIET"
q1=$(now)
# shellcheck disable=SC2046
set -- $(gap_in "$q0" "$q1")
figure meter-quiet-max "$1" "s: the meter's longest interval in $LU_QUIET s without update ($4 reads)"
figure meter-quiet-mean "$(awk -v n="$4" -v a="$q0" -v b="$q1" 'BEGIN { printf "%.3f", (b - a) / (n ? n : 1) }')" \
  "s a read, the meter without update"

update lite-to-c $CXS $CXS
update c-to-c $CXS -c "-N" $CXS
update c-to-lite $BIN -c "-N" $BIN
[ "$LU_LITE2" = 0 ] || update lite-to-lite $BIN2 $BIN2
kill "$METER" 2>/dev/null
METER=""

ratio() {
  awk -v a="$(val "$1")" -v b="$(val "$2")" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}
for m in blackout command; do
  figure "ratio-$m-lite-to-c/c-to-c" "$(ratio lite-to-c-$m c-to-c-$m)" "lite -> C over C -> C, $m"
  figure "ratio-$m-c-to-lite/c-to-c" "$(ratio c-to-lite-$m c-to-c-$m)" "C -> lite over C -> C, $m"
  [ "$LU_LITE2" = 0 ] \
    || figure "ratio-$m-lite-to-lite/c-to-c" "$(ratio lite-to-lite-$m c-to-c-$m)" "lite -> lite over C -> C, $m"
done
# dom0_tools_work's xenstore-ls has 30 s, too few for a large store: the
# store was listed after each update; here a write, read back over the
# socket and over dom0's ring, and the daemon's own check.
t xenstore-write /tool/lu-test done || fail "xenstore-write after the updates"
[ "$(ring xenstore-read /tool/lu-test)" = done ] || fail "dom0's ring does not read back the socket's write"
[ "$(timeout 300 $XSCTL check | tr -d '\n')" = OK ] || fail "xenstore-control check after the updates"
xq_log "LU-BLACKOUT DONE"
