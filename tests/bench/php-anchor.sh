# mod_procd + php-cgi as one more row of ../shared/bench (sourced by its
# anchors.sh through BENCH_EXTRA_ANCHORS; see tests/bench/php.sh). The same
# hello.php, the same Apache front end, the same workers as its php-fpm
# anchor: 4 PHP processes, Apache's user (www-data), Debian's php.ini.
# PROCD_PHP_EXTRA: more options for the group, e.g. (without the guard)
#   PROCD_PHP_EXTRA='"command=/usr/bin/php-cgi -d auto_prepend_file="'

PROCD_SO=${PROCD_SO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/libmod_procd.so}

anchor_procd_php_info()  { echo "mod_procd + php-cgi|4 procs"; }
anchor_procd_php_path()  { [ "${1:-}" = sleep ] && echo /sleep.php || echo /hello.php; }
anchor_procd_php_start() {
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup php language=php processes=4 ${PROCD_PHP_EXTRA:-}
LanguageHandler php .php" && apache_start "$1" || return 1
  # The group becomes ready a second after Apache answers.
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/hello.php"
}
