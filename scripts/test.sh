#!/usr/bin/env bash
# Runs every test: unit tests, the store conformance suite on a real S3 server (moto_server) and
# end-to-end tests against real etcd 3.4 clusters. Installs what the tests need first.
# Usage: bash scripts/test.sh   (as root on Debian, or with the tools already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
install_test_deps
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== build"
cargo build --workspace --all-targets
echo "== unit and library tests"
cargo test --no-fail-fast --workspace --exclude vault-e2e 2>&1 | tee -a "$log"
echo "== end-to-end tests (real etcd, real S3 server)"
cargo test --no-fail-fast -p vault-e2e --tests -- --test-threads=2 2>&1 | tee -a "$log"
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
