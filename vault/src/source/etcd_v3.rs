//! etcd v3 as a capture source: connect (optionally with TLS client certificates), pick one
//! healthy member, record who it is, and stream `Maintenance.Snapshot` from it.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{EtcdMember, EtcdV3Info};

/// How to reach etcd. One struct serves the CLI, the daemon's config file and the library.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdOptions {
    /// Client URLs; one member is chosen per snapshot.
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Seconds to wait for each endpoint to connect and answer.
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
}

impl EtcdOptions {
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions> {
        let timeout = Duration::from_secs(self.connect_timeout_secs.unwrap_or(5));
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let any_tls = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if any_tls {
            let read =
                |p: &PathBuf, what: &str| std::fs::read(p).context(ErrorKind::Usage, || format!("cannot read etcd {what} {}", p.display()));
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA certificate (--cacert)")?));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read(c, "client certificate (--cert)")?,
                        read(k, "client key (--key)")?,
                    ));
                }
                (None, None) => {}
                _ => return Err(Error::usage("--cert and --key must be given together")),
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::usage("no etcd endpoint given").hint("pass --endpoints https://host:2379[,...]"));
        }
        let tls = self.cacert.is_some() || self.cert.is_some();
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::usage(format!("etcd endpoint {e:?} must start with http:// or https://")));
            }
            if tls && e.starts_with("http://") {
                return Err(Error::usage(format!("etcd endpoint {e} is http:// but TLS files were given"))
                    .hint("use https:// endpoints with --cacert/--cert/--key"));
            }
        }
        Ok(())
    }
}

/// A connected member chosen for a snapshot.
pub struct SelectedMember {
    pub client: Client,
    pub info: EtcdV3Info,
    /// Endpoints that were tried first and why they were skipped.
    pub skipped: Vec<(String, String)>,
}

/// A short cause for a gRPC failure: tonic's own text repeats every layer of the stack.
pub(crate) fn grpc_cause(e: &etcd_client::Error) -> String {
    let text = e.to_string();
    for (needle, short) in [
        ("Connection refused", "connection refused"),
        ("certificate required", "the server requires a client certificate (--cert/--key)"),
        ("UnknownIssuer", "the server certificate is not signed by --cacert"),
        ("InvalidCertificate", "certificate rejected"),
        ("handshake", "TLS handshake failed"),
        ("deadline has elapsed", "timed out"),
        ("timed out", "timed out"),
    ] {
        if text.contains(needle) {
            return short.to_string();
        }
    }
    text
}

pub(crate) fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

async fn probe(endpoint: &str, opts: &EtcdOptions) -> Result<(Client, EtcdV3Info), String> {
    let connect = opts.connect_options().map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(opts.connect_timeout_secs.unwrap_or(5));
    let mut client = tokio::time::timeout(timeout, Client::connect([endpoint], Some(connect)))
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
        .map_err(|e| format!("cannot connect: {}", grpc_cause(&e)))?;
    let status = tokio::time::timeout(timeout, client.status())
        .await
        .map_err(|_| format!("status request timed out after {}s", timeout.as_secs()))?
        .map_err(|e| format!("no answer to a status request: {}", grpc_cause(&e)))?;
    if !status.errors().is_empty() {
        return Err(format!("member reports errors: {}", status.errors().join("; ")));
    }
    if status.leader() == 0 {
        return Err("member has no leader (no quorum?)".into());
    }
    let header = status.header().ok_or("status response has no header")?;
    let members = tokio::time::timeout(timeout, client.member_list())
        .await
        .map_err(|_| "member list timed out".to_string())?
        .map_err(|e| format!("member list failed: {}", grpc_cause(&e)))?;
    let member_id = header.member_id();
    let members: Vec<EtcdMember> = members
        .members()
        .iter()
        .map(|m| EtcdMember {
            id: hex_id(m.id()),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect();
    let member_name = members
        .iter()
        .find(|m| m.id == hex_id(member_id))
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let info = EtcdV3Info {
        endpoint: endpoint.to_string(),
        cluster_id: hex_id(header.cluster_id()),
        member_id: hex_id(member_id),
        member_name,
        members,
        revision: header.revision(),
        raft_index: status.raft_index(),
        raft_term: status.raft_term(),
        db_size: status.db_size(),
        version: status.version().to_string(),
        leader: hex_id(status.leader()),
    };
    Ok((client, info))
}

/// Try the endpoints in order and return the first healthy member (one member per snapshot).
pub async fn select_member(opts: &EtcdOptions) -> Result<SelectedMember> {
    opts.check()?;
    opts.connect_options()?; // surface unreadable TLS files as usage errors, not as "unhealthy"
    let mut skipped = Vec::new();
    for ep in &opts.endpoints {
        match probe(ep, opts).await {
            Ok((client, info)) => return Ok(SelectedMember { client, info, skipped }),
            Err(why) => skipped.push((ep.clone(), why)),
        }
    }
    let detail: Vec<String> = skipped.iter().map(|(e, w)| format!("{e}: {w}")).collect();
    Err(Error::source_err(format!(
        "no healthy etcd member among {} endpoint(s): {}",
        opts.endpoints.len(),
        detail.join("; ")
    ))
    .hint("check that etcd is running and reachable, and for TLS that --cacert/--cert/--key match the cluster"))
}

/// Stream the member's snapshot. Every item is a piece of the file exactly as etcd sends it
/// (bolt database followed by its 32-byte sha256). The stream ends with an error if etcd
/// breaks off or reports bytes still remaining.
pub fn snapshot_stream(mut client: Client, endpoint: String) -> impl futures::Stream<Item = Result<Bytes>> {
    async_stream(move |tx| async move {
        let mut stream = client
            .snapshot()
            .await
            .map_err(|e| Error::source_err(format!("etcd member {endpoint} refused the snapshot request")).with_source(e))?;
        let mut received: u64 = 0;
        let mut remaining = u64::MAX;
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    remaining = msg.remaining_bytes();
                    let blob = Bytes::from(msg.blob().to_vec());
                    received += blob.len() as u64;
                    if tx.send(Ok(blob)).await.is_err() {
                        return Ok(()); // consumer gave up
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(
                        Error::source_err(format!("the snapshot stream from {endpoint} broke off after {received} bytes"))
                            .with_source(e)
                            .hint("nothing was committed; retry the backup"),
                    );
                }
            }
        }
        if remaining != 0 {
            return Err(Error::source_err(format!(
                "the snapshot stream from {endpoint} ended early after {received} bytes ({remaining} bytes announced as remaining)"
            ))
            .hint("nothing was committed; retry the backup"));
        }
        Ok(())
    })
}

