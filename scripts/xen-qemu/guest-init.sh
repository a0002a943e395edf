#!/bin/sh
# /init of the PV test guest (domU) that dom0 starts with `xl create
# /guest/guest.cfg`. Loads the Xen modules; if run-vm.sh -g added
# /test/guest.sh, runs it (cwd /test), prints GUEST_RC=<its status> on the
# guest's console (which xenconsoled logs in dom0) and powers off.
# Without it, the guest writes data/hello, waits up to 2 minutes for dom0
# to write data/ack, and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
  insmod /lib/modules/xen/$m.ko 2>/dev/null || echo "GUEST: cannot load module $m"
done
mount -t xenfs xenfs /proc/xen 2>/dev/null
echo "GUEST: up after $(cut -d' ' -f1 /proc/uptime) s, /dev/xen has: $(ls /dev/xen 2>/dev/null | tr '\n' ' ')"

if [ -f /test/guest.sh ]; then
  cd /test && sh /test/guest.sh
  echo "GUEST_RC=$?"
  poweroff -f
fi

domid=$(xenstore-read domid)
xenstore-write data/hello "hello from domain $domid"
echo "GUEST: domain $domid wrote data/hello (rc=$?)"
n=0
while [ $n -lt 240 ] && ! xenstore-read data/ack >/dev/null 2>&1; do
  sleep 0.5; n=$((n + 1))
done
echo "GUEST: data/ack='$(xenstore-read data/ack 2>/dev/null)', powering off"
poweroff -f
