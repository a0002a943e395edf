#!/bin/bash
# run-vm.sh [options] IMAGEDIR CMDFILE
#
# Boots the image build-image.sh made in IMAGEDIR (Xen 4.17 with a Linux PV
# dom0) in QEMU, runs CMDFILE with busybox sh as root in dom0 (cwd /test),
# and exits with CMDFILE's exit status.
#
#   -d DIR    DIR's files at /test/files in dom0; the host's shared
#             libraries of the dynamic ELF programs among them go along
#   -g DIR    DIR's files at /test in the PV test guest's initramfs; when
#             DIR/guest.sh exists the guest runs it and prints GUEST_RC=<n>
#             (dom0's side: run_guest_script of /xenqemu/lib.sh)
#   -o DIR    what CMDFILE left in dom0's /test/out is copied to DIR
#   -l LOG    the serial console's log (default ./xenqemu-console.log)
#   -t SECS   stop QEMU after SECS seconds, exit 124 (default 600)
#   -b SECS   dom0 must be ready (its /init ran) within SECS seconds
#             (default 300; it takes 5-40 s under TCG); when it is not,
#             the boot stalled before CMDFILE ran: QEMU is stopped and
#             the machine booted once more, then exit 123
#   -a ACCEL  tcg (default) or kvm
#   -c CPU    QEMU's -cpu (default qemu64)
#   -m MB     the machine's memory (default 1536; dom0 has 512 MB of it)
#   -s N      virtual CPUs (default 2)
#   -x ARGS   more Xen command-line arguments
#   -k ARGS   more dom0 kernel command-line arguments
#   -q        do not copy the console to stdout
#
# Exit status: CMDFILE's (from the XENQEMU_RC=<n> console line); 123 dom0
# did not come up in two boots; 124 the timeout; 125 no XENQEMU_RC line (QEMU failed, Xen or dom0 crashed); 2
# wrong usage.
# Env: QEMU=program to use instead of IMAGEDIR/qemu's qemu-system-x86_64.
#
# Under TCG only: -cpu max crashes the PV dom0 (a page fault in Xen's
# create_bounce_frame; max,-smap,-smep works), qemu64 is what Xen's own CI
# boots, and the test programs must then be built for baseline x86-64.
set -uo pipefail

usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

FILES="" GUEST="" BACK="" LOG=$PWD/xenqemu-console.log TIMEOUT=600 BOOT=300
ACCEL=tcg CPU=qemu64 MEM=1536 NCPU=2 XENMORE="" DOM0MORE="" QUIET=0
ARGS=("$@")
while getopts "d:g:o:l:t:b:a:c:m:s:x:k:qh" opt; do
  case $opt in
    d) FILES=$OPTARG ;; g) GUEST=$OPTARG ;; o) BACK=$OPTARG ;; l) LOG=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;; b) BOOT=$OPTARG ;; a) ACCEL=$OPTARG ;; c) CPU=$OPTARG ;; m) MEM=$OPTARG ;;
    s) NCPU=$OPTARG ;; x) XENMORE=$OPTARG ;; k) DOM0MORE=$OPTARG ;; q) QUIET=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# = 2 ] || usage
IMG=$1 CMDFILE=$2
[ -f "$IMG/dom0.cpio" ] && [ -f "$IMG/xen" ] || { echo "run-vm.sh: no image in $IMG" >&2; exit 2; }
[ -f "$CMDFILE" ] || { echo "run-vm.sh: no command file $CMDFILE" >&2; exit 2; }
IMG=$(cd "$IMG" && pwd)
case $BOOT in '' | *[!0-9]*) echo "run-vm.sh: -b wants whole seconds, not '$BOOT'" >&2; exit 2 ;; esac

