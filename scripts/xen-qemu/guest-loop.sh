# Runs inside the PV guest (domU) as /test/guest.sh (run-vm.sh -g): a client of
# the xenstore daemon through the guest kernel's xenbus and its ring.
#
# It loops on xenstore writes and reads (data/loop/k0..k7 written in one
# transaction, read back in another and compared; data/count = iterations)
# and holds a watch on data/fromdom0: on each event it reads the value and
# writes it back to data/seen, so dom0 can tell that its write reached the
# guest's watch. Any failed or wrong request is printed as "GUEST: ERROR ..."
# and counted. When dom0 writes data/fromdom0 = stop, the loop ends,
# data/done = "<iterations> <errors>" is written, and the guest waits to be
# destroyed.
domid=$(xenstore-read domid) || { echo "GUEST: ERROR cannot read domid"; exit 1; }
echo "GUEST: loop guest up, domid=$domid"
errs=0
err() { errs=$((errs+1)); echo "GUEST: ERROR $*"; }

xenstore-write data/fromdom0 init || err "write data/fromdom0"
# The first line is the event every new watch fires at once.
: > /tmp/watch.out    # there before the watcher (a child) opens it
xenstore-watch /local/domain/$domid/data/fromdom0 >> /tmp/watch.out 2>/tmp/watch.err &
i=0
while [ "$(wc -l < /tmp/watch.out)" -lt 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ "$(wc -l < /tmp/watch.out)" -ge 1 ] || err "the watch on data/fromdom0 never fired"
xenstore-write data/ready 1 || err "write data/ready"

i=0 events=1 val=init
while [ "$val" != stop ]; do
  i=$((i+1))
  # Eight writes, then eight reads, back to back on the ring; the tools
  # wrap several keys in a transaction, so transactions are open (and cross
  # the hand-overs) most of the time.
  pairs="" keys="" want=""
  for k in 0 1 2 3 4 5 6 7; do
    pairs="$pairs data/loop/k$k v$i.$k"; keys="$keys data/loop/k$k"; want="$want v$i.$k"
  done
  xenstore-write $pairs || err "#$i: writing data/loop/k0..k7 failed (rc=$?)"
  got=$(xenstore-read $keys) || err "#$i: reading data/loop/k0..k7 failed (rc=$?)"
  got=$(echo $got)
  [ "$got" = "${want# }" ] || err "#$i: data/loop/k0..k7 read back as '$got', written as '${want# }'"
  xenstore-write data/count "$i" || err "#$i: write data/count failed (rc=$?)"
  n=$(wc -l < /tmp/watch.out)
  if [ "$n" -gt "$events" ]; then
    events=$n
    val=$(xenstore-read data/fromdom0) || err "#$i: read data/fromdom0 failed (rc=$?)"
    echo "GUEST: watch event $n at iteration $i: data/fromdom0='$val'"
    xenstore-write data/seen "$val" || err "#$i: write data/seen failed (rc=$?)"
  fi
done
[ -s /tmp/watch.err ] && err "xenstore-watch: $(cat /tmp/watch.err)"
echo "GUEST: LOOP DONE iterations=$i errors=$errs watch-events=$events"
xenstore-write data/done "$i $errs" || echo "GUEST: ERROR write data/done"
# dom0 destroys us from here.
sleep 600
