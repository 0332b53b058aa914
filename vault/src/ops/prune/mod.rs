//! `prune`: delete what no kept snapshot references, safely while other hosts capture
//! (docs/FORMAT.md section 15). One run, under the prune lock and after a clock check:
//!
//! * **pass 2** for every pending set older than the grace period: re-sync, mark what the kept
//!   snapshots use, delete the manifests of the set's forgotten snapshots that are still
//!   forgotten, then, for each of its packs still unused, the index segment and the pack;
//! * **repack** partly unused packs, the emptiest first, until what stays unused is at most
//!   `max_unused_percent` of the packs kept (restic's `--max-unused`; needs an identity);
//! * **pass 1**: record the packs now unused (indexed packs no kept snapshot uses, orphan packs
//!   of killed captures, repacked packs) as a new pending set, which captures stop deduplicating
//!   against.
//!
//! With a grace period of zero both passes happen at once (safe only while nothing else writes).
//! The caller passes the forgotten snapshots (the deletion log's) and gets back what was deleted.

pub mod clock;
pub mod lock;
pub mod logged;
mod mark;
pub mod pending;
mod repack;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::{self, Id, PackType, PrunePending};
use crate::repo::Vault;

use self::clock::ClockCheck;
use self::lock::{LockInfo, PruneLockGuard};

/// Default share (percent) of the kept packs' bytes that may stay unused after a prune; more is
/// repacked, the emptiest packs first (restic's `--max-unused` default).
pub const DEFAULT_MAX_UNUSED_PERCENT: u8 = 5;

/// Told each step of a run, as a short description (a terminal's progress line).
pub type StepFn = Arc<dyn Fn(&str) + Send + Sync>;

/// What one prune run is told.
#[derive(Clone)]
pub struct PruneOptions {
    /// Snapshots forgotten (tombstoned in the deletion log): their chunks no longer count as used
    /// and their manifests are deleted once a pass after the grace period finds them still here.
    pub forgotten: BTreeSet<Id>,
    /// Time between the pass that records packs as pending and the one that deletes them; longer
    /// than any capture runs. Zero: both at once.
    pub grace: chrono::Duration,
    pub dry_run: bool,
    pub lease: chrono::Duration,
    pub max_skew: chrono::Duration,
    /// Repack partly unused packs, the emptiest first, until the unused bytes left are at most
    /// this share (percent) of the kept packs' bytes; `None`: never repack.
    pub max_unused_percent: Option<u8>,
    /// Who runs it (recorded in the lock and pending sets).
    pub host: String,
    /// Called with a short description of each step (for a terminal's progress line).
    pub progress: Option<StepFn>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            forgotten: BTreeSet::new(),
            grace: chrono::Duration::hours(24),
            dry_run: false,
            lease: chrono::Duration::seconds(lock::DEFAULT_LEASE_SECS),
            max_skew: chrono::Duration::seconds(clock::DEFAULT_MAX_SKEW_SECS),
            max_unused_percent: Some(DEFAULT_MAX_UNUSED_PERCENT),
            host: super::backup::hostname(),
            progress: None,
        }
    }
}

/// A pending set this run recorded.
#[derive(Clone, Debug, Serialize)]
pub struct PendingRecorded {
    pub name: String,
    pub packs: u64,
    pub bytes: u64,
    pub forgotten: u64,
}

/// A pending set still waiting out its grace period.
#[derive(Clone, Debug, Serialize)]
pub struct PendingWaiting {
    pub name: String,
    pub time: DateTime<Utc>,
    pub packs: u64,
    pub due: DateTime<Utc>,
}

