# vault (rpm) %post. /var/lib/vault (the daemon's catalog and known vaults, root only) is made here,
# not shipped, so that removing the package never deletes it. The service is not enabled or
# started: edit /etc/vault/vaultd.toml, then `systemctl enable --now vaultd`.
install -d -m 0700 -o root -g root /var/lib/vault
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
fi
