//! Controls, in the spirit of AWS Backup Audit Manager's: each evaluated per job, group or vault
//! with a status (compliant, non-compliant, insufficient data) and a sentence saying why. The
//! thresholds are parameters with defaults (`vaultctl audit --help`).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::{AuditInput, JobAudit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlStatus {
    Compliant,
    NonCompliant,
    InsufficientData,
}

impl ControlStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlStatus::Compliant => "compliant",
            ControlStatus::NonCompliant => "non-compliant",
            ControlStatus::InsufficientData => "insufficient-data",
        }
    }
}

/// The controls' parameters.
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// minimum-frequency: a job's schedule must expect a snapshot at least this often.
    pub max_interval: TimeDelta,
    /// minimum-retention: a job's policy must keep snapshots at least this long.
    pub min_retention: TimeDelta,
    /// recovery-point-age: the newest snapshot of each group at most this old; default twice
    /// the job's expected interval (insufficient data for a job with no recorded schedule).
    pub max_age: Option<TimeDelta>,
    /// verification: each group has a snapshot verified whole within this.
    pub verified_within: TimeDelta,
    /// schedule-adherence: at most this many missed slots per group in the window.
    pub max_missed: usize,
    /// A snapshot later than this after its slot is late; default from the schedule.
    pub late_after: Option<TimeDelta>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_interval: TimeDelta::days(1),
            min_retention: TimeDelta::days(7),
            max_age: None,
            verified_within: TimeDelta::days(7),
            max_missed: 0,
            late_after: None,
        }
    }
}

/// One control evaluated for one resource (a job, a group or the vault).
#[derive(Clone, Debug, Serialize)]
pub struct Control {
    /// `minimum-frequency`, `schedule-adherence`, `minimum-retention`, `recovery-point-age`,
    /// `encryption`, `verification`, `deletion-log` (the log's chain is whole and nothing was
    /// deleted outside policy).
    pub control: &'static str,
    /// `job:NAME`, a group (`cluster:ID/JOB`, `host:NAME/JOB`) or `vault`.
    pub resource: String,
    pub status: ControlStatus,
    pub detail: String,
}

fn human(d: TimeDelta) -> String {
    let s = d.num_seconds();
    if s % 86400 == 0 && s >= 86400 {
        format!("{}d", s / 86400)
    } else if s % 3600 == 0 && s >= 3600 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s >= 60 {
        format!("{}min", s / 60)
    } else {
        format!("{s}s")
    }
}

