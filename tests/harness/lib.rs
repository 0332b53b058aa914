//! Test harness for the end-to-end tests: real etcd members, a real S3 server (moto), real TLS
//! certificates made with `openssl`, and the real `vaultctl` binary, all as child processes.
//!
//! Every process is spawned by this harness and stopped by its PID only (never by name); guards
//! stop them on drop, so a panicking test still cleans up.

pub mod certs;
pub mod daemon;
pub mod data;
pub mod etcd;
pub mod moto;
pub mod okd;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod systemctl;
pub mod vaultctl;

pub use certs::{Ca, Certs};
pub use etcd::{EtcdCluster, EtcdMember};
pub use moto::Moto;
pub use ports::free_port;
pub use systemctl::Systemctl;
pub use vaultctl::{Ctl, Run, Spawned, single_member_restore_args, vaultctl};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A string field of `--json` output; panics naming the field and showing the document.
pub fn s(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing or not a string in {v:#}"))
        .to_string()
}

/// A number field of `--json` output; panics naming the field and showing the document.
pub fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} missing or not a number in {v:#}"))
}

/// Poll `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A fresh temporary directory (removed on drop).
pub fn tempdir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vault-e2e-{label}-"))
        .tempdir()
        .expect("create temporary directory")
}

/// Files (objects) under a local vault's subdirectory, skipping temporary files.
pub fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            out.extend(objects(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
