//! Forget and undelete: plan retention over the snapshots that are not forgotten yet, then apply
//! the plan by appending one `forget` record to the deletion log (the tombstones); `undelete`
//! appends an `undelete` record for snapshots prune has not deleted yet. Nothing here deletes an
//! object: prune does, later.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::holds;
use super::log::{self, DeletionLog, NewRecord, StoredRecord, Tombstone};
use super::plan::{RetentionPlan, plan_retention};
use super::{RetentionPolicy, Scope};
use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Error, Result};
use crate::format::{Id, LogAction, SnapshotManifest};
use crate::repo::Vault;

/// Who applies a plan, for the log record.
#[derive(Clone, Debug)]
pub struct Actor {
    pub host: String,
    /// `vaultctl forget`, `vaultd job etcd`, ...
    pub command: String,
}

/// What `forget` planned and, when applied, the log record it wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    #[serde(flatten)]
    pub plan: RetentionPlan,
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<StoredRecord>,
    /// Hold events that could not be read (each counted as a hold).
    pub damaged_holds: Vec<String>,
    /// Snapshots already forgotten, left out of the plan.
    pub already_forgotten: usize,
}

/// The snapshots retention counts: those in the catalog without a tombstone.
pub fn live_snapshots(snapshots: Vec<SnapshotEntry>, log: &DeletionLog) -> (Vec<SnapshotEntry>, usize) {
    let tombstones = log.tombstones();
    let before = snapshots.len();
    let live: Vec<SnapshotEntry> = snapshots.into_iter().filter(|s| !tombstones.contains_key(&s.id)).collect();
    let gone = before - live.len();
    (live, gone)
}

