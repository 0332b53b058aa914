//! The job loops: one task per job sleeps until the job's next cron slot (plus jitter) and runs the
//! capture through the library with the job's timeout and retries.
//!
//! A job's runs are sequential by construction (its task awaits each run before computing the next
//! slot from the current time), so two runs of one job never overlap; slots that pass during a long
//! run are skipped. Runs of different jobs go side by side, each with its own catalog connection.
//!
//! At start-up a job whose last snapshot is older than a slot that has passed (the daemon was down,
//! or the last runs failed) runs once at once; then it follows its schedule.
//!
//! A cluster-wide job's run claims its slot in the vault and renews the claim's lease while it goes
//! on. A daemon that stood back for another's claim watches the slot until the next one: when the
//! lease runs out with no snapshot it takes the slot over, and a slot that ends with no snapshot is
//! reported ("missed") by the first daemon to see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::OwnedMutexGuard;
use vault::catalog::Catalog;
use vault::claim::{ClaimOutcome, lease_end};
use vault::format::SlotClaim;
use vault::ops::backup::{BackupOptions, backup_etcd_v3_member};
use vault::ops::etcd_datadir::{backup_etcd_datadir_of, select_own_member};
use vault::ops::etcd_v2::backup_etcd_v2_from;
use vault::ops::files::{FilesOptions, backup_files};
use vault::ops::verify::{VerifyOptions, VerifyReport, verify};
use vault::source::etcd_v3;
use vault::{Error, Result};

use crate::check;
use crate::config::{JobConfig, JobKind, Scope};
use crate::run::{Daemon, now_secs};
use crate::runs::{RunRecord, RunState, Trigger};

pub(crate) async fn job_loop(d: Arc<Daemon>, job: JobConfig, stopping: tokio::sync::watch::Receiver<bool>) {
    // Continuous capture runs beside the schedule and stops with it (it commits what it holds
    // and releases its lock first).
    let watcher = crate::deltas::start(&d, &job, stopping.clone()).map(|(watcher, mut compacted)| {
        let (d, job) = (d.clone(), job.clone());
        let snapshots = tokio::spawn(async move {
            while let Some(lost) = compacted.recv().await {
                compacted_snapshot(&d, &job, lost).await;
            }
        });
        (watcher, snapshots)
    });
    scheduled_runs(d, job, stopping).await;
    if let Some((watcher, snapshots)) = watcher {
        let _ = watcher.await;
        // The watcher is gone and with it the channel: a snapshot under way ends, then this.
        let _ = snapshots.await;
    }
}

/// The job's delta chain broke at etcd's compaction, losing revisions `lost`: a full snapshot at
/// once (no slot: only the watcher holding the job's lock asks), and the webhook.
async fn compacted_snapshot(d: &Daemon, job: &JobConfig, lost: crate::deltas::CompactedRange) {
    let id = d.runs.begin(&job.name, Trigger::Compacted, None);
    let record = run_once(d, job, &id, None).await;
    tracing::warn!(
        "job {}: full snapshot after the delta chain broke at etcd's compaction (revisions {} to {} lost): {}",
        job.name,
        lost.0,
        lost.1,
        record.snapshot.as_deref().unwrap_or("none committed; see the run")
    );
    let (failures, last_success) = {
        let stats = d.stats.lock().expect("stats lock");
        let s = stats.get(&job.name).cloned().unwrap_or_default();
        (s.consecutive_failures, s.last_success)
    };
    d.send_event(crate::webhook::Event::DeltasCompacted, job, failures, last_success, &record);
}

async fn scheduled_runs(d: Arc<Daemon>, job: JobConfig, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let schedule = match check::schedule(&job.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("job {}: {e}; it will not run", job.name);
            return;
        }
    };
    crate::policy_record::record(&d, &job).await;
    let now = Utc::now();
    match missed_run(&d, &job, &schedule, now).await {
        Ok(Some(last)) => {
            tracing::info!(
                "job {}: a scheduled run was missed since its last snapshot at {}; running now",
                job.name,
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let slot = last_slot(&schedule, now);
            let id = d.runs.begin(&job.name, Trigger::CatchUp, slot);
            run_once(&d, &job, &id, None).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("job {}: cannot tell whether a run was missed: {e}", job.name),
    }
    // The end of the last watch: the next slot is the one after it, even if the watch overran.
    let mut watched_until: Option<DateTime<Utc>> = None;
    loop {
        let from = watched_until
            .take()
            .map_or_else(Utc::now, |u| u - chrono::Duration::milliseconds(1));
        let Some(next) = schedule.after(&from).next() else {
            tracing::warn!("job {}: schedule {:?} has no further slot; it stops", job.name, job.schedule);
            return;
        };
        let jitter = if job.jitter_secs > 0 {
            rand::thread_rng().gen_range(0..=job.jitter_secs * 1000)
        } else {
            0
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if *stopping.borrow() {
            return;
        }
        let id = d.runs.begin(&job.name, Trigger::Schedule, Some(next));
        let record = run_once(&d, &job, &id, None).await;
        if stands_back(&job, &record) {
            let until = schedule.after(&next).next();
            watch_slot(&d, &job, record, until, &mut stopping).await;
            watched_until = until;
        }
    }
}

/// Whether a run stood back for another daemon's claim on a cluster-wide slot (so the slot is
/// watched).
fn stands_back(job: &JobConfig, r: &RunRecord) -> bool {
    job.scope() == Some(Scope::Cluster)
        && r.state == RunState::Skipped
        && r.snapshot.is_none()
        && r.claimed_by.is_some()
        && r.slot.is_some()
}

/// Watch a slot another daemon holds (`run` is this daemon's skipped run for it) until the job's
/// next slot `until`: when the holder's lease runs out with no snapshot, take the slot over (once);
/// at `until`, a slot still without a snapshot whose lease ran out is closed as missed, and the
/// daemon that closes it sends the webhook.
pub(crate) async fn watch_slot(
    d: &Daemon,
    job: &JobConfig,
    mut run: RunRecord,
    until: Option<DateTime<Utc>>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) {
    let Some(slot) = run.slot else { return };
    // The slot ends a second before the next one (so that the next one starts on time).
    let until = until.unwrap_or(slot + d.claim_lease * 2) - chrono::Duration::seconds(1);
    let sleep_until = |t: DateTime<Utc>| tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default());
    loop {
        let holder = match d.vault.slot_holder(&job.name, slot).await {
            Ok((holder, _)) => holder,
            Err(e) => {
                tracing::warn!(
                    "job {}: cannot read the claim of slot {}: {e}; not watching it",
                    job.name,
                    rfc3339(slot)
                );
                return;
            }
        };
        let wake = match &holder {
            Some(c) if c.missed => return,
            Some(c) => lease_end(c, d.claim_lease) + chrono::Duration::seconds(1),
            None => Utc::now(),
        };
        if wake >= until {
            break;
        }
        tokio::select! {
            _ = sleep_until(wake) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        match slot_snapshot(d, job, slot).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("job {}: cannot tell whether slot {} has its snapshot: {e}", job.name, rfc3339(slot));
                return;
            }
        }
        // The holder's lease ran out with no snapshot: try to take over (a renewed lease makes the
        // run stand back again).
        let id = d.runs.begin(&job.name, Trigger::Takeover, Some(slot));
        run = run_once(d, job, &id, None).await;
        if !stands_back(job, &run) {
            // This daemon ran the slot (or failed, and said so): one takeover per slot.
            break;
        }
    }
    tokio::select! {
        _ = sleep_until(until) => {}
        _ = stopping.wait_for(|s| *s) => return,
    }
    match slot_snapshot(d, job, slot).await {
        Ok(Some(_)) => {}
        Ok(None) => match d.vault.close_missed_slot(&job.name, slot, &d.claimant()).await {
            Ok((true, _)) => {
                tracing::error!(
                    "job {}: slot {} passed with NO snapshot (its claimant stopped without one); sending the \"missed\" webhook",
                    job.name,
                    rfc3339(slot)
                );
                d.missed(job, &run);
            }
            Ok((false, _)) => {}
            Err(e) => tracing::warn!("job {}: cannot record slot {} as missed: {e}", job.name, rfc3339(slot)),
        },
        Err(e) => tracing::warn!("job {}: cannot tell whether slot {} has its snapshot: {e}", job.name, rfc3339(slot)),
    }
}

