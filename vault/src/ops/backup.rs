//! Backup: ingest byte streams into the vault (chunk, deduplicate, compress, encrypt, pack,
//! upload, index) and commit a snapshot manifest last (docs/FORMAT.md section 10).
//!
//! The pipeline has four stages so that reading the source, hashing/chunking, compression and
//! uploading overlap; memory is bounded by the channel capacities (a few packs at most):
//! source (async) -> chunker thread -> packer thread -> uploader (async, same task).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::{CaptureStats, Id, IndexPack, IndexSegment, PackType, PayloadKind, SnapshotManifest, Stream as ManifestStream};
use crate::pack::PackWriter;
use crate::repo::Vault;
use crate::source::etcd_v3::{self, EtcdOptions, TrailerCheck};
use crate::store::PutMode;

/// Share of one core the packer may spend compressing at the vault's `level`; beyond it, it
/// compresses at `min_level`. Keeps a capture about as fast as its source on a busy host while
/// compressing incremental captures (few new chunks) hard.
const COMPRESSION_CPU_BUDGET: f64 = 0.8;

/// Called with the number of source bytes read so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// What every backup needs besides its source.
#[derive(Clone, Default)]
pub struct BackupOptions {
    pub job: String,
    pub host: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub progress: Option<ProgressFn>,
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
    let started = Instant::now();
    let known = catalog.known_chunks()?;
    let chunker = vault.chunker();
    let writer = vault.writer.clone();
    let recipients = vault.recipients.clone();
    let vault_id = *vault.vault_id();
    let level = vault.config.compression.level;
    let min_level = vault.config.compression.min_level;
    let pack_target = vault.config.pack.target_size as usize;