# A dom0 kernel under TCG now and then stops making progress early in its
# boot (seen once in CI: silent after "VFS: Dquot-cache", 900 s). Nothing
# of the test has run then, so the machine is booted once more; the first
# console is kept beside the second. A stall after dom0 is ready is never
# retried: that is the test's failure to report.
if [ -z "${XENQEMU_BOOT_ATTEMPT:-}" ]; then
  stalled=$(mktemp /tmp/xenqemu-stalled.XXXXXX)
  XENQEMU_BOOT_ATTEMPT=1 XENQEMU_STALLED=$stalled "$0" "${ARGS[@]}"
  rc=$?
  # Only a stall that the first boot itself noticed, not a command's 123.
  if [ ! -s "$stalled" ]; then rm -f "$stalled"; exit "$rc"; fi
  rm -f "$stalled"
  mv -f "$LOG" "$LOG.stalled-boot" 2>/dev/null
  echo "run-vm.sh: dom0 was not ready within $BOOT s, before the command ran;" \
    "booting again (the first console is in $LOG.stalled-boot)" >&2
  XENQEMU_BOOT_ATTEMPT=2 exec "$0" "${ARGS[@]}"
fi
if [ -z "${QEMU:-}" ]; then
  QEMU=$IMG/qemu/usr/bin/qemu-system-x86_64
  [ -x "$QEMU" ] || QEMU=$(command -v qemu-system-x86_64) \
    || { echo "run-vm.sh: no qemu-system-x86_64" >&2; exit 2; }
fi

TMP=$(mktemp -d /tmp/xenqemu-run.XXXXXX)
QPID=""
finish() {
  [ -z "$QPID" ] || kill "$QPID" 2>/dev/null
  rm -rf "$TMP"
}
trap finish EXIT
trap 'exit 130' INT TERM

# newc cpio of a tree, on stdout
cpio_of() { (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet); }

# with_libs TREE BASE: for each dynamic ELF under TREE/test, copy the host
# libraries it needs into TREE/lib/x86_64-linux-gnu unless BASE (the
# image's tree) has them already.
with_libs() {
  local tree=$1 base=$2 f lib name
  mkdir -p "$tree/lib/x86_64-linux-gnu"
  find "$tree/test" -type f | while read -r f; do
    [ "$(head -c4 "$f" 2>/dev/null)" = $'\x7fELF' ] || continue
    ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
      name=$(basename "$lib")
      [ -e "$base/lib/x86_64-linux-gnu/$name" ] || [ -e "$tree/lib/x86_64-linux-gnu/$name" ] \
        || cp -L "$lib" "$tree/lib/x86_64-linux-gnu/$name"
    done
  done
}

# ---- this run's additions to dom0's initramfs (a second cpio appended to
# the image's: the kernel unpacks both, the later one on top)
ADD=$TMP/dom0-add
mkdir -p "$ADD/test"
cp "$CMDFILE" "$ADD/test/cmd.sh"
if [ -n "$FILES" ]; then mkdir -p "$ADD/test/files"; cp -a "$FILES/." "$ADD/test/files/"; fi
with_libs "$ADD" "$IMG/dom0-root"
if [ -n "$GUEST" ]; then
  # The guest's ramdisk is read by libxenguest, which fails on a gzip file
  # of several members: the base and the additions go in one gzip stream.
  GADD=$TMP/guest-add
  mkdir -p "$GADD/test" "$ADD/guest"
  cp -a "$GUEST/." "$GADD/test/"
  with_libs "$GADD" "$IMG/domU-root"
  { gzip -dc "$IMG/domU.cpio.gz"; cpio_of "$GADD"; } | gzip -1 > "$ADD/guest/initrd.gz"
fi
{ cat "$IMG/dom0.cpio"; cpio_of "$ADD"; } > "$TMP/initrd"

