#!/usr/bin/env bash
# PHP hello through mod_procd (php-cgi workers) against mod_proxy_fcgi +
# php-fpm (pm=static, 4 children) and mod_fcgid (4) with the shared harness, on this box, in
# paired rounds: odd rounds run fpm then procd, even rounds procd then fpm,
# so that drift of the box favours neither. Medians and p99 at the end.
#   tests/bench/php.sh                  4 rounds
#   BENCH_ROUNDS=2 tests/bench/php.sh
#   BENCH_IDS="fpm procd_php" tests/bench/php.sh         without mod_fcgid
# Not part of the test suite: figures go to the README (Performance).
set -euo pipefail
. "$(dirname "$0")/rounds.sh"
paired_rounds php php-anchor.sh "procd_php" "fpm fcgid procd_php" php-fpm php-cgi libapache2-mod-fcgid
