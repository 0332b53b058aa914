//! The store layer: a flat namespace of immutable named objects (docs/FORMAT.md section 7).
//! Backends: a local/NFS directory ([`local`]) and anything `object_store` speaks: S3 and an
//! in-memory store for tests ([`object`]). Every backend passes [`conformance::run`].

pub mod conformance;
pub mod local;
pub mod object;

use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How long a local store's temporary file must have been left untouched before a cleaner removes
/// it: a write touches its temporary file until it is linked or renamed into place.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How `put` treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with `ErrorKind::AlreadyExists` if the name exists (atomic where the backend can).
    Create,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// S3 settings from a config file; unset fields fall back to the standard `AWS_*` environment.
/// `Debug` never shows the secret key.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A store backend. An enum rather than a trait object: there are few backends and this keeps
/// async methods simple.
#[derive(Clone, Debug)]
pub enum Store {
    Local(local::LocalStore),
    Object(object::ObjectBackend),
}

impl Store {
    /// Open a store from a vault URL: `/path`, `file:///path`, `s3://bucket/prefix`, `memory://`.
    pub fn open(url: &str, s3: &S3Options) -> Result<Store> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::usage(format!(
                    "vault URL {url:?} names no bucket (expected s3://bucket/prefix)"
                )));
            }
            return Ok(Store::Object(object::ObjectBackend::s3(bucket, prefix, s3, url)?));
        }
        if url == "memory://" {
            return Ok(Store::Object(object::ObjectBackend::memory()));
        }
        let path = if let Some(p) = url.strip_prefix("file://") {
            PathBuf::from(p)
        } else if url.contains("://") {
            return Err(
                Error::usage(format!("vault URL {url:?} has an unknown scheme")).hint("use /path, file:///path or s3://bucket/prefix")
            );
        } else {
            PathBuf::from(url)
        };
        if path.as_os_str().is_empty() {
            return Err(Error::usage("vault URL is empty").hint("pass --repo or set VAULT_REPO"));
        }
        Ok(Store::Local(local::LocalStore::new(path)))
    }

    /// Make sure a new vault has somewhere to go (creates a local directory; no-op for S3).
    pub fn create_root(&self) -> Result<()> {
        match self {
            Store::Local(s) => local::create_root(s.root()),
            Store::Object(_) => Ok(()),
        }
    }

    /// A human description, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(s) => s.describe(),
            Store::Object(s) => s.describe(),
        }
    }

    pub async fn put(&self, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        match self {
            Store::Local(s) => s.put(name, data, mode).await,
            Store::Object(s) => s.put(name, data, mode).await,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        match self {
            Store::Local(s) => s.get(name).await,
            Store::Object(s) => s.get(name).await,
        }
    }

    pub async fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Bytes> {
        match self {
            Store::Local(s) => s.get_range(name, start, len).await,
            Store::Object(s) => s.get_range(name, start, len).await,
        }
    }

    /// Size of the object, or `None` if it does not exist.
    pub async fn head(&self, name: &str) -> Result<Option<u64>> {
        match self {
            Store::Local(s) => s.head(name).await,
            Store::Object(s) => s.head(name).await,
        }
    }

    /// When the store last wrote the object, by the store's own clock (S3's Last-Modified, a
    /// local file's mtime), or `None` if it does not exist. Prune compares it with the host clock.
    pub async fn modified(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let t = match self {
            Store::Local(s) => s.modified(name).await?,
            Store::Object(s) => s.modified(name).await?,
        };
        Ok(t.map(chrono::DateTime::<chrono::Utc>::from))
    }

    /// Every object whose name starts with `prefix` (a directory-like prefix ending in `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut v = match self {
            Store::Local(s) => s.list(prefix).await?,
            Store::Object(s) => s.list(prefix).await?,
        };
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Store::Local(s) => s.delete(name).await,
            Store::Object(s) => s.delete(name).await,
        }
    }

    /// Remove temporary files that processes killed mid-write left in a local store (none exist
    /// in an object store: an unfinished upload is never visible). Only files untouched for
    /// [`STALE_TEMP_AGE`] are removed, so a write in progress is never disturbed. Returns their names.
    pub async fn remove_stale_temporaries(&self) -> Result<Vec<String>> {
        match self {
            Store::Local(s) => {
                let root = s.root().to_path_buf();
                tokio::task::spawn_blocking(move || local::remove_stale_temp_files(&root, STALE_TEMP_AGE))
                    .await
                    .map_err(|e| Error::io("store worker thread failed").with_source(e))?
                    .map_err(|e| Error::store(format!("cannot remove stale temporary files in {}", self.describe())).with_source(e))
            }
            Store::Object(_) => Ok(Vec::new()),
        }
    }

    /// Probe whether `PutMode::Create` is honoured atomically-enough to rely on: create a probe
    /// object twice and expect the second to fail. The probe object is removed afterwards. A store
    /// that rejects the condition itself (older S3-compatible servers answer If-None-Match with an
    /// error) but takes a plain write lacks conditional create; one that takes no write at all is
    /// unusable, and that error is returned.
    pub async fn probe_conditional_create(&self) -> Result<bool> {
        let name = format!("probe/{}", hex::encode(crate::crypto::random_bytes::<8>()));
        match self.put(&name, Bytes::from_static(b"1"), PutMode::Create).await {
            Ok(()) => {}
            Err(e) if e.kind == crate::error::ErrorKind::Store => {
                self.put(&name, Bytes::from_static(b"1"), PutMode::Overwrite).await?;
                self.delete(&name).await?;
                tracing::info!("{} rejected a conditional write ({e}); it takes plain writes", self.describe());
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let second = self.put(&name, Bytes::from_static(b"2"), PutMode::Create).await;
        let content = self.get(&name).await?;
        self.delete(&name).await?;
        Ok(matches!(second, Err(ref e) if e.kind == crate::error::ErrorKind::AlreadyExists) && &content[..] == b"1")
    }
}

/// Refuse names that could escape a directory store or confuse listings.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with('.'));
    if bad {
        return Err(Error::usage(format!("invalid object name {name:?}")));
    }
    Ok(())
}
