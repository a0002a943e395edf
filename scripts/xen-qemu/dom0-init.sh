#!/bin/sh
# dom0's /init (PID 1) in the image of build-image.sh. Mounts the usual
# file systems, loads the Xen modules and mounts xenfs, then runs the
# command run-vm.sh put at /test/cmd.sh (cwd /test), sends back what it
# left in /test/out, prints XENQEMU_RC=<its status> on the console and
# powers the machine off. run-vm.sh watches the console for these lines:
#   XENQEMU: dom0 ready          the devices are there, the command starts
#   XENQEMU_OUT_BEGIN/_END       base64 of a tar.gz of /test/out between them
#   XENQEMU_RC=<n>               the command's exit status
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
export HOME=/root
uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run/xen /run/xenstored /run/lock /var/log/xen/console
ln -sfn /run/lock /var/lock
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
echo "XENQEMU: dom0 userspace after $(uptime_s) s"

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
  insmod /lib/modules/xen/$m.ko || echo "XENQEMU: cannot load module $m"
done
mount -t xenfs xenfs /proc/xen || echo "XENQEMU: cannot mount xenfs on /proc/xen"
# The device nodes appear asynchronously (devtmpfs): give them 5 s.
n=0
while [ $n -lt 50 ] && [ ! -c /dev/xen/privcmd ]; do sleep 0.1; n=$((n + 1)); done
absent=""
for dev in evtchn gntdev gntalloc privcmd xenbus xenbus_backend; do
  [ -c /dev/xen/$dev ] || absent="$absent $dev"
done
echo "XENQEMU: /dev/xen has: $(ls /dev/xen | tr '\n' ' ')"
echo "XENQEMU: /proc/xen/capabilities: $(cat /proc/xen/capabilities 2>/dev/null)"
[ -z "$absent" ] || echo "XENQEMU: /dev/xen lacks:$absent"
echo "XENQEMU: dom0 ready after $(uptime_s) s"

mkdir -p /test/out
if [ -f /test/cmd.sh ]; then
  cd /test && sh /test/cmd.sh
  rc=$?
else
  echo "XENQEMU: no /test/cmd.sh, nothing to run"
  rc=0
fi
cd /
if [ -n "$(ls -A /test/out 2>/dev/null)" ]; then
  echo "XENQEMU_OUT_BEGIN"
  tar -C /test/out -czf - . | base64
  echo "XENQEMU_OUT_END"
fi
echo "XENQEMU_RC=$rc"
sync
# ACPI power-off through Xen ends QEMU; run-vm.sh kills it if not.
poweroff -f
sleep 60
