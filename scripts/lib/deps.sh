# Shared by scripts/test.sh and scripts/demo.sh: install what is missing, from Debian's packages
# and PyPI. Nothing is downloaded from anywhere else.

need_apt=()
apt_want() { command -v "$1" >/dev/null 2>&1 || need_apt+=("$2"); }

apt_install() {
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
}

check_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install a Rust toolchain >= 1.95 (rustup) first" >&2
    exit 1
  fi
}

install_demo_deps() {
  check_cargo
  apt_want etcd etcd-server
  apt_want etcdctl etcd-client
  apt_want protoc protobuf-compiler
  # tikv-jemalloc-sys (vaultd's allocator) builds jemalloc with its configure script and make
  apt_want make make
  apt_install
}

install_test_deps() {
  install_demo_deps
  apt_want openssl openssl
  # tests/audit.rs renders the audit's HTML page in headless Chromium
  apt_want chromium chromium
  apt_install
  if ! command -v moto_server >/dev/null 2>&1; then
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/vault-test-venv"
    if [ ! -x "$venv/bin/moto_server" ]; then
      echo "== installing moto[server] (S3 test server) into $venv"
      if ! python3 -m venv "$venv" 2>/dev/null; then
        need_apt+=(python3-venv); apt_install; python3 -m venv "$venv"
      fi
      "$venv/bin/pip" install -q "moto[server]"
    fi
    export PATH="$venv/bin:$PATH"
  fi
}

# scripts/release.sh: cargo-zigbuild (crates.io) with zig from the `ziglang` PyPI package as C
# compiler and linker (glibc 2.17 as the floor), cargo-deb and cargo-generate-rpm (packages
# without the distributions' build tools), binutils (strip, objdump). Pinned versions; a newer
# one is used if already installed.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

cargo_tool() { # cargo_tool BINARY CRATE VERSION
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2 $3 (cargo install)"
  (unset CARGO_TARGET_DIR; cargo install -q --locked "$2" --version "$3")
}

install_release_deps() {
  check_cargo
  apt_want strip binutils
  apt_want objdump binutils
  apt_want gzip gzip
  apt_install
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/vault-release-venv"
  if ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
    echo "== installing ziglang $ZIGLANG_VERSION (zig as C compiler and linker) into $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      need_apt+=(python3-venv); apt_install; python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "ziglang==$ZIGLANG_VERSION"
  fi
  export CARGO_ZIGBUILD_PYTHON_PATH="$venv/bin/python3"
  cargo_tool cargo-zigbuild cargo-zigbuild "$CARGO_ZIGBUILD_VERSION"
  cargo_tool cargo-deb cargo-deb "$CARGO_DEB_VERSION"
  cargo_tool cargo-generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
}

# scripts/release.sh --check: what the checks of the release and its packages use.
install_release_check_deps() {
  apt_want rpm rpm
  apt_want systemd-analyze systemd
  apt_want man man-db
  apt_want unshare util-linux
  apt_install
}
