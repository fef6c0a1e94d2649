#!/usr/bin/env bash
# CPU time per request, by program, for rows of the shared harness:
#   tests/bench/cpu-per-request.sh procd-http-anchors.sh node_proxy procd_http
#   CPR_PERF=1 (perf record -a -g into each row's run dir)
#   CPR_SYSCALLS=1 (strace -c of Apache's children for 3 s, in syscalls.txt)
#   CPR_SCHED=1 (perf record of every context switch for 3 s, with call
#     stacks, in sched.data: why each program's threads left the CPU;
#     tests/bench/switches.py sched.data summarises it; CPR_SCHED_CALLGRAPH=
#     "--call-graph dwarf" for stacks through code without frame pointers)
#   CPR_ROUNDS=3 CPR_CONNS=64 tests/bench/cpu-per-request.sh procd-anchor.sh wsgi_daemon procd
# Each round starts every row in turn (odd rounds in the order given, even
# rounds reversed), warms it up, then reads utime+stime of every process on
# the box (/proc/PID/stat) and the box's CPU (/proc/stat) before and after
# one wrk run, and prints microseconds of CPU per answered request: per
# program name (apache2, node, wrk, ...), the box's total, and the part of
# it spent in softirq (loopback networking); then, per program, how long its
# threads waited runnable for a CPU per request and how many times per
# request they were put on one (/proc/PID/task/TID/schedstat). CPU per
# request moves much less than req/s on this box, so it tells a cost from a
# scheduling effect; the run-queue wait shows where requests queue when
# the box is saturated.
# Not a test; the release module must be built (paired_rounds does it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bench="${BENCH_DIR:-$root/../shared/bench}"
anchors=$1
shift
ids=("$@")
. "$bench/lib/common.sh"
. "$bench/lib/anchors.sh"
. "$here/$anchors"
. "$here/rounds.sh"
conns=${CPR_CONNS:-64}
secs=${CPR_SECS:-10}
port=18190
snapshot() { python3 "$here/cpu_snapshot.py" snap; }
bench_mkrun
cur_id="" cur_dir=""
trap '[ -z "$cur_id" ] || anchor_stop "$cur_id" "$cur_dir"' EXIT
echo "run dir: $BENCH_RUN; conns=$conns secs=$secs autogroup=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)"
for round in $(seq "${CPR_ROUNDS:-2}"); do
  for id in $(round_order "$round" "${ids[@]}"); do
    dir="$BENCH_RUN/$id-$round"
    mkdir -p "$dir"
    cur_id=$id cur_dir=$dir
    anchor_call "$id" start "$dir" "$port" >"$dir/start.log" 2>&1 || { echo "$id: failed to start" >&2; tail -5 "$dir/start.log" "$dir/error.log" >&2; exit 1; }
    url="http://127.0.0.1:$port$(anchor_call "$id" path)"
    WAIT_SECS=60 wait_for check_body "$url"
    run_wrk "$dir/warmup.txt" "$conns" 5 "$url" >/dev/null
    snapshot >"$dir/before.txt"
    probes=()
    if [ -n "${CPR_PERF:-}" ]; then
      # A profile of the whole box during the run: perf report -i "$dir/perf.data".
      perf record -q -a ${CPR_PERF_CALLGRAPH:--g} -o "$dir/perf.data" -- sleep "$((secs - 2))" >/dev/null 2>&1 &
      probes+=($!)
    fi
    if [ -n "${CPR_SCHED:-}" ]; then
      (sleep 2; perf record -q -a ${CPR_SCHED_CALLGRAPH:--g} -e sched:sched_switch -o "$dir/sched.data" -- sleep 3 >/dev/null 2>&1) &
      probes+=($!)
    fi
    if [ -n "${CPR_SYSCALLS:-}" ]; then
      # System calls of Apache's children for 3 s of the run (slows them).
      kids=$(pgrep -d, -P "$(apache_pid "$dir")" || true)
      (sleep 2; timeout -s INT 3 strace -c -f -p "$kids" -o "$dir/syscalls.txt" >/dev/null 2>&1) &
      probes+=($!)
    fi
    res=$(run_wrk "$dir/wrk.txt" "$conns" "$secs" "$url")
    # Not a plain wait: the anchor's own background jobs (Node) run on.
    for p in "${probes[@]}"; do wait "$p" || true; done
    snapshot >"$dir/after.txt"
    echo "round $round $id: $(python3 "$here/cpu_snapshot.py" diff "$dir/before.txt" "$dir/after.txt" "$(kv "$res" requests)") rps=$(kv "$res" rps) p99=$(kv "$res" p99_us)us"
    anchor_stop "$id" "$dir"
    cur_id=""
    sleep 1
  done
done
