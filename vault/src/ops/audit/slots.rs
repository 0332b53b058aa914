//! Schedule adherence: the slots a job's recorded schedule expected, each judged against the
//! snapshots of a group: taken (on time or late), covered (no snapshot was taken for the slot,
//! but one of the group was taken within it: another host's capture of a cluster-wide job, or a
//! manual capture), or missed.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::ops::retention::policy_records::PolicyRecord;

/// At most this many slots are expanded per job and group (an every-second schedule over a year
/// would be 31 million); the report says when it stopped.
pub const MAX_SLOTS: usize = 50_000;

/// A snapshot as the audit sees it (from the catalog).
#[derive(Clone, Debug, Serialize)]
pub struct AuditSnapshot {
    pub id: crate::format::Id,
    pub time: DateTime<Utc>,
    pub host: String,
    pub job: String,
    /// The retention group (`cluster:ID/JOB`, `host:NAME/JOB`).
    pub group: String,
    /// The schedule slot it was taken for (absent for manual captures, and for snapshots known
    /// only from the deletion log).
    pub slot: Option<DateTime<Utc>>,
    /// Forgotten or pruned by retention (the deletion log says so): it was taken, it is no
    /// longer kept.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    Taken,
    Late,
    Covered,
    Missed,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Taken => "taken",
            SlotStatus::Late => "late",
            SlotStatus::Covered => "covered",
            SlotStatus::Missed => "missed",
        }
    }

    /// Whether the slot has a recovery point.
    pub fn has_snapshot(self) -> bool {
        self != SlotStatus::Missed
    }
}

/// One expected slot and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct SlotResult {
    pub slot: DateTime<Utc>,
    pub status: SlotStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Seconds from the slot to the snapshot's time (taken, late and covered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<i64>,
}

/// A cron schedule as recorded (seconds field first), in its time zone.
pub struct RecordedSchedule {
    schedule: cron::Schedule,
    tz: Tz,
}

impl RecordedSchedule {
    pub fn parse(record: &PolicyRecord) -> Result<RecordedSchedule, String> {
        let schedule = cron::Schedule::from_str(&record.schedule)
            .map_err(|e| format!("job {}: recorded schedule {:?} does not parse: {e}", record.job, record.schedule))?;
        let tz = match &record.timezone {
            None => Tz::UTC,
            Some(z) => Tz::from_str(z).map_err(|_| format!("job {}: recorded time zone {z:?} is unknown", record.job))?,
        };
        Ok(RecordedSchedule { schedule, tz })
    }

    /// The slots in `[from, to)`, at most `limit`.
    pub fn slots(&self, from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let start = (from - TimeDelta::milliseconds(1)).with_timezone(&self.tz);
        self.schedule
            .after(&start)
            .map(|t| t.with_timezone(&Utc))
            .take_while(|t| *t < to)
            .take(limit)
            .collect()
    }

    /// The longest gap between consecutive slots over the next 200 from `from` (the interval a
    /// snapshot is expected at; for `0 0 2 * * Mon-Fri` the weekend's three days).
    pub fn expected_interval(&self, from: DateTime<Utc>) -> Option<TimeDelta> {
        let next: Vec<DateTime<Utc>> = self
            .schedule
            .after(&from.with_timezone(&self.tz))
            .take(200)
            .map(|t| t.with_timezone(&Utc))
            .collect();
        next.windows(2).map(|w| w[1] - w[0]).max()
    }
}

/// The slots expected in `[from, to)` by a job's records (oldest first, each in force from its
/// time until the next), with the record each slot falls under. Records whose schedule does not
/// parse give no slots and a warning. `truncated` when [`MAX_SLOTS`] was reached.
pub fn expected_slots<'a>(
    records: &[&'a PolicyRecord],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    warnings: &mut Vec<String>,
) -> (Vec<(DateTime<Utc>, &'a PolicyRecord)>, bool) {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let start = r.time.max(from);
        let end = records.get(i + 1).map_or(to, |n| n.time.min(to));
        if start >= end || r.retired {
            continue;
        }
        match RecordedSchedule::parse(r) {
            Ok(s) => {
                let left = MAX_SLOTS - out.len();
                out.extend(s.slots(start, end, left).into_iter().map(|t| (t, *r)));
                if out.len() >= MAX_SLOTS {
                    return (out, true);
                }
            }
            Err(w) => warnings.push(w),
        }
    }
    (out, false)
}

