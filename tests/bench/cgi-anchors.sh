# A CGI hello script through mod_procd's language=cgi group and through
# mod_cgid, as two more rows of ../shared/bench (sourced by its anchors.sh
# through BENCH_EXTRA_ANCHORS; see tests/bench/cgi.sh). The same /bin/sh
# script, one exec per request, Apache's user in both (a procd group can
# run scripts as another user; mod_cgid needs suexec for that).

PROCD_SO=${PROCD_SO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/libmod_procd.so}

cgi_hello() {  # $1 = private dir: writes $1/cgi/hello.cgi
  mkdir -p "$1/cgi"
  printf '#!/bin/sh\nprintf '"'"'Content-Type: text/plain\\r\\n\\r\\nHello, World!'"'"'\n' > "$1/cgi/hello.cgi"
  chmod 755 "$1/cgi" "$1/cgi/hello.cgi"
}

anchor_cgid_info()  { echo "mod_cgid|one exec per request"; }
anchor_cgid_path()  { echo /cgi/hello.cgi; }
anchor_cgid_start() {
  cgi_hello "$1"
  apache_conf "$1" "$2" "LoadModule alias_module $APACHE_MODS/mod_alias.so
LoadModule cgid_module $APACHE_MODS/mod_cgid.so
ScriptSock \"$1/run/cgid.sock\"
ScriptAlias /cgi/ \"$1/cgi/\"
<Directory \"$1/cgi\">
    Require all granted
</Directory>" && apache_start "$1"
}

anchor_procd_cgi_info()  { echo "mod_procd + CGI|one exec per request"; }
anchor_procd_cgi_path()  { echo /cgi/hello.cgi; }
anchor_procd_cgi_start() {
  cgi_hello "$1"
  apache_conf "$1" "$2" "LoadModule alias_module $APACHE_MODS/mod_alias.so
LoadModule procd_module $PROCD_SO
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup cgi language=cgi processes=${PROCD_CGI_PROCESSES:-1}
Alias /cgi/ \"$1/cgi/\"
<Directory \"$1/cgi\">
    Options +ExecCGI
    LanguageHandler cgi .cgi
    Require all granted
</Directory>" && apache_start "$1" || return 1
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/cgi/hello.cgi"
}
