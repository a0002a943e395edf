#!/usr/bin/env bash
# The Debian package's test: builds it with scripts/build-deb.sh, checks its
# control fields and file list (dpkg-deb -I/-c: paths, root:root, modes),
# extracts it, and checks that
#  * `man xenstored-lite` renders from the extracted tree (MANPATH),
#  * `systemd-analyze verify` accepts the unit (when systemd-analyze exists),
#  * the packaged binary runs `--version`,
#  * the packaged binary works started exactly the way Debian's
#    /etc/init.d/xen starts xenstored (start-stop-daemon + choom, the
#    daemon forking, `xenstore-read -s /` waited for), on its embedded
#    mock-xen with XENSTORED_RUNDIR and the pid file in a temporary
#    directory, and stops with start-stop-daemon --stop.
#
#   scripts/test-deb.sh
#
# Exit status: 0 pass; 77 skipped (prints "SKIPPED: <reason>"; only on a
# host that is not Debian amd64; a missing tool is a failure, since
# scripts/install-test-deps.sh installs them all);
# anything else: fail. The last line says which.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

skip() { echo "SKIPPED: $*"; exit 77; }
T=$(mktemp -d /tmp/test-deb.XXXXXX)
PIDF=$T/xenstore.pid
cleanup() {
  [ -s "$PIDF" ] && kill "$(cat "$PIDF")" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "test-deb: FAIL: $*"
  [ -s "$T/daemon.log" ] && { echo "---- daemon's stderr ----"; cat "$T/daemon.log"; }
  echo "DEB TEST: FAIL"
  exit 1
}
ok() { echo "test-deb: ok: $*"; }

command -v dpkg >/dev/null && [ "$(dpkg --print-architecture)" = amd64 ] || skip "not a Debian amd64 host"
for tool in dpkg-deb dpkg-shlibdeps start-stop-daemon choom xenstore-read man; do
  command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-test-deps.sh installs it)"
done

# ---- build
start=$(date +%s)
DEB=$(bash scripts/build-deb.sh "$T/out" | tail -1)
[ -f "$DEB" ] || fail "build-deb.sh did not print the package's path (got '$DEB')"
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ "$(basename "$DEB")" = "xenstored-lite_${VERSION}_amd64.deb" ] || fail "package named $(basename "$DEB")"
ok "built $(basename "$DEB") ($(stat -c %s "$DEB") bytes) in $(( $(date +%s) - start )) s"

