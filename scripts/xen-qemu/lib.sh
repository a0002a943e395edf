# Helpers for the commands run-vm.sh runs in dom0. The image has this file
# at /xenqemu/lib.sh; a command starts with `. /xenqemu/lib.sh`.
XENBIN=/usr/lib/xen-4.17/bin

# xq_log MESSAGE: one console line, stamped with dom0's uptime.
xq_log() { echo "XENQEMU[$(cut -d' ' -f1 /proc/uptime)]: $*"; }

# xq_wait SECS CMD...: run CMD every 0.1 s until it succeeds, at most SECS.
xq_wait() {
  _n=$(($1 * 10)); shift
  while [ $_n -gt 0 ]; do
    "$@" && return 0
    sleep 0.1; _n=$((_n - 1))
  done
  "$@"
}

xq_store_answers() { xenstore-read / >/dev/null 2>&1; }

# start_xenstored [c | ocaml | CMD ARGS...]: start Xen's C xenstored (the
# default) or oxenstored, each daemonising itself, or run CMD ARGS... in
# the background (a daemon in the foreground, e.g. ours); its pid goes to
# /run/xen/xenstored.pid. Waits up to 10 s for the store to answer, then
# runs xen-init-dom0, which writes dom0's own entries (/local/domain/0/...)
# that xl needs.
start_xenstored() {
  _kind=${1:-c}
  mkdir -p /run/xen /run/xenstored /var/lib/xenstored
  case $_kind in
    c) $XENBIN/xenstored --pid-file /run/xen/xenstored.pid || return 1 ;;
    ocaml)
      [ -x $XENBIN/oxenstored ] || { xq_log "this image has no oxenstored"; return 1; }
      $XENBIN/oxenstored --pid-file /run/xen/xenstored.pid || return 1 ;;
    *) "$@" &
       echo $! > /run/xen/xenstored.pid ;;
  esac
  xq_wait 10 xq_store_answers || { xq_log "xenstored ($_kind) does not answer"; return 1; }
  $XENBIN/xen-init-dom0 || { xq_log "xen-init-dom0 failed"; return 1; }
  xq_log "xenstored ($_kind) answers, dom0's entries written"
}

# start_xenconsoled: guests' consoles go to
# /var/log/xen/console/guest-NAME.log (xl create waits for the daemon).
start_xenconsoled() {
  $XENBIN/xenconsoled --pid-file=/run/xen/xenconsoled.pid \
    --log=guest --log-dir=/var/log/xen/console
}

# xq_guest_gone NAME: no domain of that name any more.
xq_guest_gone() { ! xl domid "$1" >/dev/null 2>&1; }

# xq_guest_console NAME: the guest's console so far, indented.
xq_guest_console() { sed 's/^/  guest| /' "/var/log/xen/console/guest-$1.log" 2>/dev/null; }

# run_test_guest: boot the guest without a script (its /init writes
# data/hello); read that, write data/ack, wait for it to power off, show
# its nodes and console. Fails if data/hello never came.
run_test_guest() {
  xl create /guest/guest.cfg || return 1
  _d=$(xl domid testguest) || return 1
  xq_log "guest testguest is domain $_d"
  _hello=""
  _n=0
  while [ $_n -lt 600 ]; do
    _hello=$(xenstore-read /local/domain/$_d/data/hello 2>/dev/null) && break
    sleep 0.5; _n=$((_n + 1))
  done
  xq_log "guest's data/hello: '$_hello'"
  xenstore-ls -f /local/domain/$_d
  xenstore-write /local/domain/$_d/data/ack ok
  xq_wait 120 xq_guest_gone testguest
  xq_guest_console testguest
  [ -n "$_hello" ]
}

# run_guest_script [CFG]: boot the guest of CFG (default /guest/guest.cfg;
# run-vm.sh -g gave its initramfs a /test/guest.sh), wait up to 10 minutes
# for it to end, print its console and return the GUEST_RC=<n> it printed
# (125 when it printed none).
run_guest_script() {
  _cfg=${1:-/guest/guest.cfg}
  _name=$(sed -n 's/^name *= *"\(.*\)".*/\1/p' "$_cfg")
  rm -f "/var/log/xen/console/guest-$_name.log"
  xl create "$_cfg" || return 1
  xq_log "guest $_name is domain $(xl domid "$_name" 2>/dev/null)"
  if ! xq_wait 600 xq_guest_gone "$_name"; then
    xq_log "guest $_name still runs after 10 minutes: destroying it"
    xl destroy "$_name"
  fi
  sleep 0.5    # the console's last lines
  xq_guest_console "$_name"
  _grc=$(tr -d '\r' < "/var/log/xen/console/guest-$_name.log" 2>/dev/null \
    | sed -n 's/^GUEST_RC=\([0-9][0-9]*\).*/\1/p' | tail -1)
  xq_log "guest $_name ended, GUEST_RC=${_grc:-none}"
  return "${_grc:-125}"
}
