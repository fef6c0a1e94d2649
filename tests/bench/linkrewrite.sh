#!/usr/bin/env bash
# LinkRewrite vs mod_proxy_html, end to end through Apache, same box, same
# run. A backend vhost on a second loopback port serves a static page of
# links; the front proxies it (1) unfiltered, (2) through LINKREWRITE,
# (3) through mod_proxy_html with the equivalent ProxyHTMLURLMap; and the
# front serves the same file itself (4) unfiltered, (5) through LINKREWRITE,
# (6) through mod_proxy_html (forced with PROXY_HTML_FORCE).
# MB/s = req/s x page size, wrk -t2 -c4, median of ROUNDS (5) rounds of
# BENCH_SECS (3) seconds; each round runs every path.
#   tests/bench/linkrewrite.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
for p in wrk curl; do command -v $p >/dev/null || apt-get install -y -qq $p >/dev/null; done
(cd "$ROOT" && cargo build --release --lib --quiet)
D=$(mktemp -d /tmp/procd-lrbench.XXXXXX); chmod 755 "$D"; mkdir -p "$D/run" "$D/pages"
PORT=${PORT:-18190}
BPORT=$((PORT + 1))
MODS=/usr/lib/apache2/modules
python3 - "$D/pages" <<'PY'
import sys
block = '<p class="item"><a href="http://127.0.0.1:8180/page/{0}">link {0}</a> and <img src="http://127.0.0.1:8180/img/{0}.png"> some text around it</p>\n'
for name, size in (("100k.html", 100 << 10), ("1m.html", 1 << 20), ("5m.html", 5 << 20)):
    out, i = [], 0
    total = 0
    out.append("<!DOCTYPE html>\n<html><head><title>links</title></head><body>\n")
    while total < size:
        line = block.format(i); out.append(line); total += len(line); i += 1
    out.append("</body></html>\n")
    open(sys.argv[1] + "/" + name, "w").write("".join(out))
PY
cat > "$D/httpd.conf" <<CONF
ServerRoot "$D"
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile "$D/httpd.pid"
ErrorLog "$D/error.log"
DefaultRuntimeDir "$D/run"
User www-data
Group www-data
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule alias_module $MODS/mod_alias.so
LoadModule proxy_module $MODS/mod_proxy.so
LoadModule proxy_http_module $MODS/mod_proxy_http.so
LoadModule xml2enc_module $MODS/mod_xml2enc.so
LoadModule proxy_html_module $MODS/mod_proxy_html.so
LoadModule env_module $MODS/mod_env.so
LoadModule procd_module $ROOT/target/release/libmod_procd.so
TypesConfig /etc/mime.types
StartServers 2
ThreadsPerChild 16
MaxRequestWorkers 32
DocumentRoot "$D/pages"
<Directory "$D/pages">
    Require all granted
</Directory>
Alias /plain "$D/pages"
Listen 127.0.0.1:$BPORT
<VirtualHost 127.0.0.1:$BPORT>
    DocumentRoot "$D/pages"
</VirtualHost>
<Location /proxied/>
    ProxyPass http://127.0.0.1:$BPORT/
</Location>
<Location /procd/>
    ProxyPass http://127.0.0.1:$BPORT/
</Location>
# mod_proxy_html's attribute table (ProxyHTMLLinks), as Debian ships it.
Include /etc/apache2/mods-available/proxy_html.conf
<Location /pxh/>
    ProxyPass http://127.0.0.1:$BPORT/
    ProxyHTMLEnable On
    ProxyHTMLURLMap http://127.0.0.1:8180/ /legacy/
</Location>
<Location /procd/>
    LinkRewrite http://127.0.0.1:8180/ /legacy/
</Location>
# The same page as a static file of the front, filtered there (mod_proxy_html
# needs PROXY_HTML_FORCE to touch a response that was not proxied).
Alias /s-procd "$D/pages"
Alias /s-pxh "$D/pages"
<Location /s-procd/>
    LinkRewrite http://127.0.0.1:8180/ /legacy/
