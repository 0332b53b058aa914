//! The delta watcher task of an etcd-v3 job with `deltas_every_secs` (docs/FORMAT.md section
//! 8e): runs `vault::ops::deltas::watcher::run` next to the job's schedule loop and keeps its
//! figures for /metrics. When the chain breaks at etcd's compaction it tells the job loop, which
//! takes a full snapshot at once (the new snapshot starts the next chain) and sends the
//! `deltas-compacted` webhook.

use std::sync::Arc;

use vault::ops::deltas::segment::SharedVault;
use vault::ops::deltas::watcher::{self, WatcherEvent, WatcherOptions};
use vault::repo::Vault;

use crate::config::JobConfig;
use crate::metrics::{DeltaStats, unix_seconds};
use crate::run::Daemon;

impl AsRef<Vault> for Daemon {
    fn as_ref(&self) -> &Vault {
        &self.vault
    }
}

fn update(d: &Daemon, job: &str, f: impl FnOnce(&mut DeltaStats)) {
    d.update(job, |s| f(s.deltas.get_or_insert_with(Default::default)));
}

/// A full snapshot is wanted at once: the delta chain broke at etcd's compaction, losing these
/// revisions (first, last).
pub(crate) type CompactedRange = (i64, i64);

/// Start the job's watcher if it has continuous capture; it stops when `stopping` turns true.
/// The receiver hears of each compaction break (the caller takes the full snapshot).
pub(crate) fn start(
    d: &Arc<Daemon>,
    job: &JobConfig,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Option<(tokio::task::JoinHandle<()>, tokio::sync::mpsc::UnboundedReceiver<CompactedRange>)> {
    let deltas = job.deltas()?;
    let etcd = job.etcd.clone()?;
    let opts = WatcherOptions {
        job: job.name.clone(),
        host: d.host.clone(),
        etcd,
        every: deltas.every,
        max_bytes: deltas.max_bytes,
        lease: deltas.lease,
        catalog_path: d.catalog_path.clone(),
    };
    update(d, &job.name, |s| s.state = "standby");
    // Compaction: the job loop takes a full snapshot at once (the range lost rides along).
    let (compacted_tx, compacted_rx) = tokio::sync::mpsc::unbounded_channel::<CompactedRange>();
    let report = {
        let d = d.clone();
        let job = job.name.clone();
        Arc::new(move |e: WatcherEvent| match e {
            WatcherEvent::Standby { .. } => update(&d, &job, |s| s.state = "standby"),
            WatcherEvent::Holding => update(&d, &job, |s| s.state = "holding"),
            WatcherEvent::WaitingForBase { .. } => update(&d, &job, |s| s.state = "waiting"),
            WatcherEvent::Committed {
                stream_bytes,
                stored_bytes,
                last_event_time,
                lag,
                ..
            } => update(&d, &job, |s| {
                s.state = "holding";
                s.lag_revisions = lag;
                s.segments += 1;
                s.stream_bytes += stream_bytes;
                s.stored_bytes += stored_bytes;
                s.last_segment_bytes = Some((stream_bytes, stored_bytes));
                s.newest_event = Some(unix_seconds(last_event_time));
            }),
            WatcherEvent::Covered { until, lag } => update(&d, &job, |s| {
                let t = unix_seconds(until);
                s.covered_until = Some(s.covered_until.map_or(t, |c| c.max(t)));
                s.lag_revisions = lag;
            }),
            WatcherEvent::ChainEnded { reason, lost, .. } => {
                update(&d, &job, |s| *s.chain_breaks.entry(reason.clone()).or_default() += 1);
                if reason == "compacted" {
                    let _ = compacted_tx.send(lost.unwrap_or_default());
                }
            }
            WatcherEvent::LostRace { .. } => update(&d, &job, |s| {
                s.state = "standby";
                *s.chain_breaks.entry("lost-race".into()).or_default() += 1;
            }),
        })
    };
    let vault: SharedVault = d.clone();
    let name = job.name.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = watcher::run(vault, opts, report, stopping).await {
            tracing::error!("job {name}: continuous capture stopped: {e}");
        }
    });
    Some((handle, compacted_rx))
}
