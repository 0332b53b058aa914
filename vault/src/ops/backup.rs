//! Backup: ingest byte streams into the vault (chunk, deduplicate, compress, encrypt, pack,
//! upload, index) and commit a snapshot manifest last (docs/FORMAT.md section 10).
//!
//! The pipeline has four stages so that reading the source, hashing/chunking, compression and
//! uploading overlap; memory is bounded by the channel capacities (a few packs at most):
//! source (async) -> chunker thread -> packer thread -> uploader (async, same task). The last two
//! are shared with every source: [`crate::ops::packing`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::{CaptureStats, Id, PackType, PayloadKind, SnapshotManifest, Stream as ManifestStream};
use crate::ops::{packing, retention};
use crate::repo::Vault;
use crate::source::etcd_v3::{self, EtcdOptions, TrailerCheck};

/// Called with the number of source bytes read so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// What every backup needs besides its source.
#[derive(Clone, Default)]
pub struct BackupOptions {
    pub job: String,
    pub host: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The schedule slot this capture is for (daemon runs); recorded in the manifest.
    pub slot: Option<chrono::DateTime<chrono::Utc>>,
    pub progress: Option<ProgressFn>,
}

impl BackupOptions {
    /// The manifest of a capture made with these options (now, this host or `host`, the job or
    /// "manual", tags, slot); the caller adds its source's facts.
    pub fn manifest(&self, kind: PayloadKind, streams: Vec<ManifestStream>, stats: CaptureStats) -> SnapshotManifest {
        SnapshotManifest {
            time: chrono::Utc::now(),
            kind,
            host: self.host.clone().unwrap_or_else(hostname),
            job: if self.job.is_empty() { "manual".into() } else { self.job.clone() },
            tags: self.tags.clone(),
            slot: self.slot,
            streams,
            stats,
            etcd_v3: None,
            files: None,
            etcd_v2: None,
            etcd_datadir: None,
            etcd_v3_delta: None,
            log_head: None,
            previous: None,
        }
    }
}

/// The result of one backup, as printed by `vaultctl backup --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub kind: String,
    pub bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub packs: u64,
    pub seconds: f64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Endpoints tried before the chosen one, and why they were skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_endpoints: Vec<String>,
}

impl BackupReport {
    /// A committed snapshot's report with a capture's figures; the source facts are left empty
    /// for the caller to fill in.
    pub fn committed(id: &Id, kind: PayloadKind, stats: &CaptureStats, sha256: String) -> Self {
        BackupReport {
            id: id.hex(),
            kind: kind.to_string(),
            bytes: stats.bytes,
            new_bytes: stats.new_bytes,
            stored_bytes: stats.stored_bytes,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            packs: stats.packs,
            seconds: stats.seconds,
            sha256,
            revision: None,
            member: None,
            member_id: None,
            endpoint: None,
            cluster_id: None,
            skipped_endpoints: Vec::new(),
        }
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// One stream as stored, before the manifest is written.
pub struct IngestedStream {
    pub stream: ManifestStream,
    pub stats: CaptureStats,
    pub trailer: Option<etcd_v3::TrailerResult>,
}

/// Ingest one byte stream. Packs and their index segments are stored as they fill (so an
/// interrupted capture's uploads are reused by the next one); no manifest is written here.
pub async fn ingest_stream<S>(
    vault: &Vault,
    catalog: &mut Catalog,
    name: &str,
    source: S,
    check_etcd_trailer: bool,
    progress: Option<ProgressFn>,
) -> Result<IngestedStream>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    vault.check_may_write("a backup")?;
    let known = packing::present_chunks(vault, catalog).await?;
    ingest_stream_known(vault, catalog, name, source, check_etcd_trailer, progress, known).await
}

/// Pieces of the source queued for the chunker (which keeps up with any source: it only hashes).
const QUEUED_PIECES: usize = 16;

/// [`ingest_stream`] deduplicating against `known` only (chunks the vault holds whole, outside
/// pending sets): an empty set stores every chunk anew, without listing the store (delta segments,
/// committed every few seconds, whose chunks are mostly new anyway).
pub async fn ingest_stream_known<S>(
    vault: &Vault,
    catalog: &mut Catalog,
    name: &str,
    source: S,
    check_etcd_trailer: bool,
    progress: Option<ProgressFn>,
    known: std::collections::HashSet<Id>,
) -> Result<IngestedStream>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    vault.check_may_write("a backup")?;
    let started = Instant::now();
    let (mut sink, packer) = packing::start(vault, known);
    let chunker = vault.chunker();
    let (src_tx, mut src_rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUED_PIECES);

