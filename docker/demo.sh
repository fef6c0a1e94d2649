#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install the packages, build
# mod_procd (release), and start a demo Apache on http://127.0.0.1:8080/
# from its own config under /tmp/procd-demo (never the Debian service).
#   sudo docker/demo.sh          start (or restart) the demo
#   sudo docker/demo.sh stop     stop it
#   docker/demo.sh config        only write the demo's files and config
#                                (the container's start script uses it)
# Settings: PROCD_DEMO_DIR (/tmp/procd-demo), PROCD_DEMO_PORT (8080),
# PROCD_DEMO_LISTEN (127.0.0.1), PROCD_DEMO_SO (a built module: then no
# install and no build), PROCD_DEMO_ERRORLOG (DIR/error.log),
# PROCD_DEMO_ACCESSLOG (none).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO=${PROCD_DEMO_DIR:-/tmp/procd-demo}
PORT=${PROCD_DEMO_PORT:-8080}
LISTEN=${PROCD_DEMO_LISTEN:-127.0.0.1}
MODS=/usr/lib/apache2/modules
APPS=${PROCD_DEMO_APPS:-$ROOT/docker/demo-apps}
SO=${PROCD_DEMO_SO:-$ROOT/target/release/libmod_procd.so}
ERRORLOG=${PROCD_DEMO_ERRORLOG:-$DEMO/error.log}
ACCESSLOG=${PROCD_DEMO_ACCESSLOG:-}

