#!/usr/bin/env bash
# Builds the release into dist/: vaultctl and vaultd for x86_64 Linux with glibc 2.17 as the floor
# (RHEL/CentOS 7), stripped; their man pages and bash/zsh/fish completions (generated from the
# clap definitions); the systemd unit with the packages' paths; a deb and an RPM (package `vault`)
# with all of these, the config and the profiles. Installs what it needs first (cargo-zigbuild,
# cargo-deb, cargo-generate-rpm from crates.io, zig from PyPI's `ziglang`).
# Usage: bash scripts/release.sh            build dist/
#        bash scripts/release.sh --check    build dist/, then check it (scripts/lib/release-checks.sh):
#                                           glibc floor, the demo with the release binaries, the
#                                           packages' contents, the deb installed on this machine
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: bash scripts/release.sh [--check]" >&2; exit 1 ;;
esac
install_release_deps

GLIBC_FLOOR=2.17
TRIPLE=x86_64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
built="$target_dir/$TRIPLE/release"

echo "== building vaultctl and vaultd for $TRIPLE, glibc $GLIBC_FLOOR (cargo zigbuild --release)"
start=$(date +%s)
# No debug info: the binaries are stripped anyway, and it saves build time.
CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo zigbuild --release --locked --target "$TRIPLE.$GLIBC_FLOOR" -p vaultctl -p vaultd
echo "   built in $(($(date +%s) - start)) s"

rm -rf dist
mkdir -p dist/man dist/completions/bash dist/completions/zsh dist/completions/fish
for bin in vaultctl vaultd; do
  strip -o "dist/$bin" "$built/$bin"
  "dist/$bin" man --out dist/man
  "dist/$bin" completions bash >"dist/completions/bash/$bin"
  "dist/$bin" completions zsh >"dist/completions/zsh/_$bin"
  "dist/$bin" completions fish >"dist/completions/fish/$bin.fish"
done
gzip -9n dist/man/*.1

# The packages install vaultd in /usr/bin, not /usr/local/bin as a hand install does.
{
  echo "# Installed by the vault package (vaultd in /usr/bin); docs in /usr/share/doc/vault/."
  sed -E '/^Exec/ s#/usr/local/bin/vaultd#/usr/bin/vaultd#g' systemd/vaultd.service
} >dist/vaultd.service
if grep -E '^Exec' dist/vaultd.service | grep -q /usr/local/; then
  echo "dist/vaultd.service still runs something from /usr/local: update scripts/release.sh" >&2
  exit 1
fi

echo "== packaging (cargo deb, cargo generate-rpm)"
cargo deb -p vaultctl --no-build --no-strip --output dist/ >/dev/null
# gzip payload: rpm on RHEL/CentOS 7 (4.11) cannot read zstd, the default.
cargo generate-rpm -p vaultctl --payload-compress gzip --output dist/
(cd dist && sha256sum vaultctl vaultd ./*.deb ./*.rpm >SHA256SUMS)

echo "== dist/"
ls -l dist/vaultctl dist/vaultd dist/*.deb dist/*.rpm | awk '{printf "   %-40s %6.1f MiB\n", $NF, $5 / 1048576}'

if $check; then
  . scripts/lib/release-checks.sh
  run_release_checks
fi