    let (src_tx, mut src_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<(Id, Vec<u8>)>(64);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<(Bytes, IndexPack)>(1);

    // Stage 2: hash, chunk, identify, deduplicate.
    let chunk_writer = writer.clone();
    let chunk_stage = std::thread::spawn(move || {
        let mut known: HashSet<Id> = known;
        let mut sc = crate::chunker::StreamChunker::new(chunker);
        let mut trailer = check_etcd_trailer.then(TrailerCheck::default);
        let mut file_hash = (!check_etcd_trailer).then(<sha2::Sha256 as sha2::Digest>::new);
        let mut ids = Vec::new();
        let mut stats = CaptureStats::default();
        // Set when the packer is gone (the uploader failed): stop reading so the error surfaces now.
        let stopped = std::cell::Cell::new(false);
        let mut emit = |c: &[u8]| {
            let id = chunk_writer.chunk_id(c);
            ids.push(id);
            stats.chunks += 1;
            if known.insert(id) {
                stats.new_chunks += 1;
                stats.new_bytes += c.len() as u64;
                if chunk_tx.send((id, c.to_vec())).is_err() {
                    stopped.set(true);
                }
            }
        };
        while let Some(data) = src_rx.blocking_recv() {
            stats.bytes += data.len() as u64;
            if let Some(t) = trailer.as_mut() {
                t.update(&data);
            }
            if let Some(h) = file_hash.as_mut() {
                sha2::Digest::update(h, &data);
            }
            sc.push(&data, &mut emit);
            if stopped.get() {
                break;
            }
        }
        if !stopped.get() {
            sc.finish(&mut emit);
        }
        drop(chunk_tx);
        let (sha256, trailer) = match (trailer, file_hash) {
            (Some(t), _) => {
                let r = t.finish();
                (r.file_sha256.clone(), Some(r))
            }
            (None, Some(h)) => (hex::encode(sha2::Digest::finalize(h)), None),
            (None, None) => unreachable!(),
        };
        (ids, stats, sha256, trailer)
    });

    // Stage 3: compress, encrypt and pack new chunks.
    let pack_writer_key = writer.clone();
    let pack_stage = std::thread::spawn(move || {
        let new_pack = |level| PackWriter::new(&recipients, vault_id, PackType::Data, level, pack_target);
        let mut current = level;
        let mut pw = new_pack(current);
        let mut busy = std::time::Duration::ZERO;
        for (id, data) in chunk_rx {
            // Adaptive level: compress at `level` while within the CPU budget, else at `min_level`.
            let want = if busy.as_secs_f64() <= COMPRESSION_CPU_BUDGET * started.elapsed().as_secs_f64() {
                level
            } else {
                min_level
            };
            if want != current {
                current = want;
                pw.set_level(current);
            }
            let t = Instant::now();
            pw.add(id, &data);
            busy += t.elapsed();
            if pw.len() >= pack_target {
                let full = std::mem::replace(&mut pw, new_pack(current));
                if pack_tx.blocking_send(full.finish(&pack_writer_key)).is_err() {
                    return;
                }
            }
        }
        if !pw.is_empty() {
            let _ = pack_tx.blocking_send(pw.finish(&pack_writer_key));
        }
    });

    // Stage 1 (source) and stage 4 (uploader) run concurrently in this task.
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
    let uploader = async {
        // Owned by this future: when an upload fails the receiver is dropped, so the packer's
        // send fails and the pipeline winds down instead of blocking forever on a full channel.
        let mut pack_rx = pack_rx;
        let mut stored = 0u64;
        let mut packs = 0u64;
        while let Some((bytes, entry)) = pack_rx.recv().await {
            let size = bytes.len() as u64;
            let name = crate::format::pack_name(&entry.id);
            vault.store.put(&name, bytes, PutMode::Overwrite).await?;
            let seg = IndexSegment { packs: vec![entry] };
            let seg_id = vault.write_index(&seg).await?;
            catalog.add_segment(&seg_id, &seg)?;
            stored += size;
            packs += 1;
        }
        Ok::<_, Error>((stored, packs))
    };
    let (read_result, upload_result) = futures::join!(reader, uploader);
    // Close the pipeline whatever happened, then join the threads.
    let (ids, mut stats, sha256, trailer) = chunk_stage.join().map_err(|_| Error::io("chunker thread panicked"))?;
    pack_stage.join().map_err(|_| Error::io("packer thread panicked"))?;
    // A store error explains a pipeline that stopped early, so it is reported first.
    let (stored, packs) = upload_result?;
    read_result?;
    stats.stored_bytes = stored;
    stats.packs = packs;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(IngestedStream {
        stream: ManifestStream {
            name: name.to_string(),
            size: stats.bytes,
            sha256,
            chunks: ids,
        },
        stats,
        trailer,
    })
}

/// Commit a manifest (the last write of a capture) and record it in the catalog.
pub async fn commit(vault: &Vault, catalog: &mut Catalog, manifest: &SnapshotManifest) -> Result<Id> {
    let id = vault.write_snapshot(manifest).await?;
    catalog.add_snapshot(&id, manifest)?;
    Ok(id)
}

/// `vaultctl backup etcd`: snapshot one healthy member into the vault.
pub async fn backup_etcd_v3(vault: &Vault, catalog: &mut Catalog, etcd: &EtcdOptions, opts: &BackupOptions) -> Result<BackupReport> {
    let member = etcd_v3::select_member(etcd).await?;
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
        time: chrono::Utc::now(),
        kind: PayloadKind::EtcdV3,
        host: opts.host.clone().unwrap_or_else(hostname),
        job: if opts.job.is_empty() { "manual".into() } else { opts.job.clone() },
        tags: opts.tags.clone(),
        streams: vec![ingested.stream.clone()],
        stats: ingested.stats,
        etcd_v3: Some(info.clone()),
    };
    let id = commit(vault, catalog, &manifest).await?;
    let s = ingested.stats;
    Ok(BackupReport {
        id: id.hex(),
        kind: PayloadKind::EtcdV3.to_string(),
        bytes: s.bytes,
        new_bytes: s.new_bytes,
        stored_bytes: s.stored_bytes,
        chunks: s.chunks,
        new_chunks: s.new_chunks,
        packs: s.packs,
        seconds: s.seconds,
        sha256: ingested.stream.sha256,
        revision: Some(info.revision),
        member: Some(info.member_name),
        member_id: Some(info.member_id),
        endpoint: Some(info.endpoint),
        cluster_id: Some(info.cluster_id),
        skipped_endpoints: member.skipped.iter().map(|(e, w)| format!("{e}: {w}")).collect(),
    })
}
