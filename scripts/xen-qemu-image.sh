# Sourced by the scripts/xen-qemu-*.sh harnesses (needs ROOT set): finds
# the xen-qemu harness (SHARED) and its image (IMAGE), building the image
# from Debian packages when it is missing; defines skip() and uses it,
# exiting 0 with "skipping: <reason>", only when QEMU or the packages
# cannot be had.
SHARED=${XENQEMU_SHARED:-$ROOT/../shared/xen-qemu}
[ -d "$SHARED" ] || SHARED=/work/shared/xen-qemu
IMAGE=${XENQEMU_DIR:-/var/tmp/xenqemu}

skip() { echo "skipping: $*"; exit 0; }

[ -f "$SHARED/run.sh" ] || skip "xen-qemu harness not found (looked in $SHARED)"
if [ ! -f "$IMAGE/xen" ] || [ ! -f "$IMAGE/dom0.cpio" ]; then
  [ "$(id -u)" = 0 ] || skip "no image in $IMAGE and not root (build.sh needs apt)"
  command -v apt-get >/dev/null || skip "no image in $IMAGE and no apt-get"
  echo "building the xen-qemu image in $IMAGE"
  if ! bash "$SHARED/build.sh" "$IMAGE" > "$IMAGE.build.log" 2>&1; then
    tail -20 "$IMAGE.build.log"
    skip "building the Xen/QEMU image failed (Debian packages unavailable?), see $IMAGE.build.log"
  fi
fi
