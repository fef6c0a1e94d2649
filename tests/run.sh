#!/usr/bin/env bash
# The whole test suite: unit tests, then real Apache instances on loopback.
# Run as root (tests create system users and start apache2 as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash docker/install-deps.sh
cargo build --lib
cargo test --no-fail-fast -- --test-threads="${PROCD_TEST_THREADS:-4}"
