#!/usr/bin/env bash
# PHP hello through mod_procd (php-cgi workers) against mod_proxy_fcgi +
# php-fpm (pm=static, 4 children) with the shared harness, on this box, in
# paired rounds: odd rounds run fpm then procd, even rounds procd then fpm,
# so that drift of the box favours neither. Medians and p99 at the end.
#   tests/bench/php.sh                  6 rounds
#   BENCH_ROUNDS=2 tests/bench/php.sh
#   BENCH_IDS="fpm fcgid procd_php" tests/bench/php.sh   with mod_fcgid too
# Not part of the test suite: figures go to the README (Performance).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH/anchors.sh" ] || { echo "bench: $BENCH/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
for p in wrk curl php-fpm php-cgi starman libapache2-mod-fcgid; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq "$p" >/dev/null
done
(cd "$ROOT" && flock /tmp/procd-build.lock cargo build --release --lib --quiet)
mkdir -p "$ROOT/target/bench"
rm -rf "$ROOT/target/bench/harness-php" && cp -r "$BENCH" "$ROOT/target/bench/harness-php" && chmod -R u+w "$ROOT/target/bench/harness-php"
BENCH="$ROOT/target/bench/harness-php"
rm -f "$ROOT"/target/bench/php-round-*.txt
. "$ROOT/tests/bench/rounds.sh"
for round in $(seq "${BENCH_ROUNDS:-6}"); do
  BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/php-anchor.sh" BENCH_EXTRA_IDS=procd_php \
    "$BENCH/anchors.sh" $(round_order "$round" ${BENCH_IDS:-fpm procd_php})
  cp "$BENCH/results/anchors-latest.txt" "$ROOT/target/bench/php-round-$round.txt"
done
python3 "$ROOT/tests/bench/summary.py" "$ROOT"/target/bench/php-round-*.txt