/// What a prune run did (or, dry, would do). The caller records `snapshots_removed` in the
/// deletion log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub grace_secs: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockCheck>,
    /// Manifests deleted (forgotten snapshots).
    pub snapshots_removed: Vec<Id>,
    pub packs_deleted: u64,
    pub segments_deleted: u64,
    /// Links and ends of delta chains whose base and segments are all gone.
    pub chain_objects_deleted: u64,
    pub bytes_freed: u64,
    /// Pending packs a kept snapshot needs again: not deleted.
    pub packs_needed_again: Vec<Id>,
    /// Packs no index segment lists that hold the only copy of chunks kept snapshots use: kept
    /// (run `vaultctl repair` to index them).
    pub orphans_needed: Vec<Id>,
    /// Packs whose used chunks were copied into new packs (they became pending).
    pub packs_rewritten: u64,
    pub repack_new_packs: u64,
    /// Why packs worth repacking were not (no identity), when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack_skipped: Option<String>,
    /// Packs worth repacking that a dry run or a skipped repack left.
    pub packs_to_repack: u64,
    /// Bytes of chunks kept snapshots use, in the packs kept.
    pub used_bytes_kept: u64,
    /// Bytes of chunks no kept snapshot uses that stay in partly used packs (what `--max-unused`
    /// tolerates, or what a skipped repack left).
    pub unused_bytes_kept: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_recorded: Option<PendingRecorded>,
    /// Pending sets whose second pass ran (removed from the vault).
    pub pending_processed: Vec<String>,
    pub pending_waiting: Vec<PendingWaiting>,
    /// Pending sets that do not open: ignored, nothing they name is deleted.
    pub pending_unreadable: Vec<String>,
}

fn step(opts: &PruneOptions, what: &str) {
    tracing::info!("prune: {what}");
    if let Some(p) = &opts.progress {
        p(what);
    }
}

/// Run prune. Takes the lock and checks the clocks first (not on a dry run, which writes nothing);
/// releases the lock on every path.
pub async fn prune(vault: &Vault, catalog: &mut Catalog, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        grace_secs: opts.grace.num_seconds(),
        ..Default::default()
    };
    if opts.dry_run {
        run(vault, catalog, opts, None, &mut report).await?;
        return Ok(report);
    }
    vault.check_may_write("prune")?;
    step(opts, "checking the host clock against the store's");
    let clock = clock::check(vault, opts.max_skew).await?;
    let skew = clock.skew_ms;
    report.clock = Some(clock);
    step(opts, "taking the prune lock");
    let mut guard = PruneLockGuard::take(vault, &opts.host, opts.lease, skew).await?;
    report.lock = Some(guard.info.clone());
    let result = run(vault, catalog, opts, Some(&mut guard), &mut report).await;
    report.lock = Some(guard.info.clone());
    let released = guard.release(vault).await;
    result?;
    released?;
    Ok(report)
}

async fn keep(guard: &mut Option<&mut PruneLockGuard>, vault: &Vault) -> Result<()> {
    match guard {
        Some(g) => g.keep(vault).await,
        None => Ok(()),
    }
}

