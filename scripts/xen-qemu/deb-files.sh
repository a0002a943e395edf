#!/usr/bin/env bash
# Host side of the `deb` scenario (scripts/xen-qemu/deb.sh): puts into DIR
# what dom0 needs to install our package and start it with Debian's own
# /etc/init.d/xen, since the image is busybox with no dpkg:
#
#   DIR/xenstored-lite_<version>_amd64.deb      scripts/build-deb.sh
#   DIR/xen-utils-common_*.deb                   /etc/init.d/xen, its helpers
#                                                and the /etc/default/xen template
#   DIR/root/...                                 the host's dpkg, dpkg-deb,
#     dpkg-split, dpkg-query, GNU tar, ldconfig (what dpkg -i runs), Debian's
#     start-stop-daemon (busybox has its own), choom, dash (Debian's
#     /bin/sh, to run the init script: busybox's sh prefers its own applets,
#     start-stop-daemon among them, to what PATH finds) and the LSB init
#     helpers the init script sources; copied over dom0's / (their
#     libraries come with run.sh -d)
#   DIR/dpkg-status                              dpkg's status entries of
#     libc6 and libgcc-s1 on this host: the image's libc and libgcc_s are
#     these packages' files, so dpkg -i can check the package's Depends
#
#   scripts/xen-qemu/deb-files.sh DIR [CARGO_TARGET_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$1
mkdir -p "$DIR/root"

deb=$(CARGO_TARGET_DIR=${2:-${CARGO_TARGET_DIR:-}} bash "$ROOT/scripts/build-deb.sh" "$DIR" | tail -1)
[ -f "$deb" ] || { echo "deb-files: build-deb.sh gave no package" >&2; exit 1; }

(cd "$DIR" && apt-get download -q xen-utils-common >/dev/null 2>&1) || true
ls "$DIR"/xen-utils-common_*.deb >/dev/null 2>&1 \
  || { echo "deb-files: cannot download xen-utils-common" >&2; exit 1; }

for f in /usr/bin/dpkg /usr/bin/dpkg-deb /usr/bin/dpkg-split /usr/bin/dpkg-query \
         /usr/bin/tar /sbin/ldconfig /sbin/start-stop-daemon /usr/bin/choom /bin/dash \
         /lib/lsb/init-functions /lib/init/vars.sh /lib/lsb/init-functions.d/*; do
  mkdir -p "$DIR/root$(dirname "$f")"
  cp -L "$f" "$DIR/root$f"
done
dpkg-query -s libc6 libgcc-s1 > "$DIR/dpkg-status"