</Location>
<Location /s-pxh/>
    ProxyHTMLEnable On
    ProxyHTMLURLMap http://127.0.0.1:8180/ /legacy/
    SetEnv PROXY_HTML_FORCE 1
</Location>
CONF
apache2 -t -f "$D/httpd.conf"
apache2 -f "$D/httpd.conf" -k start
trap 'apache2 -f "$D/httpd.conf" -k stop' EXIT
for _ in $(seq 50); do curl -fso /dev/null "http://127.0.0.1:$PORT/procd/100k.html" && break; sleep 0.1; done
page=$(curl -fs "http://127.0.0.1:$PORT/procd/100k.html")
grep -q 'href="/legacy/page/1"' <<<"$page" || { echo "LinkRewrite did not rewrite" >&2; exit 1; }
for path in procd pxh s-procd s-pxh; do
  page=$(curl -fs "http://127.0.0.1:$PORT/$path/100k.html")
  [[ $page == *'"/legacy/page/1"'* ]] || { echo "$path did not rewrite" >&2; exit 1; }
done
ROUNDS=${ROUNDS:-5}
printf '%-9s %-8s %10s %10s   %s\n' page path "req/s" "MB/s" "(median of $ROUNDS rounds, paths interleaved)"
declare -A mbs rates
PATHS="plain s-procd s-pxh proxied procd pxh"
for page in 100k.html 1m.html 5m.html; do
  size=$(stat -c %s "$D/pages/$page")
  # Each round runs every path once, so that the box's drift hits all alike.
  for _ in $(seq "$ROUNDS"); do
    for path in $PATHS; do
      r=$(wrk -t2 -c4 -d${BENCH_SECS:-3}s "http://127.0.0.1:$PORT/$path/$page" | awk '/Requests\/sec/ {print $2}')
      rates[$page/$path]+="$r "
    done
  done
  for path in $PATHS; do
    med=$(printf '%s\n' ${rates[$page/$path]} | sort -g | sed -n "$(((ROUNDS + 1) / 2))p")
    mbs[$page/$path]=$(echo "$med * $size / 1000000" | bc -l)
    printf '%-9s %-8s %10.1f %10.1f\n' "$page" "$path" "$med" "${mbs[$page/$path]}"
  done
done
echo
echo "LinkRewrite / mod_proxy_html (MB/s ratio, same run):"
for page in 100k.html 1m.html 5m.html; do
  printf '%-8s static file %5.1fx   proxied %5.1fx\n' "$page" \
    "$(echo "${mbs[$page/s-procd]} / ${mbs[$page/s-pxh]}" | bc -l)" \
    "$(echo "${mbs[$page/procd]} / ${mbs[$page/pxh]}" | bc -l)"
done
# What the filter itself adds to a request: 1/MB/s filtered - 1/MB/s
# unfiltered is its time per MB; the page size over that is the rate at
# which it rewrites inside the loaded Apache (the proxy hop's own cost,
# the same for both filters, taken out).
echo
echo "Rewriting alone (MB/s = 1 / (1/filtered - 1/unfiltered), same run):"
rewriting() { echo "1 / (1 / $1 - 1 / $2)" | bc -l; }
for page in 100k.html 1m.html 5m.html; do
  sp=$(rewriting "${mbs[$page/s-procd]}" "${mbs[$page/plain]}")
  sx=$(rewriting "${mbs[$page/s-pxh]}" "${mbs[$page/plain]}")
  pp=$(rewriting "${mbs[$page/procd]}" "${mbs[$page/proxied]}")
  px=$(rewriting "${mbs[$page/pxh]}" "${mbs[$page/proxied]}")
  printf '%-8s static: LinkRewrite %7.1f  mod_proxy_html %6.1f  %5.1fx   proxied: LinkRewrite %7.1f  mod_proxy_html %6.1f  %5.1fx\n' \
    "$page" "$sp" "$sx" "$(echo "$sp / $sx" | bc -l)" "$pp" "$px" "$(echo "$pp / $px" | bc -l)"
done
