//! Writing one delta segment (docs/FORMAT.md section 8e): the encoded `events` stream goes into
//! the ordinary backup pipeline ([`ingest_stream`]) while it is produced, through a bounded
//! channel, so memory is bounded by the pipeline (about two packs), not by the segment. Closing
//! writes the trailer, drains the pipeline, commits the manifest (kind `etcd-v3-delta`) and then
//! creates the segment's link: the commit point of its place in the chain.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::delta_stream::{Encoder, EventGroup, LeaseGrant, Summary};
use crate::error::{Error, Result};
use crate::format::{DeltaLink, EtcdV3DeltaInfo, Id, PayloadKind, SnapshotManifest};
use crate::ops::backup::{self, BackupOptions, IngestedStream};
use crate::ops::deltas::chain::{self, LinkCreated};
use crate::repo::Vault;

/// A vault shared with a task that outlives the caller's borrow (a daemon holds its vault in an
/// `Arc` of its own state; a test or a CLI can wrap a `Vault` in an `Arc` directly).
pub type SharedVault = Arc<dyn AsRef<Vault> + Send + Sync>;

impl AsRef<Vault> for Vault {
    fn as_ref(&self) -> &Vault {
        self
    }
}

/// The name of the one stream of a delta segment.
pub const EVENTS_STREAM: &str = "events";

/// Encoded bytes are sent to the pipeline in pieces of about this size.
const SEND_PIECE: usize = 256 << 10;
/// Pieces in flight between the writer and the chunker (with the pipeline's own channels, the
/// bound on what a segment holds in memory).
const CHANNEL_PIECES: usize = 8;

/// What a segment is and where it goes in its chain.
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    pub job: String,
    pub host: String,
    /// The etcd-v3 snapshot the chain starts from.
    pub base: Id,
    pub seq: u64,
    /// The segment of link `seq - 1` (none for seq 0).
    pub prev: Option<Id>,
    pub cluster_id: String,
    pub member_id: String,
    pub endpoint: String,
    /// The watcher writing it (its lock owner).
    pub watcher: String,
}

/// How closing a segment ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Closed {
    /// The manifest and its link are stored: the segment is in the chain.
    Committed { id: Id, link: DeltaLink },
    /// Another watcher created link `seq` first: this segment's manifest `id` is an orphan that
    /// readers ignore, and the caller has lost the chain (it must stop watching).
    LostRace { id: Id },
}

type IngestResult = (Catalog, Result<IngestedStream>);

/// An open segment: push lease records and groups in order, then [`SegmentWriter::close`].
pub struct SegmentWriter {
    vault: SharedVault,
    spec: SegmentSpec,
    encoder: Encoder,
    tx: Option<mpsc::Sender<Result<Bytes>>>,
    task: JoinHandle<IngestResult>,
    pending: Vec<u8>,
    first_ms: Option<i64>,
    last_ms: i64,
    catch_up: bool,
}

