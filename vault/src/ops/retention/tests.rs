//! Retention planning on a fake clock: a simulated year of hourly snapshots under several
//! policies, floors and holds winning, future-dated junk, time zones and DST, groups.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::catalog::{SnapshotEntry, Verification};
use crate::format::{EtcdV3Info, Id, PayloadKind, SnapshotManifest};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn entry(host: &str, job: &str, time: DateTime<Utc>) -> SnapshotEntry {
    let seed = format!("{host}/{job}/{}", time.to_rfc3339());
    SnapshotEntry {
        id: Id(*blake3::hash(seed.as_bytes()).as_bytes()),
        manifest: SnapshotManifest {
            time,
            kind: PayloadKind::Files,
            host: host.into(),
            job: job.into(),
            tags: BTreeMap::new(),
            streams: vec![],
            stats: Default::default(),
            slot: None,
            etcd_v3: None,
            files: None,
            etcd_v2: None,
            etcd_datadir: None,
            etcd_v3_delta: None,
            log_head: None,
            previous: None,
        },
        verification: None,
    }
}

fn etcd(host: &str, cluster: &str, time: DateTime<Utc>) -> SnapshotEntry {
    let mut e = entry(host, "etcd", time);
    e.id = Id(*blake3::hash(format!("{cluster}/{host}/{time}").as_bytes()).as_bytes());
    e.manifest.kind = PayloadKind::EtcdV3;
    e.manifest.etcd_v3 = Some(EtcdV3Info {
        cluster_id: cluster.into(),
        ..Default::default()
    });
    e
}

fn verified(mut e: SnapshotEntry, ok: bool) -> SnapshotEntry {
    e.verification = Some(Verification {
        time: "2026-11-30T00:00:00Z".into(),
        level: "content".into(),
        ok,
        detail: String::new(),
    });
    e
}

/// Hourly snapshots on one host from `from` up to (not including) `to`.
fn hourly(host: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<SnapshotEntry> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        out.push(entry(host, "files", at));
        at += TimeDelta::hours(1);
    }
    out
}

const NOW: &str = "2026-11-30T12:00:00Z";

/// A year of hourly snapshots, 2025-12-01T00:00Z to 2026-11-30T11:00Z.
fn year() -> Vec<SnapshotEntry> {
    hourly("master-0", t("2025-12-01T00:00:00Z"), t("2026-11-30T12:00:00Z"))
}

fn only_group(plan: &RetentionPlan) -> &GroupPlan {
    assert_eq!(
        plan.groups.len(),
        1,
        "{:?}",
        plan.groups.iter().map(|g| g.group.to_string()).collect::<Vec<_>>()
    );
    &plan.groups[0]
}

fn kept_times(g: &GroupPlan) -> BTreeSet<DateTime<Utc>> {
    g.snapshots
        .iter()
        .filter(|s| s.decision == Decision::Keep)
        .map(|s| s.time)
        .collect()
}

fn at<'a>(g: &'a GroupPlan, time: &str) -> &'a SnapshotDecision {
    g.snapshots
        .iter()
        .find(|s| s.time == t(time))
        .unwrap_or_else(|| panic!("no snapshot at {time}"))
}

fn texts(s: &SnapshotDecision) -> Vec<&str> {
    s.reasons.iter().map(|r| r.text.as_str()).collect()
}

fn times(list: &[&str]) -> BTreeSet<DateTime<Utc>> {
    list.iter().map(|s| t(s)).collect()
}

