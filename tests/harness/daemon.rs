//! Talking to a real `vaultd`: the binary, raw HTTP requests to its API, metric lines, private
//! config files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vaultctl;

/// The built `vaultd` next to `vaultctl`.
pub fn vaultd() -> PathBuf {
    let bin = vaultctl().with_file_name("vaultd");
    assert!(bin.is_file(), "{} does not exist: run cargo build --workspace first", bin.display());
    bin
}

/// GET `path` on 127.0.0.1:`port`, with an optional bearer token: (status, body).
pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    request(port, "GET", path, token)
}

pub fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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
