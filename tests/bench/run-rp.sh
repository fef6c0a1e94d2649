#!/usr/bin/env bash
# Benchmarks mod_procd's Ruby (Rack) and Perl (PSGI) groups against their
# anchors with the shared harness, on this box, in one run:
#   tests/bench/run-rp.sh           4 rounds of: static, passenger_ruby,
#                                   procd_rack, starman, procd_psgi
#   BENCH_ROUNDS=1 BENCH_IDS="starman procd_psgi" tests/bench/run-rp.sh
# Not part of the test suite: figures go to the README. Targets (issue 13):
# at least 1.2x Passenger and starman, p99 no worse.
set -euo pipefail
. "$(dirname "$0")/rounds.sh"
paired_rounds rp procd-rp-anchors.sh "procd_rack procd_rack_kat procd_rack_wait procd_psgi procd_psgi_wait" "static passenger_ruby procd_rack starman procd_psgi" starman libapache2-mod-passenger ruby ruby-rack
