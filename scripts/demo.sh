#!/usr/bin/env bash
# Runs kubebridge. With a cluster configured (KUBECONFIG or ~/.kube/config) it shows what
# kubebridge would watch there; without one it runs the demo against its built-in test API server.
# Installs what it needs first; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_prerequisites

step "building kubebridge (a first build takes a few minutes)"
swift build --product kubebridge
binary="$(swift build --show-bin-path)/kubebridge"

if [ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ]; then
  step "a cluster is configured: what kubebridge can watch there"
  exec "$binary" discover
else
  step "no cluster configured: the demo against the built-in test API server"
  exec "$binary" demo
fi
