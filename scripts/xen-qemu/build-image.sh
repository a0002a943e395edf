#!/bin/bash
# build-image.sh OUTDIR
#
# Builds the image the real-Xen tier boots in QEMU, from Debian bookworm
# packages only; nothing Xen- or kernel-related is installed on the host.
#
#   OUTDIR/xen           Xen 4.17 hypervisor, uncompressed: a multiboot ELF
#                        QEMU loads itself with -kernel (no boot loader)
#   OUTDIR/vmlinuz       Debian's 6.1 kernel for dom0 and the PV guest, as a
#                        gzip'd ELF vmlinux (see below)
#   OUTDIR/dom0.cpio     dom0's initramfs (uncompressed, so run-vm.sh can
#                        append a per-run cpio to it)
#   OUTDIR/domU.cpio.gz  the PV test guest's initramfs
#   OUTDIR/qemu/         qemu-system-x86_64 unpacked from its .deb
#   OUTDIR/debs/         the downloaded .debs (kept: a rebuild reuses them)
#   OUTDIR/dom0-root/, OUTDIR/domU-root/  the trees of the two initramfs
#                        (run-vm.sh looks in them for libraries it need not add)
#
# Needs root (apt-get install of QEMU's runtime libraries and firmware) and
# the Debian package registry. Running it again rebuilds the image from the
# cached .debs; remove OUTDIR/debs to pick up newer packages.
#
# Exit status: 0 built; 77 the packages could not be installed or
# downloaded (no apt-get, not root, registry unreachable...); anything else
# is a bug in the image build.
#
# Env: XENQEMU_SKIP_APT=1     do not apt-get update/install on the host
#      XENQEMU_KEEP_STAGE=1   keep OUTDIR/stage (every .deb unpacked, ~450 MB)
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
XENVER=4.17
MULTIARCH=lib/x86_64-linux-gnu

say() { echo "[build-image] $*" >&2; }
# unavailable WHY: the packages cannot be had; the caller skips the tier.
unavailable() { say "cannot get the packages: $*"; exit 77; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEBS=$OUT/debs STAGE=$OUT/stage D0=$OUT/dom0-root DU=$OUT/domU-root

command -v apt-get >/dev/null || unavailable "no apt-get on this host"
command -v dpkg-deb >/dev/null || unavailable "no dpkg-deb on this host"

# ------------------------------------------------------------ host packages
# QEMU is not apt-installed: on this machine image qemu-utils comes from
# bookworm-backports (10.x) and Breaks qemu-system-common << 8.0, so
# installing bookworm's qemu-system-x86 (7.2) fails. Instead its runtime
# libraries and firmware are installed, and the binary is unpacked from
# the downloaded .deb into OUTDIR/qemu.
export DEBIAN_FRONTEND=noninteractive
if [ "${XENQEMU_SKIP_APT:-0}" != 1 ]; then
  [ "$(id -u)" = 0 ] || unavailable "not root, so apt-get install is not possible"
  # Stale package lists name .debs the mirror has dropped: refresh after 6 h.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -1)" ]; then
    say "apt-get update"
    apt-get update -q >&2 || unavailable "apt-get update failed"
  fi
  deps=$( (apt-cache depends qemu-system-x86; apt-cache depends qemu-system-common) 2>/dev/null \
    | awk '$1 == "Depends:" && $2 ~ /^[a-z]/ { print $2 }' \
    | grep -vE '^(qemu-|seabios$|ipxe-qemu$)' | sort -u) || true
  [ -n "$deps" ] || unavailable "apt-cache knows no qemu-system-x86"
  say "apt-get install: QEMU's libraries and firmware, cpio, python3"
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $deps seabios ipxe-qemu \
    qemu-system-data cpio python3 >&2 || unavailable "apt-get install failed"
fi
for tool in cpio gzip python3 ldd; do
  command -v $tool >/dev/null || { say "no $tool on the host"; exit 1; }
done

# ------------------------------------------------------------ the .debs
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
  | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
[ -n "$kpkg" ] || unavailable "apt-cache cannot resolve linux-image-amd64"
KVER=${kpkg#linux-image-}
PKGS="xen-hypervisor-$XENVER-amd64 $kpkg xen-utils-$XENVER xen-utils-common
  xenstore-utils libxenmisc$XENVER libxenstore4 libxencall1 libxenevtchn1
  libxenforeignmemory1 libxengnttab1 libxentoollog1 libxenhypfs1
  libxentoolcore1 libxendevicemodel1 libyajl2 busybox-static
  qemu-system-x86 qemu-system-common"
mkdir -p "$DEBS"
missing=""
for p in $PKGS; do
  compgen -G "$DEBS/${p}_*.deb" >/dev/null || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "apt-get download:$missing"
  # apt-get download runs as the _apt user when it can: let it write here.
  chmod 0777 "$DEBS"
  # shellcheck disable=SC2086
  (cd "$DEBS" && apt-get download -q $missing >&2) || unavailable "apt-get download failed"
fi
for p in $PKGS; do
  compgen -G "$DEBS/${p}_*.deb" >/dev/null || unavailable "$p was not downloaded"
done

# Everything below works on files we have: a failure is a bug (status 1).
trap 'say "failed at line $LINENO"' ERR

# ------------------------------------------------------------ unpack
say "unpacking the .debs"
rm -rf "$STAGE" "$OUT/qemu"
mkdir -p "$STAGE" "$OUT/qemu"
for p in $PKGS; do
  for deb in "$DEBS/${p}_"*.deb; do
    case $p in
      qemu-system-*) dpkg-deb -x "$deb" "$OUT/qemu" ;;
      *) dpkg-deb -x "$deb" "$STAGE" ;;
    esac
  done
