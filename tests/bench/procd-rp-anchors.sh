# mod_procd's Ruby and Perl rows for ../shared/bench (sourced by its
# anchors.sh through BENCH_EXTRA_ANCHORS; see tests/bench/run-rp.sh).
# Same hello apps and the same worker counts as the anchors they are
# compared with: Passenger's Rack pool (4 processes, 1 request each) and
# starman behind mod_proxy_http (4 workers).

PROCD_SO=${PROCD_SO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/libmod_procd.so}

anchor_procd_rack_info()  { echo "mod_procd + Ruby Rack|4 procs x 1 thread"; }
anchor_procd_rack_path()  { echo /hello; }
anchor_procd_rack_start() { procd_rack_start "$1" "$2" ""; }

# The same with ProcdKeepAliveThread On (as Passenger's connections are
# served on this front end: one thread per kept-alive connection).
anchor_procd_rack_kat_info()  { echo "mod_procd + Ruby Rack, ProcdKeepAliveThread On|4 procs x 1 thread"; }
anchor_procd_rack_kat_path()  { echo /hello; }
anchor_procd_rack_kat_start() { procd_rack_start "$1" "$2" "ProcdKeepAliveThread On"; }
anchor_procd_rack_wait_info()  { echo "mod_procd + Ruby Rack, ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}|4 procs x 1 thread"; }
anchor_procd_rack_wait_path()  { echo /hello; }
anchor_procd_rack_wait_start() { procd_rack_start "$1" "$2" "ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}"; }

# procd_rack_start DIR PORT EXTRA_LINE
procd_rack_start() {
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
$3
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup rack language=ruby processes=4 threads=1 app=$BENCH_APPS/passenger-ruby/config.ru
LanguageMount /hello rack" && apache_start "$1" || return 1
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/hello"
}

anchor_procd_psgi_info()  { echo "mod_procd + Perl PSGI|4 procs"; }
anchor_procd_psgi_path()  { echo /hello; }
anchor_procd_psgi_start() { procd_psgi_start "$1" "$2" ""; }
anchor_procd_psgi_wait_info()  { echo "mod_procd + Perl PSGI, ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}|4 procs"; }
anchor_procd_psgi_wait_path()  { echo /hello; }
anchor_procd_psgi_wait_start() { procd_psgi_start "$1" "$2" "ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}"; }

# procd_psgi_start DIR PORT EXTRA_LINE
procd_psgi_start() {
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
$3
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup psgi language=perl processes=4 app=$BENCH_APPS/psgi/hello.psgi
LanguageMount /hello psgi" && apache_start "$1" || return 1
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/hello"
}
