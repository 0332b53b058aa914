//! Retention compliance: what the policy in force promises to keep, against what the vault
//! holds. A bucket rule (`daily 7`) promises a snapshot in each of the 7 newest days that had a
//! slot or hold a snapshot; `last N` promises N snapshots (fewer when fewer slots were expected);
//! `within D` promises every slot of the last D. A promised bucket or slot with no snapshot held
//! is a shortfall: the slot was missed, or its snapshot was removed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::controls::ControlStatus;
use super::slots::{AuditSnapshot, SlotResult};
use crate::ops::retention::{RetentionPolicy, Unit};

/// One rule of the policy and whether the vault holds what it promises.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCheck {
    /// `last 5`, `daily 7`, `within 30d`, `within-daily 90d`.
    pub rule: String,
    pub promised: usize,
    pub held: usize,
    pub status: ControlStatus,
    /// The buckets or slots promised and not held (at most 20 named).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shortfall: Vec<String>,
}

fn rule(rule: String, promised: &BTreeSet<String>, held: &BTreeSet<String>) -> RuleCheck {
    let missing: Vec<String> = promised.difference(held).cloned().collect();
    RuleCheck {
        rule,
        promised: promised.len(),
        held: promised.len() - missing.len(),
        status: if promised.is_empty() {
            ControlStatus::InsufficientData
        } else if missing.is_empty() {
            ControlStatus::Compliant
        } else {
            ControlStatus::NonCompliant
        },
        shortfall: missing.into_iter().take(20).collect(),
    }
}

/// Check each rule of `policy` (the group's newest) against the group's snapshots and slots.
pub fn check(policy: Option<&RetentionPolicy>, snapshots: &[&AuditSnapshot], slots: &[SlotResult], now: DateTime<Utc>) -> Vec<RuleCheck> {
    let Some(p) = policy else { return Vec::new() };
    let tz = p.time_zone().unwrap_or(Tz::UTC);
    let present: Vec<&&AuditSnapshot> = snapshots.iter().filter(|s| s.time <= now).collect();
    let mut out = Vec::new();
    if let Some(n) = p.keep_last() {
        let promised = (n as usize).min(present.len().max(slots.len()));
        let held = present.len().min(n as usize);
        out.push(RuleCheck {
            rule: format!("last {n}"),
            promised,
            held,
            status: if promised == 0 {
                ControlStatus::InsufficientData
            } else if held >= promised {
                ControlStatus::Compliant
            } else {
                ControlStatus::NonCompliant
            },
            shortfall: Vec::new(),
        });
    }
    for u in Unit::ALL {
        let held: BTreeSet<String> = present.iter().map(|s| u.bucket(s.time, tz)).collect();
        if let Some(n) = p.count(u) {
            let mut all: BTreeSet<String> = slots.iter().map(|s| u.bucket(s.slot, tz)).collect();
            all.extend(held.iter().cloned());
            // Bucket names of one unit sort in time order (hourly ones carry the offset, which
            // only reorders the two hours of a DST fall-back).
            let promised: BTreeSet<String> = all.into_iter().rev().take(n as usize).collect();
            out.push(rule(format!("{} {n}", u.as_str()), &promised, &held));
        }
        if let Some(span) = p.within(u) {
            let from = span.before(now, tz);
            let mut promised: BTreeSet<String> = slots.iter().filter(|s| s.slot >= from).map(|s| u.bucket(s.slot, tz)).collect();
            promised.extend(present.iter().filter(|s| s.time >= from).map(|s| u.bucket(s.time, tz)));
            out.push(rule(format!("within-{} {span}", u.as_str()), &promised, &held));
        }
    }
    if let Some(span) = p.keep_within() {
        let from = span.before(now, tz);
        let key = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let promised: BTreeSet<String> = slots.iter().filter(|s| s.slot >= from).map(|s| key(s.slot)).collect();
        let held: BTreeSet<String> = slots
            .iter()
            .filter(|s| s.slot >= from && s.status.has_snapshot())
            .map(|s| key(s.slot))
            .collect();
        out.push(rule(format!("within {span}"), &promised, &held));
    }
    out
}

/// How far back the policy keeps snapshots at least (its longest rule, months as 30 days), given
/// snapshots every `interval`; `None` for a policy that keeps only tagged snapshots.
pub fn horizon(p: &RetentionPolicy, interval: Option<chrono::TimeDelta>) -> Option<chrono::TimeDelta> {
    use chrono::TimeDelta;
    let mut best: Option<TimeDelta> = None;
    let mut take = |d: TimeDelta| best = Some(best.map_or(d, |b| b.max(d)));
    if let Some(n) = p.keep_last()
        && let Some(i) = interval
    {
        take(i * n as i32);
    }
    for u in Unit::ALL {
        let unit = match u {
            Unit::Hourly => TimeDelta::hours(1),
            Unit::Daily => TimeDelta::days(1),
            Unit::Weekly => TimeDelta::weeks(1),
            Unit::Monthly => TimeDelta::days(30),
            Unit::Yearly => TimeDelta::days(365),
        };
        if let Some(n) = p.count(u) {
            // Bucket rules count buckets that had a snapshot: with one every `interval`, a
            // bucket shorter than it does not get one each.
            let step = interval.map_or(unit, |i| unit.max(i));
            take(step * n as i32);
        }
        if let Some(s) = p.within(u) {
            take(s.approx());
        }
    }
    if let Some(s) = p.keep_within() {
        take(s.approx());
    }
    best
}