#[test]
fn a_year_of_hourly_snapshots_under_counts_keeps_exactly_the_buckets() {
    let snaps = year();
    let policy = RetentionPolicy {
        keep_last: Some(5),
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        keep_yearly: Some(3),
        ..Default::default()
    };
    let plan = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap();
    let g = only_group(&plan);
    assert_eq!(g.snapshots.len(), 365 * 24 - 12);
    let mut want = times(&[
        // last 5
        "2026-11-30T11:00:00Z",
        "2026-11-30T10:00:00Z",
        "2026-11-30T09:00:00Z",
        "2026-11-30T08:00:00Z",
        "2026-11-30T07:00:00Z",
        // daily: the newest of 11-29 .. 11-24
        "2026-11-29T23:00:00Z",
        "2026-11-28T23:00:00Z",
        "2026-11-27T23:00:00Z",
        "2026-11-26T23:00:00Z",
        "2026-11-25T23:00:00Z",
        "2026-11-24T23:00:00Z",
        // weekly: 2026-11-30 is a Monday (W49); W48 ends 11-29, then W47, W46
        "2026-11-22T23:00:00Z",
        "2026-11-15T23:00:00Z",
    ]);
    // monthly: the last hour of every month back to 2025-12 (yearly adds nothing new)
    for m in [
        "2026-10-31",
        "2026-09-30",
        "2026-08-31",
        "2026-07-31",
        "2026-06-30",
        "2026-05-31",
        "2026-04-30",
        "2026-03-31",
        "2026-02-28",
        "2026-01-31",
        "2025-12-31",
    ] {
        want.insert(t(&format!("{m}T23:00:00Z")));
    }
    assert_eq!(kept_times(g), want);
    assert_eq!((g.keep, g.remove), (24, 365 * 24 - 12 - 24));

    let newest = at(g, "2026-11-30T11:00:00Z");
    assert_eq!(
        texts(newest),
        [
            "last 1/5",
            "daily 1/7 (2026-11-30)",
            "weekly 1/4 (2026-W49)",
            "monthly 1/12 (2026-11)",
            "yearly 1/3 (2026)",
            "newest snapshot of the group (none is verified yet)"
        ]
    );
    assert_eq!(texts(at(g, "2026-11-25T23:00:00Z")), ["daily 6/7 (2026-11-25)"]);
    assert_eq!(texts(at(g, "2026-11-15T23:00:00Z")), ["weekly 4/4 (2026-W46)"]);
    assert_eq!(
        texts(at(g, "2025-12-31T23:00:00Z")),
        ["monthly 12/12 (2025-12)", "yearly 2/3 (2025)"]
    );

    let newest_id = newest.id.short();
    let gone = at(g, "2026-11-30T06:00:00Z");
    assert_eq!(gone.decision, Decision::Remove);
    assert_eq!(
        texts(gone),
        [
            format!("daily bucket 2026-11-30 already kept by {newest_id}"),
            format!("weekly bucket 2026-W49 already kept by {newest_id}"),
            format!("monthly bucket 2026-11 already kept by {newest_id}"),
            format!("yearly bucket 2026 already kept by {newest_id}"),
        ]
    );
    let dec31 = at(g, "2025-12-31T23:00:00Z").id.short();
    assert_eq!(
        texts(at(g, "2025-12-01T00:00:00Z")),
        [
            format!("monthly bucket 2025-12 already kept by {dec31}"),
            format!("yearly bucket 2025 already kept by {dec31}")
        ]
    );
    assert!(plan.needs_confirm && g.needs_confirm, "removing 99% of a group needs --confirm");
    let lenient = RetentionPolicy {
        max_remove_percent: Some(100),
        ..policy
    };
    assert!(!plan_retention(&snaps, &lenient, t(NOW), &[]).unwrap().needs_confirm);
}

