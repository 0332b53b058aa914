//! Point-in-time restore of an etcd member (`vaultctl etcd restore --revision REV | --at TIME`):
//! resolve the target to a base and its segments ([`super::target`]), fetch the base, replay the
//! segments on it in a temporary etcd ([`super::replay`]), and lay the result down exactly as
//! `etcd restore` does a stored snapshot (staged beside the data dir, an existing data dir moved
//! aside, never deleted). Everything temporary lives in one private (0700) staging directory
//! beside the data dir, removed at the end.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::ops::deltas::replay::{self, ReplayOptions, Replayer, StopAt, TempEtcd, is_base_past_target};
use crate::ops::deltas::segment_read;
use crate::ops::deltas::target::{self, Plan, Target, TargetQuery};
use crate::ops::etcd_restore::{
    EtcdRestoreOptions, EtcdRestoreReport, STAGED, Staged, check_member_flags, make_staging_dir, place_staged, resolve_owner, restore_tool,
    stage_file_restore,
};
use crate::ops::restore::restore_to_file;
use crate::repo::Vault;

/// What a point-in-time target and where to find it: what a recovery flow's journal keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointInTime {
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub up_to_last_whole: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_binary: Option<PathBuf>,
}

impl PointInTime {
    pub fn query(&self) -> TargetQuery {
        TargetQuery {
            job: self.job.clone(),
            cluster_id: self.cluster_id.clone(),
            up_to_last_whole: self.up_to_last_whole,
        }
    }
}

/// What a point-in-time restore did.
#[derive(Clone, Debug, Serialize)]
pub struct PointInTimeReport {
    #[serde(flatten)]
    pub replayed: Replayed,
    pub restore: EtcdRestoreReport,
}

/// What the replay of a point-in-time restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    pub plan: Plan,
    /// The revision the base snapshot held (at least the one recorded at capture).
    pub base_revision: i64,
    /// The revision reached, and when its change was received (the base's time when no change
    /// was replayed).
    pub revision: i64,
    pub time: DateTime<Utc>,
    pub groups_applied: u64,
    pub events_applied: u64,
    pub leases_granted: u64,
    /// The replay stopped at the last whole segment (`--up-to-last-whole`), for this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Bases tried first whose snapshot held revisions past the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bases_past_target: Vec<String>,
    /// The sha256 of the replayed snapshot.
    pub sha256: String,
}

/// Only resolve: the plan `restore_to_point` would follow first.
pub async fn plan(vault: &Vault, catalog: &Catalog, target: Target, q: &TargetQuery) -> Result<Plan> {
    Ok(target::resolve(vault, catalog, target, q).await?.remove(0))
}

pub async fn restore_to_point(
    vault: &Vault,
    catalog: &Catalog,
    target: Target,
    q: &TargetQuery,
    opts: &EtcdRestoreOptions,
    replay_opts: &ReplayOptions,
) -> Result<PointInTimeReport> {
    // Usage problems first, before anything is fetched.
    check_usage(opts, replay_opts)?;
    let plans = target::resolve(vault, catalog, target, q).await?;
    let suffix = hex::encode(crate::crypto::random_bytes::<4>());
    let staging = make_staging_dir(&opts.data_dir, "pitr", &suffix)?;
    // Removed however this ends, also when the caller drops this future (an interrupt): the
    // temporary etcd is stopped by its own drop.
    let _remove = RemoveDirOnDrop(staging.clone());
    async {
        let (staged, replayed) = stage_plans(vault, catalog, plans, target, q.up_to_last_whole, opts, replay_opts, &staging).await?;
        let moved_aside = place_staged(&staged.dir, &opts.data_dir)?;
        Ok(PointInTimeReport {
            restore: EtcdRestoreReport {
                snapshot: replayed.plan.base.id.hex(),
                data_dir: opts.data_dir.clone(),
                moved_aside,
                tool: staged.tool,
                owner: staged.owner,
                revision: Some(replayed.revision),
                sha256: replayed.sha256.clone(),
            },
            replayed,
        })
    }
    .await
}

struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Build the member data dir for `target` at `staging/member-data` (`staging`: an existing
/// private directory; what else this makes in it is removed): a recovery flow's staging step.
pub async fn stage_to_point(
    vault: &Vault,
    catalog: &Catalog,
    point: &PointInTime,
    opts: &EtcdRestoreOptions,
    replay_opts: &ReplayOptions,
    staging: &Path,
) -> Result<(Staged, Replayed)> {
    check_usage(opts, replay_opts)?;
    let q = point.query();
    let plans = target::resolve(vault, catalog, point.target, &q).await?;
    let _ = fs::remove_dir_all(staging.join(STAGED));
    stage_plans(vault, catalog, plans, point.target, q.up_to_last_whole, opts, replay_opts, staging).await
}

fn check_usage(opts: &EtcdRestoreOptions, replay_opts: &ReplayOptions) -> Result<()> {
    check_member_flags(opts)?;
    restore_tool(opts.tool.as_deref())?;
    resolve_owner(opts.owner.as_deref())?;
    replay::etcd_binary(replay_opts.etcd_binary.as_deref())?;
    Ok(())
}

/// Try the candidate plans in order (a base found past the target gives way to the next).
#[allow(clippy::too_many_arguments)]
async fn stage_plans(
    vault: &Vault,
    catalog: &Catalog,
    plans: Vec<Plan>,
    target: Target,
    up_to_last_whole: bool,
    opts: &EtcdRestoreOptions,
    replay_opts: &ReplayOptions,
    staging: &Path,
) -> Result<(Staged, Replayed)> {
    let mut past = Vec::new();
    for plan in plans {
        match replay_plan(vault, catalog, &plan, up_to_last_whole, opts, replay_opts, staging).await {
            Ok((staged, mut replayed)) => {
                replayed.bases_past_target = past;
                return Ok((staged, replayed));
            }
            Err(e) if is_base_past_target(&e).is_some() => past.push(format!(
                "base {} holds revision {}, past {target}",
                plan.base.id.short(),
                is_base_past_target(&e).unwrap_or_default()
            )),
            Err(e) => return Err(e),
        }
    }
    Err(Error::not_found(format!(
        "no base snapshot with a delta chain is at or before {target}: {}",
        past.join("; ")
    ))
    .hint("choose a later --revision/--at"))
}

async fn replay_plan(
    vault: &Vault,
    catalog: &Catalog,
    plan: &Plan,
    up_to_last_whole: bool,
    opts: &EtcdRestoreOptions,
    replay_opts: &ReplayOptions,
    staging: &Path,
) -> Result<(Staged, Replayed)> {
    let snaps = catalog.snapshots()?;
    let find = |id| {
        snaps
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::not_found(format!("snapshot {} is no longer in the catalog", id.short())))
    };
    let base_file = staging.join("base.db");
    restore_to_file(vault, catalog, find(plan.base.id)?, &base_file, opts.progress.clone()).await?;
    let work = staging.join("replay");
    fs::create_dir_all(&work).map_err(|e| Error::io(format!("cannot create {}", work.display())).with_source(e))?;
    let etcd = TempEtcd::start(Some(&base_file), &work, replay_opts).await;
    let _ = fs::remove_file(&base_file);
    let mut r = Replayer::new(etcd?, plan.stop).await?;
    let mut stopped_early = None;
    for s in &plan.segments {
        let what = segment_read::describe(s.seq, s.first_revision, s.last_revision, &s.id.short());
        // A whole segment is decoded and checked before any of it is applied, so a broken one
        // leaves the replay at the end of the segment before it.
        match segment_read::read(vault, catalog, find(s.id)?, &what).await {
            Ok((records, _)) => {
                for rec in &records {
                    r.apply(rec, &what).await?;
                    if r.done() {
                        break;
                    }
                }
            }
            // The segment after a time target is read only to check the base against it.
            Err(_) if matches!(plan.stop, StopAt::ReceivedBy(ms) if s.first_event_time.timestamp_millis() > ms) => break,
            Err(e) if up_to_last_whole => {
                stopped_early = Some(e.what);
                break;
            }
            Err(e) => {
                return Err(Error::new(
                    e.kind,
                    format!(
                        "cannot restore to {}: {}; the chain is whole up to revision {}{}",
                        plan.target,
                        e.what,
                        r.progress.revision,
                        r.progress
                            .received_ms
                            .and_then(DateTime::from_timestamp_millis)
                            .map(|t| format!(" ({})", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                            .unwrap_or_default()
                    ),
                )
                .hint("pass --up-to-last-whole to restore to that point, or choose an earlier --revision/--at"));
            }
        }
        if r.done() {
            break;
        }
    }
    if let StopAt::Revision(want) = plan.stop {
        if r.progress.base_revision > want {
            return Err(replay::base_past_target(r.progress.base_revision));
        }
        if stopped_early.is_none() && r.progress.revision != want {
            return Err(Error::integrity(format!(
                "the replay reached revision {} where the chain's links promise {want}",
                r.progress.revision
            )));
        }
    }
    let replayed = staging.join("replayed.db");
    let finished = r.finish(&replayed).await;
    let _ = fs::remove_dir(&work);
    let (progress, sha) = match finished {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_file(&replayed);
            return Err(e);
        }
    };
    let staged = stage_file_restore(&replayed, sha.clone(), opts, staging);
    let _ = fs::remove_file(&replayed);
    let staged = staged?;
    Ok((
        staged,
        Replayed {
            plan: plan.clone(),
            base_revision: progress.base_revision,
            revision: progress.revision,
            time: progress
                .received_ms
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(plan.base.time),
            groups_applied: progress.groups_applied,
            events_applied: progress.events_applied,
            leases_granted: progress.leases_granted,
            stopped_early,
            bases_past_target: Vec::new(),
            sha256: sha,
        },
    ))
}
