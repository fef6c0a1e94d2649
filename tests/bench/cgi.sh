#!/usr/bin/env bash
# A CGI hello (/bin/sh) through mod_procd's language=cgi against mod_cgid
# with the shared harness, on this box, in paired rounds (order alternated).
#   tests/bench/cgi.sh                  4 rounds
#   BENCH_ROUNDS=2 tests/bench/cgi.sh
# Not part of the test suite: figures go to the README (Performance).
# Target (issue 12): at least mod_cgid's throughput.
set -euo pipefail
. "$(dirname "$0")/rounds.sh"
paired_rounds cgi cgi-anchors.sh "cgid procd_cgi" "cgid procd_cgi"
