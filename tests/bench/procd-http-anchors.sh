# mod_procd's http row and its anchor for ../shared/bench (sourced by its
# anchors.sh through BENCH_EXTRA_ANCHORS; see tests/bench/run-http.sh).
# The same Node program (tests/apps/node/app.js, GET /node/hello), one
# process each: through language=http on the group's Unix socket, and
# behind mod_proxy_http on loopback TCP (Node 20 cannot share a TCP port
# between processes without its cluster module).

PROCD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROCD_SO=${PROCD_SO:-$PROCD_ROOT/target/release/libmod_procd.so}
NODE_APP=$PROCD_ROOT/tests/apps/node/app.js

anchor_procd_http_info()  { echo "mod_procd + Node (language=http)|1 process"; }
anchor_procd_http_path()  { echo /node/hello; }
anchor_procd_http_start() { procd_http_start "$1" "$2" ""; }

anchor_procd_http_kat_info()  { echo "mod_procd + Node, ProcdKeepAliveThread On|1 process"; }
anchor_procd_http_kat_path()  { echo /node/hello; }
anchor_procd_http_kat_start() { procd_http_start "$1" "$2" "ProcdKeepAliveThread On"; }
anchor_procd_http_wait_info()  { echo "mod_procd + Node, ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}|1 process"; }
anchor_procd_http_wait_path()  { echo /node/hello; }
anchor_procd_http_wait_start() { procd_http_start "$1" "$2" "ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}"; }

# procd_http_start DIR PORT EXTRA_LINE
procd_http_start() {
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
$3
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup node language=http processes=1 command=\"/usr/bin/node $NODE_APP\"
LanguageMount /node node" && apache_start "$1" || return 1
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/node/hello"
}

anchor_node_proxy_info()  { echo "mod_proxy_http + Node on TCP|1 process"; }
anchor_node_proxy_path()  { echo /node/hello; }
anchor_node_proxy_start() {
  local dir=$1 port=$2 n=$1/node nport=$(($2 + 40))
  mkdir -p "$n"
  # The app listens on PORT when it is not socket-activated.
  PORT=$nport setsid runuser -u www-data -- /usr/bin/node "$NODE_APP" >"$n/node.log" 2>&1 < /dev/null &
  echo $! >"$n/node.pid"
  wait_for curl -fso /dev/null "http://127.0.0.1:$nport/hello" || return 1
  apache_conf "$dir" "$port" "LoadModule proxy_module $APACHE_MODS/mod_proxy.so
LoadModule proxy_http_module $APACHE_MODS/mod_proxy_http.so
ProxyPass /node http://127.0.0.1:$nport
ProxyPassReverse /node http://127.0.0.1:$nport" && apache_start "$dir"
}
anchor_node_proxy_pids() { apache_pid "$1"; pidfile_pid "$1/node/node.pid"; }
anchor_node_proxy_stop() {
  local npid
  apache_stop "$1"
  npid=$(pidfile_pid "$1/node/node.pid")
  # runuser's pid: it forwards SIGTERM to node and exits with it.
  if pid_alive "$npid"; then kill -TERM "$npid"; wait_gone "$npid" 20; fi
}
