#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of
# the workspace. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
