#!/usr/bin/env bash
# Benchmarks Node hello through mod_procd's language=http against
# mod_proxy_http to the same Node program on TCP, with the shared harness:
#   tests/bench/run-http.sh            3 rounds of: static, node_proxy, procd_http
#   BENCH_ROUNDS=1 tests/bench/run-http.sh
# Not part of the test suite: figures go to the README. Target (issue 13):
# within 5% of mod_proxy_http or better, p99 no worse.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH/anchors.sh" ] || { echo "bench: $BENCH/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in wrk curl nodejs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq "$p" >/dev/null
done
(cd "$ROOT" && cargo build --release --lib --quiet)
mkdir -p "$ROOT/target/bench"
rm -rf "$ROOT/target/bench/harness-http" && cp -r "$BENCH" "$ROOT/target/bench/harness-http" && chmod -R u+w "$ROOT/target/bench/harness-http"
BENCH="$ROOT/target/bench/harness-http"
. "$ROOT/tests/bench/rounds.sh"
rm -f "$ROOT"/target/bench/http-round-*.txt
for round in $(seq "${BENCH_ROUNDS:-3}"); do
  BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/procd-http-anchors.sh" BENCH_EXTRA_IDS="node_proxy procd_http" \
    "$BENCH/anchors.sh" $(round_order "$round" ${BENCH_IDS:-static node_proxy procd_http})
  cp "$BENCH/results/anchors-latest.txt" "$ROOT/target/bench/http-round-$round.txt"
done
python3 "$ROOT/tests/bench/summary.py" "$ROOT"/target/bench/http-round-*.txt
