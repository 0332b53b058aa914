# vault (rpm) %preun: on erase (not upgrade) stop and disable the daemon. /etc/vault (keys, edited
# config) and /var/lib/vault (catalog) stay.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
  systemctl --no-reload disable --now vaultd.service >/dev/null 2>&1 || :
fi
