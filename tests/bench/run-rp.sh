#!/usr/bin/env bash
# Benchmarks mod_procd's Ruby (Rack) and Perl (PSGI) groups against their
# anchors with the shared harness, on this box, in one run:
#   tests/bench/run-rp.sh           3 rounds of: static, passenger_ruby,
#                                   procd_rack, starman, procd_psgi
#   BENCH_ROUNDS=1 BENCH_IDS="starman procd_psgi" tests/bench/run-rp.sh
# Not part of the test suite: figures go to the README. Targets (issue 13):
# at least 1.2x Passenger and starman, p99 no worse.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH/anchors.sh" ] || { echo "bench: $BENCH/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in wrk curl php-fpm starman libapache2-mod-passenger ruby ruby-rack; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq "$p" >/dev/null
done
(cd "$ROOT" && cargo build --release --lib --quiet)
mkdir -p "$ROOT/target/bench"
# Run a private copy: the harness writes its results next to itself.
rm -rf "$ROOT/target/bench/harness-rp" && cp -r "$BENCH" "$ROOT/target/bench/harness-rp" && chmod -R u+w "$ROOT/target/bench/harness-rp"
BENCH="$ROOT/target/bench/harness-rp"
. "$ROOT/tests/bench/rounds.sh"
rm -f "$ROOT"/target/bench/rp-round-*.txt
for round in $(seq "${BENCH_ROUNDS:-3}"); do
  BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/procd-rp-anchors.sh" BENCH_EXTRA_IDS="procd_rack procd_psgi" \
    "$BENCH/anchors.sh" $(round_order "$round" ${BENCH_IDS:-static passenger_ruby procd_rack starman procd_psgi})
  cp "$BENCH/results/anchors-latest.txt" "$ROOT/target/bench/rp-round-$round.txt"
done
python3 "$ROOT/tests/bench/summary.py" "$ROOT"/target/bench/rp-round-*.txt
