# Checks of a built release (dist/), sourced by `bash scripts/release.sh --check` (what .ci/run
# runs): the glibc floor, the demo with the release binaries, the RPM's contents, the unit, and the
# deb installed on this machine (then removed and purged again). Needs root on Debian.

release_fail() { echo "RELEASE CHECK FAILED: $*" >&2; exit 1; }
release_ok() { echo "   ok: $*"; }

# No GLIBC_x.y symbol version above the floor, and the binary starts.
check_glibc_floor() {
  local bin max
  for bin in dist/vaultctl dist/vaultd; do
    max=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    [ -n "$max" ] || release_fail "$bin: no GLIBC symbol versions found (objdump -T); is it dynamically linked against glibc?"
    if [ "$(printf '%s\n%s\n' "$max" "$GLIBC_FLOOR" | sort -V | tail -1)" != "$GLIBC_FLOOR" ]; then
      objdump -T "$bin" | grep -E "GLIBC_$max" >&2
      release_fail "$bin needs glibc $max (above the floor $GLIBC_FLOOR, RHEL 7): see the symbols above"
    fi
    "$bin" --version >/dev/null || release_fail "$bin --version failed"
    release_ok "$bin: newest glibc symbol version $max (floor $GLIBC_FLOOR); $("$bin" --version)"
  done
}

check_demo_with_release() {
  local log
  log=$(mktemp)
  VAULTCTL=dist/vaultctl VAULTD=dist/vaultd bash scripts/demo.sh >"$log" 2>&1 || {
    tail -40 "$log" >&2
    release_fail "the demo failed with the release binaries (log: $log)"
  }
  grep -q '^== using .*/dist/vaultctl' "$log" || release_fail "the demo did not use dist/ binaries (log: $log)"
  grep -q '^== demo done: 11 keys restored' "$log" || release_fail "the demo did not restore the 11 keys (10 written at the start, demo-4 just before the bad change) (log: $log)"
  rm -f "$log"
  release_ok "demo with dist/vaultctl and dist/vaultd: 11 keys restored, the deleted Secret back"
}

