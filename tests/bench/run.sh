#!/usr/bin/env bash
# Benchmarks mod_procd against mod_wsgi daemon mode (and the static-file
# ceiling) with the shared harness, on this box, in one run:
#   tests/bench/run.sh              4 rounds of: static, wsgi_daemon, procd
#   BENCH_ROUNDS=1 tests/bench/run.sh
#   BENCH_IDS="wsgi_daemon procd procd_kat" tests/bench/run.sh
#                                   with ProcdKeepAliveThread On as a row
#   BENCH_PACE_MS=20 tests/bench/run.sh
#                                   the same at equal offered load: each wrk
#                                   connection waits 20 ms after each answer
#                                   (64 connections: at most ~3,200 req/s), so
#                                   p99 compares the servers at the same rate,
#                                   not at each one's saturation (see README,
#                                   "Performance": where the tail comes from)
# Not part of the test suite: figures go to the README.
set -euo pipefail
. "$(dirname "$0")/rounds.sh"
paired_rounds python procd-anchor.sh "procd procd_gil procd_threads procd_kat procd_wait" "static wsgi_daemon procd" libapache2-mod-wsgi-py3