async fn run(
    vault: &Vault,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    mut guard: Option<&mut PruneLockGuard>,
    report: &mut PruneReport,
) -> Result<()> {
    let now = Utc::now();
    step(opts, "syncing the catalog");
    let synced = catalog.sync(vault).await?;
    // What an unreadable manifest uses cannot be marked, and the packs of an unreadable index
    // segment would look like orphans: prune deletes nothing until they are dealt with.
    if !synced.unreadable.is_empty() {
        return Err(Error::integrity(format!(
            "prune does not run while index segments or manifests are unreadable (what they reference cannot be marked as used): {}",
            synced.unreadable.join("; ")
        ))
        .hint("run `vaultctl verify --all` and `vaultctl repair` (an index segment is rebuilt from its pack); remove a damaged manifest only once its snapshot is given up"));
    }
    let mut listed = super::pack_health::list_packs(vault).await?;
    super::pack_health::record_listing(catalog, &listed)?;
    let sets = pending::read_all(vault).await?;
    report.pending_unreadable = sets.unreadable.clone();
    let forgotten = mark::known_snapshots(catalog, &opts.forgotten)?;
    let immediate = opts.grace <= chrono::Duration::zero();
    let (mature, young): (Vec<_>, Vec<_>) = sets
        .sets
        .into_iter()
        .partition(|s| immediate || pending::matured(s.pending.time, opts.grace, now));
    for s in &young {
        report.pending_waiting.push(PendingWaiting {
            name: s.name.clone(),
            time: s.pending.time,
            packs: s.pending.packs.len() as u64,
            due: s.pending.time + opts.grace,
        });
    }

    if immediate {
        // Both passes at once: everything unused now, and every pending set, goes.
        step(opts, "marking the chunks kept snapshots use");
        mark::mark_used(catalog, &forgotten)?;
        let mut candidates: HashSet<Id> = mature.iter().flat_map(|s| s.pending.packs.iter().copied()).collect();
        let unused = unused_packs(vault, catalog, opts, &listed, &HashSet::new(), &mut guard, report).await?;
        candidates.extend(unused);
        delete(vault, catalog, opts, &forgotten, &candidates, &mut listed, &mut guard, report).await?;
    } else {
        if !mature.is_empty() {
            // Pass 2.
            let recorded: BTreeSet<Id> = mature.iter().flat_map(|s| s.pending.forgotten.iter().copied()).collect();
            let dropped: BTreeSet<Id> = recorded.intersection(&forgotten).copied().collect();
            step(opts, "pass 2: marking the chunks kept snapshots use");
            mark::mark_used(catalog, &dropped)?;
            let candidates: HashSet<Id> = mature.iter().flat_map(|s| s.pending.packs.iter().copied()).collect();
            delete(vault, catalog, opts, &dropped, &candidates, &mut listed, &mut guard, report).await?;
        }
        // Pass 1.
        let forgotten = mark::known_snapshots(catalog, &opts.forgotten)?;
        step(opts, "pass 1: marking the chunks kept snapshots use");
        mark::mark_used(catalog, &forgotten)?;
        let waiting: HashSet<Id> = young.iter().flat_map(|s| s.pending.packs.iter().copied()).collect();
        let unused = unused_packs(vault, catalog, opts, &listed, &waiting, &mut guard, report).await?;
        let mut packs: Vec<Id> = unused.into_iter().filter(|p| !waiting.contains(p)).collect();
        packs.sort();
        if !packs.is_empty() || !forgotten.is_empty() {
            let bytes = packs.iter().filter_map(|p| listed.get(p)).sum();
            let set = PrunePending {
                time: Utc::now(),
                host: opts.host.clone(),
                owner: guard.as_ref().map(|g| g.info.owner.clone()).unwrap_or_default(),
                packs,
                forgotten: forgotten.iter().copied().collect(),
            };
            let name = if opts.dry_run {
                "(dry run: not recorded)".to_string()
            } else {
                step(opts, "pass 1: recording the pending set");
                pending::write(vault, &set).await?
            };
            report.pending_recorded = Some(PendingRecorded {
                name,
                packs: set.packs.len() as u64,
                bytes,
                forgotten: set.forgotten.len() as u64,
            });
        }
    }
    // The sets whose second pass ran are done (a run killed before this point leaves them, and
    // the next run's second pass finds their packs gone: nothing is deleted twice).
    for s in &mature {
        if !opts.dry_run {
            vault.store.delete(&s.name).await?;
        }
        report.pending_processed.push(s.name.clone());
    }
    if !opts.dry_run {
        catalog.sync(vault).await?;
    }
    Ok(())
}

