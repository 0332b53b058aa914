//! Planning retention: every snapshot of every group with a decision and every reason for it.
//! Reads nothing and changes nothing; applying a plan (tombstones) is a later step.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::group::{Group, Scope};
use super::policy::{RetentionPolicy, Span, Unit};
use crate::catalog::SnapshotEntry;
use crate::error::Result;
use crate::format::{Id, PayloadKind};

/// A snapshot that must not be removed, for a reason, until a time (for good when `None`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hold {
    pub id: Id,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
}

impl Hold {
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Keep,
    Remove,
}

/// One reason for a decision: the rule (`last`, `daily`, `within`, `within-daily`, `tag`,
/// `hold`, `newest-verified`, `newest`, `future`, `bucket-taken`, `beyond-rules`, `no-tag`) and
/// the sentence shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    pub rule: String,
    pub text: String,
}

impl Reason {
    fn new(rule: impl Into<String>, text: impl Into<String>) -> Reason {
        Reason {
            rule: rule.into(),
            text: text.into(),
        }
    }
}

/// A snapshot and what the plan does with it.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotDecision {
    pub id: Id,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub host: String,
    pub job: String,
    pub tags: BTreeMap<String, String>,
    /// Its last verification found it whole.
    pub verified: bool,
    pub decision: Decision,
    /// Dated beyond the future tolerance: set aside (kept, counted by no rule).
    pub future: bool,
    /// An active hold protects it.
    pub held: bool,
    pub reasons: Vec<Reason>,
}

impl SnapshotDecision {
    pub fn reasons_text(&self) -> String {
        self.reasons.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("; ")
    }
}

/// One group's plan, newest snapshot first.
#[derive(Clone, Debug, Serialize)]
pub struct GroupPlan {
    pub group: Group,
    pub snapshots: Vec<SnapshotDecision>,
    pub keep: usize,
    pub remove: usize,
    /// Of those kept, dated in the future and set aside.
    pub set_aside: usize,
    /// The newest snapshot not dated in the future (a group idle for long is a retired or
    /// renamed host, or a stopped job).
    pub newest: Option<DateTime<Utc>>,
    /// It removes more than the policy's `max_remove_percent` of the group.
    pub needs_confirm: bool,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct RetentionPlan {
    /// The reference time every rule counts back from.
    pub now: DateTime<Utc>,
    pub policy: RetentionPolicy,
    pub groups: Vec<GroupPlan>,
    /// Some group needs `--confirm` (see [`GroupPlan::needs_confirm`]).
    pub needs_confirm: bool,
    /// Things the operator should know: expired holds, holds naming no snapshot.
    pub notes: Vec<String>,
}

impl RetentionPlan {
    /// Only the groups `scope` covers; an unknown job or group is an error naming the groups.
    pub fn restrict(mut self, scope: &Scope) -> Result<RetentionPlan> {
        scope.check(self.groups.iter().map(|g| &g.group))?;
        self.groups.retain(|g| scope.covers(&g.group));
        self.needs_confirm = self.groups.iter().any(|g| g.needs_confirm);
        Ok(self)
    }

