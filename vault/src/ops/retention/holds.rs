//! Holds stored in the vault (docs/FORMAT.md section 8a): `holds/<snapshot>/<time>-<random>`
//! objects, each one sealed hold or release event, created once and never rewritten or deleted.
//! A snapshot's hold state is its latest event (by the sealed time, then the object name); a
//! hold whose `until` has passed is inactive.
//!
//! Events are listed from the store on every use, not cached in the catalog: they are few and
//! small, and a hold must take effect for the next `forget` on every host at once, which a cache
//! synced by name could only promise with the same listing.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::plan::Hold;
use super::policy::Span;
use crate::catalog::Catalog;
use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, HoldAction, HoldEvent, Id, MetaKind};
use crate::repo::Vault;
use crate::store::PutMode;

/// The longest reason accepted (a change or ticket reference and a sentence, not a document).
pub const MAX_REASON_LEN: usize = 1000;

/// One event as stored, with its object name. An event that cannot be read counts as a hold of
/// the snapshot its name gives, for good, dated by its name (`unreadable` says why): damage or
/// junk can keep a snapshot, never release one, and a later release still ends it.
#[derive(Clone, Debug, Serialize)]
pub struct StoredEvent {
    pub name: String,
    #[serde(flatten)]
    pub event: HoldEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl StoredEvent {
    /// Holds (is a hold event whose `until`, if any, is after `now`).
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.event.action == HoldAction::Hold && self.event.until.is_none_or(|u| u > now)
    }
}

/// A snapshot's hold state: its latest event.
#[derive(Clone, Debug, Serialize)]
pub struct HoldState {
    pub snapshot: Id,
    pub active: bool,
    pub latest: StoredEvent,
}

/// Every hold event of the vault, oldest first (by sealed time, then name).
pub async fn read_events(vault: &Vault) -> Result<Vec<StoredEvent>> {
    // Names that are not an event's (stray objects) name no snapshot they could hold.
    let names: Vec<String> = vault
        .store
        .list(format::HOLD_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| format::hold_event_snapshot(n).is_some())
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for m in vault.read_named_meta::<HoldEvent>(MetaKind::HoldEvent, names).await? {
        let snapshot = format::hold_event_snapshot(&m.name).expect("filtered");
        out.push(match m.value {
            Ok(event) if event.snapshot == snapshot => StoredEvent {
                name: m.name,
                event,
                unreadable: None,
            },
            Ok(event) => unreadable(
                &m.name,
                snapshot,
                format!(
                    "it is an event of snapshot {} stored under another snapshot's name",
                    event.snapshot.short()
                ),
            ),
            Err(e) => unreadable(&m.name, snapshot, e.to_string()),
        });
    }
    sort_events(&mut out);
    Ok(out)
}

fn unreadable(name: &str, snapshot: Id, why: String) -> StoredEvent {
    StoredEvent {
        name: name.to_string(),
        event: HoldEvent {
            snapshot,
            action: HoldAction::Hold,
            reason: format!("unreadable hold event {name}"),
            until: None,
            host: String::new(),
            time: time_of_name(name).unwrap_or(DateTime::UNIX_EPOCH),
        },
        unreadable: Some(why),
    }
}

/// The time in an event's name (`.../20261125T220000.412Z-0000dead`).
fn time_of_name(name: &str) -> Option<DateTime<Utc>> {
    let last = name.rsplit('/').next()?;
    let stamp = last.split('-').next()?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").ok().map(|t| t.and_utc())
}

fn sort_events(events: &mut [StoredEvent]) {
    events.sort_by(|a, b| a.event.time.cmp(&b.event.time).then_with(|| a.name.cmp(&b.name)));
}

/// Each snapshot's state (its latest event), in snapshot ID order.
pub fn states(events: &[StoredEvent], now: DateTime<Utc>) -> Vec<HoldState> {
    let mut latest: BTreeMap<Id, &StoredEvent> = BTreeMap::new();
    for e in events {
        let newer = latest
            .get(&e.event.snapshot)
            .is_none_or(|l| (e.event.time, &e.name) > (l.event.time, &l.name));
        if newer {
            latest.insert(e.event.snapshot, e);
        }
    }
    latest
        .into_iter()
        .map(|(snapshot, e)| HoldState {
            snapshot,
            active: e.active(now),
            latest: e.clone(),
        })
        .collect()
}

/// The holds the retention planner takes: each snapshot whose latest event is a hold, expired
/// ones included (the plan notes them, and they protect nothing).
pub fn plan_holds(events: &[StoredEvent], now: DateTime<Utc>) -> Vec<Hold> {
    states(events, now)
        .into_iter()
        .filter(|s| s.latest.event.action == HoldAction::Hold)
        .map(|s| Hold {
            id: s.snapshot,
            reason: s.latest.event.reason,
            until: s.latest.event.until,
        })
        .collect()
}

