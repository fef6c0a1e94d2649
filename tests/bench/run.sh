#!/usr/bin/env bash
# Benchmarks mod_procd against mod_wsgi daemon mode (and the static-file
# ceiling) with the shared harness, on this box, in one run:
#   tests/bench/run.sh              3 rounds of: static, wsgi_daemon, procd
#   BENCH_ROUNDS=1 tests/bench/run.sh
#   BENCH_PACE_MS=20 tests/bench/run.sh
#                                   the same at equal offered load: each wrk
#                                   connection waits 20 ms after each answer
#                                   (64 connections: at most ~3,200 req/s), so
#                                   p99 compares the servers at the same rate,
#                                   not at each one's saturation (see README,
#                                   "Performance": where the tail comes from)
# Not part of the test suite: figures go to the README.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH/anchors.sh" ] || { echo "bench: $BENCH/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in wrk libapache2-mod-wsgi-py3 curl php-fpm starman; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq "$p" >/dev/null
done
(cd "$ROOT" && cargo build --release --lib --quiet)
mkdir -p "$ROOT/target/bench"
# Run a private copy: the harness writes its results next to itself.
rm -rf "$ROOT/target/bench/harness" && cp -r "$BENCH" "$ROOT/target/bench/harness" && chmod -R u+w "$ROOT/target/bench/harness"
BENCH="$ROOT/target/bench/harness"
if [ -n "${BENCH_PACE_MS:-}" ]; then
  # wrk takes one script: the harness's report script gets the pacing.
  printf '\nlocal pace_ms = tonumber(os.getenv("BENCH_PACE_MS"))\nfunction delay() return pace_ms end\n' \
    >> "$BENCH/lib/report.lua"
fi
. "$ROOT/tests/bench/rounds.sh"
rm -f "$ROOT"/target/bench/round-*.txt
for round in $(seq "${BENCH_ROUNDS:-3}"); do
  BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/procd-anchor.sh" BENCH_EXTRA_IDS=procd \
    "$BENCH/anchors.sh" $(round_order "$round" ${BENCH_IDS:-static wsgi_daemon procd})
  cp "$BENCH/results/anchors-latest.txt" "$ROOT/target/bench/round-$round.txt"
done
python3 "$ROOT/tests/bench/summary.py" "$ROOT"/target/bench/round-*.txt