fn time_of(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl SegmentWriter {
    /// Open a segment: the pipeline starts at once (on a task of its own, with `catalog`, which
    /// [`SegmentWriter::close`] hands back).
    pub fn open(vault: SharedVault, catalog: Catalog, spec: SegmentSpec) -> Result<SegmentWriter> {
        (*vault).as_ref().check_may_write("writing a delta segment")?;
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_PIECES);
        let task_vault = vault.clone();
        let task = tokio::spawn(async move {
            let mut catalog = catalog;
            let source = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
            // Not deduplicated against the vault: listing the store and loading every chunk ID
            // for each segment (every few seconds) would cost far more than the few chunks a
            // segment shares with others (its changes are mostly new values).
            let r = backup::ingest_stream_known(
                (*task_vault).as_ref(),
                &mut catalog,
                EVENTS_STREAM,
                source,
                false,
                None,
                Default::default(),
            )
            .await;
            (catalog, r)
        });
        let mut encoder = Encoder::new();
        let pending = encoder.header();
        Ok(SegmentWriter {
            vault,
            spec,
            encoder,
            tx: Some(tx),
            task,
            pending,
            first_ms: None,
            last_ms: 0,
            catch_up: false,
        })
    }

    pub fn spec(&self) -> &SegmentSpec {
        &self.spec
    }

    /// A lease record (before the first group that uses the lease).
    pub async fn push_lease(&mut self, lease: &LeaseGrant) -> Result<()> {
        let b = self.encoder.lease(lease);
        self.append(b).await
    }

    /// The next group: its revision must follow the previous group's (the source checks density).
    pub async fn push_group(&mut self, group: &EventGroup) -> Result<()> {
        let last = self.encoder.summary();
        if last.groups > 0 && group.revision != last.last_revision + 1 {
            return Err(Error::integrity(format!(
                "delta segment {} of job {}: revision {} does not follow {} (not dense); the segment is not committed",
                self.spec.seq, self.spec.job, group.revision, last.last_revision
            )));
        }
        self.first_ms.get_or_insert(group.received_ms);
        self.last_ms = group.received_ms;
        self.catch_up |= group.catch_up;
        let b = self.encoder.group(group);
        self.append(b).await
    }

    /// What the segment covers so far.
    pub fn summary(&self) -> &Summary {
        self.encoder.summary()
    }

    /// Bytes encoded so far.
    pub fn bytes(&self) -> u64 {
        self.encoder.bytes()
    }

    async fn append(&mut self, b: Vec<u8>) -> Result<()> {
        self.pending.extend_from_slice(&b);
        if self.pending.len() >= SEND_PIECE {
            self.send_pending().await?;
        }
        Ok(())
    }

    async fn send_pending(&mut self) -> Result<()> {
        let piece = Bytes::from(std::mem::take(&mut self.pending));
        let tx = self.tx.as_ref().expect("open until closed");
        if tx.send(Ok(piece)).await.is_err() {
            // The pipeline stopped (a store error): close() or abandon() reports it.
            return Err(Error::io(format!(
                "the backup pipeline of delta segment {} of job {} stopped",
                self.spec.seq, self.spec.job
            )));
        }
        Ok(())
    }

    /// Stop without committing (the packs stored so far stay unused until a prune); hands the
    /// catalog back when the pipeline ended cleanly.
    pub async fn abandon(mut self) -> Option<Catalog> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(Error::io("delta segment abandoned"))).await;
        }
        self.task.await.ok().map(|(c, _)| c)
    }

    /// Close the segment: trailer, drain the pipeline, commit the manifest, create the link.
    /// `covered_until` is when etcd's head was known to be at the segment's last revision.
    /// Refuses an empty segment. The catalog comes back on success.
    pub async fn close(mut self, covered_until: DateTime<Utc>) -> Result<(Catalog, Closed)> {
        if self.encoder.summary().groups == 0 {
            let seq = self.spec.seq;
            self.abandon().await;
            return Err(Error::usage(format!("delta segment {seq} has no group: nothing to commit")));
        }
        let encoder = std::mem::take(&mut self.encoder);
        let (trailer, summary) = encoder.finish();
        self.pending.extend_from_slice(&trailer);
        self.send_pending().await?;
        drop(self.tx.take());
        let (mut catalog, ingested) = (&mut self.task)
            .await
            .map_err(|_| Error::io("the pipeline task of a delta segment panicked"))?;
        let ingested = ingested?;
        let vault = (*self.vault).as_ref();
        let spec = &self.spec;
        let first_event_time = time_of(self.first_ms.unwrap_or(self.last_ms));
        let last_event_time = time_of(self.last_ms);
        let covered_until = covered_until.max(last_event_time);
        let opts = BackupOptions {
            job: spec.job.clone(),
            host: Some(spec.host.clone()),
            ..Default::default()
        };
        let manifest = SnapshotManifest {
            etcd_v3_delta: Some(EtcdV3DeltaInfo {
                base: spec.base,
                seq: spec.seq,
                prev: spec.prev,
                cluster_id: spec.cluster_id.clone(),
                member_id: spec.member_id.clone(),
                endpoint: spec.endpoint.clone(),
                first_revision: summary.first_revision,
                last_revision: summary.last_revision,
                groups: summary.groups,
                events: summary.events,
                first_event_time,
                last_event_time,
                covered_until,
                catch_up: self.catch_up,
                watcher: spec.watcher.clone(),
            }),
            ..opts.manifest(PayloadKind::EtcdV3Delta, vec![ingested.stream], ingested.stats)
        };
        let id = backup::commit(vault, &mut catalog, &manifest).await?;
        let link = DeltaLink {
            base: spec.base,
            seq: spec.seq,
            segment: id,
            first_revision: summary.first_revision,
            last_revision: summary.last_revision,
            last_event_time,
            covered_until,
            watcher: spec.watcher.clone(),
            time: Utc::now(),
        };
        match chain::create_link(vault, &spec.job, &link).await? {
            LinkCreated::Created => Ok((catalog, Closed::Committed { id, link })),
            LinkCreated::Taken => Ok((catalog, Closed::LostRace { id })),
        }
    }
}
