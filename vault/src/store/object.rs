//! Stores reached through `object_store`: S3 and S3-compatible servers, and memory (tests).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path as OsPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig};

use super::{ObjectInfo, PutMode, S3Options, check_name};

/// Objects larger than this are uploaded in parts (S3's minimum part size is 5 MiB).
pub const MULTIPART_THRESHOLD: usize = 32 << 20;
pub const MULTIPART_PART_SIZE: usize = 8 << 20;
const MULTIPART_PARTS_IN_FLIGHT: usize = 4;
use crate::error::{Error, ErrorKind, Result};

#[derive(Clone)]
pub struct ObjectBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ObjectBackend {
    pub fn memory() -> Self {
        ObjectBackend {
            inner: Arc::new(InMemory::new()),
            prefix: String::new(),
            description: "memory store".into(),
        }
    }

    pub fn s3(bucket: &str, prefix: &str, opts: &S3Options, url: &str) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = opts.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(ep) = &endpoint {
            b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
            if ep.starts_with("http://") && opts.allow_http.is_none() && std::env::var("AWS_ALLOW_HTTP").is_err() {
                return Err(Error::usage(format!("S3 endpoint {ep} is plain http"))
                    .hint("set AWS_ALLOW_HTTP=true (or allow_http = true in the [s3] config section) to allow it"));
            }
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        if let Some(k) = &opts.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &opts.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
        };
        b = b.with_retry(retry).with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(120)),
        );
        // After the client options, which would otherwise reset it.
        let env_allow_http = std::env::var("AWS_ALLOW_HTTP")
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
            .unwrap_or(false);
        b = b.with_allow_http(opts.allow_http.unwrap_or(env_allow_http));
        let store = b.build().map_err(|e| {
            Error::usage(format!("cannot configure S3 store for {url}"))
                .with_source(e)
                .hint("check the endpoint, region and credentials (config [s3] section or AWS_* environment)")
        })?;
        let prefix = prefix.trim_matches('/');
        let description = match &endpoint {
            Some(ep) => format!("s3://{bucket}/{prefix} at {ep}"),
            None => format!("s3://{bucket}/{prefix}"),
        };
        Ok(ObjectBackend {
            inner: Arc::new(store),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            description,
        })
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    fn path(&self, name: &str) -> Result<OsPath> {
        check_name(name)?;
        Ok(OsPath::from(format!("{}{name}", self.prefix)))
    }

    fn err(&self, e: object_store::Error, what: String) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::new(ErrorKind::NotFound, what),
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                Error::new(ErrorKind::AlreadyExists, what)
            }
            other => Error::store(format!("{what} ({})", self.description))
                .with_source(other)
                .hint("check that the S3 endpoint is reachable, the bucket exists and the credentials are right"),
        }
    }

    pub async fn put(&self, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let path = self.path(name)?;
        if mode == PutMode::Overwrite && data.len() > MULTIPART_THRESHOLD {
            return self.put_multipart(name, &path, data).await;
        }
        let opts = PutOptions {
            mode: match mode {
                PutMode::Overwrite => object_store::PutMode::Overwrite,
                PutMode::Create => object_store::PutMode::Create,
            },
            ..Default::default()
        };
        self.inner
            .put_opts(&path, PutPayload::from(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e, format!("cannot write {name}")))
    }

    /// A large object (a big pack) in parts of [`MULTIPART_PART_SIZE`], a few in flight: each
    /// request is bounded by the client timeout, so a slow link does not fail a whole pack, and the
    /// object appears only when the upload completes. Multipart uploads cannot be conditional, so
    /// only overwrites (packs: same name, same bytes) go this way.
    async fn put_multipart(&self, name: &str, path: &OsPath, data: Bytes) -> Result<()> {
        let what = || format!("cannot write {name} (multipart upload)");
        let mut upload = self.inner.put_multipart(path).await.map_err(|e| self.err(e, what()))?;
        let parts: Vec<_> = (0..data.len())
            .step_by(MULTIPART_PART_SIZE)
            .map(|start| {
                let end = (start + MULTIPART_PART_SIZE).min(data.len());
                upload.put_part(PutPayload::from(data.slice(start..end)))
            })
            .collect();
        let sent = futures::stream::iter(parts)
            .buffer_unordered(MULTIPART_PARTS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await;
        let done = match sent {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            // Leave no parts behind to be billed for; the upload was never visible.
            let _ = upload.abort().await;
            return Err(self.err(e, what()));
        }
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name)?;
        let what = || format!("cannot read {name}");
        let r = self.inner.get(&path).await.map_err(|e| self.err(e, what()))?;
        r.bytes().await.map_err(|e| self.err(e, what()))
    }

    pub async fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Bytes> {
        let path = self.path(name)?;
        self.inner
            .get_range(&path, start..start + len)
            .await
            .map_err(|e| self.err(e, format!("cannot read {name} bytes {start}..{}", start + len)))
    }

    pub async fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e, format!("cannot stat {name}"))),
        }
    }

    /// The object's last-modified time as the server records it, or `None` if it does not exist.
    pub async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(name)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(m.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e, format!("cannot stat {name}"))),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = OsPath::from(format!("{}{}", self.prefix, prefix.trim_end_matches('/')));
        let metas: Vec<_> = self
            .inner
            .list(Some(&full))
            .try_collect()
            .await
            .map_err(|e| self.err(e, format!("cannot list {prefix}")))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&self.prefix)?.to_string();
                name.starts_with(prefix).then_some(ObjectInfo { name, size: m.size })
            })
            .collect())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e, format!("cannot delete {name}"))),
        }
    }
}