/// Judge each slot (ascending) against a group's snapshots (ascending by time): a snapshot
/// recorded for the slot takes it (late when more than `late_after` after it); otherwise a
/// snapshot of the group taken between the slot and the next one covers it; else it was missed.
pub fn judge(slots: &[DateTime<Utc>], snapshots: &[&AuditSnapshot], late_after: TimeDelta) -> Vec<SlotResult> {
    use std::collections::HashMap;
    let mut for_slot: HashMap<DateTime<Utc>, &AuditSnapshot> = HashMap::new();
    for s in snapshots {
        if let Some(slot) = s.slot {
            let e = for_slot.entry(slot).or_insert(s);
            if s.time < e.time {
                *e = s;
            }
        }
    }
    let expected: std::collections::HashSet<DateTime<Utc>> = slots.iter().copied().collect();
    let mut out = Vec::with_capacity(slots.len());
    for (i, &slot) in slots.iter().enumerate() {
        let result = |status, s: &AuditSnapshot| SlotResult {
            slot,
            status,
            snapshot: Some(s.id.short()),
            host: Some(s.host.clone()),
            delay_secs: Some((s.time - slot).num_seconds()),
        };
        if let Some(s) = for_slot.get(&slot) {
            let status = if s.time - slot > late_after {
                SlotStatus::Late
            } else {
                SlotStatus::Taken
            };
            out.push(result(status, s));
            continue;
        }
        let end = slots.get(i + 1).copied();
        let first = snapshots.partition_point(|s| s.time < slot);
        let within = snapshots[first..]
            .iter()
            .take_while(|s| end.is_none_or(|e| s.time < e))
            .find(|s| s.slot.is_none_or(|o| !expected.contains(&o)));
        match within {
            // Known from the deletion log only (its slot not recorded there): the slot was taken
            // by the snapshot retention removed later.
            Some(s) if s.removed && s.slot.is_none() && s.host.is_empty() => {
                let status = if s.time - slot > late_after {
                    SlotStatus::Late
                } else {
                    SlotStatus::Taken
                };
                out.push(result(status, s));
            }
            Some(s) if end.is_some() || s.time - slot <= late_after => out.push(result(SlotStatus::Covered, s)),
            _ => out.push(SlotResult {
                slot,
                status: SlotStatus::Missed,
                snapshot: None,
                host: None,
                delay_secs: None,
            }),
        }
    }
    out
}

