# dom0 command (run-vm.sh CMDFILE): the Debian package on real Xen. With
# the image's Debian dpkg (and the host's libc6 status entry from
# scripts/xen-qemu/deb-files.sh), `dpkg -i` installs
# xenstored-lite_*.deb, /etc/default/xen gets the two lines of the README's
# "Installing on a Xen host (Debian)", and Debian's own /etc/init.d/xen
# (from xen-utils-common) starts the daemon: start-stop-daemon + choom, the
# daemon forks and writes /run/xenstore.pid, the script waits for
# `xenstore-read -s /`, runs xen-init-dom0 and starts xenconsoled. Then a
# PV guest loops on reads, writes and a watch over its ring, is stopped
# and destroyed, a second `/etc/init.d/xen start` leaves the daemon alone,
# and `start-stop-daemon --stop --pidfile /run/xenstore.pid` stops it.
#
# The Debian tools are called by full path, so that busybox's applets of
# the same names never stand in for them.
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
F=/test/files/deb
PIDF=/run/xenstore.pid
BIN=/usr/sbin/xenstored-lite

xq_log "STEP 1: Debian's dpkg and start-stop-daemon in dom0"
cp $F/dpkg-status /var/lib/dpkg/status
/usr/bin/dpkg --version | head -1
/sbin/start-stop-daemon --version | head -1

xq_log "STEP 2: dpkg -i the package"
/usr/bin/dpkg -i $F/xenstored-lite_*_amd64.deb || fail "dpkg -i failed"
/usr/bin/dpkg-query -W -f '${Package} ${Version} ${Status}\n' xenstored-lite
[ "$(/usr/bin/dpkg-query -W -f '${Status}' xenstored-lite)" = "install ok installed" ] || fail "dpkg does not list xenstored-lite as installed"
/usr/bin/dpkg -L xenstored-lite | sed 's/^/  dpkg -L: /'
[ -s /usr/share/man/man8/xenstored-lite.8.gz ] || fail "/usr/share/man/man8/xenstored-lite.8.gz is not installed"
[ -x $BIN ] || fail "$BIN is not installed"
xq_log "installed: $($BIN --version), man page $(wc -c < /usr/share/man/man8/xenstored-lite.8.gz) bytes"

xq_log "STEP 3: xen-utils-common's /etc/init.d/xen, /etc/default/xen + our two lines"
[ -f /etc/init.d/xen ] && [ -f /etc/default/xen ] || fail "the image has no /etc/init.d/xen or /etc/default/xen"
# The image's /etc/default/xen is what xen-utils-common's postinst
# installs; then the operator's two lines (the -T is there to show that
# XENSTORED_ARGS reaches the daemon). XENCONSOLED_ARGS: the guest console
# log the helpers read.
cat >> /etc/default/xen <<EOF
XENSTORED=$BIN
XENSTORED_ARGS="-T $ACCESS_LOG"
XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
EOF
tail -3 /etc/default/xen
[ "$(cat /sys/hypervisor/type 2>/dev/null)" = xen ] || fail "/sys/hypervisor/type is not xen: the init script would do nothing"

xq_log "STEP 4: /etc/init.d/xen start"
s=$(now)
# Its stderr (so the daemon's, which keeps a file) goes to the daemon log.
/bin/dash /etc/init.d/xen start > /tmp/initd.out 2>> $XSL_LOG; rc=$?
sed 's/^/  init.d| /' /tmp/initd.out
[ $rc = 0 ] || fail "/etc/init.d/xen start: rc=$rc"
xq_log "/etc/init.d/xen start: rc=0 in $(since $s) s"
[ -s $PIDF ] || fail "no pid file $PIDF"
pid=$(cat $PIDF)
[ -d /proc/$pid ] || fail "$PIDF names $pid, which is not running"
[ "$(readlink /proc/$pid/exe)" = $BIN ] || fail "process $pid runs $(readlink /proc/$pid/exe), not $BIN"
ppid=$(awk '{ print $4 }' /proc/$pid/stat)
[ "$ppid" = 1 ] || fail "daemon $pid has parent $ppid: it did not fork and detach"
oom=$(cat /proc/$pid/oom_score_adj)
[ "$oom" = -1000 ] || fail "oom_score_adj of $pid is $oom, not choom's -1000"
tr '\0' ' ' < /proc/$pid/cmdline > /tmp/cmdline
xq_log "daemon $pid (parent 1, oom_score_adj $oom): $(cat /tmp/cmdline)"
grep -q -- "--pid-file $PIDF" /tmp/cmdline || fail "the daemon did not get --pid-file $PIDF"
t xenstore-read -s / > /dev/null || fail "xenstore-read -s / does not answer"
grep -q "serving dom0's own ring" $XSL_LOG || fail "dom0's own ring (xsd_kva) not served"
[ "$(t xenstore-read /local/domain/0/name)" = Domain-0 ] || fail "xen-init-dom0 (run by the init script) did not write /local/domain/0/name"
[ -s /run/xenconsoled.pid ] && [ -d /proc/$(cat /run/xenconsoled.pid) ] || fail "the init script did not start xenconsoled"
[ -s $ACCESS_LOG ] || fail "XENSTORED_ARGS=-T did not reach the daemon (no access log)"
dom0_tools_work

xq_log "STEP 5: a PV guest talks to it over its ring"
boot_loop_guest
poke installed-by-dpkg
guest_progress 2 "under the packaged daemon"
start_release_watcher
stop_guest_loop
destroy_guest
dom0_tools_work

xq_log "STEP 6: /etc/init.d/xen start again leaves the running daemon alone"
/bin/dash /etc/init.d/xen start > /tmp/initd2.out 2>> $XSL_LOG; rc=$?
[ $rc = 0 ] || fail "the second /etc/init.d/xen start: rc=$rc"
[ "$(cat $PIDF)" = "$pid" ] || fail "the second start changed $PIDF to $(cat $PIDF)"
[ -d /proc/$pid ] || fail "daemon $pid is gone after the second start"
grep -q "already serves" $XSL_LOG || fail "the second start did not say a daemon already serves the socket"
dom0_tools_work

xq_log "STEP 7: start-stop-daemon --stop --pidfile $PIDF"
s=$(now)
/sbin/start-stop-daemon --stop --quiet --retry=TERM/30/KILL/5 --pidfile $PIDF; rc=$?
[ $rc = 0 ] || fail "start-stop-daemon --stop: rc=$rc"
gone() { [ ! -d /proc/$pid ] || [ "$(awk '{ print $3 }' /proc/$pid/stat)" = Z ]; }
wait_for 30 "daemon $pid still runs after start-stop-daemon --stop" gone
xq_log "daemon $pid stopped by start-stop-daemon --stop in $(since $s) s"
[ ! -e /run/xenstored/socket ] || fail "the socket stays after the daemon stopped"
# (Xen 4.17's xenstore-read -s then waits on dom0's ring, which nobody
# serves either: the timeout ends it.)
timeout 10 xenstore-read -s / > /dev/null 2>&1 && fail "something still answers xenstore-read -s /"
grep -q "stopping" $XSL_LOG || fail "the daemon did not log its stop"
xq_log "the daemon logged its stop, its socket is gone, xenstore-read -s / gets no answer"
finish "LIVE-UPDATE-DEB PASS"