done
[ -x "$OUT/qemu/usr/bin/qemu-system-x86_64" ] || { say "no qemu-system-x86_64 in the .deb"; exit 1; }

zcat "$STAGE/boot/xen-$XENVER-amd64.gz" > "$OUT/xen.new" && mv "$OUT/xen.new" "$OUT/xen"

# Debian's bzImage carries the kernel xz-compressed. Under TCG, Xen's dom0
# builder and libxenguest (`xl create`, in emulated userspace) decompress
# xz slowly; both take a gzip'd ELF vmlinux too, which boots dom0 and each
# guest seconds sooner. So the ELF is cut out of the bzImage and gzip'd.
python3 - "$STAGE/boot/vmlinuz-$KVER" "$OUT/vmlinux" <<'PY'
import lzma, sys
blob = open(sys.argv[1], 'rb').read()
start = blob.find(b'\xfd7zXZ\x00')
if start < 0:
    sys.exit('no xz stream in the bzImage')
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob[start:])
if elf[:4] != b'\x7fELF':
    sys.exit('the xz stream is not an ELF vmlinux')
open(sys.argv[2], 'wb').write(elf)
PY
gzip -6 -c "$OUT/vmlinux" > "$OUT/vmlinuz"
rm -f "$OUT/vmlinux"
echo "$KVER" > "$OUT/kernel-version"

BUSYBOX=$STAGE/bin/busybox
XENBIN=$STAGE/usr/lib/xen-$XENVER/bin
[ -x "$BUSYBOX" ] || { say "busybox-static has no /bin/busybox"; exit 1; }

# ------------------------------------------------------------ helpers
# Libraries are looked up in the unpacked .debs first, then on the host.
STAGE_LIBS=$STAGE/usr/$MULTIARCH:$STAGE/$MULTIARCH

# add_lib TREE FILE: put one shared library into TREE (the loader in /lib64).
add_lib() {
  local tree=$1 lib=$2 name dir=$MULTIARCH
  name=$(basename "$lib")
  [ "$name" = ld-linux-x86-64.so.2 ] && dir=lib64
  mkdir -p "$tree/$dir"
  [ -e "$tree/$dir/$name" ] || cp -L "$lib" "$tree/$dir/$name"
}

# add_elf TREE FROM TO: copy the program FROM to TREE/TO with every shared
# library it needs. TO is removed first: it may be a busybox applet link,
# and cp would write through that (absolute) link into the host's busybox.
add_elf() {
  local tree=$1 from=$2 to=$3 deps lib
  mkdir -p "$tree/$(dirname "$to")"
  rm -f "$tree/$to"
  cp -L "$from" "$tree/$to"
  deps=$(LD_LIBRARY_PATH=$STAGE_LIBS ldd "$from" 2>&1) || {
    # a static program has nothing to add
    case $deps in *"not a dynamic executable"*|*"statically linked"*) return 0 ;; esac
    say "ldd $from: $deps"; exit 1
  }
  if echo "$deps" | grep -q 'not found'; then
    say "libraries of $from not found:"; echo "$deps" | grep 'not found' >&2; exit 1
  fi
  for lib in $(echo "$deps" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    add_lib "$tree" "$lib"
  done
}