/// `--until`: an RFC 3339 time, or a span counted forward from `now` (`30d`, `2w`, `12h`).
pub fn parse_until(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.to_utc());
    }
    let span: Span = text.parse().map_err(|_| {
        Error::usage(format!("{text:?} is neither a time nor a duration"))
            .hint("give an RFC 3339 time (2027-01-31T00:00:00Z) or a duration from now (30d, 2w, 12h, 6m)")
    })?;
    let months = span.years.saturating_mul(12).saturating_add(span.months);
    let secs = i64::try_from(span.seconds).unwrap_or(i64::MAX);
    now.checked_add_months(chrono::Months::new(months))
        .and_then(|t| t.checked_add_days(chrono::Days::new(u64::from(span.days))))
        .and_then(|t| t.checked_add_signed(chrono::TimeDelta::try_seconds(secs)?))
        .ok_or_else(|| Error::usage(format!("{text:?} reaches beyond the calendar")))
}

/// What to record: hold `snapshot` (an ID, unique prefix or `latest`) or release it.
#[derive(Clone, Debug)]
pub struct HoldRequest {
    pub snapshot: String,
    pub action: HoldAction,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
    pub host: String,
}

/// Record a hold or release event. A hold needs a snapshot the catalog knows and an `until` in
/// the future; a release needs an active hold. Writes one new object (conditional create where
/// the store has it) and returns it.
pub async fn record(vault: &Vault, catalog: &Catalog, req: &HoldRequest, now: DateTime<Utc>) -> Result<StoredEvent> {
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(Error::usage("a hold or release needs a reason").hint("say why, e.g. --reason \"CHG-1234: keep until the audit\""));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(Error::usage(format!("the reason is longer than {MAX_REASON_LEN} bytes")));
    }
    let what = match req.action {
        HoldAction::Hold => "holding a snapshot",
        HoldAction::Release => "releasing a hold",
    };
    vault.check_may_write(what)?;
    let snapshot = match req.action {
        HoldAction::Hold => {
            if let Some(until) = req.until
                && until <= now
            {
                return Err(Error::usage(format!(
                    "--until {} is not in the future",
                    until.to_rfc3339_opts(SecondsFormat::Secs, true)
                ))
                .hint("a hold ends at --until; give a later time or a duration from now (30d)"));
            }
            catalog.resolve(&req.snapshot)?.id
        }
        HoldAction::Release => {
            if req.until.is_some() {
                return Err(Error::usage("a release takes no --until"));
            }
            let held = states(&read_events(vault).await?, now);
            let id = resolve_held(catalog, &held, &req.snapshot)?;
            if !held.iter().any(|s| s.snapshot == id && s.active) {
                return Err(Error::not_found(format!("snapshot {} has no active hold", id.short()))
                    .hint("list the active holds with `vaultctl holds`"));
            }
            id
        }
    };
    let event = HoldEvent {
        snapshot,
        action: req.action,
        reason: reason.to_string(),
        until: req.until,
        host: req.host.clone(),
        time: now,
    };
    let name = format::hold_event_name(&snapshot, &now, u32::from_le_bytes(random_bytes()));
    let sealed = vault
        .writer
        .seal_meta(MetaKind::HoldEvent, &serde_json::to_vec(&event).expect("serialize hold event"));
    let mode = if vault.config.store.conditional_create {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    vault.store.put(&name, Bytes::from(sealed), mode).await?;
    Ok(StoredEvent {
        name,
        event,
        unreadable: None,
    })
}

