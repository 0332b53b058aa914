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
  apt_install
}

install_test_deps() {
  install_demo_deps
  apt_want openssl openssl
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