#[test]
fn a_year_under_within_rules_keeps_the_windows_counted_back_from_now() {
    let snaps = year();
    let policy = RetentionPolicy {
        keep_within_hourly: Some("2d".parse().unwrap()),
        keep_within_daily: Some("90d".parse().unwrap()),
        ..Default::default()
    };
    let plan = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap();
    let g = only_group(&plan);
    // 48 hours from 11-28T12:00, plus the newest of each day from 09-01 (the cutoff
    // 2026-09-01T12:00 lets 09-01T23:00 in), less the three days whose newest is in both.
    assert_eq!(g.keep, 48 + 91 - 3);
    for s in &g.snapshots {
        let in_hours = s.time >= t("2026-11-28T12:00:00Z");
        let day_end = s.time.format("%H").to_string() == "23" && s.time >= t("2026-09-01T12:00:00Z");
        let newest = s.time == t("2026-11-30T11:00:00Z");
        assert_eq!(
            s.decision == Decision::Keep,
            in_hours || day_end || newest,
            "{}: {}",
            s.time,
            s.reasons_text()
        );
    }
    assert_eq!(
        texts(at(g, "2026-11-28T23:00:00Z")),
        ["within-hourly 2d (2026-11-28 23:00+00:00)", "within-daily 90d (2026-11-28)"]
    );
    assert_eq!(texts(at(g, "2026-09-01T23:00:00Z")), ["within-daily 90d (2026-09-01)"]);
    assert_eq!(texts(at(g, "2026-08-31T23:00:00Z")), ["older than every rule reaches"]);
    let sep1 = at(g, "2026-09-01T23:00:00Z").id.short();
    assert_eq!(
        texts(at(g, "2026-09-01T22:00:00Z")),
        [format!("daily bucket 2026-09-01 already kept by {sep1}")]
    );

    let within = RetentionPolicy {
        keep_within: Some("30d".parse().unwrap()),
        ..Default::default()
    };
    let g = plan_retention(&snaps, &within, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(g.keep, 30 * 24);
    assert!(
        g.snapshots
            .iter()
            .all(|s| (s.decision == Decision::Keep) == (s.time >= t("2026-10-31T12:00:00Z")))
    );
    assert_eq!(texts(at(&g, "2026-10-31T12:00:00Z")), ["within 30d"]);
}

#[test]
fn the_reference_time_is_now_not_the_newest_snapshot() {
    // A host that stopped capturing 60 days ago: keep-within keeps none of it (restic would count
    // back from its newest snapshot and keep it all), the floor keeps its newest.
    let snaps = hourly("old-name", t("2026-09-01T00:00:00Z"), t("2026-10-01T00:00:00Z"));
    let policy = RetentionPolicy {
        keep_within: Some("30d".parse().unwrap()),
        ..Default::default()
    };
    let g = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(g.keep, 1);
    assert_eq!(g.newest, Some(t("2026-09-30T23:00:00Z")));
    assert_eq!(
        texts(at(&g, "2026-09-30T23:00:00Z")),
        ["newest snapshot of the group (none is verified yet)"]
    );
}

#[test]
fn the_newest_verified_snapshot_and_holds_win_over_the_policy() {
    let mut snaps = hourly("master-0", t("2026-11-01T00:00:00Z"), t("2026-11-30T12:00:00Z"));
    let n = snaps.len();
    // verified: one three days ago, and a failed verification of a newer one
    snaps[n - 72] = verified(snaps[n - 72].clone(), true);
    snaps[n - 2] = verified(snaps[n - 2].clone(), false);
    let held = snaps[10].id;
    let expired = snaps[20].id;
    let holds = [
        Hold {
            id: held,
            reason: "CHG-1234".into(),
            until: Some(t("2027-01-01T00:00:00Z")),
        },
        Hold {
            id: expired,
            reason: "CHG-1000".into(),
            until: Some(t("2026-11-29T00:00:00Z")),
        },
        Hold {
            id: Id([7; 32]),
            reason: "typo".into(),
            until: None,
        },
    ];
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    let plan = plan_retention(&snaps, &policy, t(NOW), &holds).unwrap();
    let g = only_group(&plan);
    assert_eq!(
        kept_times(g),
        times(&["2026-11-30T11:00:00Z", "2026-11-27T12:00:00Z", "2026-11-01T10:00:00Z"])
    );
    assert_eq!(texts(at(g, "2026-11-30T11:00:00Z")), ["last 1/1"]);
    let v = at(g, "2026-11-27T12:00:00Z");
    assert!(v.verified);
    assert_eq!(texts(v), ["newest verified snapshot of the group"]);
    let h = at(g, "2026-11-01T10:00:00Z");
    assert!(h.held);
    assert_eq!(texts(h), ["hold: CHG-1234 until 2027-01-01T00:00:00Z"]);
    assert_eq!(
        at(g, "2026-11-01T20:00:00Z").decision,
        Decision::Remove,
        "an expired hold protects nothing"
    );
    assert!(
        plan.notes.iter().any(|n| n.contains("CHG-1000") && n.contains("expired")),
        "{:?}",
        plan.notes
    );
    assert!(
        plan.notes.iter().any(|n| n.contains("typo") && n.contains("no snapshot")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn future_dated_junk_is_set_aside_and_pushes_no_real_snapshot_out() {
    let mut snaps = hourly("master-0", t("2026-11-20T00:00:00Z"), t("2026-11-30T12:00:00Z"));
    let real = snaps.clone();
    // a burst of junk, one per day for 20 days ahead, and one just inside the tolerance
    for d in 1..=20 {
        snaps.push(entry("master-0", "files", t(NOW) + TimeDelta::days(d)));
    }
    snaps.push(entry("master-0", "files", t(NOW) + TimeDelta::minutes(2)));
    let policy = RetentionPolicy {
        keep_last: Some(3),
        keep_daily: Some(3),
        ..Default::default()
    };
    let with_junk = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap();
    let g = only_group(&with_junk);
    assert_eq!(g.set_aside, 20);
    let junk: Vec<_> = g.snapshots.iter().filter(|s| s.future).collect();
    assert_eq!(junk.len(), 20);
    for j in junk {
        assert_eq!(j.decision, Decision::Keep);
        assert_eq!(j.reasons.len(), 1);
        assert!(
            j.reasons[0].text.contains("set aside") && j.reasons[0].text.contains("master-0"),
            "{}",
            j.reasons_text()
        );
    }
    let real_kept: BTreeSet<_> = g
        .snapshots
        .iter()
        .filter(|s| !s.future && s.decision == Decision::Keep)
        .map(|s| s.time)
        .collect();
    let mut want = times(&[
        "2026-11-30T11:00:00Z",
        "2026-11-30T10:00:00Z",
        "2026-11-29T23:00:00Z",
        "2026-11-28T23:00:00Z",
    ]);
    want.insert(t(NOW) + TimeDelta::minutes(2));
    assert_eq!(real_kept, want);
    assert_eq!(
        texts(at(g, "2026-11-30T12:02:00Z")),
        [
            "last 1/3",
            "daily 1/3 (2026-11-30)",
            "newest snapshot of the group (none is verified yet)"
        ]
    );
    assert_eq!(
        g.newest,
        Some(t(NOW) + TimeDelta::minutes(2)),
        "junk is never the group's reference"
    );

    // without the junk, the same real snapshots are kept
    let clean = plan_retention(&real, &policy, t(NOW), &[]).unwrap();
    let clean_kept = kept_times(only_group(&clean));
    assert_eq!(
        clean_kept,
        times(&[
            "2026-11-30T11:00:00Z",
            "2026-11-30T10:00:00Z",
            "2026-11-30T09:00:00Z",
            "2026-11-29T23:00:00Z",
            "2026-11-28T23:00:00Z"
        ])
    );
}

#[test]
fn a_day_boundary_in_berlin_differs_from_utc() {
    let snaps = vec![
        entry("h", "files", t("2026-11-19T12:00:00Z")),
        entry("h", "files", t("2026-11-20T22:30:00Z")), // 23:30 in Berlin, 11-20
        entry("h", "files", t("2026-11-20T23:30:00Z")), // 00:30 in Berlin, 11-21
    ];
    let utc = RetentionPolicy {
        keep_daily: Some(2),
        ..Default::default()
    };
    let berlin = RetentionPolicy {
        timezone: Some("Europe/Berlin".into()),
        ..utc.clone()
    };
    let g = plan_retention(&snaps, &utc, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(kept_times(&g), times(&["2026-11-20T23:30:00Z", "2026-11-19T12:00:00Z"]));
    assert!(texts(at(&g, "2026-11-20T22:30:00Z"))[0].starts_with("daily bucket 2026-11-20 already kept by"));
    let g = plan_retention(&snaps, &berlin, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(kept_times(&g), times(&["2026-11-20T23:30:00Z", "2026-11-20T22:30:00Z"]));
    assert_eq!(texts(at(&g, "2026-11-20T23:30:00Z"))[0], "daily 1/2 (2026-11-21)");
    assert_eq!(texts(at(&g, "2026-11-19T12:00:00Z")), ["older than every rule reaches"]);
}

#[test]
fn dst_changes_keep_hours_apart_and_days_whole() {
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    // fall back on 2026-10-25 at 01:00Z: 02:00 local happens twice
    assert_eq!(Unit::Hourly.bucket(t("2026-10-25T00:00:00Z"), berlin), "2026-10-25 02:00+02:00");
    assert_eq!(Unit::Hourly.bucket(t("2026-10-25T01:00:00Z"), berlin), "2026-10-25 02:00+01:00");
    // the 25-hour day runs from 10-24T22:00Z to 10-25T23:00Z
    assert_eq!(Unit::Daily.bucket(t("2026-10-24T21:59:00Z"), berlin), "2026-10-24");
    assert_eq!(Unit::Daily.bucket(t("2026-10-24T22:00:00Z"), berlin), "2026-10-25");
    assert_eq!(Unit::Daily.bucket(t("2026-10-25T22:59:00Z"), berlin), "2026-10-25");
    assert_eq!(Unit::Daily.bucket(t("2026-10-25T23:00:00Z"), berlin), "2026-10-26");
    // spring forward on 2026-03-29 at 01:00Z: a 23-hour day
    assert_eq!(Unit::Daily.bucket(t("2026-03-28T23:00:00Z"), berlin), "2026-03-29");
    assert_eq!(Unit::Daily.bucket(t("2026-03-29T21:59:00Z"), berlin), "2026-03-29");
    assert_eq!(Unit::Daily.bucket(t("2026-03-29T22:00:00Z"), berlin), "2026-03-30");

    let snaps = hourly("h", t("2026-10-24T00:00:00Z"), t("2026-10-26T01:00:00Z"));
    let policy = RetentionPolicy {
        keep_hourly: Some(30),
        keep_daily: Some(3),
        timezone: Some("Europe/Berlin".into()),
        ..Default::default()
    };
    let g = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap().groups.remove(0);
    // both 02:00 hours count as hours of their own
    assert_eq!(texts(at(&g, "2026-10-25T00:00:00Z"))[0], "hourly 25/30 (2026-10-25 02:00+02:00)");
    assert_eq!(texts(at(&g, "2026-10-25T01:00:00Z"))[0], "hourly 24/30 (2026-10-25 02:00+01:00)");
    // the days: 10-26 (local 01:00), 10-25 ends at 22:00Z (23:00 CET), 10-24 at 21:00Z (23:00 CEST)
    let daily: Vec<_> = g
        .snapshots
        .iter()
        .filter(|s| s.reasons.iter().any(|r| r.rule == "daily"))
        .map(|s| s.time)
        .collect();
    assert_eq!(
        daily,
        [t("2026-10-26T00:00:00Z"), t("2026-10-25T22:00:00Z"), t("2026-10-24T21:00:00Z")]
    );
}

#[test]
fn groups_never_mix_and_each_keeps_its_own() {
    let mut snaps = Vec::new();
    for h in 0..10 {
        let at = t("2026-11-30T00:00:00Z") + TimeDelta::hours(h);
        snaps.push(entry("master-0", "files", at));
        snaps.push(entry("master-1", "files", at + TimeDelta::minutes(1)));
        // one etcd cluster captured by whichever member's daemon claimed the slot
        snaps.push(etcd(if h % 2 == 0 { "master-0" } else { "master-1" }, "cdf818194e3a8c32", at));
        // another cluster, on the same host names
        snaps.push(etcd("master-0", "0123456789abcdef", at + TimeDelta::minutes(2)));
    }
    // a renamed host: old name's snapshots are their own group
    snaps.push(entry("old-master-0", "files", t("2026-06-01T00:00:00Z")));
    let policy = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    };
    let plan = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap();
    let names: Vec<String> = plan.groups.iter().map(|g| g.group.to_string()).collect();
    assert_eq!(
        names,
        [
            "cluster:0123456789abcdef/etcd",
            "cluster:cdf818194e3a8c32/etcd",
            "host:master-0/files",
            "host:master-1/files",
            "host:old-master-0/files"
        ]
    );
    for g in &plan.groups {
        for s in &g.snapshots {
            assert_eq!(Group::of(&snaps.iter().find(|e| e.id == s.id).unwrap().manifest), g.group);
        }
        let want = if g.group.to_string().starts_with("host:old") { 1 } else { 2 };
        assert_eq!(g.keep, want, "{}", g.group);
    }
    let cluster = &plan.groups[1];
    assert_eq!(
        cluster
            .snapshots
            .iter()
            .filter(|s| s.decision == Decision::Keep)
            .map(|s| s.host.as_str())
            .collect::<Vec<_>>(),
        ["master-1", "master-0"],
        "a cluster-wide job counts every member's captures together"
    );

    let scoped = plan
        .clone()
        .restrict(&Scope {
            job: None,
            group: Some("master-1".into()),
        })
        .unwrap();
    assert_eq!(scoped.groups.len(), 1);
    assert_eq!(scoped.groups[0].group.to_string(), "host:master-1/files");
    let e = plan
        .restrict(&Scope {
            job: Some("etc".into()),
            group: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("cluster:cdf818194e3a8c32/etcd"), "{e}");
}

#[test]
fn tags_keep_and_say_which() {
    let mut snaps = hourly("h", t("2026-11-01T00:00:00Z"), t("2026-11-01T05:00:00Z"));
    snaps[1].manifest.tags.insert("change".into(), "CHG-1".into());
    snaps[2].manifest.tags.insert("change".into(), "CHG-2".into());
    let policy = RetentionPolicy {
        keep_tags: vec!["change=CHG-1".into()],
        ..Default::default()
    };
    let g = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(texts(at(&g, "2026-11-01T01:00:00Z")), ["tag change=CHG-1"]);
    assert_eq!(texts(at(&g, "2026-11-01T02:00:00Z")), ["carries no kept tag (change=CHG-1)"]);
    let any = RetentionPolicy {
        keep_tags: vec!["change".into()],
        ..Default::default()
    };
    let g = plan_retention(&snaps, &any, t(NOW), &[]).unwrap().groups.remove(0);
    assert_eq!(texts(at(&g, "2026-11-01T02:00:00Z")), ["tag change=CHG-2"]);
    assert_eq!(g.keep, 3, "two tagged and the newest");
}

#[test]
fn an_empty_policy_plans_nothing() {
    let e = plan_retention(&year()[..3], &RetentionPolicy::default(), t(NOW), &[]).unwrap_err();
    assert!(e.to_string().contains("keeps nothing"), "{e}");
}

#[test]
fn delta_segments_count_toward_no_policy_and_are_never_planned() {
    let mut snaps = Vec::new();
    for h in 0..3 {
        let at = t("2026-11-30T00:00:00Z") + TimeDelta::hours(h);
        snaps.push(etcd("master-0", "cdf818194e3a8c32", at));
        // many segments after each base, newer than it: with them counted, keep_last 2 would
        // keep two segments and no base at all
        for m in 1..5 {
            let mut d = etcd("master-0", "cdf818194e3a8c32", at + TimeDelta::minutes(m));
            d.manifest.kind = PayloadKind::EtcdV3Delta;
            snaps.push(d);
        }
    }
    let policy = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    };
    let plan = plan_retention(&snaps, &policy, t(NOW), &[]).unwrap();
    let g = only_group(&plan);
    assert_eq!(g.snapshots.len(), 3, "only the bases are planned");
    assert!(g.snapshots.iter().all(|s| s.kind == "etcd-v3"));
    assert_eq!(kept_times(g), times(&["2026-11-30T01:00:00Z", "2026-11-30T02:00:00Z"]));
}
