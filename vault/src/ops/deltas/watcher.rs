//! The delta watcher of one etcd-v3 job (docs/FORMAT.md section 8e), as a library function a
//! daemon runs: hold the job's watcher lock (or stand by), find the current base (the newest
//! etcd-v3 snapshot of the job), resume its chain where the links end, watch etcd from there and
//! commit a segment every `every` or `max_bytes`, whichever comes first, always at a group
//! boundary (an idle cluster writes nothing). A newer base supersedes the chain once the chain
//! reached the new base's revision; a compacted revision ends the chain (`compacted`) and is
//! reported so that the daemon takes a full snapshot at once, whose chain then starts.
//!
//! The committed range is what the links say, so a watcher taking over after another was killed
//! re-reads from etcd whatever the dead one had not committed: no gap, no duplicate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{DeltaChainEnd, Id, PayloadKind};
use crate::ops::deltas::chain;
use crate::ops::deltas::segment::{Closed, SegmentSpec, SegmentWriter, SharedVault};
use crate::ops::lease_lock::{LeaseLockGuard, LockKind};
use crate::repo::Vault;
use crate::source::etcd_v3::EtcdOptions;
use crate::source::etcd_watch::{EtcdWatch, WatchItem};

/// Default of `deltas_max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 32 << 20;
/// Default of `deltas_lease_secs`.
pub const DEFAULT_LEASE_SECS: u64 = 30;

/// What a watcher needs.
#[derive(Clone, Debug)]
pub struct WatcherOptions {
    pub job: String,
    /// This host's name (in segment manifests and the lock).
    pub host: String,
    pub etcd: EtcdOptions,
    /// Commit a segment this long after its first group.
    pub every: Duration,
    /// ... or once its encoded stream reaches this size.
    pub max_bytes: u64,
    /// Lease of the watcher lock; a standby tries to take it every third of it.
    pub lease: Duration,
    /// The catalog the watcher opens connections to (the daemon's).
    pub catalog_path: PathBuf,
}

/// A base snapshot of a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Base {
    pub id: Id,
    pub revision: i64,
    pub cluster_id: String,
    pub time: DateTime<Utc>,
}

/// What the watcher reports as it goes (for metrics, logs and webhooks).
#[derive(Clone, Debug, PartialEq)]
pub enum WatcherEvent {
    /// Another daemon holds the lock; this one stands by.
    Standby { holder: String },
    /// This daemon holds the lock and watches (or waits for a base).
    Holding,
    /// Holding, but there is no base to extend: `why`.
    WaitingForBase { why: String },
    /// A segment is in its chain.
    Committed {
        base: Id,
        seq: u64,
        segment: Id,
        first_revision: i64,
        last_revision: i64,
        stream_bytes: u64,
        stored_bytes: u64,
        last_event_time: DateTime<Utc>,
        covered_until: DateTime<Utc>,
        /// Revisions etcd's head was ahead of the watch at the commit.
        lag: i64,
    },
    /// Everything etcd had up to now is committed as of `until` (`lag` revisions behind etcd's
    /// head when reported). Sent after each commit and while idle.
    Covered { until: DateTime<Utc>, lag: i64 },
    /// A chain was closed. With `compacted`, `lost` is the range of revisions no chain has, and
    /// the daemon should take a full snapshot at once.
    ChainEnded {
        base: Id,
        reason: String,
        lost: Option<(i64, i64)>,
    },
    /// Another watcher made this segment's link first: this one lost the lock.
    LostRace { seq: u64 },
}

pub type ReportFn = Arc<dyn Fn(WatcherEvent) + Send + Sync>;

/// The newest etcd-v3 snapshot of `job` in the catalog (synced first).
pub async fn current_base(vault: &Vault, catalog_path: &std::path::Path, job: &str) -> Result<Option<Base>> {
    let mut cat = Catalog::open(catalog_path, &vault.config.vault_id)?;
    cat.sync(vault).await?;
    Ok(cat
        .recent_snapshots(job, None, 16)?
        .into_iter()
        .filter(|s| s.manifest.kind == PayloadKind::EtcdV3)
        .find_map(|s| {
            let e = s.manifest.etcd_v3.as_ref()?;
            Some(Base {
                id: s.id,
                revision: e.revision,
                cluster_id: e.cluster_id.clone(),
                time: s.manifest.time,
            })
        }))
}