stop() {
    if [ -s "$DEMO/httpd.pid" ] && kill -0 "$(cat "$DEMO/httpd.pid")" 2>/dev/null; then
        pid=$(cat "$DEMO/httpd.pid")
        apache2 -f "$DEMO/httpd.conf" -k stop
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "demo stopped (pid $pid)"
    fi
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

if [ -z "${PROCD_DEMO_SO:-}" ]; then
    bash "$ROOT/docker/install-deps.sh"
    (cd "$ROOT" && cargo build --release --lib)
fi
[ "${1:-}" = config ] || stop

# One system user per application: each group runs as its own.
for u in procd-demo-py procd-demo-php procd-demo-rb procd-demo-pl procd-demo-cgi procd-demo-node procd-demo-jsp; do
    id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
done

rm -rf "$DEMO/htdocs" "$DEMO/apps"
mkdir -p "$DEMO/run" "$DEMO/htdocs/php" "$DEMO/htdocs/cgi" "$DEMO/htdocs/legacy" "$DEMO/apps"
install -m 0644 "$SO" "$DEMO/mod_procd.so"
install -m 0644 "$APPS/hello.wsgi" "$APPS/config.ru" "$APPS/app.psgi" "$APPS/server.js" "$DEMO/apps/"
install -m 0644 "$APPS/index.php" "$DEMO/htdocs/php/index.php"
install -m 0755 "$APPS/hello.cgi" "$DEMO/htdocs/cgi/hello.cgi"
cat > "$DEMO/htdocs/legacy/index.html" <<'HTML'
<!DOCTYPE html>
<html><head><title>A legacy page</title></head><body>
<h1>A legacy page</h1>
<p>Its links point to its old host; LinkRewrite maps them under /legacy/ as
the page passes: <a href="http://legacy.example/about.html">about</a>,
<a href="http://legacy.example/">home</a>.</p>
<p><a href="/">back</a></p>
</body></html>
HTML
echo "Hello, World!" > "$DEMO/htdocs/hello.txt"
# JSP: Debian's Tomcat 10 (tomcat10-common, never the tomcat10 service) on
# a loopback port the manager picks (listen=tcp), with a private
# CATALINA_BASE; left out where Java or Tomcat is not installed.
CATALINA=/usr/share/tomcat10/bin/catalina.sh
JSP_LINK="" JSP_CONF="" JSP_PATH=""
if [ -x "$CATALINA" ] && command -v java >/dev/null 2>&1; then
    sh "$APPS/jsp/make-base.sh" "$DEMO/tomcat" procd-demo-jsp "$APPS/jsp/webapp"
    JSP_LINK='<li>JSP on Tomcat 10 (a program that listens on a loopback port: listen=tcp), user procd-demo-jsp: <a href="/jsp/">/jsp/</a></li>'
    JSP_CONF="LanguageGroup jsp language=http listen=tcp user=procd-demo-jsp home=$DEMO/tomcat startup-timeout=60 \\
    \"command=$CATALINA run\" env=CATALINA_BASE=$DEMO/tomcat \\
    env=CATALINA_OPTS=-Dorg.apache.tomcat.util.digester.PROPERTY_SOURCE=org.apache.tomcat.util.digester.EnvironmentPropertySource
LanguageMount /jsp jsp"
    JSP_PATH=/jsp/
else
    echo "demo: no /jsp (install tomcat10-common and a Java runtime for it)" >&2
fi
cat > "$DEMO/htdocs/index.html" <<HTML
<!DOCTYPE html>
<html><head><title>mod_procd demo</title></head>
<body><h1>mod_procd demo</h1>
<p>Apache $(apache2 -v | sed -n 's/Server version: //p') with mod_procd: one virtual host,
each application in its own process group under its own user.</p>
<ul>
<li>Static file: <a href="/hello.txt">/hello.txt</a></li>
<li>Python (WSGI), user procd-demo-py, 2 processes x 4 threads: <a href="/python/">/python/</a></li>
<li>PHP (FastCGI, php-cgi), user procd-demo-php: a form, a session, an upload: <a href="/php/">/php/</a></li>
<li>Ruby (Sinatra on Rack), user procd-demo-rb: <a href="/ruby/">/ruby/</a></li>
<li>Perl (PSGI), user procd-demo-pl: <a href="/perl/">/perl/</a></li>
<li>CGI script, run per request as user procd-demo-cgi: <a href="/cgi/hello.cgi">/cgi/hello.cgi</a></li>
<li>Node.js (any HTTP program), user procd-demo-node: <a href="/node/">/node/</a></li>
$JSP_LINK
<li>LinkRewrite on a legacy page: <a href="/legacy/">/legacy/</a></li>
<li>Every group's state: <a href="/procd-status">/procd-status</a> (<a href="/procd-status?json">JSON</a>, <a href="/procd-status?prometheus">Prometheus</a>)</li>
</ul>
<p>Config: $DEMO/httpd.conf; log: $DEMO/error.log.</p>
</body></html>
HTML
chmod -R a+rX "$DEMO"

ACCESS_LINE=""
if [ -n "$ACCESSLOG" ]; then
    ACCESS_LINE="CustomLog \"$ACCESSLOG\" \"%h %t \\\"%r\\\" %>s %b\""
fi
cat > "$DEMO/httpd.conf" <<CONF
ServerRoot "$DEMO"
ServerName 127.0.0.1
Listen $LISTEN:$PORT
PidFile "$DEMO/httpd.pid"
ErrorLog "$ERRORLOG"
DefaultRuntimeDir "$DEMO/run"
User www-data
Group www-data
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule authz_host_module $MODS/mod_authz_host.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule dir_module $MODS/mod_dir.so
LoadModule procd_module $DEMO/mod_procd.so
TypesConfig /etc/mime.types
GracefulShutdownTimeout 8
$ACCESS_LINE
DirectoryIndex index.html index.php
DocumentRoot "$DEMO/htdocs"
<Directory "$DEMO/htdocs">
    Require all granted
</Directory>

LanguageGroup hello language=python processes=2 threads=4 user=procd-demo-py app=$DEMO/apps/hello.wsgi
LanguageMount /python hello

LanguageGroup php language=php processes=2 user=procd-demo-php
<Directory "$DEMO/htdocs/php">
    LanguageHandler php .php
</Directory>

LanguageGroup rb language=ruby processes=1 threads=4 user=procd-demo-rb app=$DEMO/apps/config.ru
LanguageMount /ruby rb

LanguageGroup pl language=perl processes=2 user=procd-demo-pl app=$DEMO/apps/app.psgi
LanguageMount /perl pl

LanguageGroup scripts language=cgi user=procd-demo-cgi
<Directory "$DEMO/htdocs/cgi">
    Options +ExecCGI
    LanguageHandler scripts .cgi
</Directory>

LanguageGroup node language=http user=procd-demo-node "command=/usr/bin/node $DEMO/apps/server.js"
LanguageMount /node node

$JSP_CONF

<Location /legacy/>
    LinkRewrite http://legacy.example/ /legacy/
</Location>

# The state of every group (HTML, ?json, ?prometheus), from this host only.
<Location /procd-status>
    SetHandler procd-status
    Require local
</Location>
CONF

apache2 -t -f "$DEMO/httpd.conf"
if [ "${1:-}" = config ]; then exit 0; fi
apache2 -f "$DEMO/httpd.conf" -k start
# Tomcat takes seconds to start: up to 60 s for it.
for path in /python/ /php/ /ruby/ /perl/ /cgi/hello.cgi /node/ $JSP_PATH; do
    for _ in $(seq 600); do curl -fs "http://127.0.0.1:$PORT$path" >/dev/null && break; sleep 0.1; done
done
for path in /hello.txt /python/ /php/ /ruby/ /perl/ /cgi/hello.cgi /node/ $JSP_PATH /legacy/; do
    printf '%-16s ' "$path"
    curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT$path"
done
echo "demo running: http://127.0.0.1:$PORT/  (config $DEMO/httpd.conf, log $DEMO/error.log; stop: sudo docker/demo.sh stop)"