# new_tree TREE: an empty root with busybox and its applet links.
new_tree() {
  local tree=$1 applet
  rm -rf "$tree"
  mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,var/log,var/lib,root,mnt,lib64,$MULTIARCH}
  cp "$BUSYBOX" "$tree/bin/busybox"
  for applet in $("$BUSYBOX" --list-full); do
    [ -e "$tree/$applet" ] || [ -L "$tree/$applet" ] || ln -s /bin/busybox "$tree/$applet"
  done
  ln -s /run "$tree/var/run"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$tree/etc/passwd"
  echo 'root:x:0:' > "$tree/etc/group"
  # the 5 Xen modules dom0 and the guest load (Debian builds them as modules)
  mkdir -p "$tree/lib/modules/xen"
  for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs/xenfs; do
    cp "$STAGE/lib/modules/$KVER/kernel/drivers/xen/$m.ko" "$tree/lib/modules/xen/"
  done
  # xenstore-read, -write, ... are one program that looks at its name
  add_elf "$tree" "$STAGE/usr/bin/xenstore" /usr/bin/xenstore
  for c in read write ls list exists rm watch chmod; do
    ln -sf xenstore "$tree/usr/bin/xenstore-$c"
  done
}

# pack TREE FILE: a newc cpio of TREE, files owned by root, in a stable order.
pack() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z \
     | cpio --null -o -H newc --owner=0:0 --quiet) > "$2.new"
  mv "$2.new" "$2"
}

# ------------------------------------------------------------ the PV guest
say "building the guest's initramfs"
new_tree "$DU"
install -m 0755 "$HERE/guest-init.sh" "$DU/init"
pack "$DU" "$OUT/domU.cpio"
gzip -9 -f "$OUT/domU.cpio"

# ------------------------------------------------------------ dom0
say "building dom0's initramfs"
new_tree "$D0"
# init-xenstore-domain starts a xenstore stub domain (scripts/xen-qemu/
# stubdom.sh); xenctx dumps a domain's vCPU state (a stub's early crashes).
for b in xl xenstored oxenstored xenconsoled xenconsole xen-init-dom0 xenstore-control \
         init-xenstore-domain xenctx; do
  if [ "$b" = oxenstored ] && [ ! -e "$XENBIN/$b" ]; then
    say "no oxenstored in xen-utils-$XENVER: the image goes without it"; continue
  fi
  add_elf "$D0" "$XENBIN/$b" "/usr/lib/xen-$XENVER/bin/$b"
  ln -sf "/usr/lib/xen-$XENVER/bin/$b" "$D0/usr/sbin/$b"
done
# glibc dlopen()s libgcc_s for pthread_cancel and unwinding.
add_lib "$D0" "/$MULTIARCH/libgcc_s.so.1"
# init-xenstore-domain hangs without /var/lib/xen, and writes its pid file
# into /var/run/xen (/var/run is a link to /run).
mkdir -p "$D0/etc/xen" "$D0/var/lib/xen" "$D0/run/xen" "$D0/var/lib/xenstored" "$D0/var/log/xen/console"
[ ! -f "$STAGE/etc/xen/oxenstored.conf" ] || cp "$STAGE/etc/xen/oxenstored.conf" "$D0/etc/xen/"
# No ballooning (dom0 has fixed memory) and no hotplug scripts (the
# guests have neither network nor disks).
printf 'autoballoon="off"\nrun_hotplug_scripts=0\n' > "$D0/etc/xen/xl.conf"

# Debian's own way of starting the Xen daemons: xen-utils-common's init
# scripts and the helpers they call (/usr/lib/xen-common/bin, the hotplug
# scripts), /etc/default/xen as its postinst makes it (a copy of
# default.xen), and from the host what the scripts source or run:
# /lib/init/vars.sh and /lib/lsb (sysvinit-utils), start-stop-daemon
# (dpkg) and choom (util-linux), the init script runs xenstored under it.
for f in etc/init.d/xen etc/init.d/xendomains etc/default/xendomains; do
  if [ -e "$STAGE/$f" ]; then
    mkdir -p "$D0/$(dirname "$f")"; cp -a "$STAGE/$f" "$D0/$f"
  else
    say "xen-utils-common has no /$f: the image goes without it"
  fi
done
if [ -f "$STAGE/usr/share/xen-utils-common/default.xen" ]; then
  mkdir -p "$D0/etc/default"
  cp "$STAGE/usr/share/xen-utils-common/default.xen" "$D0/etc/default/xen"
