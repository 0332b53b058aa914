//! A real S3 server for tests: `moto_server` (PyPI moto[server]) on a free loopback port.
//! moto keeps everything in memory and does not check signatures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use vault::store::S3Options;

use crate::process::Proc;

pub struct Moto {
    pub port: u16,
    proc: Proc,
    _dir: tempfile::TempDir,
}

/// One raw HTTP/1.1 request; returns the status code and the whole response text.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    Ok((code, text))
}

impl Moto {
    /// Start moto and wait until it answers HTTP.
    pub fn start() -> Moto {
        let dir = crate::tempdir("moto");
        for attempt in 0..3 {
            let port = crate::free_port();
            let log = dir.path().join(format!("moto-{attempt}.log"));
            let mut proc = Proc::spawn(
                "moto_server",
                Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]),
                &log,
            );
            let ready = crate::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
                if proc.exited().is_some() {
                    return Some(false);
                }
                http(port, "GET", "/").ok().map(|_| true)
            });
            match ready {
                Some(true) => {
                    return Moto { port, proc, _dir: dir };
                }
                _ => eprintln!("moto_server on port {port} did not come up:\n{}", proc.log_tail(20)),
            }
        }
        panic!("moto_server did not start (is moto[server] installed?)");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket with a plain `PUT /<bucket>`.
    pub fn create_bucket(&self, bucket: &str) {
        let (code, text) = http(self.port, "PUT", &format!("/{bucket}")).expect("PUT bucket");
        assert_eq!(
            code,
            200,
            "creating bucket {bucket} failed: {text}\nmoto log:\n{}",
            self.proc.log_tail(20)
        );
    }

    /// Environment for a vaultctl child that uses this server.
    pub fn env(&self) -> Vec<(String, String)> {
        s3_env(&self.endpoint())
    }

    /// Options for `vault::store::Store::open`.
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: Some(true),
        }
    }

    /// Keys under `prefix` in `bucket` (raw ListObjectsV2; first 1000).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, text) = http(self.port, "GET", &format!("/{bucket}?list-type=2&prefix={prefix}")).expect("list bucket");
        assert_eq!(code, 200, "listing {bucket}/{prefix} failed: {text}");
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// Stop the server now (SIGTERM, then SIGKILL): the store becomes unreachable.
    pub fn stop(&mut self) {
        self.proc.terminate(std::time::Duration::from_secs(10));
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}

/// The `AWS_*` environment pointing vaultctl at an S3 endpoint.
pub fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
