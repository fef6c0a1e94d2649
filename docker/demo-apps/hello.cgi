#!/bin/sh
# mod_procd demo: a CGI script, run per request as user procd-demo-cgi.
printf 'Content-Type: text/html\r\n\r\n'
printf '<h1>Hello from CGI</h1><p>pid %s, user %s, script %s</p><p><a href="/">back</a></p>\n' "$$" "$(id -un)" "$SCRIPT_NAME"