    pub fn removed(&self) -> impl Iterator<Item = &SnapshotDecision> {
        self.groups
            .iter()
            .flat_map(|g| g.snapshots.iter())
            .filter(|s| s.decision == Decision::Remove)
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Plan retention for every group of `snapshots` under `policy`, counting back from `now`.
///
/// Rules follow restic: newest first, `last N` keeps the N newest, a bucket rule keeps the
/// newest snapshot of each of its N newest buckets that hold one, `within D` keeps everything
/// younger than D, `within-daily D` the newest of each day younger than D, a tag rule every
/// snapshot carrying the tags. Floors no policy overrides: an actively held snapshot is kept,
/// the newest verified snapshot of each group is kept (the newest snapshot when none is
/// verified), and a snapshot dated beyond `now` + the future tolerance is set aside: kept,
/// flagged, and counted by no rule, so junk dated ahead cannot push real snapshots out.
pub fn plan_retention(snapshots: &[SnapshotEntry], policy: &RetentionPolicy, now: DateTime<Utc>, holds: &[Hold]) -> Result<RetentionPlan> {
    let tz = policy.check()?;
    let mut notes = Vec::new();
    let mut active: HashMap<Id, Vec<&Hold>> = HashMap::new();
    for h in holds {
        if !snapshots.iter().any(|s| s.id == h.id) {
            notes.push(format!("hold on {} ({}) names no snapshot in the vault", h.id.short(), h.reason));
        } else if h.active(now) {
            active.entry(h.id).or_default().push(h);
        } else if let Some(until) = h.until {
            notes.push(format!("hold on {} ({}) expired at {}", h.id.short(), h.reason, stamp(until)));
        }
    }

    let mut by_group: BTreeMap<Group, Vec<&SnapshotEntry>> = BTreeMap::new();
    // Delta segments (section 8e) follow their base: they never count toward a policy and are
    // never planned on their own.
    for s in snapshots.iter().filter(|s| s.manifest.kind != PayloadKind::EtcdV3Delta) {
        by_group.entry(Group::of(&s.manifest)).or_default().push(s);
    }
    let groups: Vec<GroupPlan> = by_group
        .into_iter()
        .map(|(group, mut members)| {
            members.sort_by(|a, b| b.manifest.time.cmp(&a.manifest.time).then(b.id.cmp(&a.id)));
            plan_group(group, &members, policy, tz, now, &active)
        })
        .collect();
    Ok(RetentionPlan {
        now,
        policy: policy.clone(),
        needs_confirm: groups.iter().any(|g| g.needs_confirm),
        groups,
        notes,
    })
}

/// Where a bucket rule stands while walking a group newest first.
#[derive(Default)]
struct BucketState {
    /// Buckets kept so far.
    used: u32,
    /// The last bucket kept and the snapshot that filled it.
    last: Option<(String, Id)>,
}

impl BucketState {
    /// Offer the next (older) snapshot: `Ok(n)` when it fills bucket number n, `Err(keeper)`
    /// when its bucket is already kept, `None` when the rule has no bucket left for it.
    fn offer(&mut self, bucket: &str, id: Id, limit: u32) -> Option<std::result::Result<u32, Id>> {
        match &self.last {
            Some((b, keeper)) if b == bucket => Some(Err(*keeper)),
            _ if self.used < limit => {
                self.used += 1;
                self.last = Some((bucket.to_string(), id));
                Some(Ok(self.used))
            }
            _ => None,
        }
    }
}

fn plan_group(
    group: Group,
    members: &[&SnapshotEntry],
    policy: &RetentionPolicy,
    tz: Tz,
    now: DateTime<Utc>,
    holds: &HashMap<Id, Vec<&Hold>>,
) -> GroupPlan {
    let tolerance = policy.future_tolerance();
    let horizon = now + tolerance.approx();
    let is_future = |s: &SnapshotEntry| s.manifest.time > horizon;
    let verified = |s: &SnapshotEntry| s.verification.as_ref().is_some_and(|v| v.ok);
    let floor = members
        .iter()
        .find(|s| !is_future(s) && verified(s))
        .map(|s| (s.id, true))
        .or_else(|| members.iter().find(|s| !is_future(s)).map(|s| (s.id, false)));
    // The oldest time each window reaches, counted back from now on the zone's calendar.
    let within_since = policy.keep_within().map(|span| (span, span.before(now, tz)));
    let bucket_since: BTreeMap<Unit, (Span, DateTime<Utc>)> = Unit::ALL
        .iter()
        .filter_map(|&u| policy.within(u).map(|span| (u, (span, span.before(now, tz)))))
        .collect();

    let mut last_used = 0u32;
    let mut counts: BTreeMap<Unit, BucketState> = BTreeMap::new();
    let mut withins: BTreeMap<Unit, BucketState> = BTreeMap::new();
    let mut decisions = Vec::with_capacity(members.len());
    for s in members {
        let m = &s.manifest;
        let mut keep = Vec::new();
        let mut taken = Vec::new();
        let future = is_future(s);
        if future {
            keep.push(Reason::new(
                "future",
                format!(
                    "dated {}, beyond now + {tolerance}: set aside, counts for no rule (check the clock of host {})",
                    stamp(m.time),
                    m.host
                ),
            ));
        } else {
            if let Some(n) = policy.keep_last()
                && last_used < n
            {
                last_used += 1;
                keep.push(Reason::new("last", format!("last {last_used}/{n}")));
            }
            for unit in Unit::ALL {
                let Some(n) = policy.count(unit) else { continue };
                let bucket = unit.bucket(m.time, tz);
                match counts.entry(unit).or_default().offer(&bucket, s.id, n) {
                    Some(Ok(i)) => keep.push(Reason::new(unit.as_str(), format!("{} {i}/{n} ({bucket})", unit.as_str()))),
                    Some(Err(by)) => taken.push(format!("{} bucket {bucket} already kept by {}", unit.as_str(), by.short())),
                    None => {}
                }
            }
            if let Some((span, since)) = within_since
                && m.time >= since
            {
                keep.push(Reason::new("within", format!("within {span}")));
            }
            for (&unit, &(span, since)) in &bucket_since {
                if m.time < since {
                    continue;
                }
                let bucket = unit.bucket(m.time, tz);
                let rule = format!("within-{}", unit.as_str());
                match withins.entry(unit).or_default().offer(&bucket, s.id, u32::MAX) {
                    Some(Ok(_)) => keep.push(Reason::new(&rule, format!("{rule} {span} ({bucket})"))),
                    Some(Err(by)) => taken.push(format!("{} bucket {bucket} already kept by {}", unit.as_str(), by.short())),
                    None => {}
                }
            }
            if let Some(tags) = policy.keep_tags.iter().find_map(|t| tag_match(t, &m.tags)) {
                keep.push(Reason::new("tag", format!("tag {tags}")));
            }
        }
        let mut held = false;
        for h in holds.get(&s.id).into_iter().flatten() {
            held = true;
            let until = h.until.map_or_else(|| "released".to_string(), stamp);
            keep.push(Reason::new("hold", format!("hold: {} until {until}", h.reason)));
        }
        match floor {
            Some((id, true)) if id == s.id => keep.push(Reason::new("newest-verified", "newest verified snapshot of the group")),
            Some((id, false)) if id == s.id => {
                keep.push(Reason::new("newest", "newest snapshot of the group (none is verified yet)"));
            }
            _ => {}
        }
        let decision = if keep.is_empty() { Decision::Remove } else { Decision::Keep };
        let reasons = if decision == Decision::Keep {
            keep
        } else {
            removal_reasons(taken, policy)
        };
        decisions.push(SnapshotDecision {
            id: s.id,
            time: m.time,
            kind: m.kind.to_string(),
            host: m.host.clone(),
            job: m.job.clone(),
            tags: m.tags.clone(),
            verified: verified(s),
            decision,
            future,
            held,
            reasons,
        });
    }
    let remove = decisions.iter().filter(|d| d.decision == Decision::Remove).count();
    let total = decisions.len();
    GroupPlan {
        group,
        keep: total - remove,
        remove,
        set_aside: decisions.iter().filter(|d| d.future).count(),
        newest: decisions.iter().find(|d| !d.future).map(|d| d.time),
        needs_confirm: remove * 100 > total * usize::from(policy.max_remove_percent()),
        snapshots: decisions,
    }
}

/// Why a snapshot no rule keeps goes: the buckets it lost to another snapshot, else that it is
/// older than every rule reaches (walking newest first, every count was used up and every
/// window ends after it), and that it carries no kept tag.
fn removal_reasons(mut taken: Vec<String>, policy: &RetentionPolicy) -> Vec<Reason> {
    taken.dedup();
    let mut out: Vec<Reason> = taken.into_iter().map(|t| Reason::new("bucket-taken", t)).collect();
    let timed = RetentionPolicy {
        keep_tags: Vec::new(),
        ..policy.clone()
    };
    if out.is_empty() && timed.keeps_something() {
        out.push(Reason::new("beyond-rules", "older than every rule reaches"));
    }
    if !policy.keep_tags.is_empty() {
        out.push(Reason::new(
            "no-tag",
            format!("carries no kept tag ({})", policy.keep_tags.join("; ")),
        ));
    }
    out
}

/// `KEY`, `KEY=VALUE`, or several joined with commas (all must match): the matched tags as
/// `k=v,k2=v2`, or `None`.
fn tag_match(rule: &str, tags: &BTreeMap<String, String>) -> Option<String> {
    let mut matched = Vec::new();
    for part in rule.split(',').map(str::trim) {
        let (key, want) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        let value = tags.get(key)?;
        if want.is_some_and(|w| w != value) {
            return None;
        }
        matched.push(format!("{key}={value}"));
    }
    Some(matched.join(","))
}
