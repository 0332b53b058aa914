//! The audit on a fake clock: slots, retention rules, controls and rendering.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::catalog::VerifiedAt;
use crate::ops::retention::RetentionPolicy;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn policy(job: &str, scope: &str, host: &str, schedule: &str, time: &str, retention: Option<RetentionPolicy>) -> StoredPolicy {
    StoredPolicy {
        name: format!("policies/{job}/{time}"),
        record: PolicyRecord {
            job: job.into(),
            kind: if scope == "cluster" { "etcd-v3".into() } else { "files".into() },
            scope: scope.into(),
            host: host.into(),
            schedule: schedule.into(),
            timezone: None,
            retention,
            retired: false,
            time: t(time),
        },
    }
}

fn snap(n: u32, job: &str, group: &str, host: &str, time: DateTime<Utc>, slot: Option<DateTime<Utc>>) -> AuditSnapshot {
    AuditSnapshot {
        id: Id::of_stored(&n.to_le_bytes()),
        time,
        host: host.into(),
        job: job.into(),
        group: group.into(),
        slot,
        removed: false,
    }
}

fn opts(now: &str) -> AuditOptions {
    AuditOptions {
        since: None,
        job: None,
        thresholds: Thresholds::default(),
        now: t(now),
    }
}

/// Hourly etcd from 2026-11-20 00:00 to 2026-11-23 00:00 on three masters, one slot missed
/// (the 2026-11-21 05:00), one late, daily 7 kept; verified yesterday.
fn three_days() -> AuditInput {
    let daily7 = RetentionPolicy {
        keep_daily: Some(7),
        ..Default::default()
    };
    let policies = vec![policy("etcd", "cluster", "m0", "0 0 * * * *", "2026-11-19T23:30:00Z", Some(daily7))];
    let mut snapshots = Vec::new();
    let start = t("2026-11-20T00:00:00Z");
    for h in 0..72 {
        let slot = start + TimeDelta::hours(h);
        if slot == t("2026-11-21T05:00:00Z") {
            continue;
        }
        let delay = if slot == t("2026-11-21T07:00:00Z") { 1800 } else { 20 };
        let host = ["m0", "m1", "m2"][h as usize % 3];
        snapshots.push(snap(
            h as u32,
            "etcd",
            "cluster:c1/etcd",
            host,
            slot + TimeDelta::seconds(delay),
            Some(slot),
        ));
    }
    let newest = snapshots.last().unwrap().id;
    let mut coverage = HashMap::new();
    coverage.insert(
        newest,
        crate::catalog::Coverage {
            structure: Some(VerifiedAt {
                time: t("2026-11-22T23:30:00Z"),
                ok: true,
                host: "m1".into(),
            }),
            data: None,
        },
    );
    AuditInput {
        policies,
        snapshots,
        coverage,
        recipients: 2,
        deletion_log: None,
        warnings: Vec::new(),
    }
}

