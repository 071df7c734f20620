#!/usr/bin/env bash
# Runs every fuzz target (watch frames and list pages, object redaction, discovery documents,
# configurations, kubeconfigs) for a stated time each, in parallel:
#
#   scripts/fuzz.sh [SECONDS]       default 600 per target; the test command runs 3,000 inputs each
#
# Each target prints how many inputs it ran; a finding fails the run with the input that caused it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_prerequisites

step "building the tests"
swift build --build-tests

step "fuzzing, ${1:-600} s per target"
export KUBEBRIDGE_FUZZ_SECONDS="${1:-600}"
run_tests_quietly FuzzTests .build/fuzz.log
