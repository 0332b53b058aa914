pub mod audit;
pub mod backup;
pub mod catalog;
pub mod completions;
pub mod daemon;
pub mod deletion_log;
pub mod diff;
pub mod etcd;
pub mod etcd_datadir;
pub mod etcd_flow;
pub mod etcd_history;
pub mod etcd_member;
pub mod etcd_point_in_time;
pub mod etcd_recover;
pub mod etcd_v2;
pub mod files;
pub mod forget;
pub mod hold;
pub mod holds;
pub mod init;
pub mod key;
pub mod keygen;
pub mod man;
pub mod packages;
pub mod prune;
pub mod release;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod undelete;
pub mod verify;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use vault::{Error, ErrorKind, Result};

/// Write a secret file: created 0600, never over an existing file.
pub fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::AlreadyExists {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("cannot create secret file {}", path.display()))
                .with_source(e)
                .hint("secret files are never overwritten; choose another path or move the old file away")
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display())).with_source(e))
}