# ---- control fields
dpkg-deb -I "$DEB" > "$T/info" || fail "dpkg-deb -I"
field() { dpkg-deb -f "$DEB" "$1"; }
[ "$(field Package)" = xenstored-lite ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$VERSION" ] || fail "Version: $(field Version), Cargo.toml says $VERSION"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: $(field Architecture)"
field Maintainer | grep -Eq '^[^<]+ <[^>]+@[^>]+>$' || fail "Maintainer: '$(field Maintainer)'"
field Depends | grep -Eq '(^|, )libc6 \(>= [0-9.]+\)' || fail "Depends names no versioned libc6: '$(field Depends)'"
[ -n "$(field Description)" ] || fail "no Description"
[ "$(field Description | wc -l)" -gt 2 ] || fail "the Description has no long part"
grep -q ' md5sums' "$T/info" || fail "no md5sums in the control archive"
for script in preinst postinst prerm postrm; do
  grep -q " $script\$" "$T/info" && fail "unexpected maintainer script $script"
done
ok "control: $(field Package) $(field Version) $(field Architecture), Depends: $(field Depends)"

# ---- file list: every path, its owner and its mode
dpkg-deb -c "$DEB" | awk '{ print $1, $2, $6 }' | sort -k3 > "$T/contents"
cat > "$T/expected" <<'EOF'
drwxr-xr-x root/root ./
drwxr-xr-x root/root ./lib/
drwxr-xr-x root/root ./lib/systemd/
drwxr-xr-x root/root ./lib/systemd/system/
-rw-r--r-- root/root ./lib/systemd/system/xenstored-lite.service
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/sbin/
-rwxr-xr-x root/root ./usr/sbin/xenstored-lite
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/xenstored-lite/
-rw-r--r-- root/root ./usr/share/doc/xenstored-lite/README.md.gz
-rw-r--r-- root/root ./usr/share/doc/xenstored-lite/changelog.Debian.gz
-rw-r--r-- root/root ./usr/share/doc/xenstored-lite/copyright
drwxr-xr-x root/root ./usr/share/man/
drwxr-xr-x root/root ./usr/share/man/man8/
-rw-r--r-- root/root ./usr/share/man/man8/xenstored-lite.8.gz
EOF
sort -k3 -o "$T/expected" "$T/expected"
diff -u "$T/expected" "$T/contents" > "$T/contents.diff" || { cat "$T/contents.diff"; fail "file list differs (- expected, + package)"; }
ok "contents: $(wc -l < "$T/contents") entries, root:root, 0755 directories and binary, 0644 files"

# ---- extracted tree
X=$T/root
dpkg-deb -x "$DEB" "$X" || fail "dpkg-deb -x"
BIN=$X/usr/sbin/xenstored-lite
file_info=$(od -An -tx1 -j4 -N1 "$BIN" | tr -d ' ')
[ "$file_info" = 02 ] || fail "the binary is not a 64-bit ELF"
out=$("$BIN" --version) || fail "xenstored-lite --version failed"
[ "$out" = "xenstored-lite $VERSION" ] || fail "--version printed '$out'"
ok "packaged binary: --version prints '$out'"
zcat "$X/usr/share/doc/xenstored-lite/README.md.gz" | cmp -s - README.md || fail "the packaged README is not README.md"

MANWIDTH=80 MANPATH=$X/usr/share/man man -P cat xenstored-lite > "$T/man.txt" 2> "$T/man.err" \
  || { cat "$T/man.err"; fail "man xenstored-lite did not render"; }
for want in 'xenstored-lite' 'SYNOPSIS' '--pid-file' '--no-fork' '--trace-file' '--live-update'; do
  grep -q -- "$want" "$T/man.txt" || fail "man xenstored-lite lacks '$want'"
done
ok "man xenstored-lite renders ($(wc -l < "$T/man.txt") lines, MANPATH into the extracted tree)"

UNIT=$X/lib/systemd/system/xenstored-lite.service
for want in 'Type=notify' 'ExecStart=/usr/sbin/xenstored-lite -N ' 'RuntimeDirectory=xenstored' \
            '--socket /run/xenstored/socket' '--pid-file /run/xenstore.pid' 'PIDFile=/run/xenstore.pid' \
            'Conflicts=xenstored.service'; do
  grep -q -- "$want" "$UNIT" || fail "the unit lacks '$want'"
done
if command -v systemd-analyze >/dev/null; then
  # The unit names the installed path; verify a copy naming the extracted
  # binary (and skip the man page lookup, which systemd does in man's own
  # database).
  mkdir -p "$T/unit"
  sed "s#/usr/sbin/xenstored-lite#$BIN#g" "$UNIT" > "$T/unit/xenstored-lite.service"
  systemd-analyze verify --man=no "$T/unit/xenstored-lite.service" > "$T/verify" 2>&1 \
    || { cat "$T/verify"; fail "systemd-analyze verify rejects the unit"; }
  [ ! -s "$T/verify" ] || { cat "$T/verify"; fail "systemd-analyze verify complains about the unit"; }
  ok "systemd-analyze verify accepts xenstored-lite.service"
else
  echo "test-deb: note: no systemd-analyze, the unit is not verified"
fi

# ---- started the way Debian's /etc/init.d/xen starts xenstored
# Its line: start-stop-daemon --start --quiet --pidfile "$XENSTORED_PIDFILE"
#   --exec /usr/bin/choom -- -n -1000 "$try_xenstored" -- $XENSTORED_ARGS
#   --pid-file "$XENSTORED_PIDFILE"
# here with the pid file and run directory in $T. choom -n -1000 needs
# CAP_SYS_RESOURCE; where the host denies it (a container), the same line
# runs with -n 0.
OOM=-1000
if ! choom -n -1000 -- true 2>/dev/null; then
  OOM=0
  echo "test-deb: note: choom -n -1000 is not permitted here, using -n $OOM"
fi
export XENSTORED_RUNDIR=$T/run XENSTORED_ROOTDIR=$T/run
unset XENSTORED_PATH NOTIFY_SOCKET
mkdir -p "$XENSTORED_RUNDIR"
XENSTORED_ARGS="-T $T/access.log"
start_line() {
  start-stop-daemon --start --quiet --pidfile "$PIDF" \
    --exec /usr/bin/choom -- -n $OOM "$BIN" -- \
    $XENSTORED_ARGS --pid-file "$PIDF" 2>> "$T/daemon.log"
}
# (stdout captured: the start must return although the daemon lives on.)
s_out=$(start_line) || fail "start-stop-daemon --start failed (rc=$?): $s_out"
time=0
while [ $time -lt 30 ] && ! xenstore-read -s / > /dev/null 2>&1; do
  time=$((time + 1)); sleep 1
done
[ $time -lt 30 ] || fail "xenstore-read -s / did not answer within 30 s"
[ -s "$PIDF" ] || fail "no pid file $PIDF"
pid=$(cat "$PIDF")
[ -d "/proc/$pid" ] || fail "the pid file names $pid, which is not running"
[ "$(readlink "/proc/$pid/exe")" = "$BIN" ] || fail "process $pid runs $(readlink "/proc/$pid/exe"), not $BIN"
ppid=$(awk '{ print $4 }' "/proc/$pid/stat")
[ "$ppid" != $$ ] || fail "the daemon is the shell's child: it did not fork"
[ "$(cat "/proc/$pid/oom_score_adj")" = "$OOM" ] || fail "oom_score_adj is $(cat "/proc/$pid/oom_score_adj"), not $OOM (choom)"
xenstore-write -s /tool/deb-test started || fail "xenstore-write"
[ "$(xenstore-read -s /tool/deb-test)" = started ] || fail "xenstore-read did not give back what was written"
[ -s "$T/access.log" ] || fail "the -T from XENSTORED_ARGS did not reach the daemon (no access log)"
ok "init-script start: forked, pid file names live daemon $pid (parent $ppid, oom_score_adj $OOM), serves xenstore-read -s /, XENSTORED_ARGS passed"

# The init script run again: the running daemon is left alone.
start_line || fail "a second start failed"
[ "$(cat "$PIDF")" = "$pid" ] || fail "a second start changed the pid file"
[ "$(xenstore-read -s /tool/deb-test)" = started ] || fail "the daemon lost its state on a second start"
grep -q "already serves" "$T/daemon.log" || fail "a second start did not say a daemon already serves"
ok "a second start leaves daemon $pid alone"

start-stop-daemon --stop --quiet --retry=TERM/30/KILL/5 --pidfile "$PIDF" || fail "start-stop-daemon --stop failed (rc=$?)"
[ ! -d "/proc/$pid" ] || [ "$(awk '{ print $3 }' "/proc/$pid/stat")" = Z ] || fail "daemon $pid still runs after --stop"
[ ! -e "$XENSTORED_RUNDIR/socket" ] || fail "the socket stays after the daemon stopped"
grep -q "stopping" "$T/daemon.log" || fail "the daemon did not log its stop"
ok "start-stop-daemon --stop: daemon $pid gone, socket removed"
: > "$PIDF"

echo "DEB TEST: PASS ($(basename "$DEB"), $(( $(date +%s) - start )) s)"