/// The packs nothing marked uses (indexed ones without a used chunk, and packs listed under
/// `data/` that no index segment lists: orphans of killed captures, I4), after repacking partly
/// unused packs (which then count as unused; see [`select_for_repack`]). Packs in `waiting`
/// (pending already) are not repacked.
async fn unused_packs(
    vault: &Vault,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    listed: &HashMap<Id, u64>,
    waiting: &HashSet<Id>,
    guard: &mut Option<&mut PruneLockGuard>,
    report: &mut PruneReport,
) -> Result<HashSet<Id>> {
    let mut unused = HashSet::new();
    let mut indexed = HashSet::new();
    let mut partly: Vec<PartlyUsed> = Vec::new();
    let (mut kept_bytes, mut unused_bytes) = (0u64, 0u64);
    mark::pack_use(catalog, |u| {
        indexed.insert(u.pack);
        if u.used_blobs == 0 {
            unused.insert(u.pack);
            return;
        }
        let waste = u.blob_bytes - u.used_bytes.min(u.blob_bytes);
        kept_bytes += u.blob_bytes;
        unused_bytes += waste;
        if waste > 0 && listed.contains_key(&u.pack) && !waiting.contains(&u.pack) {
            let pack_type = if u.pack_type == "tree" { PackType::Tree } else { PackType::Data };
            partly.push(PartlyUsed {
                pack: u.pack,
                pack_type,
                unused: waste,
                bytes: u.blob_bytes,
            });
        }
    })?;
    unused.extend(listed.keys().filter(|p| !indexed.contains(p)).copied());
    report.used_bytes_kept = kept_bytes - unused_bytes;
    report.unused_bytes_kept = unused_bytes;
    let (sparse, unused_left) = match opts.max_unused_percent {
        Some(pct) => select_for_repack(partly, kept_bytes, unused_bytes, pct),
        None => (Vec::new(), unused_bytes),
    };
    if sparse.is_empty() {
        return Ok(unused);
    }
    report.packs_to_repack = sparse.len() as u64;
    if !vault.has_identity() {
        report.repack_skipped = Some(format!(
            "{} partly unused pack(s) not repacked: repacking reads pack content, which needs an identity (--identity); only wholly unused packs are deleted",
            sparse.len()
        ));
        return Ok(unused);
    }
    if opts.dry_run {
        return Ok(unused);
    }
    keep(guard, vault).await?;
    step(opts, &format!("repacking {} partly unused pack(s)", sparse.len()));
    let done = repack::repack(vault, catalog, &sparse, guard).await?;
    keep(guard, vault).await?;
    report.packs_rewritten += done.packs.len() as u64;
    report.repack_new_packs += done.new_packs;
    report.packs_to_repack = 0;
    report.unused_bytes_kept = unused_left;
    unused.extend(done.packs);
    Ok(unused)
}

/// A pack that kept snapshots use in part: `unused` of its `bytes` (blob bytes) are not.
struct PartlyUsed {
    pack: Id,
    pack_type: PackType,
    unused: u64,
    bytes: u64,
}

/// The packs to repack: the emptiest first (by unused share, then unused bytes), until the unused
/// bytes left are at most `max_unused_percent` of what the vault holds after the prune (used
/// bytes plus the unused ones left: unused <= used * p / (100 - p)), as restic's `--max-unused`
/// does. 0 repacks every partly unused pack. Also returns the unused bytes the packs not chosen
/// keep.
fn select_for_repack(
    mut partly: Vec<PartlyUsed>,
    kept_bytes: u64,
    mut unused_bytes: u64,
    max_unused_percent: u8,
) -> (Vec<(Id, PackType)>, u64) {
    let used = kept_bytes.saturating_sub(unused_bytes);
    let allowed = match max_unused_percent {
        100.. => u64::MAX,
        p => u64::try_from(u128::from(used) * u128::from(p) / u128::from(100 - p)).unwrap_or(u64::MAX),
    };
    partly.sort_by(|a, b| {
        (u128::from(b.unused) * u128::from(a.bytes))
            .cmp(&(u128::from(a.unused) * u128::from(b.bytes)))
            .then(b.unused.cmp(&a.unused))
    });
    let mut out = Vec::new();
    for p in partly {
        if unused_bytes <= allowed {
            break;
        }
        unused_bytes -= p.unused.min(unused_bytes);
        out.push((p.pack, p.pack_type));
    }
    (out, unused_bytes)
}

