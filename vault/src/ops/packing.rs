//! The packing half of every capture, shared by all sources: a [`ChunkSink`] identifies chunks and
//! queues the new ones; a packer thread compresses, encrypts and packs them (one open pack per
//! pack type); [`Packer::upload_all`] stores each full pack and then its index segment
//! (docs/FORMAT.md section 10, steps 1-2). Memory is bounded by the channel capacities.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::catalog::Catalog;
use crate::crypto::WriterKey;
use crate::error::{Error, Result};
use crate::format::{Id, IndexPack, IndexSegment, PackType};
use crate::pack::PackWriter;
use crate::repo::Vault;
use crate::store::PutMode;

/// Share of one core the packer may spend compressing at the vault's `level`; beyond it, it
/// compresses at `min_level`. Keeps a capture about as fast as its source on a busy host while
/// compressing incremental captures (few new chunks) hard.
const COMPRESSION_CPU_BUDGET: f64 = 0.8;

/// Counts of what went through a sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkStats {
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
}

impl SinkStats {
    /// A capture's figures: these counts with the source size, what the uploader stored and how
    /// long the capture took since `started`.
    pub fn capture_stats(&self, bytes: u64, stored_bytes: u64, packs: u64, started: std::time::Instant) -> crate::format::CaptureStats {
        crate::format::CaptureStats {
            bytes,
            chunks: self.chunks,
            new_chunks: self.new_chunks,
            new_bytes: self.new_bytes,
            stored_bytes,
            packs,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Where a capture puts its chunks. Owned by the thread that reads the source.
pub struct ChunkSink {
    tx: std::sync::mpsc::SyncSender<(PackType, Id, Vec<u8>)>,
    known: HashSet<Id>,
    writer: WriterKey,
    stopped: bool,
    pub stats: SinkStats,
}

impl ChunkSink {
    /// Identify a chunk and queue it for packing unless the vault (or this capture) has it already.
    pub fn add(&mut self, pack_type: PackType, data: &[u8]) -> Id {
        let id = self.writer.chunk_id(data);
        self.stats.chunks += 1;
        if !self.stopped && self.known.insert(id) {
            self.stats.new_chunks += 1;
            self.stats.new_bytes += data.len() as u64;
            if self.tx.send((pack_type, id, data.to_vec())).is_err() {
                self.stopped = true;
            }
        }
        id
    }

    /// Count chunks remembered from an earlier capture as part of this one, if the vault still has
    /// every one of them. Returns false (and counts nothing) otherwise.
    pub fn reuse(&mut self, ids: &[Id]) -> bool {
        if !ids.iter().all(|id| self.known.contains(id)) {
            return false;
        }
        self.stats.chunks += ids.len() as u64;
        true
    }

    /// True once the packer is gone (the upload failed): the source should stop reading.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

/// The chunks a capture may deduplicate against: those the catalog knows in a pack that is neither
/// known to be missing or damaged nor absent from the store's listing of `data/` (listed once per
/// capture: one LIST request per 1000 packs on S3) nor in a prune pending set. What the vault has lost is stored again, so
/// the new snapshot is whole and older ones that share those chunks become whole again.
pub async fn present_chunks(vault: &Vault, catalog: &mut Catalog) -> Result<HashSet<Id>> {
    let listed = super::pack_health::list_packs(vault).await?;
    let faults = super::pack_health::record_listing(catalog, &listed)?;
    for id in &faults.new {
        let (_, why) = &faults.all[id];
        tracing::warn!("{why}: this capture stores its chunks again; see `vaultctl repair`");
    }
    // Packs waiting to be pruned are not trusted either (FORMAT.md section 15, P2): a prune
    // after the grace period may delete them while this capture runs.
    let pending = super::prune::pending::pending_packs(vault).await?;
    catalog.known_chunks_except(&pending)
}

/// The packer thread and the receiving end of its full packs.
pub struct Packer {
    thread: std::thread::JoinHandle<()>,
    rx: tokio::sync::mpsc::Receiver<(Bytes, IndexPack)>,
}

/// New chunks queued between the chunker and the packer. The packer (compression) is the slower
/// stage, so this queue is usually full: 8 chunks are 2 MiB at the average chunk size. It was 64
/// (16 MiB) for no gain: a daemon's full capture of a 411 MB etcd took as long with 8 (2.8 s
/// against 2.7 s) and, with glibc's malloc, left 28 MiB resident instead of 54 (docs/BENCHMARKS.md).
const QUEUED_CHUNKS: usize = 8;

/// Start packing for a capture. `known` is every chunk the vault already holds.
pub fn start(vault: &Vault, known: HashSet<Id>) -> (ChunkSink, Packer) {
    let started = Instant::now();
    let (tx, chunk_rx) = std::sync::mpsc::sync_channel::<(PackType, Id, Vec<u8>)>(QUEUED_CHUNKS);
    let (pack_tx, rx) = tokio::sync::mpsc::channel::<(Bytes, IndexPack)>(1);
    let writer = vault.writer.clone();
    let recipients = vault.recipients.clone();
    let vault_id = *vault.vault_id();
    let level = vault.config.compression.level;
    let min_level = vault.config.compression.min_level;
    let pack_target = vault.config.pack.target_size as usize;
    let pack_key = writer.clone();
    let thread = std::thread::spawn(move || {
        let mut open: HashMap<PackType, PackWriter> = HashMap::new();
        let mut busy = Duration::ZERO;
        for (pack_type, id, data) in chunk_rx {
            // Adaptive level: compress at `level` while within the CPU budget, else at `min_level`.
            let within_budget = busy.as_secs_f64() <= COMPRESSION_CPU_BUDGET * started.elapsed().as_secs_f64();
            let current = if within_budget { level } else { min_level };
            let t = Instant::now();
            let pw = open
                .entry(pack_type)
                .or_insert_with(|| PackWriter::new(&recipients, vault_id, pack_type, current, pack_target));
            pw.set_level(current);
            pw.add(id, &data);
            busy += t.elapsed();
            if pw.len() >= pack_target {
                let full = open.remove(&pack_type).expect("just used");
                if pack_tx.blocking_send(full.finish(&pack_key)).is_err() {
                    return;
                }
            }
        }
        for (_, pw) in open {
            if !pw.is_empty() && pack_tx.blocking_send(pw.finish(&pack_key)).is_err() {
                return;
            }
        }
    });
    let sink = ChunkSink {
        tx,
        known,
        writer,
        stopped: false,
        stats: SinkStats::default(),
    };
    (sink, Packer { thread, rx })
}

impl Packer {
    /// Store every pack as it fills, each followed by its index segment. Returns (bytes stored,
    /// packs). Ends when every sink is dropped; on a store error it returns at once, which makes
    /// the sink report `stopped()` so the source stops too.
    pub async fn upload_all(self, vault: &Vault, catalog: &mut Catalog) -> Result<(u64, u64)> {
        let Packer { thread, mut rx } = self;
        let result = async {
            let mut stored = 0u64;
            let mut packs = 0u64;
            while let Some((bytes, entry)) = rx.recv().await {
                let size = bytes.len() as u64;
                vault
                    .store
                    .put(&crate::format::pack_name(&entry.id), bytes, PutMode::Overwrite)
                    .await?;
                let seg = IndexSegment { packs: vec![entry] };
                let seg_id = vault.write_index(&seg).await?;
                catalog.add_segment(&seg_id, &seg)?;
                stored += size;
                packs += 1;
            }
            Ok::<_, Error>((stored, packs))
        }
        .await;
        drop(rx); // unblocks the packer if the upload failed
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            return Err(Error::io("the packer thread failed"));
        }
        result
    }
}
