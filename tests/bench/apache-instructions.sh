#!/usr/bin/env bash
# Instructions that Apache's child executes per request, by row, counted by
# valgrind's callgrind: a figure that does not move between runs on this
# box, unlike req/s, for changes to mod_procd's handler.
#   tests/bench/apache-instructions.sh [ROWS...]
#   rows: static procd_python procd_http proxy_http wsgi_embedded
#         procd_php fpm
#   (default: static procd_python procd_http proxy_http)
#   AI_FEW=500 AI_MANY=1500 (requests of the two runs of each row)
#   AI_SO=/path/other.so (another build of mod_procd)
#   AI_PHP_EXTRA='...' (more options for the procd_php row's group, e.g.
#     command= a script that runs php-cgi under callgrind, to count
#     php-cgi's side too)
# Each row runs Apache (event MPM, one child, the shared harness's config)
# under callgrind twice, with AI_FEW and with AI_MANY keep-alive requests
# from one `ab -k` connection after 100 of warm-up; the difference of the
# child's totals over AI_MANY - AI_FEW is the figure: start-up and
# shut-down cancel out. User space only (system calls and the kernel's
# networking are not counted), and the application's processes are not
# counted either, except in wsgi_embedded, where Python runs in Apache's
# child. The rows:
#   static         the harness's 13-byte file (Apache's own floor)
#   procd_python   GET /hello through a python group (2 x 8, the hello app)
#   procd_http     GET /node/hello through language=http (tests/apps/node)
#   proxy_http     the same Node program behind mod_proxy_http on TCP
#   wsgi_embedded  mod_wsgi embedded, the hello app in Apache's own threads
#   procd_php      GET /hello.php through a php group (4 php-cgi)
#   fpm            the same hello.php through mod_proxy_fcgi to php-fpm
#                  (pm=static, 4 children, on a Unix socket)
# Not a test; the release module must be built (cargo build --release).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bench="${BENCH_DIR:-$root/../shared/bench}"
export BENCH_SERVERS=1 BENCH_SERVER_LIMIT=1
. "$bench/lib/common.sh"
. "$bench/lib/anchors.sh"
. "$here/rounds.sh"
bench_install valgrind apache2-utils
few=${AI_FEW:-500}
many=${AI_MANY:-1500}
[ "$many" -gt "$few" ] || die "AI_MANY ($many) must be above AI_FEW ($few)"
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(static procd_python procd_http proxy_http)
so=${AI_SO:-$root/target/release/libmod_procd.so}
[ -f "$so" ] || die "$so not built: cargo build --release"
node_app="$root/tests/apps/node/app.js"
port=18290
node_port=18291
bench_mkrun
node_pid=""
fpm_pid=""
vg_pid=""
stop_all() {
  if [ -n "$vg_pid" ] && pid_alive "$vg_pid"; then kill -TERM "$vg_pid"; wait_gone "$vg_pid" 60 || kill -KILL "$vg_pid"; fi
  if [ -n "$node_pid" ] && pid_alive "$node_pid"; then kill -TERM "$node_pid"; wait_gone "$node_pid" 20 || true; fi
  if [ -n "$fpm_pid" ] && pid_alive "$fpm_pid"; then kill -QUIT "$fpm_pid"; wait_gone "$fpm_pid" 20 || true; fi
}
fpm_dir="$BENCH_RUN/fpm"
# start_fpm: php-fpm as the harness's fpm anchor runs it, in the foreground
# of a background job so that its pid is ours to stop.
start_fpm() {
  mkdir -p "$fpm_dir"
  cat >"$fpm_dir/php-fpm.conf" <<EOF
[global]
error_log = $fpm_dir/php-fpm.log
daemonize = no

[hello]
user = www-data
group = www-data
listen = $fpm_dir/php-fpm.sock
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = static
pm.max_children = 4
EOF
  php-fpm8.2 -F -c /etc/php/8.2/fpm/php.ini -y "$fpm_dir/php-fpm.conf" >"$fpm_dir/stdout.log" 2>&1 </dev/null &
  fpm_pid=$!
  wait_for test -S "$fpm_dir/php-fpm.sock" || die "php-fpm did not start (see $fpm_dir)"
}
trap stop_all EXIT

