#!/bin/sh
# Makes a private CATALINA_BASE for Debian's Tomcat 10 (tomcat10-common;
# never the tomcat10 service) serving the webapp in WEBAPP at /jsp:
#   make-base.sh BASE OWNER WEBAPP
# conf/ and the webapp are root's and readable; logs/, temp/ and work/
# (compiled JSPs) belong to OWNER, the user who runs Tomcat.
set -eu
BASE=$1 OWNER=$2 WEBAPP=$3
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$BASE"
mkdir -p "$BASE/conf" "$BASE/logs" "$BASE/temp" "$BASE/work" "$BASE/webapps/jsp"
install -m 0644 "$HERE/server.xml" "$HERE/web.xml" "$BASE/conf/"
cp -R "$WEBAPP"/. "$BASE/webapps/jsp/"
chmod -R a+rX "$BASE"
chown -R "$OWNER" "$BASE/logs" "$BASE/temp" "$BASE/work"
