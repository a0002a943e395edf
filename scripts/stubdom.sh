#!/usr/bin/env bash
# Builds the freestanding stubdom binary (stubdom/: the engine without std,
# no libc, raw syscalls), runs it, and checks the bytes it writes: the
# reply to a READ of the node it wrote (/stubdom/hello = "world"). Built
# alone (-p), so that its dependencies are without std (stubdom/Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p xenstored-stubdom
bin=target/release/xenstored-stubdom
echo "stubdom: $(stat -c %s "$bin") bytes ($(file -b "$bin" | cut -d, -f1,2,4))"

# xs_wire READ reply: type 2, req_id 2, tx_id 0, len 5, then "world".
want="02000000020000000000000005000000776f726c64"
rc=0
got=$("$bin" | od -An -v -tx1 | tr -d ' \n') || rc=$?
if [ "$rc" -eq 0 ] && [ "$got" = "$want" ]; then
  echo "stubdom: 1 passed, 0 failed"
else
  echo "stubdom: exit status $rc, wrote ${got:-nothing}, want $want" >&2
  echo "stubdom: 0 passed, 1 failed"
  exit 1
fi