/// How late a snapshot may be and still count as on time, for a schedule of `interval`: ten
/// minutes, but at most half the interval and at least 30 seconds.
pub fn default_late_after(interval: Option<TimeDelta>) -> TimeDelta {
    let ten = TimeDelta::minutes(10);
    match interval {
        Some(i) => (i / 2).min(ten).max(TimeDelta::seconds(30)),
        None => ten,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Id;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn record(schedule: &str, time: &str) -> PolicyRecord {
        PolicyRecord {
            job: "etcd".into(),
            kind: "etcd-v3".into(),
            scope: "cluster".into(),
            host: "m0".into(),
            schedule: schedule.into(),
            timezone: None,
            retention: None,
            retired: false,
            time: t(time),
        }
    }

    fn snap(n: u8, time: &str, host: &str, slot: Option<&str>) -> AuditSnapshot {
        AuditSnapshot {
            id: Id::of_stored(&[n]),
            time: t(time),
            host: host.into(),
            job: "etcd".into(),
            group: "cluster:c1/etcd".into(),
            slot: slot.map(t),
            removed: false,
        }
    }

    #[test]
    fn slots_follow_the_record_in_force_and_start_with_the_first_record() {
        // Hourly from 10:30, every 30 minutes from 13:00; the audit window starts at 09:00.
        let a = record("0 0 * * * *", "2026-11-20T10:30:00Z");
        let b = record("0 */30 * * * *", "2026-11-20T13:00:00Z");
        let mut w = Vec::new();
        let (slots, truncated) = expected_slots(&[&a, &b], t("2026-11-20T09:00:00Z"), t("2026-11-20T14:10:00Z"), &mut w);
        let times: Vec<String> = slots.iter().map(|(s, _)| s.format("%H:%M").to_string()).collect();
        assert_eq!(times, ["11:00", "12:00", "13:00", "13:30", "14:00"]);
        assert_eq!(slots[1].1.schedule, "0 0 * * * *");
        assert_eq!(slots[2].1.schedule, "0 */30 * * * *");
        assert!(!truncated && w.is_empty());

        let retired = PolicyRecord {
            retired: true,
            ..record("0 0 * * * *", "2026-11-20T12:00:00Z")
        };
        let (until_retired, _) = expected_slots(&[&a, &retired], t("2026-11-20T09:00:00Z"), t("2026-11-20T14:10:00Z"), &mut w);
        let times: Vec<String> = until_retired.iter().map(|(s, _)| s.format("%H:%M").to_string()).collect();
        assert_eq!(times, ["11:00"], "a retired job expects nothing from its retirement on");

        let bad = record("every hour", "2026-11-20T00:00:00Z");
        let (none, _) = expected_slots(&[&bad], t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"), &mut w);
        assert!(none.is_empty());
        assert!(w[0].contains("every hour"), "{w:?}");

        let berlin = PolicyRecord {
            timezone: Some("Europe/Berlin".into()),
            ..record("0 0 2 * * *", "2026-11-01T00:00:00Z")
        };
        let (s, _) = expected_slots(&[&berlin], t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"), &mut w);
        assert_eq!(s[0].0, t("2026-11-20T01:00:00Z"), "02:00 in Berlin is 01:00 UTC in winter");
    }

    #[test]
    fn slots_are_taken_late_covered_by_another_host_or_missed() {
        let slots: Vec<DateTime<Utc>> = ["10:00", "11:00", "12:00", "13:00", "14:00"]
            .iter()
            .map(|h| t(&format!("2026-11-20T{h}:00Z")))
            .collect();
        let snaps = [
            snap(1, "2026-11-20T10:00:07Z", "m0", Some("2026-11-20T10:00:00Z")),
            snap(2, "2026-11-20T11:25:00Z", "m1", Some("2026-11-20T11:00:00Z")),
            // 12:00: m0 was down; m2 captured by hand (or its catch-up) at 12:40.
            snap(3, "2026-11-20T12:40:00Z", "m2", None),
            // 13:00: nothing. 14:00: taken by m1.
            snap(4, "2026-11-20T14:00:02Z", "m1", Some("2026-11-20T14:00:00Z")),
        ];
        let refs: Vec<&AuditSnapshot> = snaps.iter().collect();
        let r = judge(&slots, &refs, TimeDelta::minutes(10));
        let st: Vec<SlotStatus> = r.iter().map(|s| s.status).collect();
        use SlotStatus::*;
        assert_eq!(st, [Taken, Late, Covered, Missed, Taken]);
        assert_eq!(r[0].delay_secs, Some(7));
        assert_eq!(r[1].delay_secs, Some(25 * 60));
        assert_eq!(r[2].host.as_deref(), Some("m2"), "covered by another host");
        assert_eq!(r[4].host.as_deref(), Some("m1"));
        assert!(r[3].snapshot.is_none());
    }

    #[test]
    fn a_snapshot_of_a_later_slot_does_not_cover_an_earlier_one_and_late_thresholds_scale() {
        let slots = [t("2026-11-20T10:00:00Z"), t("2026-11-20T10:01:00Z")];
        // The 10:01 slot's snapshot, taken early by a skewed clock, must not cover 10:00.
        let snaps = [snap(1, "2026-11-20T10:00:59Z", "m0", Some("2026-11-20T10:01:00Z"))];
        let refs: Vec<&AuditSnapshot> = snaps.iter().collect();
        let r = judge(&slots, &refs, TimeDelta::seconds(30));
        assert_eq!(r[0].status, SlotStatus::Missed);
        assert_eq!(default_late_after(Some(TimeDelta::minutes(1))), TimeDelta::seconds(30));
        assert_eq!(default_late_after(Some(TimeDelta::hours(1))), TimeDelta::minutes(10));
        let daily = RecordedSchedule::parse(&record("0 0 2 * * Mon-Fri", "2026-11-01T00:00:00Z")).unwrap();
        assert_eq!(daily.expected_interval(t("2026-11-20T00:00:00Z")), Some(TimeDelta::days(3)));
    }
}