# ---- boot: QEMU loads Xen as a multiboot kernel; its "modules" are dom0's
# kernel (with its command line) and dom0's initramfs.
XENARGS="console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all console_timestamps=boot"
XENARGS="$XENARGS noreboot dom0_mem=512M,max:512M $XENMORE"
DOM0ARGS="console=hvc0 earlyprintk=xen panic=-1 $DOM0MORE"
: > "$LOG"
START=$(date +%s.%N)
elapsed() { awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# The unpacked .deb lacks the firmware links an installed QEMU has: -L
# points it at the firmware packages (seabios, ipxe-qemu, qemu-system-data).
"$QEMU" -L /usr/share/seabios -L /usr/share/qemu -L "$IMG/qemu/usr/share/qemu" \
  -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$NCPU" \
  -display none -monitor none -nic none -no-reboot -serial "file:$LOG" \
  -kernel "$IMG/xen" -append "$XENARGS" \
  -initrd "$IMG/vmlinuz $DOM0ARGS,$TMP/initrd" \
  < /dev/null > "$TMP/qemu.out" 2>&1 &
QPID=$!

SHOWN=0
show_console() {    # the console bytes not shown yet, to stdout
  [ "$QUIET" = 1 ] && return
  local size
  size=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
  [ "$size" -gt "$SHOWN" ] || return 0
  tail -c +$((SHOWN + 1)) "$LOG" | head -c $((size - SHOWN)) | tr -d '\r'
  SHOWN=$size
}
console() { tr -d '\r' < "$LOG"; }

READY="" DONE="" RC="" WHY=""
while :; do
  sleep 1
  show_console
  [ -n "$READY" ] || ! grep -aq 'XENQEMU: dom0 ready' "$LOG" || READY=$(elapsed)
  if console | grep -aq '^XENQEMU_RC='; then
    DONE=$(elapsed)
    RC=$(console | grep -a -m1 '^XENQEMU_RC=' | cut -d= -f2 | tr -dc '0-9')
    break
  fi
  kill -0 "$QPID" 2>/dev/null || { WHY="QEMU ended"; break; }
  if grep -aq -e 'KVM internal error' -e 'emulation failure' "$TMP/qemu.out"; then
    WHY="KVM could not run Xen"; break
  fi
  if grep -aq -e 'Hardware Dom0 crashed' -e 'Kernel panic - not syncing' -e 'Panic on CPU' "$LOG"; then
    WHY="crash"; sleep 2; break    # the rest of the crash report
  fi
  if awk -v e="$(elapsed)" -v t="$TIMEOUT" 'BEGIN { exit !(e >= t) }'; then
    RC=124 WHY="timeout after $TIMEOUT s"; break
  fi
  if [ -z "$READY" ] && awk -v e="$(elapsed)" -v t="$BOOT" 'BEGIN { exit !(e >= t) }'; then
    RC=123 WHY="dom0 not ready after $BOOT s (boot $XENQEMU_BOOT_ATTEMPT of 2)"
    [ -z "${XENQEMU_STALLED:-}" ] || echo stalled > "$XENQEMU_STALLED"
    break
  fi
done

# After XENQEMU_RC, dom0 powers off and QEMU ends by itself: wait up to 30 s.
HOW=""
if [ -n "$RC" ] && [ "$RC" != 124 ] && [ "$RC" != 123 ]; then
  for _ in $(seq 60); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done
fi
if kill -0 "$QPID" 2>/dev/null; then kill "$QPID"; HOW=killed; else HOW="ended by itself"; fi
wait "$QPID" 2>/dev/null
QPID=""
show_console
[ "$QUIET" = 1 ] || echo
cat "$TMP/qemu.out" >&2

if [ -n "$BACK" ] && console | grep -aq '^XENQEMU_OUT_END$'; then
  mkdir -p "$BACK"
  console | sed -n '/^XENQEMU_OUT_BEGIN$/,/^XENQEMU_OUT_END$/p' | sed '1d;$d' \
    | base64 -d | tar -C "$BACK" -xzf - || echo "run-vm.sh: could not unpack /test/out" >&2
fi
[ -n "$RC" ] || RC=125
echo "run-vm.sh: accel=$ACCEL cpu=$CPU dom0 ready ${READY:+at }${READY:-never}${READY:+ s}, command done ${DONE:+at }${DONE:-never}${DONE:+ s}, QEMU $HOW at $(elapsed) s${WHY:+ ($WHY)}; rc=$RC; console in $LOG" >&2
exit "$RC"
