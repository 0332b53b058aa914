//! Recording each capture job's schedule and retention policy in the vault (a policy record,
//! docs/FORMAT.md section 8c) when its loop starts: at start-up and when a reload changed the
//! job. A record is written only when the newest one for the job differs, so restarts and other
//! hosts running the same config add nothing. A host job this host recorded and no longer has in
//! its config gets a retirement record (at start-up and reload), so audits stop expecting its slots.

use chrono::Utc;
use vault::ops::retention::policy_records::{self, PolicyRecord};

use crate::config::{JobConfig, JobKind, Scope};
use crate::run::Daemon;

/// The record the job's config gives (`None` for a verify job: it takes no snapshots).
pub fn record_of(job: &JobConfig, host: &str) -> Option<PolicyRecord> {
    if job.kind() == Some(JobKind::Verify) {
        return None;
    }
    Some(PolicyRecord {
        job: job.name.clone(),
        kind: job.kind.clone(),
        scope: match job.scope() {
            Some(Scope::Cluster) => "cluster".into(),
            _ => "host".into(),
        },
        host: host.to_string(),
        schedule: job.schedule.clone(),
        // vaultd evaluates schedules in UTC.
        timezone: None,
        retention: job.retention.clone(),
        retired: false,
        time: Utc::now(),
    })
}

/// Write the job's policy record if it changed. A failure is logged, not fatal: the job runs,
/// and the next start or reload tries again.
pub async fn record(d: &Daemon, job: &JobConfig) {
    let Some(rec) = record_of(job, &d.host) else { return };
    let existing = match policy_records::read_all(&d.vault).await {
        Ok((records, unreadable)) => {
            for u in unreadable {
                tracing::warn!("unreadable policy record {u}");
            }
            records
        }
        Err(e) => {
            tracing::warn!(
                "job {}: cannot read the policy records: {e}; its policy is not recorded now",
                job.name
            );
            return;
        }
    };
    match policy_records::record_if_changed(&d.vault, &existing, &rec).await {
        Ok(Some(name)) => tracing::info!("job {}: recorded its schedule and retention policy as {name}", job.name),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "job {}: cannot record its schedule and retention policy in the vault: {e}; audits will not see this policy",
            job.name
        ),
    }
}

/// Retire this host's recorded host jobs that are gone from `configured` (failures logged).
pub async fn retire_removed(d: &Daemon, configured: Vec<String>) {
    let records = match policy_records::read_all(&d.vault).await {
        Ok((records, _)) => records,
        Err(e) => {
            tracing::warn!("cannot read the policy records to retire removed jobs: {e}");
            return;
        }
    };
    let names: Vec<&str> = configured.iter().map(String::as_str).collect();
    for rec in policy_records::retirements(&records, &d.host, &names, Utc::now()) {
        match policy_records::record_if_changed(&d.vault, &records, &rec).await {
            Ok(Some(name)) => tracing::info!(
                "job {} is no longer in this host's config: recorded its retirement as {name} (audits expect no more slots)",
                rec.job
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("job {}: cannot record its retirement in the vault: {e}", rec.job),
        }
    }
}
