# shellcheck shell=bash
# Sourced by the scripts/xen-qemu-*.sh harnesses (ROOT set to the
# repository). Provides
#   RUN_VM   scripts/xen-qemu/run-vm.sh, which boots the image
#   IMAGE    the image: $XENQEMU_DIR (default /var/tmp/xenqemu), built with
#            scripts/xen-qemu/build-image.sh when files are missing or the
#            scripts that go into the image changed since it was built
#   skip     skip REASON: prints "SKIPPED: REASON", exits 77
#   XENQEMU_CLEANUP  paths (space-separated) removed when the script exits
# and an EXIT trap that turns a 77 from anything but skip (a test command,
# cargo...) into 1, so that 77 always means "skipped".
#
# The tier is skipped only when the image cannot be built because QEMU or
# the Debian packages cannot be installed or downloaded (build-image.sh
# exits 77). Any other trouble building it is a failure (exit 1).
HARNESS=$ROOT/scripts/xen-qemu
RUN_VM=$HARNESS/run-vm.sh
IMAGE=${XENQEMU_DIR:-/var/tmp/xenqemu}
XENQEMU_CLEANUP=""
XENQEMU_SKIPPING=""

skip() { echo "SKIPPED: $*"; XENQEMU_SKIPPING=1; exit 77; }

xenqemu_on_exit() {
  local rc=$? p
  set +e
  for p in $XENQEMU_CLEANUP; do rm -rf "$p"; done
  if [ "$rc" = 77 ] && [ -z "$XENQEMU_SKIPPING" ]; then
    echo "(exit status 77 of a failure reported as 1: 77 means the tier was skipped)"
    rc=1
  fi
  exit "$rc"
}
trap xenqemu_on_exit EXIT

# The image depends on these files (the two init scripts and lib.sh are
# copied into it); their hash is kept in IMAGE/stamp.
xenqemu_stamp() {
  (cd "$HARNESS" && sha256sum build-image.sh dom0-init.sh guest-init.sh lib.sh)
}

xenqemu_image_ok() {
  local f
  for f in xen vmlinuz dom0.cpio domU.cpio.gz qemu/usr/bin/qemu-system-x86_64 stamp; do
    [ -e "$IMAGE/$f" ] || return 1
  done
  [ "$(cat "$IMAGE/stamp")" = "$(xenqemu_stamp)" ]
}

mkdir -p "$IMAGE" || { echo "cannot create the image folder $IMAGE (XENQEMU_DIR)"; exit 1; }
IMAGE=$(cd "$IMAGE" && pwd)
# One build at a time per folder: several harnesses may start together.
exec 9> "$IMAGE/.lock"
flock 9
if ! xenqemu_image_ok; then
  echo "building the Xen/QEMU image in $IMAGE (log: $IMAGE/build.log)"
  rm -f "$IMAGE/stamp"
  xenqemu_start=$(date +%s)
  set +e
  bash "$HARNESS/build-image.sh" "$IMAGE" > "$IMAGE/build.log" 2>&1
  xenqemu_rc=$?
  set -e
  if [ "$xenqemu_rc" = 77 ]; then
    tail -5 "$IMAGE/build.log"
    skip "$(sed -n 's/^\[build-image\] cannot get the packages: //p' "$IMAGE/build.log" | tail -1)" \
         "(the Xen/QEMU image needs Debian packages; see $IMAGE/build.log)"
  elif [ "$xenqemu_rc" != 0 ]; then
    tail -40 "$IMAGE/build.log"
    echo "building the Xen/QEMU image failed (status $xenqemu_rc), see $IMAGE/build.log"
    exit 1
  fi
  xenqemu_stamp > "$IMAGE/stamp"
  echo "image built in $(( $(date +%s) - xenqemu_start )) s"
fi
exec 9>&-
"$IMAGE/qemu/usr/bin/qemu-system-x86_64" --version > /dev/null \
  || { echo "the image's QEMU ($IMAGE/qemu) does not run"; exit 1; }