/// Plan retention under `policy` for the groups in `scope`, over the snapshots not yet forgotten,
/// with the holds stored in the vault.
pub async fn plan(
    vault: &Vault,
    catalog: &mut Catalog,
    policy: &RetentionPolicy,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<ForgetReport> {
    policy.check()?;
    let log = log::read_cached(vault, catalog).await?;
    let (live, already_forgotten) = live_snapshots(catalog.snapshots_without_streams()?, &log);
    let events = holds::read_events(vault).await?;
    let damaged_holds = events
        .iter()
        .filter(|e| e.unreadable.is_some())
        .map(|e| format!("{} (counted as a hold of {})", e.name, e.event.snapshot.short()))
        .collect();
    let plan = plan_retention(&live, policy, now, &holds::plan_holds(&events, now))?.restrict(scope)?;
    Ok(ForgetReport {
        plan,
        applied: false,
        record: None,
        damaged_holds,
        already_forgotten,
    })
}

/// Apply a plan: one `forget` record listing every snapshot it removes, with the reasons. A plan
/// that removes more than its policy's share of some group needs `confirm`.
pub async fn apply(
    vault: &Vault,
    catalog: &mut Catalog,
    report: &mut ForgetReport,
    confirm: bool,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<()> {
    let plan = &report.plan;
    if plan.needs_confirm && !confirm {
        let groups: Vec<String> = plan
            .groups
            .iter()
            .filter(|g| g.needs_confirm)
            .map(|g| format!("{} ({} of {})", g.group, g.remove, g.snapshots.len()))
            .collect();
        return Err(Error::usage(format!(
            "the plan removes more than {}% of group {}: nothing was forgotten",
            plan.policy.max_remove_percent(),
            groups.join(", ")
        ))
        .hint("check the plan with --dry-run; if it is what you want, run again with --confirm"));
    }
    let manifests: HashMap<Id, SnapshotManifest> = catalog
        .snapshots_without_streams()?
        .into_iter()
        .map(|s| (s.id, s.manifest))
        .collect();
    let mut entries = Vec::new();
    let mut bases = Vec::new();
    for s in plan.removed() {
        let m = manifests.get(&s.id).ok_or_else(|| {
            Error::not_found(format!("snapshot {} is no longer in the catalog", s.id.short()))
                .hint("another host changed the vault while this plan was made; run forget again")
        })?;
        entries.push(log::entry(&s.id, m, s.reasons.iter().map(|r| r.text.clone()).collect()));
        bases.push(s.id);
    }
    // A delta chain follows its base (FORMAT.md 8e): the segments go in the same record.
    let tombstones = log::read_cached(vault, catalog).await?.tombstones();
    for (id, m, base) in chain_segments(&manifests, &bases) {
        if !tombstones.contains_key(id) {
            let seq = m.etcd_v3_delta.as_ref().map_or(0, |d| d.seq);
            let reason = format!("delta segment {seq} of the chain of {}, forgotten with it", base.short());
            entries.push(log::entry(id, m, vec![reason]));
        }
    }
    report.applied = true;
    if entries.is_empty() {
        return Ok(());
    }
    let new = NewRecord {
        action: LogAction::Forget,
        entries,
        host: actor.host.clone(),
        command: actor.command.clone(),
    };
    report.record = Some(log::append(vault, new, now).await?);
    Ok(())
}

/// The delta segments whose base is one of `bases`, with their base, in a stable order.
fn chain_segments<'a>(manifests: &'a HashMap<Id, SnapshotManifest>, bases: &[Id]) -> Vec<(&'a Id, &'a SnapshotManifest, Id)> {
    let mut out: Vec<(&Id, &SnapshotManifest, Id)> = manifests
        .iter()
        .filter_map(|(id, m)| {
            let base = m.etcd_v3_delta.as_ref()?.base;
            bases.contains(&base).then_some((id, m, base))
        })
        .collect();
    out.sort_by_key(|(id, m, _)| (m.etcd_v3_delta.as_ref().map(|d| d.seq), **id));
    out
}

/// Bring forgotten snapshots back, with a reason, before prune deletes them.
pub async fn undelete(
    vault: &Vault,
    catalog: &mut Catalog,
    prefixes: &[String],
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<StoredRecord> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::usage("undelete needs a reason").hint("say why, e.g. --reason \"INC-77: forgotten by a wrong policy\""));
    }
    let log = log::read_cached(vault, catalog).await?;
    let tombstones = log.tombstones();
    let mut entries = Vec::new();
    for prefix in prefixes {
        let snap = catalog
            .resolve(prefix)
            .map_err(|e| match tombstones.iter().find(|(id, _)| id.hex().starts_with(prefix.as_str())) {
                Some((id, Tombstone::Pruned)) => Error::not_found(format!(
                    "snapshot {} was forgotten and then pruned: its data is gone from the vault",
                    id.short()
                ))
                .hint("undelete works only until prune deletes a snapshot; `vaultctl deletion-log` shows when it was pruned"),
                _ => e,
            })?;
        match tombstones.get(&snap.id) {
            Some(Tombstone::Forgotten) => {
                entries.push(log::entry(&snap.id, &snap.manifest, vec![reason.to_string()]));
                // Its delta chain comes back with it.
                let manifests: HashMap<Id, SnapshotManifest> = catalog
                    .snapshots_without_streams()?
                    .into_iter()
                    .map(|s| (s.id, s.manifest))
                    .collect();
                for (id, m, _) in chain_segments(&manifests, &[snap.id]) {
                    if tombstones.get(id) == Some(&Tombstone::Forgotten) {
                        entries.push(log::entry(
                            id,
                            m,
                            vec![format!("{reason} (delta segment in the chain of {})", snap.id.short())],
                        ));
                    }
                }
            }
            Some(Tombstone::Pruned) => {
                return Err(Error::not_found(format!(
                    "snapshot {} was pruned: its data is gone",
                    snap.id.short()
                )));
            }
            None => {
                return Err(Error::usage(format!("snapshot {} is not forgotten", snap.id.short()))
                    .hint("undelete brings back snapshots that forget removed; this one is still kept"));
            }
        }
    }
    let new = NewRecord {
        action: LogAction::Undelete,
        entries,
        host: actor.host.clone(),
        command: actor.command.clone(),
    };
    log::append(vault, new, now).await
}

/// What an unattended run (vaultd, after a job's successful capture) did.
#[derive(Clone, Debug, Serialize)]
pub struct UnattendedForget {
    pub report: ForgetReport,
    /// Groups left alone because the plan would remove more than the policy's share of them: an
    /// operator decides with `vaultctl forget --confirm`.
    pub needs_confirm: Vec<String>,
}

/// Apply `policy` to the groups in `scope` as a daemon does: nobody is there to confirm, so groups
/// that would lose more than the policy's share are left out of the plan and named, and the rest
/// is applied. A daemon scopes a host job to its own host's group (another host's group follows
/// that host's policy) and a cluster job to the job.
pub async fn apply_unattended(
    vault: &Vault,
    catalog: &mut Catalog,
    policy: &RetentionPolicy,
    scope: &Scope,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<UnattendedForget> {
    let mut report = plan(vault, catalog, policy, scope, now).await?;
    let needs_confirm: Vec<String> = report
        .plan
        .groups
        .iter()
        .filter(|g| g.needs_confirm)
        .map(|g| format!("{} ({} of {})", g.group, g.remove, g.snapshots.len()))
        .collect();
    report.plan.groups.retain(|g| !g.needs_confirm);
    report.plan.needs_confirm = false;
    apply(vault, catalog, &mut report, false, actor, now).await?;
    Ok(UnattendedForget { report, needs_confirm })
}
