# mod_procd as one more row of ../shared/bench (sourced by its anchors.sh /
# graceful.sh through BENCH_EXTRA_ANCHORS; see tests/bench/run.sh).
# Same hello apps, same Apache front end, same workers as mod_wsgi daemon
# mode: 2 processes x 8 threads. PROCD_PY_SHAPE="processes=16 threads=1"
# measures another shape of the hello group (not like for like). The row
# procd_kat is the same with ProcdKeepAliveThread On, procd_wait with
# ProcdKeepAliveThread 2ms (PROCD_KA_WAIT=5ms for another wait).

PROCD_SO=${PROCD_SO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/libmod_procd.so}

anchor_procd_info()  { echo "mod_procd + Python WSGI|2 procs x 8 threads"; }
anchor_procd_path()  { [ "${1:-}" = sleep ] && echo /sleep || echo /hello; }
anchor_procd_start() { procd_python_start "$1" "$2" ""; }

# The hello group with intake=gil (a process takes one request at a time
# while its requests only compute; README, "Serving Python"): the default
# since 2026-12-04 night, so the same as procd; named for older runs.
anchor_procd_gil_info()  { echo "mod_procd + Python, intake=gil|2 procs x 8 threads"; }
anchor_procd_gil_path()  { anchor_procd_path "$@"; }
anchor_procd_gil_start() { PROCD_PY_SHAPE="${PROCD_PY_SHAPE:-processes=2 threads=8} intake=gil" procd_python_start "$1" "$2" ""; }

# The hello group with intake=threads (every thread takes requests, the
# default before 2026-12-04 night, as mod_wsgi's daemon threads do).
anchor_procd_threads_info()  { echo "mod_procd + Python, intake=threads|2 procs x 8 threads"; }
anchor_procd_threads_path()  { anchor_procd_path "$@"; }
anchor_procd_threads_start() { PROCD_PY_SHAPE="${PROCD_PY_SHAPE:-processes=2 threads=8} intake=threads" procd_python_start "$1" "$2" ""; }

# One thread per process (2 x 1): each process takes one request at a time,
# whatever it does; what intake=gil does while requests only compute.
anchor_procd_1t_info()  { echo "mod_procd + Python, one thread per process|2 procs x 1 thread"; }
anchor_procd_1t_path()  { anchor_procd_path "$@"; }
anchor_procd_1t_start() { PROCD_PY_SHAPE="processes=2 threads=1" procd_python_start "$1" "$2" ""; }

# An app that sleeps 5 ms per request (a database call): requests that wait
# rather than compute, 1 process x 8 threads, intake=threads; procd_io_gil
# with intake=gil.
anchor_procd_io_info()  { echo "mod_procd + Python, 5 ms asleep|1 proc x 8 threads"; }
anchor_procd_io_path()  { echo /io; }
anchor_procd_io_start() { procd_io_start "$1" "$2" "intake=threads"; }
anchor_procd_io_gil_info()  { echo "mod_procd + Python, 5 ms asleep, intake=gil|1 proc x 8 threads"; }
anchor_procd_io_gil_path()  { echo /io; }
anchor_procd_io_gil_start() { procd_io_start "$1" "$2" "intake=gil"; }

# An app whose requests compute 10 ms without the GIL (as numpy does), 1
# process x 4 threads, intake=gil: side by side once seen (README,
# "intake=gil the default"); paired-builds.sh compares it with the build
# before.
anchor_procd_nogil_info()  { echo "mod_procd + Python, 10 ms without the GIL, intake=gil|1 proc x 4 threads"; }
anchor_procd_nogil_path()  { echo /io; }
anchor_procd_nogil_start() { PROCD_IO_APP=nogil.wsgi PROCD_IO_THREADS=4 procd_io_start "$1" "$2" "intake=gil"; }

# procd_io_start DIR PORT EXTRA_OPTIONS
procd_io_start() {
  local apps
  apps="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/apps"
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup io language=python processes=1 threads=${PROCD_IO_THREADS:-8} $3 app=$apps/${PROCD_IO_APP:-io.wsgi}
LanguageMount /io io" && apache_start "$1" || return 1
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/io"
}

anchor_procd_kat_info()  { echo "mod_procd + Python, ProcdKeepAliveThread On|2 procs x 8 threads"; }
anchor_procd_kat_path()  { anchor_procd_path "$@"; }
anchor_procd_kat_start() { procd_python_start "$1" "$2" "ProcdKeepAliveThread On"; }

# procd_python_start DIR PORT EXTRA_LINE
procd_python_start() {
  apache_conf "$1" "$2" "LoadModule procd_module $PROCD_SO
$3
ProcdRuntimeDir \"$1/run/procd\"
LanguageGroup hello language=python ${PROCD_PY_SHAPE:-processes=2 threads=8} app=$BENCH_APPS/wsgi/hello.wsgi
LanguageGroup sleep language=python processes=2 threads=8 app=$BENCH_APPS/wsgi/sleep.wsgi
LanguageMount /hello hello
LanguageMount /sleep sleep" && apache_start "$1" || return 1
  # Groups become ready a moment after Apache answers.
  wait_for curl -fso /dev/null "http://127.0.0.1:$2/hello" && wait_for curl -fso /dev/null "http://127.0.0.1:$2/sleep"
}

anchor_procd_wait_info()  { echo "mod_procd + Python, ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}|2 procs x 8 threads"; }
anchor_procd_wait_path()  { anchor_procd_path "$@"; }
anchor_procd_wait_start() { procd_python_start "$1" "$2" "ProcdKeepAliveThread ${PROCD_KA_WAIT:-2ms}"; }
