#!/usr/bin/env bash
# Two builds of mod_procd against each other on the Python hello app, in
# paired rounds: each round runs both builds, in alternating order, each
# beside mod_wsgi daemon mode (whose figure in the same run cancels the
# box's drift). Medians, per-round ratios and p99 at the end.
#   BASE_SO=/path/old.so [CUR_SO=target/release/libmod_procd.so] [ROUNDS=4] tests/bench/paired-builds.sh
# PROCD_ROW=procd_gil (or procd_io, an app whose requests sleep 5 ms) runs
# another row of procd-anchor.sh in place of the hello row.
# PHP instead of Python: PROCD_ROW=procd_php ANCHOR_ROW=fpm
#   ROWS_FILE=php-anchor.sh (php-cgi beside mod_proxy_fcgi + php-fpm).
# Build the old one from a worktree, e.g.:
#   git worktree add /tmp/wt-old REV && (cd /tmp/wt-old && cargo build --release)
# Not part of the test suite: figures go to the README (Performance).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH_SRC="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -x "$BENCH_SRC/anchors.sh" ] || { echo "bench: $BENCH_SRC/anchors.sh not found (set BENCH_DIR)" >&2; exit 1; }
: "${BASE_SO:?set BASE_SO to the libmod_procd.so of the other build}"
# The anchor row (mod_wsgi daemon mode) and what the harness insists on.
. "$ROOT/tests/bench/rounds.sh"
bench_install libapache2-mod-wsgi-py3
CUR_SO=${CUR_SO:-$ROOT/target/release/libmod_procd.so}
BENCH="$ROOT/target/bench/harness"
rm -rf "$BENCH" && mkdir -p "$ROOT/target/bench" && cp -r "$BENCH_SRC" "$BENCH" && chmod -R u+w "$BENCH"
OUT="$ROOT/target/bench/paired-builds"
ROW=${PROCD_ROW:-procd}
ANCHOR=${ANCHOR_ROW:-wsgi_daemon}
ROWS_FILE=${ROWS_FILE:-procd-anchor.sh}
mkdir -p "$OUT" && rm -f "$OUT"/*.txt
for round in $(seq 1 "${ROUNDS:-4}"); do
  if [ $((round % 2)) -eq 1 ]; then whiches="cur base"; else whiches="base cur"; fi
  for which in $whiches; do
    if [ $(( (round + ${#which}) % 2 )) -eq 0 ]; then order="$ANCHOR $ROW"; else order="$ROW $ANCHOR"; fi
    so=$CUR_SO; [ "$which" = base ] && so=$BASE_SO
    # shellcheck disable=SC2086
    PROCD_SO=$so BENCH_EXTRA_ANCHORS="$ROOT/tests/bench/$ROWS_FILE" BENCH_EXTRA_IDS=$ROW "$BENCH/anchors.sh" $order
    cp "$BENCH/results/anchors-latest.txt" "$OUT/$which-$round.txt"
  done
done
python3 - "$OUT" <<'PY'
import glob, statistics, sys
rows = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.txt")):
    which = f.rsplit("/", 1)[1].split("-")[0]
    for line in open(f):
        c = [x.strip() for x in line.split("|")]
        if len(c) < 6 or not c[2].isdigit():
            continue
        kind = "procd" if c[0].startswith("mod_procd") else "anchor"
        rows.setdefault((which, kind, int(c[2])), []).append((float(c[3]), float(c[5])))
def spread(xs):
    return "%.2f (%.2f-%.2f)" % (statistics.median(xs), min(xs), max(xs))
for conns in (16, 64):
    for which in ("cur", "base"):
        p = rows.get((which, "procd", conns), [])
        w = rows.get((which, "anchor", conns), [])
        if not p or not w:
            continue
        print("c=%d %-4s procd req/s median %.0f %s, p99 median %.1f ms | ratio to the anchor: throughput %s, p99 %s" % (
            conns, which, statistics.median(x[0] for x in p), [int(x[0]) for x in p],
            statistics.median(x[1] for x in p),
            spread([a[0] / b[0] for a, b in zip(p, w)]), spread([a[1] / b[1] for a, b in zip(p, w)])))
PY
