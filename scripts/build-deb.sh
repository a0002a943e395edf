#!/usr/bin/env bash
# Builds the Debian package xenstored-lite_<version>_amd64.deb with plain
# dpkg-deb (every Debian has it; no cargo-deb, no debhelper) and prints its
# path as the last line of stdout.
#
#   scripts/build-deb.sh [OUTDIR]        # default OUTDIR: target/debian
#
# Contents: /usr/sbin/xenstored-lite (release build for baseline x86-64, so
# it runs on any x86-64 host, the QEMU VM included; stripped), its man page
# generated from the real command line (examples/manpage.rs, clap_mangen),
# the README and copyright, and /lib/systemd/system/xenstored-lite.service
# (not enabled: on a Xen host the operator chooses between Debian's
# /etc/init.d/xen and the unit, see the README). No maintainer scripts.
#
# Environment: CARGO_TARGET_DIR (default target/deb-build, kept apart from
# target/ because of the RUSTFLAGS below), DEB_MAINTAINER.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${1:-$ROOT/target/debian}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target/deb-build}
MAINTAINER=${DEB_MAINTAINER:-xenstored-lite developers <xenstored-lite@example.invalid>}
PKG=xenstored-lite
ARCH=amd64

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool not found" >&2; exit 1; }
done
[ "$(dpkg --print-architecture)" = "$ARCH" ] || { echo "build-deb: builds $ARCH only" >&2; exit 1; }

# The version: [workspace.package] version in the workspace's Cargo.toml.
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }

echo "build-deb: building $PKG $VERSION (release, -C target-cpu=x86-64) in $TARGET" >&2
RUSTFLAGS="-C target-cpu=x86-64" CARGO_TARGET_DIR="$TARGET" \
  cargo build --release --locked -q -p xenstored-lite --bin xenstored-lite --example manpage >&2
BIN=$TARGET/release/xenstored-lite
MANGEN=$TARGET/release/examples/manpage

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/build-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
P=$STAGE/$PKG
DOC=$P/usr/share/doc/$PKG
umask 022
install -d "$P/DEBIAN" "$P/usr/sbin" "$P/usr/share/man/man8" "$DOC" "$P/lib/systemd/system"

install -m 0755 "$BIN" "$P/usr/sbin/xenstored-lite"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$P/usr/sbin/xenstored-lite"
"$MANGEN" > "$STAGE/xenstored-lite.8"
gzip -9n < "$STAGE/xenstored-lite.8" > "$P/usr/share/man/man8/xenstored-lite.8.gz"
gzip -9n < README.md > "$DOC/README.md.gz"
install -m 0644 packaging/debian/copyright "$DOC/copyright"
install -m 0644 packaging/debian/xenstored-lite.service "$P/lib/systemd/system/xenstored-lite.service"
# Debian's changelog: one entry for this version, dated by the last commit
# (so that the same tree builds the same package).
date=$(git log -1 --format=%cD 2>/dev/null || date -R)
cat > "$STAGE/changelog.Debian" <<EOF
$PKG ($VERSION) unstable; urgency=medium

  * Built from the xenstored-lite workspace by scripts/build-deb.sh.

 -- $MAINTAINER  $date
EOF
gzip -9n < "$STAGE/changelog.Debian" > "$DOC/changelog.Debian.gz"
chmod 0644 "$P/usr/share/man/man8/xenstored-lite.8.gz" "$DOC"/*

# Depends: the shared libraries the binary links (libc6, libgcc-s1), with
# the versions its symbols need, as dpkg-shlibdeps computes them.
mkdir -p "$STAGE/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: %s\n' "$PKG" "$PKG" "$ARCH" > "$STAGE/debian/control"
DEPENDS=$(cd "$STAGE" && dpkg-shlibdeps -O "$P/usr/sbin/xenstored-lite" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$DEPENDS" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
SIZE=$(du -sk --exclude=DEBIAN "$P" | cut -f1)

cat > "$P/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $SIZE
Depends: $DEPENDS
Suggests: xen-utils-common, xenstore-utils
Section: admin
Priority: optional
Homepage: https://example.invalid/xenstored-lite
Description: xenstore daemon for Xen hosts, with live update
 xenstored-lite serves the xenstore protocol (xs_wire) to dom0's tools on
 a Unix socket and to guest domains on their shared rings, in place of
 Xen's C xenstored or oxenstored. It can replace itself with a new binary
 while guests keep running (live update through Xen's migration stream),
 can take over from a running C xenstored the same way, and can record
 everything it receives to replay it later without Xen.
 .
 Debian's /etc/init.d/xen starts it when XENSTORED=/usr/sbin/xenstored-lite
 is set in /etc/default/xen; a systemd unit, xenstored-lite.service, is
 included but not enabled.
EOF
(cd "$P" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$P/DEBIAN/md5sums"
chmod 0644 "$P/DEBIAN/control" "$P/DEBIAN/md5sums"
find "$P" -type d -exec chmod 0755 {} +

mkdir -p "$OUT"
# File dates in the archive: the last commit's (dpkg-deb clamps to it).
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
DEB=$OUT/${PKG}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$P" "$DEB" >&2
echo "$DEB"
