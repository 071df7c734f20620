#!/usr/bin/env bash
# Builds kubebridge and runs its whole test suite against real servers on 127.0.0.1.
# Installs what it needs first; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_prerequisites

step "building kubebridge and its tests (a first build takes a few minutes)"
start=$(date +%s)
swift build --build-tests
echo "build took $(( $(date +%s) - start )) s"

step "running the tests"
start=$(date +%s)
swift test --skip-build
echo "tests took $(( $(date +%s) - start )) s"

# Every test server above offered h2 as kube-apiserver does; a proxy in front of an API server may
# speak HTTP/1.1 only. Everything that talks to an API server runs again that way.
step "running the API server's tests again over HTTP/1.1 only"
start=$(date +%s)
KUBEBRIDGE_TEST_HTTP1_ONLY=1 swift test --skip-build \
    --filter 'KubeAPITests|KubeInformerTests|KubeTestServerTests|EndToEndTests|BridgeAppTests' --skip SlowConsumerTests
echo "tests over HTTP/1.1 took $(( $(date +%s) - start )) s"
