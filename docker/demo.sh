#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install the packages, build
# mod_procd (release), and start a demo Apache on http://127.0.0.1:8080/
# from its own config under /tmp/procd-demo (never the Debian service).
#   sudo docker/demo.sh          start (or restart) the demo
#   sudo docker/demo.sh stop     stop it
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO=${PROCD_DEMO_DIR:-/tmp/procd-demo}
PORT=${PROCD_DEMO_PORT:-8080}
MODS=/usr/lib/apache2/modules

stop() {
    if [ -s "$DEMO/httpd.pid" ] && kill -0 "$(cat "$DEMO/httpd.pid")" 2>/dev/null; then
        pid=$(cat "$DEMO/httpd.pid")
        apache2 -f "$DEMO/httpd.conf" -k stop
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "demo stopped (pid $pid)"
    fi
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

bash "$ROOT/docker/install-deps.sh"
(cd "$ROOT" && cargo build --release --lib)
stop

mkdir -p "$DEMO/run" "$DEMO/htdocs" "$DEMO/apps"
install -m 0644 "$ROOT/target/release/libmod_procd.so" "$DEMO/mod_procd.so"
cp -r "$ROOT/apache-conf/example-site/shop/app.wsgi" "$DEMO/apps/hello.wsgi"
cat > "$DEMO/htdocs/index.html" <<HTML
<!DOCTYPE html>
<html><head><title>mod_procd demo</title></head>
<body><h1>mod_procd demo</h1>
<p>Apache $(apache2 -v | sed -n 's/Server version: //p') with mod_procd loaded.</p>
<ul>
<li>Static file: <a href="/hello.txt">/hello.txt</a></li>
<li>Python (WSGI), group <code>hello</code>, 2 processes x 4 threads: <a href="/python/">/python/</a></li>
</ul>
<p>Config: $DEMO/httpd.conf; log: $DEMO/error.log. PHP, Ruby, Perl and CGI
groups arrive with their loaders.</p>
</body></html>
HTML
echo "Hello, World!" > "$DEMO/htdocs/hello.txt"
chmod -R a+rX "$DEMO"

cat > "$DEMO/httpd.conf" <<CONF
ServerRoot "$DEMO"
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile "$DEMO/httpd.pid"
ErrorLog "$DEMO/error.log"
DefaultRuntimeDir "$DEMO/run"
User www-data
Group www-data
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule dir_module $MODS/mod_dir.so
LoadModule procd_module $DEMO/mod_procd.so
TypesConfig /etc/mime.types
DirectoryIndex index.html
DocumentRoot "$DEMO/htdocs"
<Directory "$DEMO/htdocs">
    Require all granted
</Directory>

LanguageGroup hello language=python processes=2 threads=4 app=$DEMO/apps/hello.wsgi
LanguageMount /python hello
CONF

apache2 -t -f "$DEMO/httpd.conf"
apache2 -f "$DEMO/httpd.conf" -k start
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/python/" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$PORT/hello.txt"
curl -fs "http://127.0.0.1:$PORT/python/"
echo "demo running: http://127.0.0.1:$PORT/  (config $DEMO/httpd.conf, log $DEMO/error.log; stop: sudo docker/demo.sh stop)"