    // Hash, chunk, identify and deduplicate on a thread of its own.
    let chunk_stage = std::thread::spawn(move || {
        let mut sc = crate::chunker::StreamChunker::new(chunker);
        let mut trailer = check_etcd_trailer.then(TrailerCheck::default);
        let mut file_hash = (!check_etcd_trailer).then(<sha2::Sha256 as sha2::Digest>::new);
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        while let Some(data) = src_rx.blocking_recv() {
            bytes += data.len() as u64;
            if let Some(t) = trailer.as_mut() {
                t.update(&data);
            }
            if let Some(h) = file_hash.as_mut() {
                sha2::Digest::update(h, &data);
            }
            sc.push(&data, &mut |c| ids.push(sink.add(PackType::Data, c)));
            if sink.stopped() {
                break; // the upload failed: stop reading so its error surfaces now
            }
        }
        if !sink.stopped() {
            sc.finish(&mut |c| ids.push(sink.add(PackType::Data, c)));
        }
        let (sha256, trailer) = match (trailer, file_hash) {
            (Some(t), _) => {
                let r = t.finish();
                (r.file_sha256.clone(), Some(r))
            }
            (None, Some(h)) => (hex::encode(sha2::Digest::finalize(h)), None),
            (None, None) => unreachable!(),
        };
        (ids, bytes, sink.stats, sha256, trailer)
    });

    // Read the source and upload packs concurrently in this task.
    let reader = async {
        let mut read_bytes = 0u64;
        let mut source = source;
        let src_tx = src_tx; // dropped at the end of this block: ends the chunker's input
        while let Some(item) = source.next().await {
            let data = item?;
            read_bytes += data.len() as u64;
            if let Some(p) = &progress {
                p(read_bytes);
            }
            if src_tx.send(data).await.is_err() {
                return Err(Error::io("the backup pipeline stopped before the source was read to the end"));
            }
        }
        Ok(())
    };
    let (read_result, upload_result) = futures::join!(reader, packer.upload_all(vault, catalog));
    let (ids, bytes, sink_stats, sha256, trailer) = chunk_stage.join().map_err(|_| Error::io("chunker thread panicked"))?;
    // A store error explains a pipeline that stopped early, so it is reported first.
    let (stored, packs) = upload_result?;
    read_result?;
    let stats = sink_stats.capture_stats(bytes, stored, packs, started);
    Ok(IngestedStream {
        stream: ManifestStream {
            name: name.to_string(),
            size: bytes,
            sha256,
            chunks: ids,
        },
        stats,
        trailer,
    })
}

/// Commit a manifest (the last write of a capture) and record it in the catalog. The manifest
/// records the deletion log's head and the previous snapshot of its group (FORMAT.md 8b); a delta
/// segment belongs to no group and records none (8e).
pub async fn commit(vault: &Vault, catalog: &mut Catalog, manifest: &SnapshotManifest) -> Result<Id> {
    let mut manifest = manifest.clone();
    manifest.previous = match manifest.kind {
        PayloadKind::EtcdV3Delta => None,
        _ => retention::log::previous_in_group(catalog, &manifest)?,
    };
    manifest.log_head = retention::log::head(vault).await?;
    let id = vault.write_snapshot(&manifest).await?;
    catalog.add_snapshot(&id, &manifest)?;
    Ok(id)
}

/// `vaultctl backup etcd`: snapshot one healthy member into the vault.
pub async fn backup_etcd_v3(vault: &Vault, catalog: &mut Catalog, etcd: &EtcdOptions, opts: &BackupOptions) -> Result<BackupReport> {
    let member = etcd_v3::select_member(etcd).await?;
    backup_etcd_v3_member(vault, catalog, member, opts).await
}

/// Capture the snapshot of an already selected member (the daemon selects first, so that a host
/// that cannot reach etcd does not claim a cluster-wide slot it would then fail).
pub async fn backup_etcd_v3_member(
    vault: &Vault,
    catalog: &mut Catalog,
    member: etcd_v3::SelectedMember,
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let info = member.info.clone();
    let stream = Box::pin(etcd_v3::snapshot_stream(member.client, info.endpoint.clone()));
    let ingested = ingest_stream(vault, catalog, "snapshot.db", stream, true, opts.progress.clone()).await?;
    let trailer = ingested.trailer.as_ref().expect("etcd streams are checked");
    if !trailer.trailer_ok {
        return Err(Error::integrity(format!(
            "the snapshot from etcd member {} ({}) failed its sha256 trailer check ({} bytes received): it was not committed",
            info.member_name, info.endpoint, ingested.stats.bytes
        ))
        .hint("the stream was truncated or corrupted in transit; retry the backup, and check the member's health if it repeats"));
    }
    let manifest = SnapshotManifest {
        etcd_v3: Some(info.clone()),
        ..opts.manifest(PayloadKind::EtcdV3, vec![ingested.stream.clone()], ingested.stats)
    };
    let id = commit(vault, catalog, &manifest).await?;
    Ok(BackupReport {
        revision: Some(info.revision),
        member: Some(info.member_name),
        member_id: Some(info.member_id),
        endpoint: Some(info.endpoint),
        cluster_id: Some(info.cluster_id),
        skipped_endpoints: member.skipped.iter().map(|(e, w)| format!("{e}: {w}")).collect(),
        ..BackupReport::committed(&id, PayloadKind::EtcdV3, &ingested.stats, ingested.stream.sha256)
    })
}
