//! Restore a snapshot's stream to a file: never overwrite, never delete (an existing file is
//! moved aside), write to a temporary name, verify, then rename into place.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::PayloadKind;
use crate::ops::backup::ProgressFn;
use crate::ops::read::read_stream;
use crate::ops::safe_fs::{SafeDir, TempFile};
use crate::repo::Vault;
use crate::source::etcd_v3::TrailerCheck;

#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Where an existing file or directory at the target was moved.
    pub moved_aside: Option<PathBuf>,
}

/// Whether this process runs as root (and so can restore owners).
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Move `path` aside to `<path>.old`, or `<path>.old.<timestamp>` if that exists, never replacing
/// anything (not even a `.old` that appears meanwhile). Never deletes.
pub fn move_aside(path: &Path) -> Result<Option<PathBuf>> {
    let (dir, name) = parent_and_name(path)?;
    let moved = dir
        .move_aside(name)
        .context(ErrorKind::Io, || format!("cannot move existing {} aside", path.display()))?;
    Ok(moved.map(|m| path.with_file_name(m)))
}

/// The directory holding `path` (opened, following symlinks the caller named) and its last name.
fn parent_and_name(path: &Path) -> Result<(SafeDir, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no file", path.display())))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((SafeDir::open(dir)?, name))
}

/// Check the snapshot can be restored as a single file.
fn single_stream(snap: &SnapshotEntry) -> Result<&crate::format::Stream> {
    match &snap.manifest.kind {
        PayloadKind::EtcdV3 => {}
        other => {
            return Err(Error::usage(format!(
                "snapshot {} has kind {other}, which this vaultctl cannot restore",
                snap.id.short()
            )));
        }
    }
    snap.manifest
        .streams
        .first()
        .ok_or_else(|| Error::integrity(format!("snapshot {} has no stream", snap.id.short())))
}

/// Restore the snapshot's stream to `dest` exactly as captured, checking every chunk, the
/// whole-file sha256 and, for etcd v3, the snapshot's own sha256 trailer before it appears at `dest`.
pub async fn restore_to_file(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    dest: &Path,
    progress: Option<ProgressFn>,
) -> Result<RestoreReport> {
    let stream = single_stream(snap)?.clone();
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).context(ErrorKind::Io, || format!("cannot create directory {}", dir.display()))?;
    }
    let (dir, fname) = parent_and_name(dest)?;
    // 0600 from the start: an etcd snapshot holds every Secret of the cluster. Removed on any error.
    let (tmp, file) = TempFile::create(&dir, fname)?;
    let check_trailer = snap.manifest.kind == PayloadKind::EtcdV3;
    let tmp_for_sink = tmp.path();
    let result = read_stream(vault, catalog, &stream, move |rx| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = sha2::Sha256::new();
        let mut trailer = check_trailer.then(TrailerCheck::default);
        let mut bytes = 0u64;
        for chunk in rx {
            bytes += chunk.len() as u64;
            if let Some(p) = &progress {
                p(bytes);
            }
            if let Some(t) = trailer.as_mut() {
                t.update(&chunk);
            } else {
                hasher.update(&chunk);
            }
            out.write_all(&chunk)
                .context(ErrorKind::Io, || format!("cannot write {}", tmp_for_sink.display()))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| Error::io(format!("cannot write {}", tmp_for_sink.display())).with_source(e.into_error()))?;
        file.sync_all()
            .context(ErrorKind::Io, || format!("cannot fsync {}", tmp_for_sink.display()))?;
        let (sha, trailer_ok) = match trailer {
            Some(t) => {
                let r = t.finish();
                (r.file_sha256, r.trailer_ok)
            }
            None => (hex::encode(hasher.finalize()), true),
        };
        Ok((bytes, sha, trailer_ok))
    })
    .await;
    let (bytes, sha, trailer_ok) = result?; // dropping `tmp` removes the partial file
    let problem = if bytes != stream.size {
        Some(format!("restored {bytes} bytes but the manifest records {}", stream.size))
    } else if sha != stream.sha256 {
        Some("the restored file's sha256 differs from the one recorded at capture".to_string())
    } else if !trailer_ok {
        Some("the restored etcd snapshot fails its own sha256 trailer check".to_string())
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Error::integrity(format!(
            "snapshot {}: {p}; nothing was written to {}",
            snap.id.short(),
            dest.display()
        )));
    }
    let moved_aside = dir
        .move_aside(fname)
        .context(ErrorKind::Io, || format!("cannot move existing {} aside", dest.display()))?
        .map(|m| dest.with_file_name(m));
    tmp.persist(fname)?;
    Ok(RestoreReport {
        snapshot: snap.id.hex(),
        path: dest.to_path_buf(),
        bytes,
        sha256: sha,
        moved_aside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.old` names are taken, including every timestamped one of the next seconds, as if they
    /// appeared between a check and the rename: none may be replaced.
    #[test]
    fn move_aside_never_replaces_an_existing_old() {
        let t = tempfile::tempdir().expect("tempdir");
        let live = t.path().join("ca.key");
        fs::write(&live, b"the live file").unwrap();
        let taken = |name: String| {
            fs::write(t.path().join(&name), name.as_bytes()).unwrap();
            name
        };
        let mut kept = vec![taken("ca.key.old".into())];
        let now = chrono::Utc::now();
        for ms in 0..3000 {
            let ts = (now + chrono::Duration::milliseconds(ms)).format("%Y%m%dT%H%M%S%.3fZ");
            kept.push(taken(format!("ca.key.old.{ts}")));
        }
        let moved = move_aside(&live).expect("moved").expect("something was there");
        assert_eq!(fs::read(&moved).unwrap(), b"the live file");
        assert!(!live.exists());
        for name in &kept {
            assert_eq!(fs::read(t.path().join(name)).unwrap(), name.as_bytes(), "{name} was replaced");
        }
        assert_eq!(move_aside(&live).expect("nothing there"), None);
    }
}