fi
[ ! -d "$STAGE/usr/lib/xen-common" ] || cp -a "$STAGE/usr/lib/xen-common" "$D0/usr/lib/"
[ ! -d "$STAGE/etc/xen/scripts" ] || cp -a "$STAGE/etc/xen/scripts" "$D0/etc/xen/"
for d in lib/init lib/lsb; do
  if [ -d "/$d" ]; then mkdir -p "$D0/$d"; cp -a "/$d/." "$D0/$d/"; fi
done

# host_tool NAME: the host's program NAME (ELF with its libraries, or a
# script) at the same path in dom0, and every busybox applet of that name
# made a link to it, so that /sbin/NAME and /usr/sbin/NAME are one program.
host_tool() {
  local p dir
  p=$(command -v "$1") || { say "no $1 on the host"; exit 1; }
  p=$(readlink -f "$p")
  # the host has a merged /usr; dom0's tree does not: keep /usr paths
  case $p in /usr/*) ;; *) p=/usr$p ;; esac
  if head -c4 "$p" | grep -q ELF; then
    add_elf "$D0" "$p" "${p#/}"
  else
    mkdir -p "$D0/$(dirname "${p#/}")"; rm -f "$D0/${p#/}"; cp "$p" "$D0/${p#/}"
  fi
  for dir in bin sbin usr/bin usr/sbin; do
    [ "/$dir/$1" != "$p" ] || continue
    if [ -L "$D0/$dir/$1" ] || [ ! -e "$D0/$dir/$1" ]; then ln -sfn "$p" "$D0/$dir/$1"; fi
  done
}
host_tool start-stop-daemon
host_tool choom

# dom0's /bin/sh is dash, as on Debian, not busybox's ash: Debian builds
# busybox-static to prefer its own applets to any program on PATH, so
# under its shell `start-stop-daemon` or `dpkg` would be busybox's, never
# the real ones. /init, the commands and the init scripts all run in dash;
# every other command is still a busybox applet link.
host_tool dash
ln -sfn /usr/bin/dash "$D0/bin/sh"

# dpkg, so that a .deb can be installed in dom0 with `dpkg -i`. This
# busybox has a dpkg applet, but a small one (no dpkg-query, no triggers,
# no diversions, no maintainer-script helpers), so the host's dpkg tools
# replace it, with an empty package database, ldconfig, which dpkg wants
# on PATH, and GNU tar, which dpkg-deb runs (busybox's tar lacks options
# it passes).
for prog in dpkg dpkg-deb dpkg-query dpkg-split dpkg-divert dpkg-trigger \
            dpkg-statoverride dpkg-maintscript-helper update-alternatives ldconfig tar; do
  host_tool $prog
done
mkdir -p "$D0/var/lib/dpkg/info" "$D0/var/lib/dpkg/updates" "$D0/var/lib/dpkg/triggers" \
         "$D0/var/lib/dpkg/alternatives" "$D0/etc/dpkg/dpkg.cfg.d" "$D0/etc/alternatives"
: > "$D0/var/lib/dpkg/status"
: > "$D0/var/lib/dpkg/available"
[ ! -f /etc/dpkg/dpkg.cfg ] || cp /etc/dpkg/dpkg.cfg "$D0/etc/dpkg/"
[ ! -d /usr/share/dpkg ] || { mkdir -p "$D0/usr/share"; cp -a /usr/share/dpkg "$D0/usr/share/"; }

# The PV guest dom0 boots: the same kernel, the initramfs above.
mkdir -p "$D0/guest"
cp "$OUT/vmlinuz" "$D0/guest/vmlinuz"
cp "$OUT/domU.cpio.gz" "$D0/guest/initrd.gz"
cat > "$D0/guest/guest.cfg" <<'EOF'
name = "testguest"
type = "pv"
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
extra = "console=hvc0 quiet"
memory = 160
vcpus = 1
vif = []
disk = []
on_poweroff = "destroy"
on_crash = "destroy"
EOF

mkdir -p "$D0/xenqemu"
install -m 0755 "$HERE/dom0-init.sh" "$D0/init"
install -m 0644 "$HERE/lib.sh" "$D0/xenqemu/lib.sh"
pack "$D0" "$OUT/dom0.cpio"

[ "${XENQEMU_KEEP_STAGE:-0}" = 1 ] || rm -rf "$STAGE"
du -sh "$OUT/xen" "$OUT/vmlinuz" "$OUT/dom0.cpio" "$OUT/domU.cpio.gz" "$OUT/qemu" >&2
say "image ready in $OUT"
