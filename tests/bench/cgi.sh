#!/usr/bin/env bash
# A CGI hello (/bin/sh) through mod_procd's language=cgi against mod_cgid
# with the shared harness, on this box, in paired rounds (order alternated).
#   tests/bench/cgi.sh                  4 rounds
#   BENCH_ROUNDS=2 tests/bench/cgi.sh
# Not part of the test suite: figures go to the README (Performance).
# Target (issue 12): at least mod_cgid's throughput.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH/anchors.sh" ] || { echo "bench: $BENCH/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
(cd "$ROOT" && flock /tmp/procd-build.lock cargo build --release --lib --quiet)
mkdir -p "$ROOT/target/bench"
rm -rf "$ROOT/target/bench/harness-cgi" && cp -r "$BENCH" "$ROOT/target/bench/harness-cgi" && chmod -R u+w "$ROOT/target/bench/harness-cgi"
BENCH="$ROOT/target/bench/harness-cgi"
. "$ROOT/tests/bench/rounds.sh"
rm -f "$ROOT"/target/bench/cgi-round-*.txt
for round in $(seq "${BENCH_ROUNDS:-4}"); do
  BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/cgi-anchors.sh" BENCH_EXTRA_IDS="cgid procd_cgi" \
    "$BENCH/anchors.sh" $(round_order "$round" ${BENCH_IDS:-cgid procd_cgi})
  cp "$BENCH/results/anchors-latest.txt" "$ROOT/target/bench/cgi-round-$round.txt"
done
python3 "$ROOT/tests/bench/summary.py" "$ROOT"/target/bench/cgi-round-*.txt
