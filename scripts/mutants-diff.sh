#!/usr/bin/env bash
# The mutation check of new code (TESTING.md, "Mutation testing"): runs
# cargo-mutants on the lines the last commit changed, in the areas
# .cargo/mutants.toml examines (xenring, the engine, the migration stream,
# the shell's live update). A mutant that the mutated crate's own tests do
# not catch fails the check: new code must come with a test that notices
# its bugs, or the mutant is listed as equivalent in .cargo/mutants.toml.
#
#   scripts/mutants-diff.sh [BASE]     BASE defaults to HEAD~1
#
# Bounded: when the diff yields more than XSL_MUTANTS_MAX mutants (default
# 40), it tests one round-robin shard of them of about that size, chosen by
# the commit's hash, and says so. Installs cargo-mutants (crates.io) when
# it is missing. Exit status: 0 all caught (or nothing to mutate), 1 a
# mutant missed or a build/test failure, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTANTS_VERSION=27.1.0
base=${1:-HEAD~1}
max=${XSL_MUTANTS_MAX:-40}

case $max in
  '' | *[!0-9]* | 0)
    echo "mutants-diff: XSL_MUTANTS_MAX must be a positive number, not '$max'" >&2
    exit 2
    ;;
esac

if ! git rev-parse --verify --quiet "$base^{commit}" > /dev/null; then
  echo "mutants-diff: no commit '$base' to compare with (a shallow clone?);" \
    "fetch the history or name a base: scripts/mutants-diff.sh BASE" >&2
  exit 1
fi

# It mutates the tree in place (and a failing property test under a mutant
# records its case in a regressions file): refuse to touch uncommitted
# work, and put back every tracked file afterwards.
if ! git diff --quiet HEAD; then
  echo "mutants-diff: the tree has uncommitted changes; commit or stash them first" >&2
  exit 1
fi

if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $MUTANTS_VERSION" ]; then
  echo "mutants-diff: installing cargo-mutants $MUTANTS_VERSION"
  cargo install --locked --quiet cargo-mutants --version "$MUTANTS_VERSION"
fi

work=$(mktemp -d /tmp/xsl-mutants.XXXXXX)
trap 'rm -rf "$work"' EXIT
git diff "$base" HEAD -- '*.rs' > "$work/diff"

# The mutants in the diff, within the configured examine_globs.
cargo mutants --in-diff "$work/diff" --list > "$work/list"
total=$(grep -c . "$work/list" || true)
echo "mutants-diff: $total mutants in the lines changed since $(git rev-parse --short "$base")"
if [ "$total" -eq 0 ]; then
  echo "mutants-diff: nothing to mutate in the examined code"
  exit 0
fi

shard=()
if [ "$total" -gt "$max" ]; then
  n=$(((total + max - 1) / max))
  # Which shard: from the commit's hash, so successive commits look at
  # different samples; always the same for the same commit.
  k=$(($(git rev-parse HEAD | cut -c1-7 | xargs -I{} printf '%d' 0x{}) % n))
  shard=(--shard "$k/$n")
  echo "mutants-diff: more than $max: testing shard $k/$n (about $((total / n)) of $total)"
fi

# In place: the tree's own target directory, so only the mutated crate is
# rebuilt. cargo-mutants restores each file after its mutant.
rc=0
cargo mutants --in-diff "$work/diff" --in-place --no-shuffle "${shard[@]}" \
  --output "$work" || rc=$?
if ! git diff --quiet HEAD; then
  echo "mutants-diff: putting back what the run changed: $(git diff --name-only HEAD | tr '\n' ' ')"
  git diff --name-only -z HEAD | xargs -0 git checkout HEAD --
fi

out=$work/mutants.out
for f in missed timeout unviable caught; do
  [ -f "$out/$f.txt" ] || : > "$out/$f.txt"
done
echo "mutants-diff: caught $(grep -c . "$out/caught.txt"), missed $(grep -c . "$out/missed.txt")," \
  "timeouts $(grep -c . "$out/timeout.txt"), unviable $(grep -c . "$out/unviable.txt")"
if [ -s "$out/missed.txt" ]; then
  echo "mutants-diff: these mutants of new code survive the crate's tests;" \
    "add a test that catches each, or list it as equivalent in .cargo/mutants.toml:"
  sed 's/^/  MISSED /' "$out/missed.txt"
fi
# cargo-mutants exits 2 for missed mutants, 3 for timeouts, 4 when the
# unmutated tree fails its tests.
case $rc in
  0) exit 0 ;;
  2) exit 1 ;;
  3)
    # A mutant that makes the tests hang is noticed (they would never
    # finish); listed so it can be looked at.
    echo "mutants-diff: no mutant missed; these hung the tests until the time-out:"
    sed 's/^/  TIMEOUT /' "$out/timeout.txt"
    exit 0
    ;;
  4)
    echo "mutants-diff: the unmutated tree fails its tests"
    exit 1
    ;;
  *) exit 1 ;;
esac