#[cfg(test)]
mod repack_selection_tests {
    use super::*;

    fn pack(n: u8, unused: u64, bytes: u64) -> PartlyUsed {
        PartlyUsed {
            pack: Id::of_stored(&[n]),
            pack_type: PackType::Data,
            unused,
            bytes,
        }
    }

    #[test]
    fn the_emptiest_packs_go_first_until_the_unused_share_is_within_the_limit() {
        // 1000 kept bytes, 250 unused, 750 used: at most 10% of what stays may be unused,
        // 750 * 10 / 90 = 83 bytes, so repack the emptiest until at most 83 remain.
        let packs = || vec![pack(1, 50, 400), pack(2, 150, 300), pack(3, 50, 300)];
        let (chosen, left) = select_for_repack(packs(), 1000, 250, 10);
        let chosen: Vec<Id> = chosen.into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            chosen,
            [Id::of_stored(&[2]), Id::of_stored(&[3])],
            "50% first, then 17%; 12.5% stays"
        );
        assert_eq!(left, 50, "the 12.5% pack's 50 bytes stay unused");
        // At 5% the limit is 750 * 5 / 95 = 39 bytes, so the last pack goes too (a limit of 5%
        // of the 1000 bytes before the prune, 50, would have kept it).
        let (chosen, left) = select_for_repack(packs(), 1000, 250, 5);
        assert_eq!((chosen.len(), left), (3, 0));
        let packs = vec![pack(1, 40, 1000)];
        assert!(
            select_for_repack(packs, 1000, 40, 5).0.is_empty(),
            "40 unused of 960 used is within 5%"
        );
        let packs = vec![pack(1, 1, 1000), pack(2, 1, 1000)];
        assert_eq!(
            select_for_repack(packs, 2000, 2, 0).0.len(),
            2,
            "0 repacks every partly unused pack"
        );
    }
}

/// Delete the links and ends of delta chains (FORMAT.md 8e) whose base and segments are all gone
/// (pruned now or before): after the manifests, so a chain whose objects survive a crash here has
/// no base and is never used, and the next prune finishes the job.
async fn delete_dead_chains(
    vault: &Vault,
    catalog: &Catalog,
    opts: &PruneOptions,
    dropped: &BTreeSet<Id>,
    guard: &mut Option<&mut PruneLockGuard>,
    report: &mut PruneReport,
) -> Result<()> {
    let objects = vault.store.list(format::DELTAS_PREFIX).await?;
    if objects.is_empty() {
        return Ok(());
    }
    let mut alive = HashSet::new();
    for s in catalog.snapshots_without_streams()? {
        if dropped.contains(&s.id) {
            continue;
        }
        alive.insert(s.id);
        if let Some(d) = &s.manifest.etcd_v3_delta {
            alive.insert(d.base);
        }
    }
    let mut dead: Vec<String> = objects
        .into_iter()
        .map(|o| o.name)
        .filter(|name| {
            let base = name
                .strip_prefix(format::DELTAS_PREFIX)
                .and_then(|r| r.split('/').nth(1))
                .and_then(Id::parse);
            base.is_some_and(|b| !alive.contains(&b))
        })
        .collect();
    dead.sort();
    if dead.is_empty() {
        return Ok(());
    }
    step(
        opts,
        &format!("deleting {} link(s) and end(s) of delta chains whose base is gone", dead.len()),
    );
    for name in dead {
        if !opts.dry_run {
            keep(guard, vault).await?;
            vault.store.delete(&name).await?;
        }
        report.chain_objects_deleted += 1;
    }
    Ok(())
}

