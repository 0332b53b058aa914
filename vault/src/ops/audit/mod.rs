//! The retention audit (`vaultctl audit`, vaultd's `GET /v1/audit`): per job and group, schedule
//! adherence ([`slots`]), retention compliance and verification coverage ([`retention`]), and
//! controls with a status each ([`controls`]); [`render`] writes it as CSV or one HTML page.
//!
//! Everything comes from the catalog (snapshots, and verification records synced into it) and
//! from the policy records, listed once: no per-snapshot store reads, so an audit of thousands
//! of snapshots takes well under a second. [`audit`] is pure over an [`AuditInput`], so the
//! judgement is tested on a fake clock.

pub mod controls;
pub mod render;
pub mod retention;
pub mod slots;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, Coverage};
use crate::error::Result;
use crate::format::Id;
use crate::ops::retention::Group;
use crate::ops::retention::log::{self, DeletionLog, Finding};
use crate::ops::retention::policy_records::{self, PolicyRecord, StoredPolicy};
use crate::repo::Vault;
pub use controls::{Control, ControlStatus, Thresholds};
pub use retention::RuleCheck;
pub use slots::{AuditSnapshot, SlotResult, SlotStatus};

/// The audit window when `--since` is not given.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Start of the window (default: 30 days before `now`); never before a job's first record.
    pub since: Option<DateTime<Utc>>,
    /// Only this job.
    pub job: Option<String>,
    pub thresholds: Thresholds,
    pub now: DateTime<Utc>,
}

