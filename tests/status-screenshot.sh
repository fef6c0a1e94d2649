#!/usr/bin/env bash
# Renders the procd-status HTML page in headless Chromium (Debian's
# `chromium`) into tests/procd-status.png: runs tests/status.rs, which
# starts a private Apache with two groups, sends requests, keeps one slow
# request running and takes the screenshot before it stops Apache.
# Run as root (the tests create users and start Apache), from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/tests/procd-status.png"
mkdir -p docs
PROCD_STATUS_SCREENSHOT="$out" cargo test --test status -- --nocapture
echo "wrote $out"
