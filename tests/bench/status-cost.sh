#!/usr/bin/env bash
# The status handler's own cost (#15): the Python hello group under load
# (wrk -t1 -c16, 10 s) with and without a scraper on procd-status (one
# keep-alive connection asking for ?json, ?prometheus and the HTML page in
# turn, SCRAPES_PER_S times a second, default 10: far more often than a
# Prometheus server or a person does). Paired rounds, order alternated: odd
# rounds quiet first, even rounds scraped first. Medians, spread and p99.
#   tests/bench/status-cost.sh            6 rounds
#   BENCH_ROUNDS=4 tests/bench/status-cost.sh
# Not part of the test suite: figures go to the README (Status page).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -f "$BENCH/lib/common.sh" ] || { echo "bench: $BENCH/lib/common.sh not found (set BENCH_DIR)" >&2; exit 1; }
(cd "$ROOT" && flock /tmp/procd-build.lock cargo build --release --lib --quiet)
. "$BENCH/lib/common.sh"
. "$BENCH/lib/anchors.sh"
PROCD_SO=${PROCD_SO:-$ROOT/target/release/libmod_procd.so}
. "$ROOT/tests/bench/procd-anchor.sh"
bench_mkrun >/dev/null
DIR=$BENCH_RUN PORT=${BENCH_PORT:-18190}
apache_conf "$DIR" "$PORT" "LoadModule procd_module $PROCD_SO
ProcdRuntimeDir \"$DIR/run/procd\"
LanguageGroup hello language=python processes=2 threads=8 app=$BENCH_APPS/wsgi/hello.wsgi
LanguageMount /hello hello
<Location /procd-status>
    SetHandler procd-status
</Location>"
apache_start "$DIR"
trap 'apache_stop "$DIR" >/dev/null 2>&1; rm -rf "$DIR"' EXIT
wait_for curl -fso /dev/null "http://127.0.0.1:$PORT/hello"
wait_for curl -fso /dev/null "http://127.0.0.1:$PORT/procd-status?json"
wrk -t2 -c16 -d5s "http://127.0.0.1:$PORT/hello" >/dev/null
cat > "$DIR/scrape.py" <<'PY'
import http.client, sys, time
port, rate, secs = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
paths = ["/procd-status?json", "/procd-status?prometheus", "/procd-status"]
conn = http.client.HTTPConnection("127.0.0.1", port)
start, n, bad = time.monotonic(), 0, 0
while time.monotonic() - start < secs:
    conn.request("GET", paths[n % 3])
    r = conn.getresponse(); r.read()
    bad += r.status != 200; n += 1
    time.sleep(max(0.0, start + n / rate - time.monotonic()))
print(n / (time.monotonic() - start), bad)
PY
run() { # $1: quiet|scraped -> "rps p99_ms scrapes_per_s"
  local s=""
  if [ "$1" = scraped ]; then
    /usr/bin/python3 "$DIR/scrape.py" "$PORT" "${SCRAPES_PER_S:-10}" 10 > "$DIR/scrape.txt" & s=$!
  fi
  wrk -t1 -c16 -d10s --latency "http://127.0.0.1:$PORT/hello" > "$DIR/hello.txt"
  [ -n "$s" ] && wait "$s"
  local rps p99 sps=0
  rps=$(awk '/^Requests\/sec/{print $2}' "$DIR/hello.txt")
  p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$DIR/hello.txt")
  [ -n "$s" ] && sps=$(awk '{print $1}' "$DIR/scrape.txt")
  echo "$rps $p99 $sps"
}
: > "$DIR/rounds.txt"
for round in $(seq "${BENCH_ROUNDS:-6}"); do
  if [ $((round % 2)) -eq 1 ]; then order="quiet scraped"; else order="scraped quiet"; fi
  for mode in $order; do
    r=$(run "$mode"); echo "$mode $r" >> "$DIR/rounds.txt"; log "round $round $mode: $r"
  done
done
python3 - "$DIR/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
q = [(float(r[1]), float(r[2])) for r in rows if r[0] == "quiet"]
s = [(float(r[1]), float(r[2]), float(r[3])) for r in rows if r[0] == "scraped"]
med = statistics.median
print("hello req/s quiet   %s  median %.0f, p99 median %.1f ms" % ([int(x[0]) for x in q], med(x[0] for x in q), med(x[1] for x in q)))
print("hello req/s scraped %s  median %.0f, p99 median %.1f ms; status pages/s median %.0f"
      % ([int(x[0]) for x in s], med(x[0] for x in s), med(x[1] for x in s), med(x[2] for x in s)))
ratios = [b[0] / a[0] for a, b in zip(q, s)]
print("scraped/quiet throughput per round %s, median %.3f" % ([round(r, 3) for r in ratios], med(ratios)))
PY