/// What the audit judges: read by [`gather`], or made up by tests.
#[derive(Clone, Debug, Default)]
pub struct AuditInput {
    pub policies: Vec<StoredPolicy>,
    /// Ascending by time.
    pub snapshots: Vec<AuditSnapshot>,
    pub coverage: HashMap<Id, Coverage>,
    /// How many recipients the vault's content keys are wrapped to.
    pub recipients: usize,
    /// The deletion log as read (every record) and what its checks found; `None` when not read.
    pub deletion_log: Option<(DeletionLog, Vec<Finding>)>,
    /// Records and catalog entries that could not be read.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    pub generated: DateTime<Utc>,
    pub since: DateTime<Utc>,
    /// False when any control is non-compliant.
    pub compliant: bool,
    pub jobs: Vec<JobAudit>,
    pub controls: Vec<Control>,
    pub deletion_log: DeletionLogSection,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The deletion log (docs/FORMAT.md section 8b): every record (forget, undelete, prune: which
/// snapshots, when, by what command, from which host, why) and what its checks found (records
/// removed or rewritten, a broken chain, snapshots deleted outside policy).
#[derive(Clone, Debug, Serialize)]
pub struct DeletionLogSection {
    pub available: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<log::StoredRecord>,
    pub findings: Vec<Finding>,
    pub note: String,
}

impl Default for DeletionLogSection {
    fn default() -> Self {
        DeletionLogSection {
            available: false,
            records: Vec::new(),
            findings: Vec::new(),
            note: "the deletion log was not read".into(),
        }
    }
}

/// One recorded policy, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyShown {
    pub since: DateTime<Utc>,
    pub host: String,
    pub schedule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The retention rules (`daily 7, weekly 4, zone UTC`), or "none: nothing is removed".
    pub retention: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobAudit {
    pub job: String,
    pub kind: String,
    pub scope: String,
    /// The schedule in force now.
    pub schedule: String,
    /// The job's newest record says it was removed from the config (it expects no more slots).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// The longest gap between the current schedule's slots (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_interval_secs: Option<i64>,
    /// A snapshot later than this after its slot is late (seconds).
    pub late_after_secs: i64,
    pub policies: Vec<PolicyShown>,
    pub groups: Vec<GroupAudit>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SlotCounts {
    pub expected: usize,
    pub taken: usize,
    pub late: usize,
    pub covered: usize,
    pub missed: usize,
}

/// A kept snapshot and when it was last verified.
#[derive(Clone, Debug, Serialize)]
pub struct KeptSnapshot {
    pub id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    #[serde(flatten)]
    pub coverage: Coverage,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupAudit {
    pub group: String,
    pub counts: SlotCounts,
    /// The slot list stopped at [`slots::MAX_SLOTS`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    pub slots: Vec<SlotResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<DateTime<Utc>>,
    pub retention: Vec<RuleCheck>,
    pub snapshots: Vec<KeptSnapshot>,
}

impl GroupAudit {
    /// When a kept snapshot of the group was last verified whole (any host, any level).
    pub fn last_verified_ok(&self) -> Option<DateTime<Utc>> {
        self.snapshots
            .iter()
            .flat_map(|s| [&s.coverage.structure, &s.coverage.data])
            .flatten()
            .filter(|v| v.ok)
            .map(|v| v.time)
            .max()
    }
}

/// Read what the audit needs: the catalog's snapshots (synced by the caller), the verification
/// records (synced into the catalog here) and the policy records.
pub async fn gather(vault: &Vault, catalog: &mut Catalog) -> Result<AuditInput> {
    let mut warnings: Vec<String> = catalog.unreadable().iter().map(|u| format!("unreadable: {u}")).collect();
    warnings.extend(
        crate::ops::verify_records::sync(vault, catalog)
            .await?
            .into_iter()
            .map(|u| format!("unreadable verification record {u}")),
    );
    let (policies, bad) = policy_records::read_all(vault).await?;
    warnings.extend(bad.into_iter().map(|u| format!("unreadable policy record {u}")));
    // Every record is read (not the catalog's cache): a rewritten record must be caught.
    let entries = catalog.snapshots_without_streams()?;
    let deletion_log = log::read(vault).await?;
    let findings = deletion_log.check(&entries, &catalog.vanished()?);
    let forgotten = deletion_log.forgotten();
    // Delta segments (section 8e) take no slot and belong to no retention group: they are not
    // the snapshots a schedule promises.
    let mut snapshots: Vec<AuditSnapshot> = entries
        .into_iter()
        .filter(|s| s.manifest.kind != crate::format::PayloadKind::EtcdV3Delta)
        .map(|s| AuditSnapshot {
            id: s.id,
            time: s.manifest.time,
            host: s.manifest.host.clone(),
            job: s.manifest.job.clone(),
            group: Group::of(&s.manifest).to_string(),
            slot: s.manifest.slot,
            removed: forgotten.contains(&s.id),
        })
        .collect();
    // Snapshots pruned since (their manifests gone): the log still says they were taken.
    let present: std::collections::HashSet<Id> = snapshots.iter().map(|s| s.id).collect();
    for (id, (rec, e)) in deletion_log.last_entries() {
        if !present.contains(&id) && rec.action != crate::format::LogAction::Undelete {
            snapshots.push(AuditSnapshot {
                id,
                time: e.time,
                host: String::new(),
                job: e.job.clone(),
                group: e.group.clone(),
                slot: None,
                removed: true,
            });
        }
    }
    snapshots.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    Ok(AuditInput {
        policies,
        snapshots,
        coverage: catalog.verification_coverage()?,
        recipients: vault.config.recipients.len(),
        deletion_log: Some((deletion_log, findings)),
        warnings,
    })
}

/// Gather and judge.
pub async fn run(vault: &Vault, catalog: &mut Catalog, opts: &AuditOptions) -> Result<AuditReport> {
    let input = gather(vault, catalog).await?;
    audit(&input, opts)
}

/// Judge `input` (pure; `opts.now` is the clock).
pub fn audit(input: &AuditInput, opts: &AuditOptions) -> Result<AuditReport> {
    let now = opts.now;
    let since = opts.since.unwrap_or(now - TimeDelta::days(DEFAULT_WINDOW_DAYS));
    let mut warnings = input.warnings.clone();
    // Jobs: those with records, and those with snapshots (manual or from before recording).
    let mut jobs: BTreeMap<&str, ()> = BTreeMap::new();
    for p in &input.policies {
        jobs.insert(&p.record.job, ());
    }
    for s in &input.snapshots {
        jobs.insert(&s.job, ());
    }
    if let Some(j) = &opts.job
        && !jobs.contains_key(j.as_str())
    {
        let known: Vec<&str> = jobs.keys().copied().collect();
        return Err(
            crate::Error::usage(format!("no job {j:?} in the vault's policy records or snapshots")).hint(if known.is_empty() {
                "the vault holds no policy records and no snapshots yet".to_string()
            } else {
                format!("the jobs are: {}", known.join(", "))
            }),
        );
    }
    let mut out_jobs = Vec::new();
    for job in jobs.keys().filter(|j| opts.job.as_deref().is_none_or(|o| o == **j)) {
        out_jobs.push(audit_job(input, job, since, now, &opts.thresholds, &mut warnings));
    }
    let controls = controls::evaluate(&out_jobs, input, now, &opts.thresholds);
    Ok(AuditReport {
        generated: now,
        since,
        compliant: controls.iter().all(|c| c.status != ControlStatus::NonCompliant),
        jobs: out_jobs,
        controls,
        deletion_log: match &input.deletion_log {
            None => DeletionLogSection::default(),
            Some((l, f)) => DeletionLogSection {
                available: true,
                records: l.records.clone(),
                findings: f.clone(),
                note: if f.is_empty() {
                    format!(
                        "{} record(s); the chain is whole and every snapshot gone from the vault has a record",
                        l.records.len()
                    )
                } else {
                    format!(
                        "{} record(s); {} finding(s): the vault was changed outside vault's retention",
                        l.records.len(),
                        f.len()
                    )
                },
            },
        },
        warnings,
    })
}

fn audit_job(
    input: &AuditInput,
    job: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    th: &Thresholds,
    warnings: &mut Vec<String>,
) -> JobAudit {
    let records: Vec<&PolicyRecord> = input.policies.iter().map(|p| &p.record).filter(|r| r.job == job).collect();
    let newest = records.last().copied();
    let interval = newest
        .filter(|r| !r.retired)
        .and_then(|r| slots::RecordedSchedule::parse(r).ok())
        .and_then(|s| s.expected_interval(now));
    let late_after = th.late_after.unwrap_or_else(|| slots::default_late_after(interval));
    let cluster_wide = newest.is_some_and(|r| r.is_cluster_wide());
    let snaps: Vec<&AuditSnapshot> = input.snapshots.iter().filter(|s| s.job == job).collect();

    // Groups: those the snapshots fall in; for a host job also each recording host without any.
    let mut groups: BTreeMap<String, Vec<&AuditSnapshot>> = BTreeMap::new();
    for s in &snaps {
        groups.entry(s.group.clone()).or_default().push(s);
    }
    if groups.is_empty() && cluster_wide {
        groups.insert(format!("job:{job}"), Vec::new());
    }
    if !cluster_wide {
        for r in &records {
            let name = format!("host:{}/{job}", r.host);
            if !snaps.iter().any(|s| s.group == name) {
                groups.entry(name).or_default();
            }
        }
    }
    // Slots stop `late_after` before now: a run may still be on its way.
    let to = now - late_after;
    let mut out_groups = Vec::new();
    for (group, gsnaps) in groups {
        let host = group.strip_prefix("host:").and_then(|g| g.rsplit_once('/')).map(|(h, _)| h);
        // A host group follows its host's records (other hosts' when it has none).
        let mine: Vec<&PolicyRecord> = match host {
            Some(h) if !cluster_wide && records.iter().any(|r| r.host == h) => records.iter().copied().filter(|r| r.host == h).collect(),
            _ => records.clone(),
        };
        let (expected, truncated) = slots::expected_slots(&mine, since, to, warnings);
        let slot_times: Vec<DateTime<Utc>> = expected.iter().map(|(t, _)| *t).collect();
        let judged = slots::judge(&slot_times, &gsnaps, late_after);
        let mut counts = SlotCounts {
            expected: judged.len(),
            ..Default::default()
        };
        for r in &judged {
            match r.status {
                SlotStatus::Taken => counts.taken += 1,
                SlotStatus::Late => counts.late += 1,
                SlotStatus::Covered => counts.covered += 1,
                SlotStatus::Missed => counts.missed += 1,
            }
        }
        let policy_now = mine.last().and_then(|r| r.retention.as_ref());
        let held: Vec<&AuditSnapshot> = gsnaps.iter().copied().filter(|s| !s.removed).collect();
        let rules = retention::check(policy_now, &held, &judged, now);
        let kept = held
            .iter()
            .map(|s| KeptSnapshot {
                id: s.id.hex(),
                time: s.time,
                host: s.host.clone(),
                coverage: input.coverage.get(&s.id).cloned().unwrap_or_default(),
            })
            .collect();
        out_groups.push(GroupAudit {
            group,
            counts,
            truncated,
            slots: judged,
            newest: held.iter().map(|s| s.time).filter(|t| *t <= now).max(),
            retention: rules,
            snapshots: kept,
        });
    }
    JobAudit {
        job: job.to_string(),
        kind: newest.map_or_else(
            || snaps.first().map(|_| "unrecorded".to_string()).unwrap_or_default(),
            |r| r.kind.clone(),
        ),
        scope: newest.map_or_else(|| "unrecorded".to_string(), |r| r.scope.clone()),
        schedule: newest.map_or_else(String::new, |r| r.schedule.clone()),
        retired: newest.is_some_and(|r| r.retired),
        expected_interval_secs: interval.map(|i| i.num_seconds()),
        late_after_secs: late_after.num_seconds(),
        policies: records
            .iter()
            .map(|r| PolicyShown {
                since: r.time,
                host: r.host.clone(),
                schedule: r.schedule.clone(),
                timezone: r.timezone.clone(),
                retention: if r.retired {
                    "job removed from the config: no more slots expected".to_string()
                } else {
                    r.retention
                        .as_ref()
                        .map_or_else(|| "none: nothing is removed".to_string(), |p| p.describe())
                },
            })
            .collect(),
        groups: out_groups,
    }
}

#[cfg(test)]
mod tests;
