#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and demo
# mod_procd. Idempotent: apt-get runs only if a package is missing.
set -euo pipefail

PACKAGES=(
    # build
    apache2 apache2-dev libapr1-dev libaprutil1-dev libclang-dev pkg-config
    # tests and demo
    curl procps passwd util-linux iproute2
    # tests/frontends.rs makes a self-signed certificate for mod_ssl
    openssl
    # procd-status tests: the Prometheus text parser, the JSON schema
    # validator, and headless Chromium for the page's screenshot
    python3-prometheus-client python3-jsonschema chromium
    # language runtimes the tests and the demo use
    python3 python3-venv perl
    # Ruby (Rack loader; tests run Sinatra, plain and under bundler)
    ruby ruby-rack ruby-sinatra bundler
    # Perl (PSGI loader needs core Perl only; tests run Plack's Lint,
    # Mojolicious and Dancer2 apps)
    libplack-perl libmojolicious-perl libdancer2-perl
    # PHP through FastCGI (tests/php.rs)
    php-cgi
    # any HTTP program (language=http): tests/http.rs runs a Node app
    # (tests/apps/node/app.js, no npm packages) at /usr/bin/node
    nodejs
    # programs that listen on TCP (listen=tcp): tests/tcp.rs and the demo's
    # /jsp run Debian's Tomcat 10 from its files (never the tomcat10
    # service package) on a private CATALINA_BASE; Jasper compiles JSP
    # with ECJ (libeclipse-jdt-core-java, a dependency), Java 17 comes with it
    tomcat10-common libtomcat10-java
    # LinkRewrite tests compare against the Apache manual
    apache2-doc
    # tests/package.rs builds the .deb (dpkg-shlibdeps) and runs lintian on it
    dpkg-dev lintian
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's apache2 package enables and starts its own service; we never use
# it (everything runs from `apache2 -f OUR.conf`). Leave it as the admin set it.

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found: install Rust 1.85 or newer (https://rustup.rs), then run this again" >&2
    exit 1
fi
