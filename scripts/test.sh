#!/usr/bin/env bash
# Runs every test: unit tests, the store conformance suite on a real S3 server (moto_server) and
# end-to-end tests against real etcd 3.4 clusters. Installs what the tests need first.
# Usage: bash scripts/test.sh   (as root on Debian, or with the tools already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
install_test_deps
echo "== build"
cargo build --workspace --all-targets
echo "== unit tests"
cargo test --workspace --exclude vault-e2e
echo "== end-to-end tests (real etcd, real S3 server)"
cargo test -p vault-e2e -- --test-threads=2