/// A release names a snapshot the catalog knows or, if it is gone from there, one with a hold.
fn resolve_held(catalog: &Catalog, held: &[HoldState], prefix: &str) -> Result<Id> {
    match catalog.resolve(prefix) {
        Ok(s) => Ok(s.id),
        Err(e) if e.kind == ErrorKind::NotFound => {
            let p = prefix.to_ascii_lowercase();
            let found: Vec<Id> = held
                .iter()
                .filter(|s| s.active && s.snapshot.hex().starts_with(&p))
                .map(|s| s.snapshot)
                .collect();
            match found.as_slice() {
                [one] => Ok(*one),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn ev(snapshot: Id, action: HoldAction, reason: &str, until: Option<&str>, time: &str, random: u32) -> StoredEvent {
        let time = t(time);
        StoredEvent {
            name: format::hold_event_name(&snapshot, &time, random),
            event: HoldEvent {
                snapshot,
                action,
                reason: reason.into(),
                until: until.map(t),
                host: "master-1".into(),
                time,
            },
            unreadable: None,
        }
    }

    #[test]
    fn the_latest_event_of_each_snapshot_wins() {
        let a = Id::of_stored(b"a");
        let b = Id::of_stored(b"b");
        let now = t("2026-12-01T00:00:00Z");
        let mut events = vec![
            ev(a, HoldAction::Release, "done", None, "2026-11-20T00:00:00Z", 1),
            ev(a, HoldAction::Hold, "CHG-1", None, "2026-11-10T00:00:00Z", 2),
            ev(b, HoldAction::Hold, "CHG-2", None, "2026-11-10T00:00:00Z", 3),
            ev(b, HoldAction::Release, "oops", None, "2026-11-11T00:00:00Z", 4),
            ev(b, HoldAction::Hold, "CHG-3", None, "2026-11-12T00:00:00Z", 5),
        ];
        sort_events(&mut events);
        let s = states(&events, now);
        let of = |id: Id| s.iter().find(|x| x.snapshot == id).unwrap();
        assert!(!of(a).active, "released after it was held");
        assert_eq!(of(a).latest.event.reason, "done");
        assert!(of(b).active, "held again after the release");
        assert_eq!(of(b).latest.event.reason, "CHG-3");
        assert_eq!(
            plan_holds(&events, now),
            [Hold {
                id: b,
                reason: "CHG-3".into(),
                until: None
            }]
        );
    }

    #[test]
    fn equal_times_are_ordered_by_name_and_the_list_order_does_not_matter() {
        let a = Id::of_stored(b"a");
        let now = t("2026-12-01T00:00:00Z");
        let hold = ev(a, HoldAction::Hold, "x", None, "2026-11-10T00:00:00Z", 2);
        let release = ev(a, HoldAction::Release, "y", None, "2026-11-10T00:00:00Z", 1);
        for events in [vec![hold.clone(), release.clone()], vec![release.clone(), hold.clone()]] {
            let s = states(&events, now);
            assert!(s[0].active, "the hold's name (random 2) sorts after the release's (1)");
        }
    }

    #[test]
    fn a_hold_past_its_until_is_inactive_and_still_handed_to_the_planner() {
        let a = Id::of_stored(b"a");
        let events = vec![ev(
            a,
            HoldAction::Hold,
            "CHG-1",
            Some("2026-11-30T00:00:00Z"),
            "2026-11-10T00:00:00Z",
            1,
        )];
        assert!(states(&events, t("2026-11-29T23:59:59Z"))[0].active);
        assert!(!states(&events, t("2026-11-30T00:00:00Z"))[0].active, "until is exclusive");
        let holds = plan_holds(&events, t("2026-12-01T00:00:00Z"));
        assert_eq!(holds.len(), 1, "the plan notes expired holds");
        assert!(!holds[0].active(t("2026-12-01T00:00:00Z")));
    }

    #[test]
    fn an_unreadable_event_holds_its_snapshot_until_a_later_release() {
        let a = Id::of_stored(b"a");
        let name = format!("holds/{a}/20261110T000000.000Z-00000001");
        let junk = unreadable(&name, a, "bad magic".into());
        assert_eq!(junk.event.time, t("2026-11-10T00:00:00Z"));
        let now = t("2026-12-01T00:00:00Z");
        assert!(states(std::slice::from_ref(&junk), now)[0].active);
        let release = ev(a, HoldAction::Release, "checked", None, "2026-11-11T00:00:00Z", 2);
        assert!(!states(&[junk.clone(), release], now)[0].active);
        let mut odd = unreadable(&format!("holds/{a}/garbage"), a, "x".into());
        assert_eq!(odd.event.time, DateTime::UNIX_EPOCH);
        odd.event.time = now;
        assert!(odd.active(now));
    }

    #[test]
    fn until_takes_a_time_or_a_span_from_now() {
        let now = t("2026-01-31T12:00:00Z");
        assert_eq!(parse_until("2027-01-01T00:00:00Z", now).unwrap(), t("2027-01-01T00:00:00Z"));
        assert_eq!(parse_until("2027-01-01T01:00:00+01:00", now).unwrap(), t("2027-01-01T00:00:00Z"));
        assert_eq!(parse_until("30d", now).unwrap(), t("2026-03-02T12:00:00Z"));
        assert_eq!(parse_until("12h", now).unwrap(), t("2026-02-01T00:00:00Z"));
        assert_eq!(
            parse_until("1m", now).unwrap(),
            t("2026-02-28T12:00:00Z"),
            "a month on the calendar"
        );
        assert_eq!(parse_until("1y2w", now).unwrap(), t("2027-02-14T12:00:00Z"));
        let e = parse_until("tomorrow", now).unwrap_err();
        assert!(e.to_string().contains("tomorrow"), "{e}");
    }
}
