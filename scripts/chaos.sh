#!/usr/bin/env bash
# The chaos run: churn over 22 resources into the file, Kafka, NATS and webhook sinks at once, the
# bridge SIGKILLed again and again, brokers restarted, a 503 stretch, cut watches, compaction and a
# CRD removed while the bridge is down; then every sink is checked against the server's history.
#
#   scripts/chaos.sh [KILLS]        default 120 SIGKILLs (about 6 minutes); the test command runs 20
#
# KUBEBRIDGE_CHAOS_RATE (writes/s, default 80) and KUBEBRIDGE_CHAOS_SEED (to repeat a run) apply too.
# The summary is printed at the end; the whole output is in .build/chaos.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

install_prerequisites

step "building kubebridge and its tests"
swift build --build-tests

step "chaos run: ${1:-120} SIGKILLs"
export KUBEBRIDGE_CHAOS_KILLS="${1:-120}"
run_tests_quietly ChaosTests .build/chaos.log