/// The deleting half of pass 2: the manifests of `dropped` (marked as not kept already), then
/// each candidate pack nothing needs: its index segment (only once every pack it lists goes),
/// then the pack. Streams: one delete at a time, lock renewed between them.
#[allow(clippy::too_many_arguments)]
async fn delete(
    vault: &Vault,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    dropped: &BTreeSet<Id>,
    candidates: &HashSet<Id>,
    listed: &mut HashMap<Id, u64>,
    guard: &mut Option<&mut PruneLockGuard>,
    report: &mut PruneReport,
) -> Result<()> {
    let mut needed = mark::still_needed(catalog, candidates)?;
    // A candidate no index segment lists (an orphan) may still be the only copy of chunks kept
    // snapshots use (its segment was lost): its trailer (writer key) says what it holds.
    let indexed: HashSet<Id> = catalog.packs()?.into_iter().map(|(id, _, _)| id).collect();
    let mut orphans: Vec<&Id> = candidates
        .iter()
        .filter(|p| !indexed.contains(p) && listed.contains_key(p))
        .collect();
    orphans.sort();
    for p in orphans {
        match super::pack_health::read_pack(vault, p).await? {
            super::pack_health::PackCheck::Whole { trailer, .. } => {
                let ids: Vec<Id> = trailer.blobs.iter().map(|b| b.id).collect();
                if mark::needed_unindexed(catalog, &ids)? {
                    report.orphans_needed.push(*p);
                    needed.insert(*p);
                }
            }
            // Damaged or gone: nothing readable to keep it for.
            super::pack_health::PackCheck::Bad(_) => {}
        }
    }
    let mut needed_again: Vec<Id> = needed.iter().copied().collect();
    needed_again.sort();
    report.packs_needed_again.extend(needed_again);
    let doomed: HashSet<Id> = candidates.difference(&needed).copied().collect();
    let segments = mark::segments_of(catalog, &doomed)?;
    // A pack listed by a segment that also lists a pack that stays is kept with it.
    let mut blocked = HashSet::new();
    for packs in segments.values() {
        if !packs.iter().all(|p| doomed.contains(p)) {
            blocked.extend(packs.iter().copied());
        }
    }
    if !dropped.is_empty() {
        step(opts, &format!("deleting {} forgotten snapshot manifest(s)", dropped.len()));
    }
    for id in dropped {
        if !opts.dry_run {
            keep(guard, vault).await?;
            vault.store.delete(&format::snapshot_name(id)).await?;
        }
        report.snapshots_removed.push(*id);
    }
    delete_dead_chains(vault, catalog, opts, dropped, guard, report).await?;
    let mut order: Vec<(&Id, &BTreeSet<Id>)> = segments.iter().filter(|(_, p)| p.iter().all(|p| !blocked.contains(p))).collect();
    order.sort();
    let total = doomed.len() - doomed.intersection(&blocked).count();
    step(opts, &format!("deleting {total} unused pack(s)"));
    let mut gone_packs = HashSet::new();
    for (seg, packs) in order {
        if !opts.dry_run {
            keep(guard, vault).await?;
            vault.store.delete(&format::index_name(seg)).await?;
        }
        report.segments_deleted += 1;
        for p in packs {
            if gone_packs.insert(*p) {
                delete_pack(vault, opts, p, listed, report).await?;
            }
        }
    }
    let mut rest: Vec<&Id> = doomed.iter().filter(|p| !blocked.contains(p) && !gone_packs.contains(p)).collect();
    rest.sort();
    for p in rest {
        if !opts.dry_run {
            keep(guard, vault).await?;
        }
        delete_pack(vault, opts, p, listed, report).await?;
    }
    if !opts.dry_run {
        catalog.sync(vault).await?;
    }
    Ok(())
}

async fn delete_pack(vault: &Vault, opts: &PruneOptions, p: &Id, listed: &mut HashMap<Id, u64>, report: &mut PruneReport) -> Result<()> {
    // A pack no longer listed went already (a killed prune deleted it after its segment).
    let Some(size) = listed.get(p).copied() else {
        return Ok(());
    };
    if !opts.dry_run {
        vault.store.delete(&format::pack_name(p)).await?;
        listed.remove(p);
    }
    report.packs_deleted += 1;
    report.bytes_freed += size;
    Ok(())
}

#[cfg(test)]
mod tests;
