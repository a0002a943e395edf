#!/usr/bin/env bash
# Builds the stub domain's PV kernel (stubdom/: the engine in an x86_64
# Xen PV kernel of its own, src/pv/) alone (-p), so that its dependencies
# are without std (stubdom/Cargo.toml), and checks what Xen's loader
# needs: a static ELF64 executable, the Xen ELF notes (GUEST_OS,
# XEN_VERSION "xen-3.0", LOADER "generic", VIRT_BASE and PADDR_OFFSET 0,
# ENTRY = the ELF entry, HYPERCALL_PAGE page-aligned) in a PT_NOTE
# segment, no PHYS32_ENTRY (PV only), and one loadable segment at 0.
# Prints its size. Booting it takes real Xen: scripts/xen-qemu-daemon.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p xenstored-stubdom
bin=target/release/xenstored-stubdom
size=$(stat -c %s "$bin")
echo "stubdom: kernel $bin, $size bytes ($(file -b "$bin" | cut -d, -f1,2,4))"
size -A "$bin" | awk '$1 ~ /^\./ { printf "stubdom:   %-10s %8d bytes\n", $1, $2 }'

pass=0
fail=0
check() {
  local what=$1
  shift
  if "$@"; then
    pass=$((pass + 1))
  else
    echo "stubdom: FAILED: $what" >&2
    fail=$((fail + 1))
  fi
}

hdr=$(readelf -h "$bin")
notes=$(readelf -n "$bin")
phdrs=$(readelf -lW "$bin")
entry=$(awk '/Entry point address/ { print $4 }' <<<"$hdr")

# The notes' bytes as one hex string (readelf's dump of .note.Xen).
notehex=$(readelf -W -x .note.Xen "$bin" | awk '/^  0x/ { for (i = 2; i <= 5 && i <= NF; i++) if ($i ~ /^[0-9a-f]+$/) printf "%s", $i }')
# Little-endian 4-byte hex to a number.
le32() { local h=$1; echo $((16#${h:6:2}${h:4:2}${h:2:2}${h:0:2})); }
# The descriptor (hex) of Xen note TYPE: walks namesz, descsz, type,
# name, descriptor, each padded to 4 bytes.
note() {
  local off=0 len=${#notehex} namesz descsz type dpos
  while [ $((off + 24)) -le "$len" ]; do
    namesz=$(le32 "${notehex:off:8}")
    descsz=$(le32 "${notehex:off+8:8}")
    type=$(le32 "${notehex:off+16:8}")
    dpos=$((off + 24 + ((namesz + 3) / 4 * 4) * 2))
    if [ "$type" -eq "$1" ]; then
      echo "${notehex:dpos:descsz*2}"
      return
    fi
    off=$((dpos + ((descsz + 3) / 4 * 4) * 2))
  done
}
# Little-endian 8-byte hex to a number.
le64() { local h=$1 o="" i; for ((i = 14; i >= 0; i -= 2)); do o+=${h:i:2}; done; echo $((16#$o)); }
hexstr() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

check "ELF64 static executable" grep -q "ELF64" <<<"$hdr"
check "type EXEC" grep -q "EXEC" <<<"$hdr"
check "x86-64" grep -q "X86-64" <<<"$hdr"
check "a PT_NOTE segment" grep -q "^ *NOTE " <<<"$phdrs"
check "one PT_LOAD at 0" test "$(awk '$1 == "LOAD" { n++; if ($3 != "0x0000000000000000") bad = 1 } END { print n + 0, bad + 0 }' <<<"$phdrs")" = "1 0"
check "GUEST_OS note" test "$(note 6)" = "$(hexstr xenstored-stubdom)00"
check "XEN_VERSION xen-3.0" test "$(note 5)" = "$(hexstr xen-3.0)00"
check "LOADER generic" test "$(note 8)" = "$(hexstr generic)00"
check "VIRT_BASE 0" test "$(note 3)" = "0000000000000000"
check "PADDR_OFFSET 0" test "$(note 4)" = "0000000000000000"
ent_note=$(note 1)
check "ENTRY note = ELF entry" test -n "$ent_note" -a "$(le64 "${ent_note:-0000000000000000}")" = "$((entry))"
hc=$(note 2)
check "HYPERCALL_PAGE page-aligned" test -n "$hc" -a "$(($(le64 "${hc:-0100000000000000}") % 4096))" = 0
check "no PHYS32_ENTRY (PV only)" test -z "$(note 18)"

echo "stubdom: entry $entry, hypercall page 0x$(printf %x "$(le64 "${hc:-0000000000000000}")")"
echo "stubdom: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