# row_extra ROW DIR: the httpd.conf lines the row adds; row_path ROW: its URL path.
row_extra() {
  local dir=$2
  case $1 in
    static) ;;
    procd_python) printf '%s\n' "LoadModule procd_module $so" "ProcdRuntimeDir \"$dir/run/procd\"" \
      "LanguageGroup hello language=python processes=2 threads=8 app=$BENCH_APPS/wsgi/hello.wsgi" \
      "LanguageMount /hello hello" ;;
    procd_http) printf '%s\n' "LoadModule procd_module $so" "ProcdRuntimeDir \"$dir/run/procd\"" \
      "LanguageGroup node language=http processes=1 command=\"/usr/bin/node $node_app\"" \
      "LanguageMount /node node" ;;
    proxy_http) printf '%s\n' "LoadModule proxy_module $APACHE_MODS/mod_proxy.so" \
      "LoadModule proxy_http_module $APACHE_MODS/mod_proxy_http.so" \
      "ProxyPass /node http://127.0.0.1:$node_port" "ProxyPassReverse /node http://127.0.0.1:$node_port" ;;
    wsgi_embedded) WSGI_COMMON "$dir" ;;
    procd_php) printf '%s\n' "LoadModule procd_module $so" "ProcdRuntimeDir \"$dir/run/procd\"" \
      "LanguageGroup php language=php processes=4 ${AI_PHP_EXTRA:-}" "LanguageHandler php .php" ;;
    fpm) printf '%s\n' "LoadModule proxy_module $APACHE_MODS/mod_proxy.so" \
      "LoadModule proxy_fcgi_module $APACHE_MODS/mod_proxy_fcgi.so" \
      "<FilesMatch \"\\.php\$\">" "    SetHandler \"proxy:unix:$fpm_dir/php-fpm.sock|fcgi://localhost\"" "</FilesMatch>" ;;
    *) die "unknown row $1 (static procd_python procd_http proxy_http wsgi_embedded procd_php fpm)" ;;
  esac
}
row_path() {
  case $1 in
    static) echo /hello.txt ;;
    procd_python | wsgi_embedded) echo /hello ;;
    procd_http | proxy_http) echo /node/hello ;;
    procd_php | fpm) echo /hello.php ;;
  esac
}

# count ROW N: sets `total` to the instructions of Apache's child for N
# requests (and the warm-up). Not run in a subshell, so that the EXIT trap
# sees the Apache it started.
count() {
  local row=$1 n=$2 dir out kid url
  dir="$BENCH_RUN/$row-$n"
  mkdir -p "$dir/cg"
  # Apache's child runs as www-data and writes its own file here.
  chmod 1777 "$dir/cg"
  apache_conf "$dir" "$port" "$(row_extra "$row" "$dir")"
  valgrind --tool=callgrind --trace-children=no --callgrind-out-file="$dir/cg/callgrind.out.%p" \
    "$APACHE_BIN" -DFOREGROUND -f "$dir/httpd.conf" >"$dir/valgrind.log" 2>&1 &
  vg_pid=$!
  url="http://127.0.0.1:$port$(row_path "$row")"
  WAIT_SECS=120 wait_for check_body "$url" || { tail -5 "$dir/error.log" >&2; die "$row: no answer at $url"; }
  ab -q -k -n 100 -c 1 "$url" >/dev/null
  out=$(ab -q -k -n "$n" -c 1 "$url")
  grep -q "^Failed requests: *0" <<<"$out" || die "$row: failed requests: $(grep -E 'Failed|Non-2xx' <<<"$out")"
  # Apache's child, not mod_procd's manager (which names itself).
  kid=$(ps -o pid=,comm= --ppid "$vg_pid" | awk '$2 != "procd-manager" {print $1}' | head -1)
  [ -n "$kid" ] || die "$row: Apache's child not found"
  kill -TERM "$vg_pid"
  wait_gone "$vg_pid" 120 || die "$row: Apache under valgrind did not stop"
  wait "$vg_pid" 2>/dev/null || true
  vg_pid=""
  [ -f "$dir/cg/callgrind.out.$kid" ] || die "$row: no callgrind file for Apache's child $kid"
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/cg/callgrind.out.$kid")
}

echo "run dir: $BENCH_RUN; requests: $many - $few, one keep-alive connection (ab -k)"
for row in "${rows[@]}"; do
  if [ "$row" = proxy_http ] && [ -z "$node_pid" ]; then
    # The app listens on PORT when it is not socket-activated.
    PORT=$node_port setsid runuser -u www-data -- /usr/bin/node "$node_app" >"$BENCH_RUN/node.log" 2>&1 </dev/null &
    node_pid=$!
    wait_for curl -fso /dev/null "http://127.0.0.1:$node_port/hello" || die "node did not start on $node_port"
  fi
  if [ "$row" = fpm ] && [ -z "$fpm_pid" ]; then
    bench_install php-fpm
    start_fpm
  fi
  count "$row" "$few"
  a=$total
  count "$row" "$many"
  b=$total
  echo "$row: $(((b - a) / (many - few))) instructions per request in Apache's child"
done
