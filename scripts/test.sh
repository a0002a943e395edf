#!/usr/bin/env bash
# The whole test suite, tier by tier (TESTING.md describes each):
#
#   unit      the tests beside the code (cargo test --lib --bins)
#   crate     each crate's own integration tests, benches in test mode and
#             the doc tests
#   process   end-to-end scenarios across processes (the `tests` crate):
#             the daemon, mock-xen, simulated guests, Debian's clients and
#             C xenstored
#   package   the Debian package: its contents, man page, unit, and the
#             daemon started exactly as Debian's /etc/init.d/xen does
#   stubdom   the stub domain's PV kernel built alone and its ELF notes
#             checked (scripts/stubdom.sh)
#   real-xen  Debian's Xen 4.17 booted in QEMU: the Linux-backend tests in
#             dom0, then xenstored-lite serving dom0 and a PV guest, and
#             the xenstored-stubdom kernel in a stub domain serving dom0 and
#             two PV guests (scripts/xen-qemu-daemon.sh's scenarios)
#
# It installs what it needs first (scripts/install-test-deps.sh, an
# idempotent apt-get). Every tier runs even when an earlier one failed; the
# output ends with one line per tier saying whether it ran, passed, failed
# (with what failed under it: a script's "FAILED: " lines, the failed
# tests' names) or was SKIPPED (and why), then the test totals. A real-Xen script exits
# (or the package test) exits 77 after printing "SKIPPED: <reason>" only
# when QEMU or Debian's packages cannot be had. This is the README's test command and what CI runs.
set -uo pipefail
cd "$(dirname "$0")/.."

LOG=$(mktemp /tmp/xsl-test.XXXXXX)
trap 'rm -f "$LOG"' EXIT
results=()
failed=0

# selected_tests FILE: fails (printing why) when a `cargo test` run in FILE
# selected no test at all: a name filter that matches nothing (every test
# "filtered out"), or test targets that lost their tests. Each run starts
# at cargo's "Finished `test` profile" line; its unit and integration test
# executables ("Running unittests ...", "Running tests/...") and its
# "test result:" lines must add up to passed + failed + ignored > 0. A
# doc-test run alone may find none (the workspace has no doc tests yet),
# unless a filter left some out; benches without libtest print no result.
selected_tests() {
  awk '
    function flush() {
      if (inrun && total == 0 && (ran || filtered > 0)) {
        printf "a cargo test run selected no tests (%s)\n", last
        bad++
      }
      inrun = 0
    }
    /Finished `(test|bench)` profile/ {
      flush(); inrun = 1; ran = 0; total = 0; filtered = 0; last = "no executable ran"; next
    }
    /^ *Running (unittests|tests\/)/ { ran = 1 }
    /^ *Running |^ *Doc-tests / { last = $0; sub(/^ */, "", last) }
    /^test result: / {
      for (i = 1; i < NF; i++) {
        if ($(i + 1) ~ /^(passed|failed|ignored);?$/) total += $i
        if ($(i + 1) == "filtered") filtered += $i
      }
    }
    END { flush(); exit bad > 0 }
  ' "$1"
}

# tier NAME COMMAND...: runs COMMAND, its output also kept in $LOG to count
# the tests it ran, and records how it ended.
tier() {
  local name=$1
  shift
  local out rc start
  out=$(mktemp /tmp/xsl-tier.XXXXXX)
  start=$(date +%s)
  echo "==== tier $name: $*"
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  cat "$out" >> "$LOG"
  local wall=$(($(date +%s) - start))
  local empty
  if [ "$rc" -eq 0 ] && ! empty=$(selected_tests "$out"); then
    echo "$empty"
    results+=("$(printf 'tier %-9s ran, FAILED: %s (%d s)' "$name" "$(echo "$empty" | head -1)" "$wall")")
    failed=$((failed + 1))
    rm -f "$out"
    return
  fi
  case $rc in
    0) results+=("$(printf 'tier %-9s ran, passed (%d s)' "$name" "$wall")") ;;
    77)
      local why
      why=$(grep -a '^SKIPPED: ' "$out" | tail -1)
      results+=("$(printf 'tier %-9s %s' "$name" "${why:-SKIPPED: (no reason printed)}")")
      ;;
    *)
      results+=("$(printf 'tier %-9s ran, FAILED with status %d (%d s)' "$name" "$rc" "$wall")")
      # What failed, named in the summary: a script's "FAILED: <what>"
      # lines and the tests libtest reports failed (at most 10).
      local what
      while IFS= read -r what; do
        results+=("  $what")
      done < <(grep -aE '^FAILED: |^---- .* stdout ----$' "$out" | sed 's/^---- \(.*\) stdout ----$/FAILED: test \1/' | head -10)
      failed=$((failed + 1))
      ;;
  esac
  rm -f "$out"
}

if ! bash scripts/install-test-deps.sh; then
  echo "install-test-deps failed: the tests need its packages" >&2
  exit 1
fi

tier unit cargo test --workspace --lib --bins
tier crate bash -c 'cargo test --workspace --exclude tests --test "*" --bench "*" --examples && cargo test --workspace --doc'
# The process tier runs the daemon and mock-xen binaries. tests::bin()
# builds them itself (once per test process, so never a stale one);
# building them first only shows that build's progress here.
tier process bash -c 'cargo build --workspace --bins && cargo test -p tests --all-targets'
tier package bash scripts/test-deb.sh
tier stubdom bash scripts/stubdom.sh
tier real-xen bash -c 'bash scripts/xen-qemu-devtests.sh && bash scripts/xen-qemu-daemon.sh'

# Totals over every `cargo test` summary line, inside the VM included.
sum() { grep -aoE "[0-9]+ $1" "$LOG.results" | awk '{ s += $1 } END { print s + 0 }'; }
grep -aE '^test result: ' "$LOG" > "$LOG.results" || true
passed=$(sum passed)
nfailed=$(sum failed)
ignored=$(sum ignored)
rm -f "$LOG.results"
# Tests that could not run write "skipping: <what>: <reason>" straight to
# stderr (tests::skip); libtest may have put "test NAME ... " before it on
# the same line.
mapfile -t skips < <(grep -aoE 'skipping: .*' "$LOG" | sed 's/[[:space:]]*$//' | sort -u)

echo
echo "==== summary"
printf '%s\n' "${results[@]}"
echo "skipped at run time: ${#skips[@]}"
[ "${#skips[@]}" -eq 0 ] || printf '  %s\n' "${skips[@]}"
echo "tests: $passed passed, $nfailed failed, $ignored skipped"
[ "$failed" -eq 0 ] && [ "$nfailed" -eq 0 ]