/// Run the watcher until `stop` turns true (then the open segment is committed and the lock
/// released). Errors of etcd or the store are reported and retried inside; only a vault that
/// cannot take the lock at all (no conditional create) ends it with an error.
pub async fn run(vault: SharedVault, opts: WatcherOptions, report: ReportFn, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let v: &Vault = (*vault).as_ref();
    let kind = LockKind::delta_watcher(&opts.job, &v.writer.job_tag(&opts.job));
    let lease = chrono::Duration::from_std(opts.lease).unwrap_or(chrono::Duration::seconds(30));
    let poll = (opts.lease / 3).max(Duration::from_millis(500));
    let mut last_standby: Option<String> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match LeaseLockGuard::take(v, kind.clone(), &opts.host, lease, 0).await {
            Ok(guard) => {
                last_standby = None;
                if let Some(b) = &guard.info.broke {
                    tracing::warn!("job {}: took over the delta watcher lock from {b}", opts.job);
                }
                report(WatcherEvent::Holding);
                let mut holder = Holder {
                    vault: vault.clone(),
                    opts: &opts,
                    report: report.clone(),
                    guard,
                    covered: None,
                };
                let held = holder.hold(&mut stop).await;
                let Holder { guard, .. } = holder;
                match held {
                    Ok(Held::Stopped) => {
                        let _ = guard.release(v).await;
                        return Ok(());
                    }
                    Ok(Held::Lost) => {}
                    Err(e) => {
                        tracing::error!("job {}: delta watcher: {e}", opts.job);
                        let _ = guard.release(v).await;
                    }
                }
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                // Said once per holder (its renewals change the rest of the text).
                let holder = e.what.clone();
                let who = holder.split(" since ").next().unwrap_or(&holder).to_string();
                if last_standby.as_deref() != Some(&who) {
                    tracing::info!("job {}: delta watcher stands by: {holder}", opts.job);
                    report(WatcherEvent::Standby { holder });
                    last_standby = Some(who);
                }
            }
            Err(e) if e.kind == ErrorKind::Usage => return Err(e),
            Err(e) => tracing::warn!("job {}: delta watcher cannot read its lock: {e}", opts.job),
        }
        if sleep_or_stop(poll, &mut stop).await {
            return Ok(());
        }
    }
}

/// Sleep, or return true at once when asked to stop.
async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

enum Held {
    Stopped,
    /// The lock was lost (another watcher took it): stand by again.
    Lost,
}

/// How a watch of one chain ended.
enum Watched {
    Stopped,
    Lost,
    /// Go back to the top: a new base, an ended chain, a broken watch.
    Again,
}

struct Holder<'a> {
    vault: SharedVault,
    opts: &'a WatcherOptions,
    report: ReportFn,
    guard: LeaseLockGuard,
    /// The newest time the committed chain was known complete.
    covered: Option<DateTime<Utc>>,
}

/// The chain being extended.
struct ChainState {
    base: Base,
    seq: u64,
    first: i64,
    prev: Option<Id>,
}

