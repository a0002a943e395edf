#!/usr/bin/env bash
# Host side of the `deb` scenario (scripts/xen-qemu/deb.sh): puts into DIR
# what dom0 needs beyond the image (which already has Debian's dpkg,
# start-stop-daemon, choom, dash as /bin/sh, xen-utils-common's
# /etc/init.d/xen and /etc/default/xen; scripts/xen-qemu/build-image.sh):
#
#   DIR/xenstored-lite_<version>_amd64.deb      scripts/build-deb.sh
#   DIR/dpkg-status                              dpkg's status entries of
#     libc6 and libgcc-s1 on this host: the image's libc and libgcc_s are
#     these packages' files, so dpkg -i can check the package's Depends
#
#   scripts/xen-qemu/deb-files.sh DIR [CARGO_TARGET_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$1
mkdir -p "$DIR"

deb=$(CARGO_TARGET_DIR=${2:-${CARGO_TARGET_DIR:-}} bash "$ROOT/scripts/build-deb.sh" "$DIR" | tail -1)
[ -f "$deb" ] || { echo "deb-files: build-deb.sh gave no package" >&2; exit 1; }
dpkg-query -s libc6 libgcc-s1 > "$DIR/dpkg-status"
