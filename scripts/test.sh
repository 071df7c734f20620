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
