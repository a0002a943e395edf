#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ under libFuzzer for a bounded time, from
# the checked-in seed corpus (fuzz/corpus/<target>/, written by
# tests/tests/fuzz_corpus.rs), and fails if any target crashes, panics,
# leaks, hangs or runs out of memory. CI's `fuzz` step.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default 60 s, every target
#
# No cargo-fuzz: the targets are built the way it builds them (libfuzzer-sys
# links libFuzzer, compiled from the crate's own C++ sources; sancov
# instrumentation through RUSTFLAGS). With a nightly toolchain the build
# has AddressSanitizer too (-Zsanitizer=address, as cargo-fuzz's default);
# without one it is built on stable, without the sanitizer, and says so.
# Needs a C++ compiler for libFuzzer: installed (g++) if missing, as
# scripts/install-test-deps.sh installs the test suite's packages.
#
# What a run finds goes to target/fuzz/corpus/<target>/ (kept between
# runs: a later run starts from it too) and a crashing input to
# target/fuzz/artifacts/<target>/, which the failure message names. The
# last line per target: runs, seconds, corpus size, crashes. Environment:
# FUZZ_JOBS_LOG (default target/fuzz/logs) for each target's libFuzzer log.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SECONDS_PER_TARGET=${1:-60}
shift || true
ALL=(decoder ring_server engine migration c417_model recording crash_journal stub_cmdline store_image)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi
case $SECONDS_PER_TARGET in
  '' | *[!0-9]*) echo "fuzz: SECONDS must be a number, not '$SECONDS_PER_TARGET'" >&2; exit 2 ;;
esac

if ! command -v c++ >/dev/null; then
  echo "fuzz: installing g++ (libFuzzer is C++)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ || {
    echo "fuzz: cannot install g++" >&2
    exit 1
  }
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
FLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
if cargo +nightly --version >/dev/null 2>&1; then
  TOOLCHAIN=(+nightly)
  FLAGS+=" -Zsanitizer=address"
  echo "fuzz: nightly toolchain: libFuzzer with AddressSanitizer"
else
  TOOLCHAIN=()
  echo "fuzz: no nightly toolchain: libFuzzer without a sanitizer (stable)"
fi

TARGET_DIR=$ROOT/target/fuzz
LOGS=${FUZZ_JOBS_LOG:-$TARGET_DIR/logs}
mkdir -p "$LOGS"
echo "fuzz: building ${TARGETS[*]}"
# --target: the sanitizer and the coverage flags reach the targets, not
# the build scripts (as cargo-fuzz does it).
if ! RUSTFLAGS="$FLAGS" cargo "${TOOLCHAIN[@]}" build --release --locked -q \
  --manifest-path fuzz/Cargo.toml --bins --target "$TRIPLE" --target-dir "$TARGET_DIR"; then
  echo "fuzz: build failed" >&2
  exit 1
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  bin=$TARGET_DIR/$TRIPLE/release/$t
  seeds=$ROOT/fuzz/corpus/$t
  work=$TARGET_DIR/corpus/$t
  artifacts=$TARGET_DIR/artifacts/$t/
  log=$LOGS/$t.log
  [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; failed+=("$t"); continue; }
  [ -d "$seeds" ] || { echo "fuzz: no seed corpus $seeds (FUZZ_CORPUS_WRITE=1 cargo test -p tests --test fuzz_corpus)" >&2; failed+=("$t"); continue; }
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t for ${SECONDS_PER_TARGET} s from $(find "$seeds" -type f | wc -l) seeds"
  # New inputs go to the first directory ($work), never to the seeds.
  "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  size=$(find "$work" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    line="fuzz: $t: ${runs:-?} runs in ${secs:-?} s, corpus $size, crashes 0"
  else
    crash=$(ls -t "$artifacts" 2>/dev/null | head -1)
    line="fuzz: $t: FAILED (libFuzzer exit $rc) after ${runs:-?} runs; input ${artifacts}${crash:-?}; log $log"
    grep -E "panicked|ERROR: |SUMMARY: |==[0-9]+==" "$log" | head -20 >&2
    failed+=("$t")
  fi
  echo "$line"
  summary+=("$line")
done

echo
printf '%s\n' "${summary[@]}"
echo "fuzz: ${#TARGETS[@]} targets, ${#failed[@]} failed${failed:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