# rpm -qlvp prints "MODE 1 USER GROUP SIZE DATE PATH"; $1 is "MODE USER GROUP PATH".
expect_rpm_entry() {
  local mode=${1%% *} rest=${1#* } user group path
  user=${rest%% *}; rest=${rest#* }; group=${rest%% *}; path=${rest#* }
  awk -v m="$mode" -v u="$user" -v g="$group" -v p="$path" \
    '$1 == m && $3 == u && $4 == g && $NF == p { found = 1 } END { exit !found }' "$rpm_list" ||
    release_fail "the RPM lacks $mode $user $group $path; it has:$(printf '\n%s' "$(cat "$rpm_list")")"
}

check_rpm() {
  local rpm_file rpm_list
  rpm_file=$(ls dist/vault-*.x86_64.rpm)
  rpm_list=$(mktemp)
  rpm -qlvp "$rpm_file" >"$rpm_list"
  local e
  for e in "-rwxr-xr-x root root /usr/bin/vaultctl" "-rwxr-xr-x root root /usr/bin/vaultd" \
    "-rw-r--r-- root root /usr/lib/systemd/system/vaultd.service" \
    "-rw------- root root /etc/vault/vaultd.toml" "-rw-r--r-- root root /etc/vault/profiles/master.toml" \
    "-rw-r--r-- root root /etc/vault/profiles/node.toml" "-rw-r--r-- root root /etc/vault/profiles/etcd.toml" \
    "-rw-r--r-- root root /usr/share/man/man1/vaultctl.1.gz" "-rw-r--r-- root root /usr/share/man/man1/vaultd.1.gz" \
    "-rw-r--r-- root root /usr/share/man/man1/vaultctl-etcd-restore.1.gz" \
    "-rw-r--r-- root root /usr/share/bash-completion/completions/vaultctl" \
    "-rw-r--r-- root root /usr/share/zsh/site-functions/_vaultctl" \
    "-rw-r--r-- root root /usr/share/fish/vendor_completions.d/vaultctl.fish" \
    "-rw-r--r-- root root /usr/share/bash-completion/completions/vaultd"; do
    expect_rpm_entry "$e"
  done
  # Config files: exactly the config and the profiles, all %config(noreplace) ("cn").
  local configs
  configs=$(rpm -qcp "$rpm_file" | sort | tr '\n' ' ')
  [ "$configs" = "/etc/vault/profiles/etcd.toml /etc/vault/profiles/master.toml /etc/vault/profiles/node.toml /etc/vault/vaultd.toml " ] ||
    release_fail "rpm -qcp lists: $configs"
  rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" | grep '^c' | grep -v '^cn ' &&
    release_fail "config files above are not %config(noreplace)"
  # RHEL 7's rpm (4.11) reads gzip payloads, not zstd; the scriptlets are the packaging/ scripts.
  [ "$(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm_file")" = gzip ] || release_fail "the RPM's payload is not gzip"
  rpm -qp --requires "$rpm_file" | grep -q PayloadIsZstd && release_fail "the RPM requires rpmlib(PayloadIsZstd)"
  local scripts
  scripts=$(rpm -qp --scripts "$rpm_file")
  echo "$scripts" | grep -q 'systemctl try-restart vaultd.service' ||
    release_fail "the RPM's scriptlets are not packaging/rpm/*.sh: $scripts"
  echo "$scripts" | grep -q '^install -d -m 0700 -o root -g root /var/lib/vault$' ||
    release_fail "the RPM's %post does not make /var/lib/vault 0700: $scripts"
  check_rpm_in_scratch_root "$rpm_file"
  rm -f "$rpm_list"
  release_ok "$rpm_file: files, modes, owners, %config(noreplace), gzip payload, scriptlets; installs, upgrades over an edited config and erases in a scratch root ($(rpm -qp --requires "$rpm_file" | grep -c GLIBC) GLIBC requires)"
}

# Install, upgrade over an edited config, and erase the RPM in a scratch root (rpm --root, without
# the scriptlets, which would need a shell in that root): what rpm does with the files and markings.
check_rpm_in_scratch_root() {
  local root rpm_quiet
  root=$(mktemp -d)
  rpm_quiet=(--root "$root" --nodeps --noscripts)
  rpm --root "$root" --initdb
  rpm -i "${rpm_quiet[@]}" "$1" 2>/dev/null || release_fail "rpm -i --root $root $1"
  [ "$(stat -c '%a %U' "$root/etc/vault/vaultd.toml")" = "600 root" ] || release_fail "rpm installed vaultd.toml as $(stat -c '%a %U' "$root/etc/vault/vaultd.toml")"
  [ -x "$root/usr/bin/vaultd" ] || release_fail "rpm did not install /usr/bin/vaultd"
  echo '# edited by the operator' >>"$root/etc/vault/vaultd.toml"
  rpm -U --replacepkgs "${rpm_quiet[@]}" "$1" 2>/dev/null || release_fail "rpm -U --root $root $1"
  grep -q '^# edited by the operator' "$root/etc/vault/vaultd.toml" || release_fail "rpm -U overwrote the edited vaultd.toml"
  rpm -e "${rpm_quiet[@]}" vault 2>/dev/null || release_fail "rpm -e --root $root vault"
  [ ! -e "$root/usr/bin/vaultd" ] || release_fail "rpm -e left /usr/bin/vaultd"
  grep -q '^# edited by the operator' "$root/etc/vault/vaultd.toml.rpmsave" || release_fail "rpm -e did not keep the edited config as vaultd.toml.rpmsave"
  rm -rf "$root"
}

# The unit as in the repository (ExecStart=/usr/local/bin/vaultd): verified in a private mount
# namespace whose /usr/local/bin holds the release vaultd, so that nothing on this machine changes.
check_unit() {
  unshare --mount sh -c 'mount -t tmpfs tmpfs /usr/local/bin && cp dist/vaultd /usr/local/bin/ &&
    systemd-analyze verify systemd/vaultd.service' || release_fail "systemd-analyze verify systemd/vaultd.service"
  release_ok "systemd-analyze verify systemd/vaultd.service"
}

remove_checked_deb() {
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq vault >/dev/null 2>&1 || true
  rm -rf /etc/vault /var/lib/vault
}

# Install the deb with apt, use it, upgrade over an edited config, remove it; then purge it and
# remove what the check made, so the machine is as before.
check_deb() {
  local deb out
  deb=$(ls dist/vault_*_amd64.deb)
  if dpkg -s vault >/dev/null 2>&1 || [ -e /etc/vault ] || [ -e /var/lib/vault ]; then
    release_fail "this check installs and removes the vault package, but this machine already has it, /etc/vault or /var/lib/vault: run it on a machine without them"
  fi
  trap remove_checked_deb EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null || release_fail "apt-get install ./$deb"
  [ "$(stat -c '%a %U' /etc/vault/vaultd.toml)" = "600 root" ] || release_fail "/etc/vault/vaultd.toml is $(stat -c '%a %U' /etc/vault/vaultd.toml)"
  [ "$(stat -c '%a %U' /var/lib/vault)" = "700 root" ] || release_fail "/var/lib/vault is $(stat -c '%a %U' /var/lib/vault)"
  dpkg-query -W -f='${Conffiles}\n' vault | grep -q '/etc/vault/vaultd.toml' || release_fail "/etc/vault/vaultd.toml is not a conffile"
  # The installed vaultd reads the installed config (its default path): the example's placeholders
  # are reported at their lines; the catalog's directory /var/lib/vault exists.
  out=$(vaultd check-config --offline 2>&1) && release_fail "check-config accepted the example config: $out"
  echo "$out" | grep -q '^/etc/vault/vaultd.toml:[0-9]*: writer_key: ' || release_fail "vaultd check-config: $out"
  echo "$out" | grep -q 'catalog' && release_fail "vaultd check-config complains about the catalog: $out"
  [ "$(command -v vaultctl)" = /usr/bin/vaultctl ] || release_fail "vaultctl is not /usr/bin/vaultctl"
  MANWIDTH=80 man vaultctl 2>/dev/null | grep -q 'vaultctl-backup' || release_fail "man vaultctl does not render"
  MANWIDTH=80 man vaultd 2>/dev/null | grep -q 'check-config' || release_fail "man vaultd does not render"
  man -w vaultctl-etcd-restore >/dev/null || release_fail "no man page vaultctl-etcd-restore"
  bash -c '. /usr/share/bash-completion/completions/vaultctl && complete -p vaultctl' >/dev/null ||
    release_fail "the bash completion does not load"
  systemd-analyze verify /lib/systemd/system/vaultd.service || release_fail "systemd-analyze verify of the installed unit"
  # An upgrade (here: the same package again) keeps the operator's edits.
  echo '# edited by the operator' >>/etc/vault/vaultd.toml
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall "./$deb" >/dev/null || release_fail "reinstalling $deb"
  grep -q '^# edited by the operator' /etc/vault/vaultd.toml || release_fail "reinstalling overwrote /etc/vault/vaultd.toml"
  [ "$(stat -c '%a' /etc/vault/vaultd.toml)" = 600 ] || release_fail "reinstalling changed the config's mode"
  touch /var/lib/vault/catalog.sqlite
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq vault >/dev/null || release_fail "apt-get remove vault"
  [ ! -e /usr/bin/vaultctl ] || release_fail "apt-get remove left /usr/bin/vaultctl"
  grep -q '^# edited by the operator' /etc/vault/vaultd.toml || release_fail "removing the package lost /etc/vault/vaultd.toml"
  [ -f /var/lib/vault/catalog.sqlite ] || release_fail "removing the package lost /var/lib/vault"
  remove_checked_deb
  trap - EXIT
  release_ok "$deb: installs, check-config reads /etc/vault/vaultd.toml, man pages, completion, unit; an upgrade keeps the edited config; remove keeps /etc/vault and /var/lib/vault"
}

run_release_checks() {
  install_demo_deps
  install_release_check_deps
  echo "== checking the release"
  check_glibc_floor
  check_rpm
  check_unit
  check_deb
  check_demo_with_release
  echo "== release checks passed"
}
