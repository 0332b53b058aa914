//! A local or NFS directory store. Writes go to a hidden temporary file that is fsynced and then
//! renamed (overwrite) or hard-linked (create: atomic, refused if the name exists, safe on NFS),
//! followed by an fsync of the directory. Readers never see a partial object.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ObjectInfo, PutMode, check_name};
use crate::error::{Context, Error, ErrorKind, Result};

#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

fn io_err(e: std::io::Error, what: String) -> Error {
    let kind = match e.kind() {
        IoKind::NotFound => ErrorKind::NotFound,
        IoKind::AlreadyExists => ErrorKind::AlreadyExists,
        _ => ErrorKind::Store,
    };
    let hint = match e.raw_os_error() {
        Some(28) => Some("the file system holding the vault is full (ENOSPC): free space or move the vault"),
        Some(13) => Some("permission denied: check ownership and mode of the vault directory"),
        Some(30) => Some("the vault's file system is read-only"),
        _ => None,
    };
    let err = Error::new(kind, what).with_source(e);
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("store worker thread failed").with_source(e))?
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    pub async fn put(&self, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let path = self.path(name)?;
        let root = self.root.clone();
        let name = name.to_string();
        blocking(move || {
            write_atomic(&root, &path, &data, mode)
                .map_err(|e| io_err(e, format!("cannot write {name} in vault directory {}", root.display())))
        })
        .await
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        let desc = format!("cannot read {name} from vault directory {}", self.root.display());
        blocking(move || fs::read(&path).map(Bytes::from).map_err(|e| io_err(e, desc))).await
    }

    pub async fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Bytes> {
        let path = self.path(name)?;
        let desc = format!("cannot read {name} from vault directory {}", self.root.display());
        blocking(move || {
            let read = || -> std::io::Result<Vec<u8>> {
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(start))?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf)?;
                Ok(buf)
            };
            read().map(Bytes::from).map_err(|e| io_err(e, desc))
        })
        .await
    }

    pub async fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        let desc = format!("cannot stat {name} in vault directory {}", self.root.display());
        blocking(move || match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == IoKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, desc)),
        })
        .await
    }

    /// When the object was last written (the file's mtime, set by this host's kernel or, on NFS,
    /// the server), or `None` if it does not exist.
    pub async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(name)?;
        let desc = format!("cannot stat {name} in vault directory {}", self.root.display());
        blocking(move || match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == IoKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, desc)),
        })
        .await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            if !root.is_dir() {
                return Err(
                    Error::store(format!("vault directory {} does not exist or is not a directory", root.display()))
                        .hint("check --repo; create a vault with `vaultctl init`"),
                );
            }
            let mut out = Vec::new();
            let start = root.join(prefix.trim_end_matches('/'));
            walk(&root, &start, &mut out).map_err(|e| io_err(e, format!("cannot list {prefix} in vault directory {}", root.display())))?;
            out.retain(|o| o.name.starts_with(&prefix));
            Ok(out)
        })
        .await
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let desc = format!("cannot delete {name} from vault directory {}", self.root.display());
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e, desc)),
        })
        .await
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == IoKind::NotFound || e.kind() == IoKind::NotADirectory => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let fname = entry.file_name();
        let Some(fname) = fname.to_str() else { continue };
        if fname.starts_with('.') {
            continue; // temporary files are not objects
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &entry.path(), out)?;
        } else if ft.is_file() {
            let rel = entry.path().strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            out.push(ObjectInfo {
                name: rel,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

/// Temporary files (`.<name>.tmp-<random>`, see [`write_atomic`]) under a local store's root. A
/// write removes its own whether it completes or fails; only a process killed mid-write leaves one.
pub fn temp_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else if entry.file_name().to_string_lossy().contains(".tmp-") {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Remove temporary files that no write is using any more: those not modified for `max_age` (a
/// write touches its temporary file until it links or renames it, moments later). Returns the
/// removed files' paths relative to the root.
pub fn remove_stale_temp_files(root: &Path, max_age: std::time::Duration) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for path in temp_files(root)? {
        let stale = fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= max_age);
        if stale {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path.strip_prefix(root).unwrap_or(&path).display().to_string()),
                // Another cleaner got there first.
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_atomic(root: &Path, path: &Path, data: &[u8], mode: PutMode) -> std::io::Result<()> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            IoKind::NotFound,
            format!("vault directory {} does not exist", root.display()),
        ));
    }
    let dir = path.parent().expect("object path has a parent");
    if !dir.is_dir() {
        // Every directory made here must survive a crash: fsync the parent of each new one.
        let mut missing = Vec::new();
        let mut d = dir;
        while d != root && !d.is_dir() {
            missing.push(d);
            d = d.parent().expect("object directory is below the root");
        }
        fs::create_dir_all(dir)?;
        for new_dir in missing.iter().rev() {
            fsync_dir(new_dir.parent().expect("below the root"))?;
        }
    }
    let fname = path.file_name().expect("object path has a file name").to_string_lossy();
    let tmp = dir.join(format!(".{fname}.tmp-{}", hex::encode(crate::crypto::random_bytes::<6>())));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        match mode {
            PutMode::Overwrite => fs::rename(&tmp, path)?,
            PutMode::Create => {
                fs::hard_link(&tmp, path)?;
                fs::remove_file(&tmp)?;
            }
        }
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create the vault root directory (used by `init`).
pub fn create_root(root: &Path) -> Result<()> {
    fs::create_dir_all(root).context(ErrorKind::Store, || format!("cannot create vault directory {}", root.display()))
}
