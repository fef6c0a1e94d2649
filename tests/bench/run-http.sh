#!/usr/bin/env bash
# Benchmarks Node hello through mod_procd's language=http against
# mod_proxy_http to the same Node program on TCP, with the shared harness:
#   tests/bench/run-http.sh            4 rounds of: static, node_proxy, procd_http
#   BENCH_ROUNDS=1 tests/bench/run-http.sh
# Not part of the test suite: figures go to the README. Target (issue 13):
# within 5% of mod_proxy_http or better, p99 no worse.
set -euo pipefail
. "$(dirname "$0")/rounds.sh"
paired_rounds http procd-http-anchors.sh "node_proxy procd_http procd_http_kat procd_http_wait" "static node_proxy procd_http" nodejs
