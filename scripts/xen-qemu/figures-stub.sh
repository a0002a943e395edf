# dom0 command of stubdom-figures.sh's stub boots: the stub domain
# (/test/files/xenstored-stubdom) started by init-xenstore-domain with
# --memory $STUB_MEM (set by stubdom-figures.sh on the first line); dom0's
# tools reach it through /dev/xen/xenbus (no socket exists). Its memreport
# (XS_CONTROL memreport, answered on its console) after boot, with 1,000
# and 10,000 nodes and when full; the read and write rates as in
# figures-dom0.sh; nodes written until a write fails.
. /xenqemu/lib.sh
. /test/files/dom0-lib.sh
. /test/files/figures-lib.sh
STUB=/test/files/xenstored-stubdom
STUB_CONSOLE=/var/log/xen/console/guest-Xenstore.log
# shellcheck disable=SC2034
XSL_LOG=$STUB_CONSOLE
STUB_MEM=${STUB_MEM:-8}
RATES=${RATES:-1}             # 0: no read and write rates
MID=${MID:-10000}             # the second memreport's node count
FULL=${FULL:-1}               # 0: do not fill the store up

# memreport WHEN: xenstore-control memreport, and the lines the stub then
# printed on its console, as "MEMREPORT WHEN | line".
memreport() {
  _n0=$(wc -l < "$STUB_CONSOLE")
  _out=$(t $XSCTL memreport 2>&1) || xq_log "xenstore-control memreport failed: $_out"
  sleep 1    # xenconsoled's copy of the console
  tail -n +$((_n0 + 1)) "$STUB_CONSOLE" | tr -d '\r' | sed "s/^/MEMREPORT $1 | /"
  # the kernel's last heap line (at start-up, then after each memreport)
  grep -a 'heap [0-9]* KiB used' "$STUB_CONSOLE" | tail -1 | tr -d '\r' | sed "s/^/MEMREPORT $1 (last heap line) | /"
  [ -z "$_out" ] || echo "$_out" | sed "s/^/MEMREPORT $1 (reply) | /"
}

mkdir -p /var/lib/xen /var/run/xen
s=$(now)
timeout 120 $XENBIN/init-xenstore-domain --kernel $STUB --memory "$STUB_MEM" > /tmp/init-xs.out 2>&1 \
  || { cat /tmp/init-xs.out; fail "init-xenstore-domain"; }
xq_log "init-xenstore-domain --memory $STUB_MEM: $(since "$s") s"
t $XENBIN/xen-init-dom0 || fail "xen-init-dom0"
start_xenconsoled || fail "xenconsoled"
wait_for 30 "no stub console" test -s "$STUB_CONSOLE"
figure stub$STUB_MEM-kernel-bytes "$(wc -c < $STUB)" "bytes (the ELF init-xenstore-domain loads)"
figure stub$STUB_MEM-nodes-after-boot "$(dev xenstore-ls -f / | wc -l)" "nodes"
xl list | sed 's/^/XL | /'
memreport after-boot
fill_to 1000 || fail "writing 1,000 nodes"
memreport 1000-nodes
if [ "$RATES" = 1 ]; then
  timed_fill stub-write-more "$MID"
else
  fill_to "$MID" || fail "writing $MID nodes"
fi
memreport "$MID-nodes"
[ "$RATES" = 1 ] && read_rate stub-read
if [ "$FULL" = 0 ]; then
  :
elif fill_until_full stub$STUB_MEM-full; then
  memreport full
  # Still serving after the failed writes?
  [ "$(dev xenstore-read $FILL/n0)" = value-of-node-0 ] || fail "the stub does not answer after it filled up"
  dev $XSCTL check > /dev/null || xq_log "xenstore-control check failed once full"
else
  xq_log "the stub stopped answering once full: $(timeout 20 xl list 2>&1 | grep Xenstore)"
fi
xq_log "---- the stub's console ----"
tr -d '\r' < "$STUB_CONSOLE" | sed 's/^/  stub| /' | tail -200
xq_log "FIGURES-STUB DONE"
