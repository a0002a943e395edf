# Helpers of the figure runs in dom0 (figures-dom0.sh, figures-stub.sh),
# sourced after /xenqemu/lib.sh and dom0-lib.sh. Every figure is printed as
# one console line "FIGURE <name> <value> [<words>]", which
# stubdom-figures.sh collects.
READS=${READS:-1000}          # keys read by one xenstore-read process
ROUNDS=${ROUNDS:-5}           # such processes in a row, per measurement
REPEATS=${REPEATS:-3}         # measurements per server
BATCH=${BATCH:-500}           # nodes written by one xenstore-write process
FILL=/bench/fill              # the nodes written: $FILL/n0, $FILL/n1...
NODES=0                       # how many of them exist

figure() { echo "FIGURE $*"; }

# dev CMD...: a xenstore tool through dom0's kernel (/dev/xen/xenbus) even
# when a daemon's socket exists: libxenstore connects to XENSTORED_PATH
# first, and opens it as a device when it is not a socket.
dev() { env XENSTORED_PATH=/dev/xen/xenbus timeout 300 "$@"; }

# fill_args FROM N: "PATH VALUE" pairs of nodes FROM..FROM+N-1.
fill_args() {
  awk -v f="$1" -v n="$2" -v p="$FILL" 'BEGIN {
    for (i = f; i < f + n; i++) printf "%s/n%d value-of-node-%d ", p, i, i }'
}

# fill_to N: write nodes NODES..N-1 in batches of BATCH (one xenstore-write
# process, so one transaction, each); fails if a batch fails.
fill_to() {
  while [ "$NODES" -lt "$1" ]; do
    _b=$BATCH
    [ $((NODES + _b)) -le "$1" ] || _b=$(($1 - NODES))
    # shellcheck disable=SC2046
    dev xenstore-write $(fill_args "$NODES" "$_b") || return 1
    NODES=$((NODES + _b))
  done
}

# timed_fill NAME N: fill_to N, its rate as figure NAME (nodes/s).
timed_fill() {
  _from=$NODES _s=$(now)
  fill_to "$2" || fail "writing nodes $_from..$2 failed at $NODES"
  _t=$(since "$_s")
  figure "$1" "$(awk -v n=$(($2 - _from)) -v t="$_t" 'BEGIN { printf "%.0f", n / t }')" \
    "nodes/s ($(($2 - _from)) nodes, $BATCH a process, in $_t s)"
}

# xs_raw_write PATH VALUE: one XS_WRITE straight on /dev/xen/xenbus, which
# the kernel passes on as it is; prints the reply's payload: OK, or the
# error's name (ENOMEM...), which xenstore-write does not print.
xs_raw_write() {
  _len=$((${#1} + 1 + ${#2}))
  _o() { printf '\\%03o' "$1"; }
  # type 11 (XS_WRITE), req_id 1, tx_id 0, len: little-endian u32s
  _h="$(_o 11)\\000\\000\\000$(_o 1)\\000\\000\\000\\000\\000\\000\\000$(_o $((_len & 255)))$(_o $((_len >> 8)))\\000\\000"
  exec 3<>/dev/xen/xenbus
  # shellcheck disable=SC2059
  printf "$_h%s\\000%s" "$1" "$2" >&3
  timeout 30 dd bs=4096 count=1 <&3 2>/dev/null | tail -c +17 | tr -d '\000'
  exec 3>&-
}

# fill_until_full NAME: write nodes until a write fails: batches of BATCH,
# then 50, 5, and single writes (no transaction), so NODES ends exact.
# Figure NAME: the nodes written; NAME-error: what the failing write got,
# or "no-answer" when the store stopped answering (then returns 1).
fill_until_full() {
  _s=$(now)
  for _b in $BATCH 50 5 1; do
    # shellcheck disable=SC2046
    while env XENSTORED_PATH=/dev/xen/xenbus timeout 120 xenstore-write $(fill_args "$NODES" "$_b") 2>/dev/null; do
      NODES=$((NODES + _b))
    done
    if ! env XENSTORED_PATH=/dev/xen/xenbus timeout 20 xenstore-read $FILL/n0 > /dev/null 2>&1; then
      figure "$1" "$NODES" "nodes written by dom0 when the store stopped answering ($(since "$_s") s, batch $_b)"
      figure "$1-error" no-answer
      return 1
    fi
  done
  _err=$(xs_raw_write "$FILL/n$NODES" "value-of-node-$NODES")
  figure "$1" "$NODES" "nodes written by dom0 until a write failed ($(since "$_s") s); that write got '$_err'"
  figure "$1-error" "$_err"
}

# read_rate NAME: READS keys read by one xenstore-read process, ROUNDS
# processes in a row, less the same number of one-key processes (their
# start-up); REPEATS times; figure NAME = the best reads/s, NAME-all = each.
read_rate() {
  [ "$NODES" -ge "$READS" ] || fill_to "$READS" || fail "cannot write the nodes to read"
  _keys=$(awk -v n="$READS" -v p="$FILL" 'BEGIN { for (i = 0; i < n; i++) printf "%s/n%d ", p, i }')
  # shellcheck disable=SC2086
  [ "$(dev xenstore-read $_keys | wc -l)" = "$READS" ] || fail "xenstore-read of $READS keys does not give $READS values"
  _all="" _best=0
  _i=0
  while [ $_i -lt "$REPEATS" ]; do
    _s=$(now); _r=0
    # shellcheck disable=SC2086
    while [ $_r -lt "$ROUNDS" ]; do dev xenstore-read $_keys > /dev/null || fail "xenstore-read"; _r=$((_r + 1)); done
    _many=$(since "$_s")
    _s=$(now); _r=0
    while [ $_r -lt "$ROUNDS" ]; do dev xenstore-read $FILL/n0 > /dev/null || fail "xenstore-read"; _r=$((_r + 1)); done
    _one=$(since "$_s")
    _rate=$(awk -v n=$(((READS - 1) * ROUNDS)) -v a="$_many" -v b="$_one" \
      'BEGIN { d = a - b; if (d <= 0) d = 0.01; printf "%.0f", n / d }')
    xq_log "$1: $ROUNDS x $READS reads in $_many s, $ROUNDS x 1 in $_one s: $_rate reads/s"
    _all="$_all $_rate"
    [ "$_rate" -le "$_best" ] || _best=$_rate
    _i=$((_i + 1))
  done
  figure "$1" "$_best" "reads/s, best of$_all ($ROUNDS processes of $READS reads through /dev/xen/xenbus, start-up subtracted)"
}