#[test]
fn an_audit_reports_taken_late_and_missed_slots_and_the_controls() {
    let input = three_days();
    let r = audit(&input, &opts("2026-11-23T00:05:00Z")).unwrap();
    assert_eq!(r.jobs.len(), 1);
    let j = &r.jobs[0];
    assert_eq!(j.expected_interval_secs, Some(3600));
    assert_eq!(j.late_after_secs, 600);
    let g = &j.groups[0];
    assert_eq!(g.group, "cluster:c1/etcd");
    // Slots from the first record (not the 30-day window) to now less the late allowance.
    assert_eq!(g.counts.expected, 72);
    assert_eq!((g.counts.taken, g.counts.late, g.counts.missed, g.counts.covered), (70, 1, 1, 0));
    let missed: Vec<&SlotResult> = g.slots.iter().filter(|s| s.status == SlotStatus::Missed).collect();
    assert_eq!(missed[0].slot, t("2026-11-21T05:00:00Z"));
    assert_eq!(g.retention[0].rule, "daily 7");
    assert_eq!(g.retention[0].promised, 3, "three days had slots");
    assert_eq!(g.retention[0].status, ControlStatus::Compliant);

    let status = |c: &str| r.controls.iter().find(|x| x.control == c).unwrap().status;
    assert_eq!(status("encryption"), ControlStatus::Compliant);
    assert_eq!(status("minimum-frequency"), ControlStatus::Compliant);
    assert_eq!(status("minimum-retention"), ControlStatus::Compliant);
    assert_eq!(status("recovery-point-age"), ControlStatus::Compliant);
    assert_eq!(status("verification"), ControlStatus::Compliant);
    assert_eq!(status("schedule-adherence"), ControlStatus::NonCompliant, "one slot missed");
    assert!(!r.compliant);

    let mut lenient = opts("2026-11-23T00:05:00Z");
    lenient.thresholds.max_missed = 1;
    assert!(audit(&input, &lenient).unwrap().compliant);
}

#[test]
fn controls_fail_on_stale_backups_thin_policies_rare_schedules_and_no_verification() {
    let mut input = three_days();
    input.coverage.clear();
    input.policies[0].record.retention = Some(RetentionPolicy {
        keep_daily: Some(3),
        ..Default::default()
    });
    input
        .policies
        .push(policy("files", "host", "m0", "0 0 2 1 * *", "2026-11-01T00:00:00Z", None));
    let mut o = opts("2026-12-10T00:00:00Z");
    o.thresholds.max_missed = 10_000;
    let r = audit(&input, &o).unwrap();
    let of = |c: &str, res: &str| r.controls.iter().find(|x| x.control == c && x.resource == res).unwrap().clone();
    assert_eq!(
        of("minimum-retention", "job:etcd").status,
        ControlStatus::NonCompliant,
        "3 days < 7"
    );
    assert_eq!(
        of("minimum-retention", "job:files").status,
        ControlStatus::Compliant,
        "no policy removes nothing"
    );
    assert_eq!(
        of("minimum-frequency", "job:files").status,
        ControlStatus::NonCompliant,
        "monthly > daily"
    );
    let age = of("recovery-point-age", "cluster:c1/etcd");
    assert_eq!(age.status, ControlStatus::NonCompliant, "{}", age.detail);
    assert_eq!(of("verification", "cluster:c1/etcd").status, ControlStatus::NonCompliant);
    assert_eq!(
        of("recovery-point-age", "host:m0/files").status,
        ControlStatus::NonCompliant,
        "a host job that never ran"
    );
    assert!(!r.compliant);
    // A manual job (no recorded schedule) expects no age unless --max-age says one.
    input
        .snapshots
        .push(snap(900, "manual", "host:m0/manual", "m0", t("2026-11-01T00:00:00Z"), None));
    let age_of = |o: &AuditOptions| {
        let r = audit(&input, o).unwrap();
        r.controls
            .iter()
            .find(|x| x.control == "recovery-point-age" && x.resource == "host:m0/manual")
            .unwrap()
            .status
    };
    assert_eq!(age_of(&o), ControlStatus::InsufficientData);
    let mut strict = o.clone();
    strict.thresholds.max_age = Some(TimeDelta::days(30));
    assert_eq!(age_of(&strict), ControlStatus::NonCompliant, "39 days > 30");
    // Daily 3: the three newest days with slots are empty since the captures stopped.
    let rule = &r.jobs[0].groups[0].retention[0];
    assert_eq!(rule.status, ControlStatus::NonCompliant);
    assert_eq!(rule.shortfall, ["2026-12-07", "2026-12-08", "2026-12-09"]);
}

