#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, idempotently: packages
# already installed are left alone, and apt-get runs only when something is
# missing. Called by scripts/test.sh; safe to run by hand.
set -euo pipefail

# gcc + linux-libc-dev: the ioctl-number tests compile a C program against
# the kernel's xen/*.h headers; gcc also builds tests/c-shim/xen-shim.c.
# xenstore-utils, python3-pyxs, xen-utils-4.17 (for the real
# /usr/lib/xen-4.17/bin/xenstore-control): the clients users run against
# xenstored, which the compatibility tests drive unchanged. xen-utils-4.17
# also brings C xenstored, which tests/tests/c_compat.rs runs under the
# shim to compare its replies with ours.
# man-db: scripts/test-deb.sh checks that the package's man page renders.
# libxen-dev: Xen 4.17's public headers in /usr/include/xen, against which
# gnttab's domain-info layout test checks our sysctl/domctl mirrors.
PACKAGES=(gcc linux-libc-dev xenstore-utils python3-pyxs xen-utils-4.17 man-db libxen-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-test-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
