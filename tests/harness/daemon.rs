//! Talking to a real `vaultd`: the binary, raw HTTP requests to its API over TCP or a unix socket,
//! metric lines, private config files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The built `vaultd` next to `vaultctl`; panics if it is missing or older than its sources.
pub fn vaultd() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| crate::vaultctl::fresh_binary("vaultd", &["vault/src", "vaultd/src"]))
        .clone()
}

/// The daemon's `XDG_CONFIG_HOME` (its known-vaults file) beside its config, not the tester's home.
fn private_config_home(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("xdg-config")
}

/// `vaultd run --config CONFIG` with the info log level, ready to spawn.
pub fn vaultd_run(config: &Path) -> Command {
    let mut cmd = Command::new(vaultd());
    cmd.args(["run", "--config"]).arg(config).env("VAULT_LOG", "info");
    cmd.env("XDG_CONFIG_HOME", private_config_home(config));
    cmd
}

/// `vaultd check-config --config CONFIG` (live checks included) must accept it.
pub fn assert_config_ok(config: &Path) {
    let out = Command::new(vaultd())
        .env("XDG_CONFIG_HOME", private_config_home(config))
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
}

/// GET `path` on 127.0.0.1:`port`, with an optional bearer token: (status, body).
pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    request(port, "GET", path, token)
}

/// A request to a daemon on 127.0.0.1:`port`: (status, body), or `None` if it does not answer.
pub fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    exchange(s, method, path, token)
}

/// A request to a daemon on the unix socket `socket`: (status, body), or `None` if it does not
/// answer.
pub fn unix_request(socket: &Path, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    exchange(s, method, path, token)
}

/// One HTTP/1.1 request on a fresh connection.
fn exchange(mut s: impl Read + Write, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The value of one metric line, e.g. `vault_job_runs_total{job="etcd",outcome="success"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