#[test]
fn a_job_filter_naming_nothing_is_an_error_and_renderings_hold_everything() {
    let input = three_days();
    let mut o = opts("2026-11-23T00:05:00Z");
    o.job = Some("etdc".into());
    let e = audit(&input, &o).unwrap_err().to_string();
    assert!(e.contains("etdc"), "{e}");
    o.job = Some("etcd".into());
    let r = audit(&input, &o).unwrap();
    let csv = render::csv(&r);
    assert_eq!(csv.lines().filter(|l| l.starts_with("slot,")).count(), 72);
    assert!(csv.contains("slot,etcd,cluster:c1/etcd,2026-11-21T05:00:00Z,missed,"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("control,") && l.contains("non-compliant")));
    let html = render::html(&r);
    assert!(html.contains("class=\"missed\"") && html.contains("class=\"late\""));
    assert!(html.contains("Deletion log"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["jobs"][0]["groups"][0]["counts"]["missed"], 1);
}

#[test]
fn an_audit_of_two_thousand_snapshots_is_fast() {
    let mut input = AuditInput {
        policies: vec![policy("etcd", "cluster", "m0", "0 */15 * * * *", "2026-10-01T00:00:00Z", None)],
        recipients: 1,
        ..Default::default()
    };
    let start = t("2026-11-01T00:00:00Z");
    for i in 0..2000u32 {
        let slot = start + TimeDelta::minutes(15 * i64::from(i));
        input
            .snapshots
            .push(snap(i, "etcd", "cluster:c1/etcd", "m0", slot + TimeDelta::seconds(5), Some(slot)));
    }
    let began = std::time::Instant::now();
    let mut o = opts("2026-11-21T20:00:00Z");
    o.since = Some(start);
    let r = audit(&input, &o).unwrap();
    let _ = render::html(&r);
    assert!(began.elapsed() < std::time::Duration::from_secs(2), "{:?}", began.elapsed());
    assert_eq!(r.jobs[0].groups[0].counts.missed, 0);
    assert_eq!(r.jobs[0].groups[0].counts.taken, 2000);
}

#[test]
fn snapshots_retention_removed_still_took_their_slots_and_log_findings_fail_a_control() {
    let mut input = three_days();
    // The first day's snapshots were forgotten and pruned: known from the deletion log only
    // (no slot, no host), they still took their slots; they are no longer kept.
    for s in input.snapshots.iter_mut().filter(|s| s.time < t("2026-11-21T00:00:00Z")) {
        s.removed = true;
        s.slot = None;
        s.host = String::new();
    }
    input.deletion_log = Some((crate::ops::retention::log::DeletionLog::default(), Vec::new()));
    let r = audit(&input, &opts("2026-11-23T00:05:00Z")).unwrap();
    let g = &r.jobs[0].groups[0];
    assert_eq!((g.counts.taken, g.counts.late, g.counts.missed, g.counts.covered), (70, 1, 1, 0));
    assert_eq!(g.snapshots.len(), 71 - 24, "removed snapshots are not listed as kept");
    let log_control = r.controls.iter().find(|c| c.control == "deletion-log").unwrap();
    assert_eq!(log_control.status, ControlStatus::Compliant);

    input.deletion_log = Some((
        crate::ops::retention::log::DeletionLog::default(),
        vec![crate::ops::retention::log::Finding {
            kind: "deleted-outside-policy",
            detail: "snapshot 4be1 is gone from the vault and no record forgot it".into(),
            snapshot: None,
        }],
    ));
    let mut lenient = opts("2026-11-23T00:05:00Z");
    lenient.thresholds.max_missed = 10;
    let r = audit(&input, &lenient).unwrap();
    let log_control = r.controls.iter().find(|c| c.control == "deletion-log").unwrap();
    assert_eq!(log_control.status, ControlStatus::NonCompliant);
    assert!(log_control.detail.contains("deleted-outside-policy"), "{}", log_control.detail);
    assert!(!r.compliant, "a finding in the deletion log fails the audit");
    let html = render::html(&r);
    assert!(html.contains("deleted-outside-policy"));
}