/// A tiny channel-backed stream: the producer future runs as a task and its final error, if any,
/// becomes the stream's last item.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let fut = f(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Checks an etcd v3 snapshot file's integrity trailer while it streams past: the last 32 bytes
/// must be the sha256 of everything before them. Also yields the sha256 of the whole file.
#[derive(Clone)]
pub struct TrailerCheck {
    body: sha2::Sha256,
    tail: Vec<u8>,
}

impl Default for TrailerCheck {
    fn default() -> Self {
        TrailerCheck {
            body: <sha2::Sha256 as sha2::Digest>::new(),
            tail: Vec::with_capacity(64),
        }
    }
}

/// Outcome of [`TrailerCheck::finish`].
pub struct TrailerResult {
    /// sha256 of the whole file as stored (what `sha256sum` shows).
    pub file_sha256: String,
    /// Whether the 32-byte trailer matched the sha256 of the bytes before it.
    pub trailer_ok: bool,
    pub body_sha256: String,
}

impl TrailerCheck {
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        if data.len() >= 32 {
            self.body.update(&self.tail);
            self.body.update(&data[..data.len() - 32]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - 32..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 32 {
                let excess = self.tail.len() - 32;
                self.body.update(&self.tail[..excess]);
                self.tail.drain(..excess);
            }
        }
    }

    pub fn finish(self) -> TrailerResult {
        use sha2::Digest;
        let body_digest = self.body.clone().finalize();
        let mut file = self.body;
        file.update(&self.tail);
        TrailerResult {
            file_sha256: hex::encode(file.finalize()),
            trailer_ok: self.tail.len() == 32 && body_digest[..] == self.tail[..],
            body_sha256: hex::encode(body_digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn snapshot_like(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&sha2::Sha256::digest(body));
        v
    }

    #[test]
    fn trailer_check_accepts_any_split() {
        let file = snapshot_like(&vec![7u8; 10000]);
        for piece in [1, 5, 31, 32, 33, 1000, 20000] {
            let mut c = TrailerCheck::default();
            for p in file.chunks(piece) {
                c.update(p);
            }
            let r = c.finish();
            assert!(r.trailer_ok, "piece {piece}");
            assert_eq!(r.file_sha256, hex::encode(sha2::Sha256::digest(&file)));
        }
    }

    #[test]
    fn trailer_check_rejects_truncation_and_corruption() {
        let file = snapshot_like(&vec![7u8; 10000]);
        let mut c = TrailerCheck::default();
        c.update(&file[..file.len() - 100]);
        assert!(!c.finish().trailer_ok);
        let mut bad = file.clone();
        bad[10] ^= 1;
        let mut c = TrailerCheck::default();
        c.update(&bad);
        assert!(!c.finish().trailer_ok);
        let mut c = TrailerCheck::default();
        c.update(&file[..20]);
        assert!(!c.finish().trailer_ok);
    }
}
