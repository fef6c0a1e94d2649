#!/usr/bin/env bash
# Builds libapache2-mod-procd_VERSION_ARCH.deb from this repository with
# dpkg-deb (no debhelper tree to keep in step with Cargo: the package is one
# .so, three Apache config files, docs and maintainer scripts; dpkg-shlibdeps
# computes the library dependencies and the Apache module ABI comes from
# apache2-dev's ap_mmn.h).
#
#   docker/build-deb.sh                      # release build, .deb in target/deb/
#   docker/build-deb.sh --so PATH            # package this .so instead (tests)
#   docker/build-deb.sh --version 0.1.0+t2   # another version (upgrade tests)
#   docker/build-deb.sh --out DIR
#
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

so=""
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
out="target/deb"
while [ $# -gt 0 ]; do
    case "$1" in
        --so) so="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "build-deb.sh: unknown argument $1 (use --so PATH, --version V, --out DIR)" >&2; exit 2 ;;
    esac
done
if [ -z "$so" ]; then
    cargo build --release --lib >&2
    so="target/release/libmod_procd.so"
fi
[ -f "$so" ] || { echo "build-deb.sh: no module at $so" >&2; exit 1; }

package=libapache2-mod-procd
arch="$(dpkg --print-architecture)"
mmn="$(sed -n 's/^#define MODULE_MAGIC_NUMBER_MAJOR \([0-9]*\).*/\1/p' /usr/include/apache2/ap_mmn.h)"
[ -n "$mmn" ] || { echo "build-deb.sh: cannot read MODULE_MAGIC_NUMBER_MAJOR (install apache2-dev)" >&2; exit 1; }

work="$(mktemp -d /tmp/procd-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
doc="$root/usr/share/doc/$package"
install -d "$root/DEBIAN" "$root/usr/lib/apache2/modules" "$root/etc/apache2/mods-available" \
    "$root/etc/apache2/conf-available" "$doc/examples"
install -m 644 "$so" "$root/usr/lib/apache2/modules/mod_procd.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/lib/apache2/modules/mod_procd.so"
install -m 644 apache-conf/procd.load apache-conf/procd.conf "$root/etc/apache2/mods-available/"
# The example vhost is available, never enabled (a2enconf procd-example).
install -m 644 apache-conf/procd-example-vhost.conf "$root/etc/apache2/conf-available/procd-example.conf"
install -m 644 apache-conf/procd-example-vhost.conf "$doc/examples/procd-example-vhost.conf"
install -m 644 docker/deb/copyright "$doc/copyright"
gzip -9n -c README.md > "$doc/README.md.gz"
printf '%s (%s) unstable; urgency=medium\n\n  * Built from the mod_procd repository.\n\n -- mod_procd developers <mod-procd@example.org>  %s\n' \
    "$package" "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$doc/changelog.gz"
for s in postinst prerm postrm; do
    install -m 755 "docker/deb/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) > "$root/DEBIAN/conffiles"

# Shared-library dependencies, as dpkg-shlibdeps computes them.
mkdir -p "$work/src/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" > "$work/src/debian/control"
shlibs="$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/lib/apache2/modules/mod_procd.so" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: mod_procd developers <mod-procd@example.org>
Installed-Size: $size
Depends: apache2-api-$mmn, ${shlibs:-libc6}
Recommends: apache2
Suggests: python3, php-cgi, ruby-rack, perl, nodejs
Section: httpd
Priority: optional
Description: Apache module hosting web applications in any language
 mod_procd turns Apache httpd 2.4 into a host for web applications in
 Python (WSGI), PHP (FastCGI), Ruby (Rack), Perl (PSGI), CGI scripts and
 any HTTP program, each per virtual host under its own user, supervised by
 a process manager beside httpd and restarted gracefully with
 apachectl graceful.
EOF
mkdir -p "$out"
deb="$out/${package}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
# lintian (when installed) reports two warnings, both about the example
# vhost in conf-available, kept on purpose: non-standard-apache2-
# configuration-name (it is an example, procd-example.conf, not the
# package's own configuration) and web-application-works-only-with-apache
# (this is an Apache module).
echo "$deb"
