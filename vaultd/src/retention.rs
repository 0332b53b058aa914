//! Retention after a run: when a job's capture succeeded and the job has `[job.retention]`, the
//! daemon applies the policy to the job's groups (`vault::ops::retention::forget::apply_unattended`):
//! what it removes is forgotten (one deletion-log record); groups that would lose more than the
//! policy's share are left alone for an operator's `vaultctl forget --confirm`. Prune is separate
//! (`vaultctl prune`, or a `prune` job). A failure here is logged and counted, never a failed run:
//! the snapshot is committed.

use vault::catalog::Catalog;
use vault::ops::retention::Scope;
use vault::ops::retention::forget::{Actor, apply_unattended};

use crate::config::{JobConfig, JobKind};
use crate::run::Daemon;

/// The groups a daemon's retention covers: a cluster-wide etcd job's groups (by cluster), or for
/// a host job only this host's group.
fn scope_of(d: &Daemon, job: &JobConfig) -> Scope {
    let by_cluster = matches!(job.kind(), Some(JobKind::EtcdV3 | JobKind::EtcdV2));
    Scope {
        job: Some(job.name.clone()),
        group: (!by_cluster).then(|| format!("host:{}", d.host)),
    }
}

/// Apply `job`'s retention policy, if it has one, after a successful capture.
pub(crate) async fn apply_after_run(d: &Daemon, job: &JobConfig) {
    let Some(policy) = &job.retention else { return };
    let actor = Actor {
        host: d.host.clone(),
        command: format!("vaultd job {}", job.name),
    };
    let result = async {
        let mut cat = Catalog::open(&d.catalog_path, &d.vault.config.vault_id)?;
        cat.sync(&d.vault).await?;
        apply_unattended(&d.vault, &mut cat, policy, &scope_of(d, job), &actor, chrono::Utc::now()).await
    }
    .await;
    match result {
        Ok(done) => {
            let forgotten = done.report.plan.removed().count() as u64;
            if let Some(r) = &done.report.record {
                tracing::info!(
                    "job {}: retention forgot {forgotten} snapshot(s) (deletion-log record {}); `vaultctl prune` deletes their data",
                    job.name,
                    r.seq
                );
            }
            for g in &done.needs_confirm {
                tracing::warn!(
                    "job {}: retention left group {g} alone: the policy would remove more than {}% of it; check with `vaultctl forget --dry-run --job {}` and apply with --confirm",
                    job.name,
                    policy.max_remove_percent(),
                    job.name
                );
            }
            d.update(&job.name, |s| {
                s.retention_forgotten += forgotten;
                s.retention_groups_need_confirm = done.needs_confirm.len() as u64;
            });
        }
        Err(e) => {
            tracing::error!("job {}: applying the retention policy failed: {e}", job.name);
            d.update(&job.name, |s| s.retention_failures += 1);
        }
    }
}
