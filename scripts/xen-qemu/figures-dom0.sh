# dom0 command of stubdom-figures.sh's first boot: the read and write
# rates of dom0's xenstore tools through /dev/xen/xenbus, served by Xen's C
# xenstored in dom0, then by xenstored-lite in dom0 (C live-updates to it,
# so the store, dom0's ring and the kernel's connection stay the same).
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
. /test/files/figures-lib.sh
BIN=/test/files/xenstored-lite
CXS=$XENBIN/xenstored

xq_log "C xenstored in dom0"
start_xenstored sh -c "exec $CXS -N 2>>$XSL_LOG" || fail "C xenstored did not come up"
[ "$(daemon_exe)" = "$CXS" ] || fail "the daemon is $(daemon_exe), not C xenstored"
figure c-nodes-after-boot "$(dev xenstore-ls -f / | wc -l)" "nodes"
# Every server reads at the same store size: MID (10,000) nodes written by dom0.
timed_fill c-write 1000
timed_fill c-write-more "${MID:-10000}"
read_rate c-read
figure c-rss-kb "$(awk '/^VmRSS/ { print $2 }' "/proc/$(daemon_pid)/status")" "kB resident"

xq_log "C xenstored live-updates to xenstored-lite"
live_update $BIN -c "-N" $BIN
read_rate lite-read
# The same nodes written new again: removed, then rewritten.
dev xenstore-rm $FILL || fail "xenstore-rm $FILL"
# shellcheck disable=SC2034
NODES=0
timed_fill lite-write 1000
timed_fill lite-write-more "${MID:-10000}"
figure lite-rss-kb "$(awk '/^VmRSS/ { print $2 }' "/proc/$(daemon_pid)/status")" "kB resident"
dom0_tools_work
xq_log "FIGURES-DOM0 DONE"
