# Sourced by the benchmark scripts (run.sh, run-rp.sh, run-http.sh, php.sh,
# cgi.sh): paired rounds of the shared anchor harness with mod_procd's rows.

# Paired rounds: odd rounds run the rows in the order given, even rounds in
# reverse, so drift on this box does not favour one side.
round_order() {
  local r=$1
  shift
  if [ $((r % 2)) = 0 ]; then printf '%s\n' "$@" | tac | tr '\n' ' '; else echo "$@"; fi
}

# bench_install [DEBIAN_PACKAGES...]: installs what is missing of wrk, curl,
# php-fpm and starman (the harness refuses to run without them, whatever the
# rows) and the packages given.
bench_install() {
  local p
  export DEBIAN_FRONTEND=noninteractive
  for p in wrk curl php-fpm starman "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq "$p" >/dev/null
  done
}

# paired_rounds NAME ANCHOR_FILE "PROCD_IDS" "ROWS" [DEBIAN_PACKAGES...]
#   Installs what is missing (wrk, curl, php-fpm, starman and the packages), builds the
#   release module, runs BENCH_ROUNDS (default 4) rounds of ROWS (or
#   BENCH_IDS) on a private copy of ../shared/bench with
#   tests/bench/ANCHOR_FILE's rows added, keeps each round's table as
#   target/bench/NAME-round-N.txt and prints the medians and ratios.
#   BENCH_PACE_MS=N: each wrk connection waits N ms after each answer.
#   BENCH_AUTOGROUP=0|1: sets kernel.sched_autogroup_enabled for the run
#   (restored after). With it on (Debian's default) each session is one CPU
#   share, so the figures depend on which programs start sessions of their
#   own: wrk, Apache, mod_procd's manager and its workers, php-fpm each get
#   one, mod_wsgi's daemons share Apache's (README, "Performance").
paired_rounds() {
  local name=$1 anchors=$2 procd_ids=$3 rows=$4 root bench copy round
  shift 4
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  bench="${BENCH_DIR:-$root/../shared/bench}"
  [ -x "$bench/anchors.sh" ] || { echo "bench: $bench/anchors.sh not found (set BENCH_DIR)" >&2; return 1; }
  bench_install "$@"
  (cd "$root" && flock /tmp/procd-build.lock cargo build --release --lib --quiet)
  # A private copy: the harness writes its results next to itself.
  copy="$root/target/bench/harness-$name"
  mkdir -p "$root/target/bench"
  rm -rf "$copy" && cp -r "$bench" "$copy" && chmod -R u+w "$copy"
  if [ -n "${BENCH_PACE_MS:-}" ]; then
    # wrk takes one script: the harness's report script gets the pacing.
    printf '\nlocal pace_ms = tonumber(os.getenv("BENCH_PACE_MS"))\nfunction delay() return pace_ms end\n' \
      >> "$copy/lib/report.lua"
  fi
  rm -f "$root/target/bench/$name-round-"*.txt
  local autogroup=/proc/sys/kernel/sched_autogroup_enabled was
  was=$(cat "$autogroup" 2>/dev/null || echo absent)
  if [ -n "${BENCH_AUTOGROUP:-}" ] && [ "$was" != absent ]; then
    echo "$BENCH_AUTOGROUP" > "$autogroup"
    # shellcheck disable=SC2064
    trap "echo $was > $autogroup" EXIT
  fi
  for round in $(seq "${BENCH_ROUNDS:-4}"); do
    # shellcheck disable=SC2046
    BENCH_EXTRA_ANCHORS="$root/tests/bench/$anchors" BENCH_EXTRA_IDS="$procd_ids" \
      "$copy/anchors.sh" $(round_order "$round" ${BENCH_IDS:-$rows})
    cp "$copy/results/anchors-latest.txt" "$root/target/bench/$name-round-$round.txt"
  done
  echo "kernel.sched_autogroup_enabled: $(cat "$autogroup" 2>/dev/null || echo absent)"
  python3 "$root/tests/bench/summary.py" "$root/target/bench/$name-round-"*.txt
}
