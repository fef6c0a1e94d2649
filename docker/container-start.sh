#!/usr/bin/env bash
# The mod_procd image's entry point (PID 1), and a way to try it on a host:
# writes the demo site and config (docker/demo.sh config), runs Apache in
# the foreground as its child and forwards signals to it:
#   SIGTERM, SIGINT (docker stop)  -> SIGWINCH: graceful-stop (requests in
#                                     flight finish, GracefulShutdownTimeout
#                                     bounds it)
#   SIGHUP, SIGUSR1                -> SIGUSR1: graceful restart
# Apache's error log is this process's stderr, the access log its stdout.
# Exits with Apache's status.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PROCD_DEMO_DIR=${PROCD_DEMO_DIR:-/srv/procd-demo}
export PROCD_DEMO_PORT=${PROCD_DEMO_PORT:-8080}
export PROCD_DEMO_LISTEN=${PROCD_DEMO_LISTEN:-0.0.0.0}
export PROCD_DEMO_SO=${PROCD_DEMO_SO:-/usr/lib/apache2/modules/mod_procd.so}
export PROCD_DEMO_ERRORLOG=${PROCD_DEMO_ERRORLOG:-/proc/self/fd/2}
export PROCD_DEMO_ACCESSLOG=${PROCD_DEMO_ACCESSLOG:-/proc/self/fd/1}
bash "$here/demo.sh" config || exit 1

apache2 -DFOREGROUND -f "$PROCD_DEMO_DIR/httpd.conf" &
child=$!
trap 'kill -WINCH "$child" 2>/dev/null' TERM INT
trap 'kill -USR1 "$child" 2>/dev/null' HUP USR1
# `wait` returns when a trapped signal arrives: wait again until Apache ends.
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
done
exit "${status:-0}"