pub fn evaluate(jobs: &[JobAudit], input: &AuditInput, now: DateTime<Utc>, th: &Thresholds) -> Vec<Control> {
    use ControlStatus::*;
    let mut out = Vec::new();
    let mut push = |control, resource: String, status, detail: String| {
        out.push(Control {
            control,
            resource,
            status,
            detail,
        })
    };
    push(
        "encryption",
        "vault".into(),
        if input.recipients > 0 { Compliant } else { NonCompliant },
        format!(
            "every pack is sealed (XChaCha20-Poly1305; the format has no plaintext packs) and its content keys are wrapped to {} age recipient(s)",
            input.recipients
        ),
    );
    match &input.deletion_log {
        None => push(
            "deletion-log",
            "vault".into(),
            InsufficientData,
            "the deletion log was not read".into(),
        ),
        Some((l, f)) if f.is_empty() => push(
            "deletion-log",
            "vault".into(),
            Compliant,
            format!(
                "{} record(s); the hash chain is whole and every snapshot gone from the vault was removed by a recorded forget or prune",
                l.records.len()
            ),
        ),
        Some((_, f)) => push(
            "deletion-log",
            "vault".into(),
            NonCompliant,
            f.iter().map(|x| format!("{}: {}", x.kind, x.detail)).collect::<Vec<_>>().join("; "),
        ),
    }
    for j in jobs {
        let res = format!("job:{}", j.job);
        let interval = j.expected_interval_secs.map(TimeDelta::seconds);
        match interval {
            None if j.retired => push(
                "minimum-frequency",
                res.clone(),
                InsufficientData,
                "the job was removed from the config: no schedule is in force".into(),
            ),
            None if j.policies.is_empty() => push(
                "minimum-frequency",
                res.clone(),
                InsufficientData,
                "no policy record: the job's schedule was never recorded (run it from vaultd)".into(),
            ),
            None => push(
                "minimum-frequency",
                res.clone(),
                InsufficientData,
                format!("schedule {:?} expects no further slot", j.schedule),
            ),
            Some(i) => push(
                "minimum-frequency",
                res.clone(),
                if i <= th.max_interval { Compliant } else { NonCompliant },
                format!(
                    "schedule {:?} expects a snapshot every {} at most (required: {})",
                    j.schedule,
                    human(i),
                    human(th.max_interval)
                ),
            ),
        }
        let newest_policy = j.policies.last();
        match newest_policy {
            None => push("minimum-retention", res.clone(), InsufficientData, "no policy record".into()),
            Some(p) => {
                // The record as stored (its retention), found again among the input's.
                let rec = input
                    .policies
                    .iter()
                    .rev()
                    .find(|r| r.record.job == j.job && r.record.time == p.since)
                    .and_then(|r| r.record.retention.as_ref());
                match rec {
                    None => push(
                        "minimum-retention",
                        res.clone(),
                        Compliant,
                        "no retention policy: nothing is removed".into(),
                    ),
                    Some(pol) => match super::retention::horizon(pol, interval) {
                        Some(h) => push(
                            "minimum-retention",
                            res.clone(),
                            if h >= th.min_retention { Compliant } else { NonCompliant },
                            format!(
                                "policy ({}) keeps snapshots for about {} (required: {})",
                                pol.describe(),
                                human(h),
                                human(th.min_retention)
                            ),
                        ),
                        None => push(
                            "minimum-retention",
                            res.clone(),
                            NonCompliant,
                            format!("policy ({}) keeps only tagged snapshots", pol.describe()),
                        ),
                    },
                }
            }
        }
        // Without --max-age, a group may be twice the schedule's interval old; a job with no
        // recorded schedule (manual captures) expects no age.
        let max_age = th.max_age.or(interval.map(|i| i * 2));
        for g in &j.groups {
            let c = &g.counts;
            push(
                "schedule-adherence",
                g.group.clone(),
                if c.expected == 0 {
                    InsufficientData
                } else if c.missed <= th.max_missed {
                    Compliant
                } else {
                    NonCompliant
                },
                format!(
                    "{} slot(s) expected: {} taken, {} late, {} covered, {} missed (allowed: {})",
                    c.expected, c.taken, c.late, c.covered, c.missed, th.max_missed
                ),
            );
            match (g.newest, max_age) {
                (None, _) => push(
                    "recovery-point-age",
                    g.group.clone(),
                    NonCompliant,
                    "the group holds no snapshot".into(),
                ),
                (Some(t), None) => push(
                    "recovery-point-age",
                    g.group.clone(),
                    InsufficientData,
                    format!(
                        "newest snapshot {} is {} old; the job has no recorded schedule to expect an age from (give --max-age)",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        human(now - t)
                    ),
                ),
                (Some(t), Some(max_age)) => push(
                    "recovery-point-age",
                    g.group.clone(),
                    if now - t <= max_age { Compliant } else { NonCompliant },
                    format!(
                        "newest snapshot {} is {} old (allowed: {})",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        human(now - t),
                        human(max_age)
                    ),
                ),
            }
            let last_ok = g.last_verified_ok();
            let oldest = g.snapshots.iter().map(|s| s.time).min();
            let status = match (last_ok, oldest) {
                (Some(t), _) if now - t <= th.verified_within => Compliant,
                (None, None) => InsufficientData,
                (None, Some(o)) if now - o < th.verified_within => InsufficientData,
                _ => NonCompliant,
            };
            push(
                "verification",
                g.group.clone(),
                status,
                match last_ok {
                    Some(t) => format!(
                        "last verified whole {} ago (required: within {})",
                        human(now - t),
                        human(th.verified_within)
                    ),
                    None => format!(
                        "no snapshot of the group verified whole (required: within {})",
                        human(th.verified_within)
                    ),
                },
            );
        }
    }
    out
}
