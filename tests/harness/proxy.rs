//! A TCP proxy on 127.0.0.1 in front of a test server (moto), to make it behave like a slow or an
//! older S3-compatible store. Each read from the client is shown to a rule that decides what
//! happens to it; everything else is forwarded as it comes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does with bytes the client sent.
pub enum Rule {
    Forward,
    /// Forward, but hold the server's next answer back this long (the server did the work, the
    /// client hears of it late).
    HoldAnswer(Duration),
    /// Do not forward: answer with these bytes and close the connection.
    Answer(&'static str),
}

/// Start a proxy to `upstream`; returns its port. It runs until the test process ends.
pub fn start(upstream: u16, rule: impl Fn(&[u8]) -> Rule + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let rule = Arc::new(rule);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let mut client_w = client.try_clone().unwrap();
            let hold_ms = Arc::new(AtomicU64::new(0));
            let held = hold_ms.clone();
            let rule = rule.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client_r.read(&mut buf) {
                    match rule(&buf[..n]) {
                        Rule::Forward => {}
                        Rule::HoldAnswer(d) => held.store(d.as_millis() as u64, Ordering::SeqCst),
                        Rule::Answer(answer) => {
                            let _ = client_w.write_all(answer.as_bytes());
                            let _ = client_w.shutdown(Shutdown::Both);
                            let _ = server_w.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                    if server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server_w.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = server.read(&mut buf) {
                    let hold = hold_ms.swap(0, Ordering::SeqCst);
                    if hold > 0 {
                        std::thread::sleep(Duration::from_millis(hold));
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// The first line of an HTTP request in `bytes` (e.g. `PUT /bucket/snapshots/... HTTP/1.1`).
pub fn request_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned()
}

/// Whether `bytes` carry an `If-None-Match` header (a conditional create).
pub fn has_if_none_match(bytes: &[u8]) -> bool {
    bytes.windows(16).any(|w| w.eq_ignore_ascii_case(b"\nif-none-match: "))
}

/// What an older S3-compatible server answers to a header it does not implement.
pub const NOT_IMPLEMENTED: &str = "HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\nContent-Length: 113\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code><Message>If-None-Match</Message></Error>\n";