impl Holder<'_> {
    fn v(&self) -> &Vault {
        (*self.vault).as_ref()
    }

    async fn keep(&mut self) -> Result<bool> {
        let vault = self.vault.clone();
        match self.guard.keep((*vault).as_ref()).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                tracing::warn!("job {}: {e}", self.opts.job);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn hold(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<Held> {
        let poll = Duration::from_secs(1).min(self.opts.every).max(Duration::from_millis(200));
        let mut waiting: Option<String> = None;
        let mut last_error: Option<String> = None;
        loop {
            if *stop.borrow() {
                return Ok(Held::Stopped);
            }
            if !self.keep().await? {
                return Ok(Held::Lost);
            }
            match self.chain_to_extend().await {
                Ok(Ok(state)) => {
                    if waiting.take().is_some() {
                        (self.report)(WatcherEvent::Holding);
                    }
                    match self.watch(state, stop).await {
                        Ok(Watched::Stopped) => return Ok(Held::Stopped),
                        Ok(Watched::Lost) => return Ok(Held::Lost),
                        Ok(Watched::Again) => {
                            last_error = None;
                            continue;
                        }
                        Err(e) => {
                            // Said once while it repeats (an etcd outage retried every second).
                            let text = e.to_string();
                            if last_error.as_deref() != Some(&text) {
                                tracing::warn!("job {}: delta watcher: {text}; watching again", self.opts.job);
                                last_error = Some(text);
                            }
                        }
                    }
                }
                Ok(Err(why)) => {
                    if waiting.as_deref() != Some(&why) {
                        tracing::info!("job {}: delta watcher waits: {why}", self.opts.job);
                        (self.report)(WatcherEvent::WaitingForBase { why: why.clone() });
                        waiting = Some(why);
                    }
                }
                Err(e) => tracing::warn!("job {}: delta watcher: {e}", self.opts.job),
            }
            if sleep_or_stop(poll, stop).await {
                return Ok(Held::Stopped);
            }
        }
    }

    /// The current base's chain and where it goes on, or why there is none to extend.
    async fn chain_to_extend(&self) -> Result<std::result::Result<ChainState, String>> {
        let opts = self.opts;
        let Some(base) = current_base(self.v(), &opts.catalog_path, &opts.job).await? else {
            return Ok(Err(format!("job {} has no etcd-v3 snapshot yet", opts.job)));
        };
        let chain = chain::read_chain(self.v(), &opts.job, &base.id, base.revision).await?;
        if let Some(end) = &chain.end {
            return Ok(Err(format!(
                "the chain of the newest snapshot {} ended ({}); a newer snapshot starts the next",
                base.id.short(),
                end.reason
            )));
        }
        if !chain.problems.is_empty() {
            return Ok(Err(format!(
                "the chain of the newest snapshot {} is broken ({}); a newer snapshot starts the next",
                base.id.short(),
                chain.problems.join("; ")
            )));
        }
        let (seq, first) = chain.next(base.revision);
        Ok(Ok(ChainState {
            prev: chain.links.last().map(|l| l.segment),
            base,
            seq,
            first,
        }))
    }

    /// Close `base`'s chain. False when the lock was lost (nothing written: the holder decides).
    async fn end_chain(&mut self, state: &ChainState, reason: &str, next_base: Option<Id>, compact_revision: Option<i64>) -> Result<bool> {
        // A watcher that stalled (stopped, partitioned from the store) must not end a chain
        // another one extends now.
        if !self.keep().await? {
            return Ok(false);
        }
        let end = DeltaChainEnd {
            base: state.base.id,
            reason: reason.into(),
            last_revision: state.first - 1,
            next_base,
            compact_revision,
            watcher: self.guard.info.owner.clone(),
            time: Utc::now(),
        };
        if chain::write_end(self.v(), &self.opts.job, &end).await? == chain::LinkCreated::Taken {
            return Ok(true); // ended already (by the watcher before this one)
        }
        let lost = compact_revision.map(|c| (state.first, c - 1)).filter(|(a, b)| a <= b);
        match lost {
            Some((a, b)) => tracing::error!(
                "job {}: the delta chain of snapshot {} ended ({reason}): revisions {a} to {b} were compacted away before they were captured; a full snapshot is taken now",
                self.opts.job,
                state.base.id.short()
            ),
            None => tracing::info!(
                "job {}: the delta chain of snapshot {} ended ({reason}) at revision {}",
                self.opts.job,
                state.base.id.short(),
                state.first - 1
            ),
        }
        (self.report)(WatcherEvent::ChainEnded {
            base: state.base.id,
            reason: reason.into(),
            lost,
        });
        Ok(true)
    }

    /// Watch and extend one chain.
    async fn watch(&mut self, mut state: ChainState, stop: &mut tokio::sync::watch::Receiver<bool>) -> Result<Watched> {
        let opts = self.opts;
        let what = format!("job {}", opts.job);
        let mut watch = EtcdWatch::start(&opts.etcd, state.first, &what).await?;
        let member = watch.member().clone();
        if member.cluster_id != state.base.cluster_id && !state.base.cluster_id.is_empty() {
            if state.seq > 0 && !self.end_chain(&state, "cluster-changed", None, None).await? {
                return Ok(Watched::Lost);
            }
            return Err(Error::source_err(format!(
                "etcd member {} belongs to cluster {}, the newest snapshot {} of job {} to cluster {}",
                member.endpoint,
                member.cluster_id,
                state.base.id.short(),
                opts.job,
                state.base.cluster_id
            ))
            .hint("the job's endpoints point at another cluster than it captured; a new snapshot of this cluster starts a chain"));
        }
        let spec = |s: &ChainState, watcher: &str| SegmentSpec {
            job: opts.job.clone(),
            host: opts.host.clone(),
            base: s.base.id,
            seq: s.seq,
            prev: s.prev,
            cluster_id: member.cluster_id.clone(),
            member_id: member.member_id.clone(),
            endpoint: member.endpoint.clone(),
            watcher: watcher.to_string(),
        };
        let tick_every = Duration::from_secs(1).min(opts.every).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut segment: Option<(SegmentWriter, Instant)> = None;
        let mut leases = Vec::new();
        let mut last_base_check = Instant::now();
        // A newer base seen: the chain ends once it reached that base's revision.
        let mut superseded_by: Option<Base> = None;
        // The newest revision pushed (committed or in the open segment).
        let mut pushed = state.first - 1;
        // etcd's head was at `pushed` at this time (nothing newer existed).
        let mut head_seen: Option<DateTime<Utc>> = None;
        loop {
            let item = tokio::select! {
                item = watch.next() => Some(item),
                _ = tick.tick() => None,
                _ = stop.changed() => {
                    if let Some((w, _)) = segment.take() {
                        self.flush(w, &mut state, head_seen, watch.lag()).await?;
                    }
                    return Ok(Watched::Stopped);
                }
            };
            match item {
                Some(Ok(WatchItem::Lease(l))) => leases.push(l),
                Some(Ok(WatchItem::Group(g))) => {
                    if segment.is_none() {
                        let cat = Catalog::open(&opts.catalog_path, &self.v().config.vault_id)?;
                        let w = SegmentWriter::open(self.vault.clone(), cat, spec(&state, &self.guard.info.owner))?;
                        segment = Some((w, Instant::now()));
                    }
                    let (w, _) = segment.as_mut().expect("opened above");
                    for l in leases.drain(..) {
                        w.push_lease(&l).await?;
                    }
                    w.push_group(&g).await?;
                    pushed = g.revision;
                    head_seen = (!g.catch_up).then(|| DateTime::from_timestamp_millis(g.received_ms).unwrap_or_default());
                    if w.bytes() >= opts.max_bytes {
                        let (w, _) = segment.take().expect("open");
                        if !self.flush(w, &mut state, head_seen, watch.lag()).await? {
                            return Ok(Watched::Lost);
                        }
                    }
                }
                Some(Ok(WatchItem::Progress { revision, at_ms })) => {
                    if revision == pushed {
                        head_seen = DateTime::from_timestamp_millis(at_ms);
                        if segment.is_none()
                            && let Some(t) = head_seen
                        {
                            self.covered = Some(t);
                            (self.report)(WatcherEvent::Covered { until: t, lag: 0 });
                        }
                    }
                }
                Some(Ok(WatchItem::Compacted { compact_revision })) => {
                    if let Some((w, _)) = segment.take()
                        && !self.flush(w, &mut state, head_seen, watch.lag()).await?
                    {
                        return Ok(Watched::Lost);
                    }
                    if !self.end_chain(&state, "compacted", None, Some(compact_revision)).await? {
                        return Ok(Watched::Lost);
                    }
                    return Ok(Watched::Again);
                }
                Some(Err(e)) => {
                    // What is open is dense up to where it stopped: keep it, unless the stream
                    // itself was wrong.
                    if let Some((w, _)) = segment.take() {
                        if e.kind == ErrorKind::Integrity {
                            w.abandon().await;
                        } else {
                            self.flush(w, &mut state, head_seen, watch.lag()).await?;
                        }
                    }
                    return Err(e);
                }
                None => {
                    if !self.keep().await? {
                        if let Some((w, _)) = segment.take() {
                            w.abandon().await;
                        }
                        return Ok(Watched::Lost);
                    }
                    let _ = watch.request_progress().await;
                    if let Some((_, opened)) = &segment
                        && opened.elapsed() >= opts.every
                    {
                        let (w, _) = segment.take().expect("open");
                        if !self.flush(w, &mut state, head_seen, watch.lag()).await? {
                            return Ok(Watched::Lost);
                        }
                    }
                    if superseded_by.is_none() && last_base_check.elapsed() >= opts.every.max(Duration::from_secs(1)) {
                        last_base_check = Instant::now();
                        match current_base(self.v(), &opts.catalog_path, &opts.job).await {
                            Ok(Some(b)) if b.id != state.base.id && b.time > state.base.time => superseded_by = Some(b),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("job {}: delta watcher cannot read the catalog: {e}", opts.job),
                        }
                    }
                }
            }
            // The chain reached the newer base: close it there; the next chain starts from it.
            if let Some(next) = &superseded_by
                && pushed >= next.revision
            {
                if let Some((w, _)) = segment.take()
                    && !self.flush(w, &mut state, head_seen, watch.lag()).await?
                {
                    return Ok(Watched::Lost);
                }
                if state.seq > 0 && !self.end_chain(&state, "superseded", Some(next.id), None).await? {
                    return Ok(Watched::Lost);
                }
                return Ok(Watched::Again);
            }
        }
    }

    /// Commit a segment. False when its link was taken (the lock is lost).
    async fn flush(&mut self, w: SegmentWriter, state: &mut ChainState, head_seen: Option<DateTime<Utc>>, lag: i64) -> Result<bool> {
        // Renew before the link: a watcher whose lease ran out must not extend the chain.
        if !self.keep().await? {
            w.abandon().await;
            return Ok(false);
        }
        let stream_bytes = w.bytes();
        let seq = w.spec().seq;
        // Unknown (the watch was catching up): the last event's receive time, which close() uses
        // as the floor.
        let covered = head_seen.unwrap_or_default();
        let (_, closed) = w.close(covered).await?;
        match closed {
            Closed::Committed { id, link } => {
                let stored = self.v().read_snapshot(&id).await.map(|m| m.stats.stored_bytes).unwrap_or_default();
                tracing::debug!(
                    "job {}: delta segment {} of {} committed: revisions {}..={}",
                    self.opts.job,
                    seq,
                    state.base.id.short(),
                    link.first_revision,
                    link.last_revision
                );
                state.seq = link.seq + 1;
                state.first = link.last_revision + 1;
                state.prev = Some(id);
                (self.report)(WatcherEvent::Committed {
                    base: state.base.id,
                    seq: link.seq,
                    segment: id,
                    first_revision: link.first_revision,
                    last_revision: link.last_revision,
                    stream_bytes,
                    stored_bytes: stored,
                    last_event_time: link.last_event_time,
                    covered_until: link.covered_until,
                    lag,
                });
                if head_seen.is_some() {
                    self.covered = Some(link.covered_until);
                    (self.report)(WatcherEvent::Covered {
                        until: link.covered_until,
                        lag,
                    });
                }
                Ok(true)
            }
            Closed::LostRace { id } => {
                tracing::warn!(
                    "job {}: another watcher made link {seq} of the chain of {} first; segment {} is an orphan and this watcher stands by",
                    self.opts.job,
                    state.base.id.short(),
                    id.short()
                );
                (self.report)(WatcherEvent::LostRace { seq });
                Ok(false)
            }
        }
    }
}