/// The snapshot of a cluster-wide job's slot in the vault, from any host (a catalog connection of
/// its own, synced first).
async fn slot_snapshot(d: &Daemon, job: &JobConfig, slot: DateTime<Utc>) -> Result<Option<String>> {
    let mut cat = Catalog::open(&d.catalog_path, &d.vault.config.vault_id)?;
    cat.sync(&d.vault).await?;
    Ok(cat.snapshot_for_slot(&job.name, None, slot)?.map(|(id, _)| id.hex()))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How long after a timeout the vault is looked at for a snapshot of the aborted run: a write in
/// flight when the timeout fired is not cancelled by it and may still land.
pub const TIMEOUT_SETTLE: Duration = Duration::from_secs(2);

/// After a run's timeout: the snapshot of the run the vault holds (committed before the abort took
/// effect, or by a write in flight then), looked for [`TIMEOUT_SETTLE`] later.
async fn committed_despite_timeout(
    d: &Daemon,
    job: &JobConfig,
    slot: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
) -> Result<Option<String>> {
    tokio::time::sleep(TIMEOUT_SETTLE).await;
    let mut cat = Catalog::open(&d.catalog_path, &d.vault.config.vault_id)?;
    cat.sync(&d.vault).await?;
    if let Some(slot) = slot {
        return Ok(cat.snapshot_for_slot(&job.name, Some(&d.host), slot)?.map(|(id, _)| id.hex()));
    }
    Ok(cat
        .snapshots()?
        .into_iter()
        .find(|s| s.manifest.job == job.name && s.manifest.host == d.host && s.manifest.slot.is_none() && s.manifest.time >= started)
        .map(|s| s.id.hex()))
}

/// Whether a slot of `schedule` passed between `last` (the job's last snapshot) and `now`.
pub fn overdue(schedule: &cron::Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    schedule.after(&last).next().is_some_and(|slot| slot <= now)
}

/// The latest slot of `schedule` at or before `now`.
pub fn last_slot(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Slots are whole seconds; iterating back from one yields the slots before it.
    let second = chrono::Timelike::with_nanosecond(&now, 0).unwrap_or(now);
    if schedule.includes(second) {
        return Some(second);
    }
    schedule.after(&second).next_back().filter(|t| *t <= now)
}

/// The time of the job's last snapshot (from any host for a cluster-wide job, from this host
/// for a per-host one), when a slot has passed since it. A job that has never taken a snapshot
/// waits for its first slot. Also records the last snapshot's time in the job's stats.
pub async fn missed_run(d: &Daemon, job: &JobConfig, schedule: &cron::Schedule, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    let last = d.last_snapshot(job, &*d.catalog.lock().await)?;
    Ok(last.filter(|&t| overdue(schedule, t, now)))
}

/// One run of a job (its record already begun as `id`), with its timeout and retries; the
/// outcome goes to the run's record, the stats, the log and the webhook.
pub async fn run_once(d: &Daemon, job: &JobConfig, id: &str, held: Option<OwnedMutexGuard<()>>) -> RunRecord {
    let _running = match held {
        Some(guard) => guard,
        None => d.run_lock(&job.name).lock_owned().await,
    };
    let started = Instant::now();
    let started_at = Utc::now();
    let slot = d.runs.update(id, |r| r.started = started_at).and_then(|r| r.slot);
    tracing::info!("job {}: run {id} started", job.name);
    d.update(&job.name, |s| {
        s.last_attempt = Some(now_secs());
        s.running = true;
    });
    let result = tokio::time::timeout(Duration::from_secs(job.timeout_secs), capture_with_retries(d, job, id, slot)).await;
    let seconds = started.elapsed().as_secs_f64();
    let (state, error) = match result {
        Ok(Ok(Ran::Captured(c))) => {
            tracing::info!(
                "job {}: snapshot {} ({} bytes read, {} new, {} stored) in {seconds:.1}s",
                job.name,
                c.id,
                c.bytes,
                c.new_bytes,
                c.stored_bytes
            );
            d.update(&job.name, |s| {
                s.last_success = Some(now_secs());
                s.bytes_read += c.bytes;
                s.bytes_new += c.new_bytes;
                s.bytes_stored += c.stored_bytes;
                s.last_bytes = Some((c.bytes, c.new_bytes, c.stored_bytes));
            });
            d.runs.update(id, |r| {
                r.snapshot = Some(c.id.clone());
                r.incomplete = c.incomplete;
                r.bytes_read = c.bytes;
                r.bytes_new = c.new_bytes;
                r.bytes_stored = c.stored_bytes;
            });
            (RunState::Success, None)
        }
        Ok(Ok(Ran::Verified(v))) => {
            tracing::info!(
                "job {}: verified {} snapshot(s) ({} pack(s), {} bytes read): no damage, in {seconds:.1}s",
                job.name,
                v.snapshots.len(),
                v.packs_checked,
                v.bytes_read
            );
            d.update(&job.name, |s| s.last_success = Some(now_secs()));
            d.runs.update(id, |r| r.bytes_read = v.bytes_read);
            (RunState::Success, None)
        }
        Ok(Ok(Ran::AlreadyTaken { snapshot, host })) => {
            tracing::info!(
                "job {}: slot {} already has snapshot {snapshot} (from {host}); not taking it again",
                job.name,
                slot.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
            );
            d.runs.update(id, |r| {
                r.claimed_by = Some(host);
                r.snapshot = Some(snapshot);
            });
            (RunState::Skipped, None)
        }
        Ok(Ok(Ran::Skipped(holder))) => {
            let slot = slot.map(rfc3339).unwrap_or_default();
            let error = if holder.host == d.host {
                let e = format!(
                    "slot {slot} was claimed by ANOTHER daemon under this host's name {} (its ID {}, this one's {}): two daemons run as one host, and only one of them takes the slots",
                    d.host, holder.daemon, d.daemon_id
                );
                tracing::error!(
                    "job {}: {e}; give each daemon its own `host` (or, if this daemon lost its ID file {}, its old claim ends with its lease)",
                    job.name,
                    crate::daemon_id::path_for(&d.catalog_path).display()
                );
                Some(e)
            } else {
                tracing::info!(
                    "job {}: slot {slot} was claimed by {} (daemon {}, lease until {}); it runs there, not here",
                    job.name,
                    holder.host,
                    holder.daemon,
                    rfc3339(lease_end(&holder, d.claim_lease))
                );
                None
            };
            d.runs.update(id, |r| {
                r.claimed_by = Some(holder.host);
                r.claimed_by_daemon = Some(holder.daemon);
            });
            (RunState::Skipped, error)
        }
        Ok(Ok(Ran::Closed(closer))) => {
            tracing::info!(
                "job {}: slot {} was closed as missed by {} (daemon {}); not running it",
                job.name,
                slot.map(rfc3339).unwrap_or_default(),
                closer.host,
                closer.daemon
            );
            (RunState::Skipped, None)
        }
        Ok(Err(e)) => {
            tracing::error!("job {}: failed after {seconds:.1}s: {e}", job.name);
            (RunState::Failure, Some(e.to_string()))
        }
        Err(_) => {
            let limit = job.timeout_secs;
            let error = match committed_despite_timeout(d, job, slot, started_at).await {
                Ok(Some(snapshot)) => {
                    let e = format!(
                        "exceeded the job's timeout of {limit}s, but its snapshot {snapshot} was committed (the write was under way when the timeout fired)"
                    );
                    d.runs.update(id, |r| r.snapshot = Some(snapshot));
                    e
                }
                Ok(None) => format!(
                    "aborted after the job's timeout of {limit}s; the vault held no snapshot of the run {}s later",
                    TIMEOUT_SETTLE.as_secs()
                ),
                Err(e) => format!(
                    "aborted after the job's timeout of {limit}s; whether it committed a snapshot is unknown (cannot read the vault: {e})"
                ),
            };
            tracing::error!("job {}: {error}", job.name);
            (RunState::Timeout, Some(error))
        }
    };
    let record = d
        .runs
        .update(id, |r| {
            r.state = state;
            r.finished = Some(Utc::now());
            r.error = error;
        })
        .expect("a running run is kept");
    d.update(&job.name, |s| {
        s.running = false;
        s.last_duration = Some(seconds);
        *s.outcomes.entry(state.as_str()).or_default() += 1;
    });
    if state == RunState::Success && record.snapshot.is_some() && job.kind() != Some(JobKind::Verify) {
        crate::retention::apply_after_run(d, job).await;
    }
    {
        let cat = d.catalog.lock().await;
        if let Err(e) = d.last_snapshot(job, &cat) {
            tracing::warn!("job {}: cannot read the catalog: {e}", job.name);
        }
        d.refresh_vault_stats(&cat);
    }
    d.finished(job, &record);
    record
}

/// Whether an error may go away by itself (a store or etcd hiccup), as opposed to one that needs
/// the operator (configuration, keys, integrity).
fn transient(e: &Error) -> bool {
    matches!(e.kind, vault::ErrorKind::Store | vault::ErrorKind::Source | vault::ErrorKind::Io)
}

/// Capture, trying again after transient errors with a doubling backoff (all within the job's
/// timeout, which wraps this).
async fn capture_with_retries(d: &Daemon, job: &JobConfig, id: &str, slot: Option<DateTime<Utc>>) -> Result<Ran> {
    let mut backoff = Duration::from_secs(job.retry_backoff_secs);
    let mut attempt = 0;
    loop {
        d.runs.update(id, |r| r.attempts = attempt + 1);
        match capture(d, job, slot).await {
            Err(e) if transient(&e) && attempt < job.retries => {
                attempt += 1;
                tracing::warn!(
                    "job {}: attempt {attempt} of {} failed: {e}; trying again in {}s",
                    job.name,
                    job.retries + 1,
                    backoff.as_secs()
                );
                d.update(&job.name, |s| s.retries += 1);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

/// What one attempt did.
enum Ran {
    Captured(Captured),
    /// A verify job found no damage.
    Verified(VerifyReport),
    /// The cluster-wide slot is held by another daemon (its claim).
    Skipped(SlotClaim),
    /// The cluster-wide slot was closed as missed (the closing claim).
    Closed(SlotClaim),
    /// The slot already has its snapshot.
    AlreadyTaken {
        snapshot: String,
        host: String,
    },
}

struct Captured {
    id: String,
    bytes: u64,
    new_bytes: u64,
    stored_bytes: u64,
    incomplete: bool,
}

impl Captured {
    /// What an etcd capture (v3, v2 or data dir) committed: always complete.
    fn etcd(r: vault::ops::backup::BackupReport) -> Self {
        Captured {
            id: r.id,
            bytes: r.bytes,
            new_bytes: r.new_bytes,
            stored_bytes: r.stored_bytes,
            incomplete: false,
        }
    }
}

/// A run's claim on its slot.
enum Claim {
    /// Per-host jobs and API runs take none.
    NotNeeded,
    /// This daemon holds the slot (the claim's head generation).
    Held(SlotClaim),
    /// The run does not take the slot: how it ends.
    StandBack(Ran),
}

/// For a cluster-wide job's scheduled slot, claim the slot in the vault (`cat` is synced).
async fn claim(d: &Daemon, job: &JobConfig, slot: Option<DateTime<Utc>>, cat: &mut Catalog) -> Result<Claim> {
    let Some(slot) = slot.filter(|_| job.scope() == Some(Scope::Cluster)) else {
        return Ok(Claim::NotNeeded);
    };
    let report = d.vault.claim_slot(&job.name, slot, &d.claimant()).await?;
    for ignored in &report.ignored {
        tracing::error!("job {}: {ignored}", job.name);
    }
    Ok(match report.outcome {
        ClaimOutcome::Won { held, took_over } => {
            if let Some(old) = took_over {
                tracing::warn!(
                    "job {}: taking slot {} over from {} (daemon {}), whose lease ran out at {} with no snapshot",
                    job.name,
                    rfc3339(slot),
                    old.host,
                    old.daemon,
                    rfc3339(lease_end(&old, d.claim_lease))
                );
                d.update(&job.name, |s| s.takeovers += 1);
                // Its snapshot may have landed just before its lease ran out.
                cat.sync(&d.vault).await?;
                if let Some((id, host)) = cat.snapshot_for_slot(&job.name, None, slot)? {
                    return Ok(Claim::StandBack(Ran::AlreadyTaken { snapshot: id.hex(), host }));
                }
            }
            Claim::Held(held)
        }
        ClaimOutcome::Taken(holder) => Claim::StandBack(Ran::Skipped(holder)),
        ClaimOutcome::Closed(closer) => Claim::StandBack(Ran::Closed(closer)),
    })
}

/// Run `work` while keeping the lease of `held` (if any): renewed by creating the claim's next
/// generation when two thirds of it are left. If another daemon took the slot over (the lease ran
/// out before a renewal got through), the work is stopped so the slot is not taken twice.
async fn holding<T>(d: &Daemon, job: &JobConfig, held: Option<SlotClaim>, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let Some(mut held) = held else {
        return work.await;
    };
    let keep_lease = async {
        loop {
            let renew_at = lease_end(&held, d.claim_lease) - d.claim_lease * 2 / 3;
            tokio::time::sleep((renew_at - Utc::now()).to_std().unwrap_or_default()).await;
            match d.vault.renew_claim(&job.name, held.slot, &d.claimant()).await {
                Ok(r) => match r.outcome {
                    ClaimOutcome::Won { held: h, .. } => held = h,
                    ClaimOutcome::Taken(c) | ClaimOutcome::Closed(c) => {
                        return Error::new(
                            vault::ErrorKind::AlreadyExists,
                            format!(
                                "lost the claim on slot {} to {} (daemon {}) after its lease ran out; the run was stopped so that the slot is not taken twice",
                                rfc3339(held.slot),
                                c.host,
                                c.daemon
                            ),
                        )
                        .hint("the lease could not be renewed in time (store slow or unreachable, daemon stalled): raise claim_lease_secs if this repeats");
                    }
                },
                Err(e) => {
                    tracing::warn!(
                        "job {}: cannot renew the lease on slot {}: {e}; trying again",
                        job.name,
                        rfc3339(held.slot)
                    );
                    tokio::time::sleep((d.claim_lease / 10).to_std().unwrap_or_default()).await;
                }
            }
        }
    };
    tokio::select! {
        r = work => r,
        lost = keep_lease => Err(lost),
    }
}

async fn capture(d: &Daemon, job: &JobConfig, slot: Option<DateTime<Utc>>) -> Result<Ran> {
    let mut cat = Catalog::open(&d.catalog_path, &d.vault.config.vault_id)?;
    // Other hosts may have written to the vault since the last run.
    for u in cat.sync(&d.vault).await?.unreadable {
        tracing::error!("job {}: DAMAGED object in the vault, left out of the catalog: {u}", job.name);
    }
    // A slot that already has its snapshot (a catch-up racing the run it was meant to replace, a
    // loop replaced by a reload mid-run) is not taken twice.
    if let Some(slot) = slot {
        let host = (job.scope() != Some(Scope::Cluster)).then_some(d.host.as_str());
        if let Some((id, host)) = cat.snapshot_for_slot(&job.name, host, slot)? {
            return Ok(Ran::AlreadyTaken { snapshot: id.hex(), host });
        }
    }
    let opts = BackupOptions {
        job: job.name.clone(),
        host: Some(d.host.clone()),
        tags: job.tags.clone(),
        slot,
        progress: None,
    };
    match job.kind() {
        Some(JobKind::EtcdV3) => {
            let etcd = job.etcd.clone().unwrap_or_default();
            // Reach etcd before claiming: a host that cannot must not take the slot from one that can.
            let member = etcd_v3::select_member(&etcd).await?;
            let held = match claim(d, job, slot, &mut cat).await? {
                Claim::StandBack(ran) => return Ok(ran),
                Claim::Held(c) => Some(c),
                Claim::NotNeeded => None,
            };
            let r = holding(d, job, held, backup_etcd_v3_member(&d.vault, &mut cat, member, &opts)).await?;
            Ok(Ran::Captured(Captured::etcd(r)))
        }
        Some(JobKind::Files) => {
            let sel = job.selection();
            let resolved = sel.resolve(&d.profile_dirs)?;
            let held = match claim(d, job, slot, &mut cat).await? {
                Claim::StandBack(ran) => return Ok(ran),
                Claim::Held(c) => Some(c),
                Claim::NotNeeded => None,
            };
            for m in &resolved.missing {
                tracing::info!("job {}: not present on this host: {m}", job.name);
            }
            let packages = if resolved.profile.as_ref().is_none_or(|p| p.packages) {
                tokio::task::spawn_blocking(vault::source::packages::capture)
                    .await
                    .map_err(|_| Error::io("the package list capture panicked"))??
                    .map(|l| serde_json::to_value(l).expect("serialize package list"))
            } else {
                None
            };
            let files = FilesOptions {
                root: sel.root.clone(),
                paths: resolved.paths,
                excluded: resolved.excluded,
                profile: resolved.profile.as_ref().map(|p| p.name.clone()),
                packages,
            };
            let r = holding(d, job, held, backup_files(&d.vault, &mut cat, files, &opts)).await?;
            if r.incomplete {
                for s in &r.skipped {
                    tracing::warn!("job {}: skipped {}: {}", job.name, s.path, s.reason);
                }
                tracing::warn!("job {}: snapshot {} is INCOMPLETE", job.name, r.id);
            }
            Ok(Ran::Captured(Captured {
                id: r.id,
                bytes: r.bytes,
                new_bytes: r.new_bytes,
                stored_bytes: r.stored_bytes,
                incomplete: r.incomplete,
            }))
        }
        Some(JobKind::EtcdV2) => {
            let etcd = job.etcd.clone().unwrap_or_default();
            // Reach etcd before claiming, as for etcd-v3.
            let client = vault::source::etcd_v2::V2Client::connect(&etcd).await?;
            let held = match claim(d, job, slot, &mut cat).await? {
                Claim::StandBack(ran) => return Ok(ran),
                Claim::Held(c) => Some(c),
                Claim::NotNeeded => None,
            };
            let hidden = job.hidden.clone().unwrap_or_default();
            let r = holding(d, job, held, backup_etcd_v2_from(&d.vault, &mut cat, &client, &hidden, &opts)).await?;
            Ok(Ran::Captured(Captured::etcd(r)))
        }
        Some(JobKind::EtcdDatadir) => {
            let dopts = crate::check::job_datadir_options(job);
            let member = vault::source::etcd_datadir::resolve(&dopts)?;
            let (tool, _) = vault::source::etcd_datadir::find_tool(dopts.tool.as_deref())?;
            let selected = select_own_member(&member).await?;
            let held = match claim(d, job, slot, &mut cat).await? {
                Claim::StandBack(ran) => return Ok(ran),
                Claim::Held(c) => Some(c),
                Claim::NotNeeded => None,
            };
            let r = holding(
                d,
                job,
                held,
                backup_etcd_datadir_of(&d.vault, &mut cat, &member, selected, &tool, &opts),
            )
            .await?;
            Ok(Ran::Captured(Captured::etcd(r)))
        }
        Some(JobKind::Verify) => {
            let held = match claim(d, job, slot, &mut cat).await? {
                Claim::StandBack(ran) => return Ok(ran),
                Claim::Held(c) => Some(c),
                Claim::NotNeeded => None,
            };
            let snapshots = cat.snapshots()?;
            let opts = VerifyOptions {
                read_data_percent: job.read_data_percent,
            };
            let report = holding(d, job, held, verify(&d.vault, &mut cat, &snapshots, &opts)).await?;
            for w in vault::ops::verify_records::record_report(&d.vault, &report, &d.host, Utc::now()).await {
                tracing::warn!("job {}: {w}", job.name);
            }
            if !report.ok {
                let failed = report.failed();
                for f in &failed {
                    tracing::error!("job {}: snapshot {} is DAMAGED: {}", job.name, f.id, f.problems.join("; "));
                }
                for o in &report.damaged_objects {
                    tracing::error!("job {}: DAMAGED {o}", job.name);
                }
                return Err(Error::integrity(format!(
                    "{} of {} snapshot(s) failed verification{}; {} damaged index segment(s) or manifest(s)",
                    failed.len(),
                    report.snapshots.len(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            failed.iter().map(|f| f.id[..12].to_string()).collect::<Vec<_>>().join(", ")
                        )
                    },
                    report.damaged_objects.len()
                ))
                .hint("see `vaultctl verify ID --read-data` for each; the next capture stores lost chunks again, and `vaultctl repair --dry-run` says which snapshots that made whole"));
            }
            Ok(Ran::Verified(report))
        }
        None => Err(Error::usage(format!("job {}: unknown kind {:?}", job.name, job.kind))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use vault::repo::Vault;
    use vault::store::Store;

    use super::*;
    use crate::metrics::render_metrics;
    use crate::run::{open, start_jobs, stop};

    /// A run that outlives its job's timeout is aborted and counted as "timeout"; the record says
    /// the vault held no snapshot of it.
    #[tokio::test]
    async fn a_run_past_its_timeout_is_aborted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        // An "etcd" that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"slow\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\ntimeout_secs = 1\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 60\n",
            d.display(),
            silent.local_addr().unwrap()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let job = cfg.jobs[0].clone();
        let daemon = open(cfg, vec![]).await.unwrap();
        let started = Instant::now();
        let r = run_now(&daemon, &job).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(r.error.as_deref().unwrap().contains("held no snapshot"), "{r:?}");
        assert_eq!(r.snapshot, None);
        let stats = daemon.stats.lock().unwrap()["slow"].clone();
        assert_eq!(stats.outcomes.get("timeout"), Some(&1), "{stats:?}");
        assert!(stats.last_attempt.is_some() && stats.last_success.is_none() && !stats.running);
        assert!(daemon.catalog.lock().await.snapshots().unwrap().is_empty());
    }

    #[test]
    fn a_run_is_overdue_when_a_slot_passed_since_the_last_snapshot() {
        let hourly = check::schedule("0 0 * * * *").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(!overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-01T10:59:59Z")));
        assert!(overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-01T11:00:00Z")));
        assert!(overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-02T09:00:00Z")));
    }

    /// The catch-up at start-up looks at this host's last snapshot of the job in the catalog.
    #[tokio::test]
    async fn missed_runs_are_found_from_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        make_vault(d).await;
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n[[job]]\nname = \"never\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
            d.display()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let (job, never) = (cfg.jobs[0].clone(), cfg.jobs[1].clone());
        let daemon = open(cfg, vec![]).await.unwrap();
        let hourly = check::schedule(&job.schedule).unwrap();
        let now = Utc::now();
        assert_eq!(missed_run(&daemon, &job, &hourly, now).await.unwrap(), None);
        run_now(&daemon, &job).await;
        let stats = daemon.stats.lock().unwrap()["conf"].clone();
        assert_eq!(stats.outcomes.get("success"), Some(&1), "{stats:?}");
        let later = Utc::now();
        assert_eq!(missed_run(&daemon, &job, &hourly, later).await.unwrap(), None);
        let last = missed_run(&daemon, &job, &hourly, later + chrono::Duration::hours(2))
            .await
            .unwrap();
        assert!(last.is_some_and(|t| t >= now && t <= later), "{last:?}");
        // Another job, never run here: nothing to catch up.
        assert_eq!(
            missed_run(&daemon, &never, &hourly, later + chrono::Duration::hours(2))
                .await
                .unwrap(),
            None
        );
    }

    /// Run a job now, as the API does.
    async fn run_now(d: &Daemon, job: &JobConfig) -> RunRecord {
        let id = d.runs.begin(&job.name, Trigger::Api, None);
        run_once(d, job, &id, None).await
    }

    /// A vault in `d/vault` with its writer key at `d/w.key`.
    pub(crate) async fn make_vault(d: &std::path::Path) {
        let store = Store::open(&d.join("vault").display().to_string(), &Default::default()).unwrap();
        store.create_root().unwrap();
        let (_, recipient) = vault::crypto::generate_identity();
        let opts = vault::repo::InitOptions {
            recipients: vec![recipient],
            ..Default::default()
        };
        let (_, writer) = Vault::init(store, &opts).await.unwrap();
        std::fs::write(d.join("w.key"), writer.to_file_text()).unwrap();
    }

    fn running(d: &Daemon, job: &str) -> bool {
        d.stats.lock().unwrap()[job].running
    }

    /// At shutdown a running capture may finish within the grace period; one that does not is
    /// abandoned without a snapshot, and no new run starts.
    #[tokio::test]
    async fn stop_lets_running_captures_finish_within_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"slow\"\nkind = \"etcd-v3\"\nschedule = \"* * * * * *\"\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 60\n",
            d.display(),
            silent.local_addr().unwrap()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        assert_eq!(cfg.global.shutdown_grace_secs, crate::config::DEFAULT_GRACE_SECS);
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        start_jobs(&daemon);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running(&daemon, "slow") {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        let abandoned = stop(&daemon, Duration::from_secs(1)).await;
        assert_eq!(abandoned, vec!["slow".to_string()]);
        assert!(started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(5));
        assert!(daemon.catalog.lock().await.snapshots().unwrap().is_empty());

        // A quick capture finishes; the loop then ends at once instead of waiting for its next slot.
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c2.sqlite\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"* * * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
            d.display()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        start_jobs(&daemon);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running(&daemon, "conf") && daemon.stats.lock().unwrap()["conf"].outcomes.is_empty() {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let abandoned = stop(&daemon, Duration::from_secs(30)).await;
        assert!(abandoned.is_empty());
        assert!(started.elapsed() < Duration::from_secs(10));
        let stats = daemon.stats.lock().unwrap()["conf"].clone();
        assert_eq!(stats.outcomes.get("success"), Some(&1), "{stats:?}");
        assert_eq!(daemon.catalog.lock().await.snapshots().unwrap().len(), 1);
    }

    /// Transient errors (etcd unreachable) are retried; configuration errors are not.
    #[tokio::test]
    async fn transient_failures_are_retried_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"gone\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\nretries = 2\nretry_backoff_secs = 0\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 1\n[[job]]\nname = \"badroot\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\nretry_backoff_secs = 0\npaths = [\"/etc\"]\nroot = \"{0}/no-such-root\"\n",
            d.display(),
            closed
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        assert_eq!(cfg.jobs[1].retries, crate::config::DEFAULT_RETRIES);
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        run_now(&daemon, &cfg.jobs[0]).await;
        run_now(&daemon, &cfg.jobs[1]).await;
        let stats = daemon.stats.lock().unwrap().clone();
        assert_eq!(
            (stats["gone"].retries, stats["gone"].outcomes.get("failure")),
            (2, Some(&1)),
            "{stats:?}"
        );
        assert_eq!(
            (stats["badroot"].retries, stats["badroot"].outcomes.get("failure")),
            (0, Some(&1)),
            "{stats:?}"
        );
        assert!(render_metrics(&stats, None).contains("vault_job_retries_total{job=\"gone\"} 2\n"));
    }

    #[test]
    fn the_last_slot_is_the_latest_at_or_before_now() {
        let hourly = check::schedule("0 0 * * * *").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(last_slot(&hourly, t("2026-01-01T10:59:59Z")), Some(t("2026-01-01T10:00:00Z")));
        assert_eq!(last_slot(&hourly, t("2026-01-01T11:00:00Z")), Some(t("2026-01-01T11:00:00Z")));
        // In the last second before a slot, and just after one.
        assert_eq!(last_slot(&hourly, t("2026-01-01T10:59:59.500Z")), Some(t("2026-01-01T10:00:00Z")));
        assert_eq!(last_slot(&hourly, t("2026-01-01T11:00:00.250Z")), Some(t("2026-01-01T11:00:00Z")));
        let every3 = check::schedule("*/3 * * * * *").unwrap();
        assert_eq!(last_slot(&every3, t("2026-01-01T10:00:05.900Z")), Some(t("2026-01-01T10:00:03Z")));
    }

    /// A claimant that died mid-slot (its claim's lease runs out, no snapshot): the daemon that
    /// stood back takes the slot over; when that fails too, the slot is reported as missed, once.
    #[tokio::test]
    async fn a_dead_claimants_slot_is_taken_over_and_a_slot_left_without_snapshot_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for root in ["ok", "gone"] {
            std::fs::create_dir_all(d.join(root).join("etc/app")).unwrap();
            std::fs::write(d.join(root).join("etc/app/a.conf"), "a=1\n").unwrap();
        }
        make_vault(d).await;
        let config = |host: &str| {
            format!(
                "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/{host}.sqlite\"\nhost = \"{host}\"\nclaim_lease_secs = 1\n[[job]]\nname = \"shared\"\nkind = \"files\"\nscope = \"cluster\"\nschedule = \"0 0 * * * *\"\nretries = 0\npaths = [\"/etc/app\"]\nroot = \"{0}/ok\"\n[[job]]\nname = \"broken\"\nkind = \"files\"\nscope = \"cluster\"\nschedule = \"0 0 * * * *\"\nretries = 0\npaths = [\"/etc/app\"]\nroot = \"{0}/gone\"\n",
                d.display()
            )
        };
        let (dead, alive) = (
            open(crate::config::parse(&config("master-1")).config.unwrap(), vec![])
                .await
                .unwrap(),
            open(crate::config::parse(&config("master-2")).config.unwrap(), vec![])
                .await
                .unwrap(),
        );
        let jobs = alive.cfg.jobs.clone();
        let slot = DateTime::parse_from_rfc3339("2026-11-25T22:00:00Z").unwrap().with_timezone(&Utc);
        // master-1 claims both slots, then dies.
        for job in &jobs {
            dead.vault.claim_slot(&job.name, slot, &dead.claimant()).await.unwrap();
        }
        std::fs::remove_dir_all(d.join("gone")).unwrap();
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let until = Utc::now() + chrono::Duration::seconds(6);
        let watch = |job: JobConfig| {
            let (alive, mut stopping) = (alive.clone(), stopping.clone());
            async move {
                let id = alive.runs.begin(&job.name, Trigger::Schedule, Some(slot));
                let stood_back = run_once(&alive, &job, &id, None).await;
                assert_eq!(stood_back.state, RunState::Skipped, "{stood_back:?}");
                assert_eq!(stood_back.claimed_by.as_deref(), Some("master-1"));
                watch_slot(&alive, &job, stood_back, Some(until), &mut stopping).await;
            }
        };
        tokio::join!(watch(jobs[0].clone()), watch(jobs[1].clone()));
        let takeovers: Vec<_> = alive
            .runs
            .recent(None, 10)
            .into_iter()
            .filter(|r| r.trigger == Trigger::Takeover)
            .map(|r| (r.job, r.state))
            .collect();
        assert_eq!(takeovers.len(), 2, "{takeovers:?}");
        assert!(takeovers.contains(&("shared".into(), RunState::Success)), "{takeovers:?}");
        assert!(takeovers.contains(&("broken".into(), RunState::Failure)), "{takeovers:?}");
        let mut cat = alive.catalog.lock().await;
        cat.sync(&alive.vault).await.unwrap();
        assert_eq!(cat.snapshot_for_slot("shared", None, slot).unwrap().unwrap().1, "master-2");
        drop(cat);
        // The broken slot ended with no snapshot: closed as missed, counted, not claimable again.
        let (head, _) = alive.vault.slot_holder("broken", slot).await.unwrap();
        let head = head.unwrap();
        assert!(head.missed && head.daemon == alive.daemon_id, "{head:?}");
        let text = render_metrics(&alive.stats.lock().unwrap(), None);
        assert!(text.contains("vault_job_missed_slots_total{job=\"broken\"} 1\n"), "{text}");
        assert!(text.contains("vault_job_missed_slots_total{job=\"shared\"} 0\n"), "{text}");
        assert!(text.contains("vault_job_slot_takeovers_total{job=\"shared\"} 1\n"), "{text}");
        let again = dead.vault.claim_slot("broken", slot, &dead.claimant()).await.unwrap();
        assert!(matches!(again.outcome, vault::claim::ClaimOutcome::Closed(_)), "{again:?}");
    }

    /// Two daemons (two hosts) sharing a vault: the cluster-wide job's slot runs on one of them,
    /// the per-host job on both; the snapshot records its slot.
    #[tokio::test]
    async fn a_cluster_wide_slot_runs_once_across_daemons_and_host_jobs_run_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        make_vault(d).await;
        let config = |host: &str| {
            format!(
                "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/{host}.sqlite\"\nhost = \"{host}\"\n[[job]]\nname = \"shared\"\nkind = \"files\"\nscope = \"cluster\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n[[job]]\nname = \"mine\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
                d.display()
            )
        };
        let cfg1 = crate::config::parse(&config("master-1")).config.unwrap();
        let cfg2 = crate::config::parse(&config("master-2")).config.unwrap();
        let (one, two) = (open(cfg1.clone(), vec![]).await.unwrap(), open(cfg2, vec![]).await.unwrap());
        let slot = DateTime::parse_from_rfc3339("2026-11-25T22:00:00Z").unwrap().with_timezone(&Utc);
        async fn scheduled(d: &Daemon, job: &JobConfig, slot: DateTime<Utc>) -> RunRecord {
            let id = d.runs.begin(&job.name, Trigger::Schedule, Some(slot));
            run_once(d, job, &id, None).await
        }
        let (shared, mine) = (&cfg1.jobs[0], &cfg1.jobs[1]);
        let (a, b) = tokio::join!(scheduled(&one, shared, slot), scheduled(&two, shared, slot));
        let mut states = [a.state, b.state];
        states.sort_by_key(|s| s.as_str());
        assert_eq!(states, [RunState::Skipped, RunState::Success], "{a:?} {b:?}");
        let (winner, loser) = if a.state == RunState::Success { (a, b) } else { (b, a) };
        let winner_host = if one.runs.get(&winner.id).is_some() {
            "master-1"
        } else {
            "master-2"
        };
        assert_eq!(loser.claimed_by.as_deref(), Some(winner_host), "{loser:?}");
        let (a, b) = tokio::join!(scheduled(&one, mine, slot), scheduled(&two, mine, slot));
        assert_eq!((a.state, b.state), (RunState::Success, RunState::Success), "{a:?} {b:?}");
        // The vault holds one "shared" snapshot for the slot, and a "mine" one per host.
        let mut cat = one.catalog.lock().await;
        cat.sync(&one.vault).await.unwrap();
        let snaps = cat.snapshots().unwrap();
        let shared_snaps: Vec<_> = snaps.iter().filter(|s| s.manifest.job == "shared").collect();
        assert_eq!(shared_snaps.len(), 1);
        assert_eq!(shared_snaps[0].manifest.slot, Some(slot));
        assert_eq!(shared_snaps[0].manifest.host, winner_host);
        let mut hosts: Vec<_> = snaps
            .iter()
            .filter(|s| s.manifest.job == "mine")
            .map(|s| s.manifest.host.as_str())
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["master-1", "master-2"]);
        drop(cat);
        // The loser sees the cluster job's snapshot as the job's last one.
        let st = two.stats.lock().unwrap()["shared"].clone();
        assert_eq!(st.outcomes.get("skipped").or(st.outcomes.get("success")), Some(&1), "{st:?}");
        // An API run needs no claim: it runs even though the slot was taken.
        assert_eq!(run_now(&two, shared).await.state, RunState::Success);
        // The slot is not taken twice, even by the daemon that ran it (a catch-up racing it).
        let winner_daemon = if winner_host == "master-1" { &one } else { &two };
        let again = scheduled(winner_daemon, shared, slot).await;
        assert_eq!(again.state, RunState::Skipped, "{again:?}");
        assert_eq!(again.snapshot, winner.snapshot);
        // A claim left by this daemon before it restarted (killed mid-slot, no snapshot) is taken
        // back by the restarted one: its ID is kept next to its catalog.
        let later = slot + chrono::Duration::hours(1);
        let old = one.vault.claim_slot("shared", later, &one.claimant()).await.unwrap();
        assert!(matches!(old.outcome, vault::claim::ClaimOutcome::Won { .. }), "{old:?}");
        let one = open(cfg1.clone(), vec![]).await.unwrap();
        assert_eq!(scheduled(&two, shared, later).await.state, RunState::Skipped);
        assert_eq!(scheduled(&one, shared, later).await.state, RunState::Success);
        // A second daemon calling itself master-1 (its own catalog, so its own ID) does not run
        // master-1's slots too: it stands back, loudly.
        let text = config("master-1").replace("master-1.sqlite", "impostor.sqlite");
        let impostor = open(crate::config::parse(&text).config.unwrap(), vec![]).await.unwrap();
        assert_ne!(impostor.daemon_id, one.daemon_id);
        let third = later + chrono::Duration::hours(1);
        one.vault.claim_slot("shared", third, &one.claimant()).await.unwrap();
        let dup = scheduled(&impostor, shared, third).await;
        assert_eq!(dup.state, RunState::Skipped, "{dup:?}");
        assert!(dup.error.as_deref().unwrap().contains("ANOTHER daemon"), "{dup:?}");
        assert_eq!(dup.claimed_by_daemon.as_deref(), Some(one.daemon_id.as_str()));
        let stats = impostor.stats.lock().unwrap().clone();
        assert!(render_metrics(&stats, None).contains("vault_job_duplicate_host_claims_total{job=\"shared\"} 1\n"));
    }

    /// The webhook gets a failure event per failed run and one recovery event at the next success.
    #[tokio::test]
    async fn the_webhook_hears_failures_and_the_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        /// (Authorization header, JSON body) of each POST received.
        type Received = Arc<std::sync::Mutex<Vec<(Option<String>, serde_json::Value)>>>;
        let got: Received = Default::default();
        let sink = got.clone();
        let app = axum::Router::new().route(
            "/hook/s3cret-path",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
                    sink.lock().unwrap().push((auth, body.0));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        std::fs::write(d.join("hook.token"), "hook-token\n").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[webhook]\nurl = \"http://{1}/hook/s3cret-path\"\ntoken_file = \"{0}/hook.token\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\nretries = 0\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
            d.display(),
            addr
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let job = cfg.jobs[0].clone();
        let daemon = open(cfg, vec![]).await.unwrap();
        // No root yet: two failures.
        assert_eq!(run_now(&daemon, &job).await.state, RunState::Failure);
        assert_eq!(run_now(&daemon, &job).await.state, RunState::Failure);
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        let ok = run_now(&daemon, &job).await;
        assert_eq!(ok.state, RunState::Success);
        // A second success sends nothing.
        assert_eq!(run_now(&daemon, &job).await.state, RunState::Success);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = got.lock().unwrap().clone();
        let events: Vec<_> = got
            .iter()
            .map(|(_, b)| {
                (
                    b["event"].as_str().unwrap().to_string(),
                    b["consecutive_failures"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut sorted = events.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [("failure".to_string(), 1), ("failure".to_string(), 2), ("recovery".to_string(), 2)],
            "{got:?}"
        );
        assert!(got.iter().all(|(auth, _)| auth.as_deref() == Some("Bearer hook-token")));
        let recovery = &got.iter().find(|(_, b)| b["event"] == "recovery").unwrap().1;
        assert_eq!(recovery["run"]["snapshot"].as_str(), ok.snapshot.as_deref());
        assert_eq!(recovery["job"], "conf");
        let failure = &got.iter().find(|(_, b)| b["event"] == "failure").unwrap().1;
        assert!(failure["run"]["error"].as_str().unwrap().contains("host"), "{failure}");
    }

    /// A verify job: no damage is a success; a damaged pack is a failure naming the snapshot, and
    /// the verification results reach /metrics.
    #[tokio::test]
    async fn a_verify_job_reports_damage_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n".repeat(1000)).unwrap();
        make_vault(d).await;
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n[[job]]\nname = \"check\"\nkind = \"verify\"\nschedule = \"0 0 * * * *\"\nread_data_percent = 100\n",
            d.display()
        );
        let parsed = crate::config::parse(&text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let cfg = parsed.config.unwrap();
        assert_eq!(cfg.jobs[1].scope(), Some(Scope::Cluster));
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        assert_eq!(run_now(&daemon, &cfg.jobs[0]).await.state, RunState::Success);
        let ok = run_now(&daemon, &cfg.jobs[1]).await;
        assert_eq!(ok.state, RunState::Success, "{ok:?}");
        assert!(ok.bytes_read > 0 && ok.snapshot.is_none(), "{ok:?}");
        // Flip a byte of every pack.
        let packs = daemon.vault.store.list(vault::format::DATA_PREFIX).await.unwrap();
        assert!(!packs.is_empty());
        for p in packs {
            let p = d.join("vault").join(&p.name);
            let mut bytes = std::fs::read(&p).unwrap();
            let n = bytes.len() / 2;
            bytes[n] ^= 1;
            std::fs::write(&p, bytes).unwrap();
        }
        let bad = run_now(&daemon, &cfg.jobs[1]).await;
        assert_eq!(bad.state, RunState::Failure, "{bad:?}");
        assert!(bad.error.as_deref().unwrap().contains("failed verification"), "{bad:?}");
        assert_eq!(bad.attempts, 1, "integrity errors are not retried");
        let vault_stats = daemon.vault_stats.lock().unwrap().clone().unwrap();
        let text = render_metrics(&daemon.stats.lock().unwrap(), Some(&vault_stats));
        assert!(text.contains("vault_snapshots_by_verification{state=\"damaged\"} 1\n"), "{text}");
        assert!(text.contains("vault_verification_last_ok 0\n"), "{text}");
        assert!(text.contains("vault_snapshots{job=\"conf\"} 1\n"), "{text}");
    }
}
