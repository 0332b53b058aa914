//! `GET /v1/audit` (the JSON of `vaultctl audit --json`) and the audit's figures in /metrics:
//! per job the expected interval, per group the missed slots in the window and the age of the
//! last verification, so an alert needs no hard-coded "25 hours". The report behind /metrics is
//! kept for a minute (it lists the policy and verification records in the store).

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use vault::Result;
use vault::ops::audit::{self, AuditOptions, AuditReport, ControlStatus, Thresholds};

use crate::run::Daemon;

/// How long /metrics reuses an audit.
const CACHE_FOR: Duration = Duration::from_secs(60);

/// The audit cache of a daemon.
#[derive(Default)]
pub struct AuditCache(tokio::sync::Mutex<Option<(Instant, Arc<AuditReport>)>>);

/// A fresh audit with the default thresholds (`since`: the window's start, default 30 days).
pub async fn report(d: &Daemon, since: Option<chrono::DateTime<Utc>>, job: Option<String>) -> Result<AuditReport> {
    let opts = AuditOptions {
        since,
        job,
        thresholds: Thresholds::default(),
        now: Utc::now(),
    };
    let mut cat = vault::catalog::Catalog::open(&d.catalog_path, &d.vault.config.vault_id)?;
    audit::run(&d.vault, &mut cat, &opts).await
}

/// The audit for /metrics: the cached one if younger than a minute, else a fresh one (`None`
/// when it cannot be made; the log says why).
pub async fn cached(d: &Daemon) -> Option<Arc<AuditReport>> {
    let mut c = d.audit_cache.0.lock().await;
    if let Some((at, r)) = c.as_ref()
        && at.elapsed() < CACHE_FOR
    {
        return Some(r.clone());
    }
    match report(d, None, None).await {
        Ok(r) => {
            let r = Arc::new(r);
            *c = Some((Instant::now(), r.clone()));
            Some(r)
        }
        Err(e) => {
            tracing::warn!("cannot audit the vault for /metrics: {e}");
            None
        }
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The audit's part of /metrics.
pub fn render_metrics(r: &AuditReport) -> String {
    let now = r.generated;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP vault_job_expected_interval_seconds The longest gap between the slots of the job's recorded schedule: alert when the newest snapshot is older than about this.\n# TYPE vault_job_expected_interval_seconds gauge"
    );
    for j in &r.jobs {
        if let Some(i) = j.expected_interval_secs {
            let _ = writeln!(out, "vault_job_expected_interval_seconds{{job=\"{}\"}} {i}", label(&j.job));
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_group_missed_slots Slots of the recorded schedule in the audit window (30 days) with no snapshot.\n# TYPE vault_group_missed_slots gauge"
    );
    for j in &r.jobs {
        for g in &j.groups {
            let _ = writeln!(
                out,
                "vault_group_missed_slots{{job=\"{}\",group=\"{}\"}} {}",
                label(&j.job),
                label(&g.group),
                g.counts.missed
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_group_last_verified_age_seconds Seconds since a snapshot of the group was last verified whole (any host, any level).\n# TYPE vault_group_last_verified_age_seconds gauge"
    );
    for j in &r.jobs {
        for g in &j.groups {
            let last = g.last_verified_ok();
            if let Some(t) = last {
                let _ = writeln!(
                    out,
                    "vault_group_last_verified_age_seconds{{job=\"{}\",group=\"{}\"}} {}",
                    label(&j.job),
                    label(&g.group),
                    (now - t).num_seconds()
                );
            }
        }
    }
    let failing = r.controls.iter().filter(|c| c.status == ControlStatus::NonCompliant).count();
    let _ = writeln!(
        out,
        "# HELP vault_audit_noncompliant_controls Controls of the retention audit that are non-compliant (see GET /v1/audit).\n# TYPE vault_audit_noncompliant_controls gauge\nvault_audit_noncompliant_controls {failing}"
    );
    out
}
