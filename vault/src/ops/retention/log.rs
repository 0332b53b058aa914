//! The deletion log (docs/FORMAT.md section 8b): `log/<seq>` records, each sealed with the writer
//! key, created once with conditional create and never rewritten, chained by the hash of the
//! record before. It is the tombstone store too: a snapshot is forgotten while its latest record
//! is a `forget`, and `undelete` appends a record that brings it back until prune deletes it.
//!
//! [`read`] lists and opens the whole log; [`DeletionLog::check`] finds what was removed or
//! rewritten (a gap, a broken chain, a head a manifest recorded that no longer matches) and the
//! snapshots deleted outside policy (named as `previous` by a later manifest, or remembered by the
//! catalog, with no record); [`append`] adds a record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::group::Group;
use crate::catalog::{Catalog, SnapshotEntry, VanishedSnapshot};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, Id, LogAction, LogEntry, LogHead, LogRecord, MetaKind, SnapshotManifest};
use crate::repo::Vault;
use crate::store::PutMode;

/// How often an append tries again after another host took the sequence number it wanted.
const APPEND_ATTEMPTS: usize = 20;

/// One record as stored: its name, the hash of its stored bytes and the record, or why it
/// could not be read.
#[derive(Clone, Debug, Serialize)]
pub struct StoredRecord {
    pub seq: u64,
    pub name: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<LogRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// The whole log, in sequence order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeletionLog {
    pub records: Vec<StoredRecord>,
}

/// Something the log's checks found: each is a sign that the vault was changed behind vault's back.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Finding {
    /// `record-missing`, `record-unreadable`, `chain-broken`, `head-mismatch`, `deleted-outside-policy`.
    pub kind: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Id>,
}

/// A snapshot's state in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tombstone {
    /// Forgotten (its latest record is a forget): not counted by retention, deleted by prune.
    Forgotten,
    /// Deleted by prune.
    Pruned,
}

/// The records' names, in sequence order, with their stored sizes.
async fn list_records(vault: &Vault) -> Result<Vec<(u64, String, u64)>> {
    let mut names: Vec<(u64, String, u64)> = vault
        .store
        .list(format::LOG_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| format::log_record_seq(&o.name).map(|seq| (seq, o.name, o.size)))
        .collect();
    names.sort();
    Ok(names)
}

/// Read these records from the store (several at once), in order; records gone since the
/// listing are left out.
async fn fetch(vault: &Vault, names: Vec<(u64, String, u64)>) -> Result<Vec<StoredRecord>> {
    let seqs: HashMap<String, u64> = names.iter().map(|(seq, name, _)| (name.clone(), *seq)).collect();
    let read = vault
        .read_named_meta::<LogRecord>(MetaKind::LogRecord, names.into_iter().map(|(_, name, _)| name).collect())
        .await?;
    Ok(read
        .into_iter()
        .map(|m| {
            let seq = seqs[&m.name];
            let hash = blake3::hash(&m.bytes).to_hex().to_string();
            let (record, unreadable) = match m.value {
                Ok(r) if r.seq == seq => (Some(r), None),
                Ok(r) => (None, Some(format!("it holds record {} under the name of record {seq}", r.seq))),
                Err(e) => (None, Some(e.to_string())),
            };
            StoredRecord {
                seq,
                name: m.name,
                hash,
                record,
                unreadable,
            }
        })
        .collect())
}

/// Read every record of the log from the store, oldest first, to check it: records that do not
/// open or parse are kept with the reason.
pub async fn read(vault: &Vault) -> Result<DeletionLog> {
    let names = list_records(vault).await?;
    Ok(DeletionLog {
        records: fetch(vault, names).await?,
    })
}

/// The log for deciding (tombstones): records the catalog has read before are taken from it when
/// the listing shows them with the same size (records are immutable, L1), the rest are read and
/// remembered. Checking for tampering needs [`read`].
pub async fn read_cached(vault: &Vault, catalog: &mut Catalog) -> Result<DeletionLog> {
    let cached = catalog.cached_log_records()?;
    let names = list_records(vault).await?;
    let mut records = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for (seq, name, size) in names {
        match cached.get(&seq) {
            Some((sz, hash, json)) if *sz == size => match serde_json::from_str::<LogRecord>(json) {
                Ok(record) => records.push(StoredRecord {
                    seq,
                    name,
                    hash: hash.clone(),
                    record: Some(record),
                    unreadable: None,
                }),
                Err(_) => missing.push((seq, name, size)),
            },
            _ => missing.push((seq, name, size)),
        }
    }
    let sizes: HashMap<u64, u64> = missing.iter().map(|(seq, _, size)| (*seq, *size)).collect();
    let fetched = fetch(vault, missing).await?;
    let to_cache: Vec<(u64, u64, String, String)> = fetched
        .iter()
        .filter_map(|r| {
            let record = r.record.as_ref()?;
            Some((
                r.seq,
                sizes[&r.seq],
                r.hash.clone(),
                serde_json::to_string(record).expect("serialize log record"),
            ))
        })
        .collect();
    catalog.cache_log_records(&to_cache)?;
    records.extend(fetched);
    records.sort_by_key(|r| r.seq);
    Ok(DeletionLog { records })
}

/// The log's head (its newest record), without reading the rest: one listing and one read.
pub async fn head(vault: &Vault) -> Result<Option<LogHead>> {
    let newest = vault
        .store
        .list(format::LOG_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| format::log_record_seq(&o.name))
        .max();
    let Some(seq) = newest else {
        return Ok(None);
    };
    let bytes = vault.store.get(&format::log_record_name(seq)).await?;
    Ok(Some(LogHead {
        seq,
        hash: blake3::hash(&bytes).to_hex().to_string(),
    }))
}

/// What an append writes: the action, the snapshots and who does it.
pub struct NewRecord {
    pub action: LogAction,
    pub entries: Vec<LogEntry>,
    pub host: String,
    pub command: String,
}

/// Append a record after the current head. Needs conditional create (two hosts appending at once
/// must not both take one sequence number); the loser reads the new head and tries again.
pub async fn append(vault: &Vault, new: NewRecord, now: DateTime<Utc>) -> Result<StoredRecord> {
    vault.check_may_write("writing to the deletion log")?;
    if !vault.config.store.conditional_create {
        return Err(
            Error::usage("the deletion log needs a store with conditional create, and this vault's store does not have it")
                .hint("forget and undelete refuse to run without it: two hosts could otherwise write the same log record"),
        );
    }
    for _ in 0..APPEND_ATTEMPTS {
        let head = head(vault).await?;
        let seq = head.as_ref().map_or(1, |h| h.seq + 1);
        let record = LogRecord {
            seq,
            prev: head.map(|h| h.hash),
            time: now,
            host: new.host.clone(),
            command: new.command.clone(),
            action: new.action,
            entries: new.entries.clone(),
        };
        let sealed = vault
            .writer
            .seal_meta(MetaKind::LogRecord, &serde_json::to_vec(&record).expect("serialize log record"));
        let name = format::log_record_name(seq);
        let hash = blake3::hash(&sealed).to_hex().to_string();
        match vault.store.put(&name, Bytes::from(sealed), PutMode::Create).await {
            Ok(()) => {
                return Ok(StoredRecord {
                    seq,
                    name,
                    hash,
                    record: Some(record),
                    unreadable: None,
                });
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::store(format!(
        "could not append to the deletion log: {APPEND_ATTEMPTS} attempts each found the sequence number taken"
    ))
    .hint("other hosts are writing to the log at the same time; try again"))
}

/// A log entry for a snapshot, from its manifest.
pub fn entry(id: &Id, m: &SnapshotManifest, reasons: Vec<String>) -> LogEntry {
    LogEntry {
        snapshot: *id,
        time: m.time,
        kind: m.kind.clone(),
        job: m.job.clone(),
        group: Group::of(m).to_string(),
        reasons,
    }
}

impl DeletionLog {
    pub fn head(&self) -> Option<LogHead> {
        self.records.last().map(|r| LogHead {
            seq: r.seq,
            hash: r.hash.clone(),
        })
    }

    /// Each snapshot's tombstone, by its latest record: forgotten, or pruned. Snapshots whose
    /// latest record is an undelete (or that have none) are absent.
    pub fn tombstones(&self) -> BTreeMap<Id, Tombstone> {
        let mut out = BTreeMap::new();
        for r in self.records.iter().filter_map(|r| r.record.as_ref()) {
            for e in &r.entries {
                match r.action {
                    LogAction::Forget => {
                        out.insert(e.snapshot, Tombstone::Forgotten);
                    }
                    LogAction::Undelete => {
                        out.remove(&e.snapshot);
                    }
                    LogAction::Prune => {
                        out.insert(e.snapshot, Tombstone::Pruned);
                    }
                }
            }
        }
        out
    }

    /// The snapshots that are forgotten and not yet pruned.
    pub fn forgotten(&self) -> BTreeSet<Id> {
        self.tombstones()
            .into_iter()
            .filter(|(_, t)| *t == Tombstone::Forgotten)
            .map(|(id, _)| id)
            .collect()
    }

    /// The latest forget record's entry for each snapshot (when, by what, why).
    pub fn last_entries(&self) -> HashMap<Id, (&LogRecord, &LogEntry)> {
        let mut out = HashMap::new();
        for r in self.records.iter().filter_map(|r| r.record.as_ref()) {
            for e in &r.entries {
                out.insert(e.snapshot, (r, e));
            }
        }
        out
    }

    /// Check the log's integrity against itself, the manifests in the vault and what the catalog
    /// remembers:
    /// - every sequence number from 1 to the newest is present and readable;
    /// - each record's `prev` is the hash of the record before;
    /// - each manifest's recorded head is still in the log with the same hash, and no manifest
    ///   recorded a head beyond the newest record (records removed from the end);
    /// - each snapshot a manifest names as `previous`, and each snapshot the catalog saw vanish,
    ///   either still exists or has a forget or prune record: otherwise it was deleted outside policy.
    pub fn check(&self, snapshots: &[SnapshotEntry], vanished: &[VanishedSnapshot]) -> Vec<Finding> {
        let mut out = Vec::new();
        let by_seq: BTreeMap<u64, &StoredRecord> = self.records.iter().map(|r| (r.seq, r)).collect();
        let newest = by_seq.keys().next_back().copied().unwrap_or(0);
        let mut newest_recorded = newest;
        for s in snapshots {
            if let Some(h) = &s.manifest.log_head {
                newest_recorded = newest_recorded.max(h.seq);
            }
        }
        for seq in 1..=newest_recorded {
            match by_seq.get(&seq) {
                None => out.push(Finding {
                    kind: "record-missing",
                    detail: format!(
                        "deletion-log record {seq} ({}) is missing: it was deleted from the store",
                        format::log_record_name(seq)
                    ),
                    snapshot: None,
                }),
                Some(r) => {
                    if let Some(why) = &r.unreadable {
                        out.push(Finding {
                            kind: "record-unreadable",
                            detail: format!("deletion-log record {} cannot be read: {why}", r.name),
                            snapshot: None,
                        });
                    }
                    let expected_prev = if seq == 1 {
                        None
                    } else {
                        by_seq.get(&(seq - 1)).map(|p| p.hash.as_str())
                    };
                    if let (Some(rec), Some(prev_hash)) = (&r.record, expected_prev)
                        && rec.prev.as_deref() != Some(prev_hash)
                    {
                        out.push(Finding {
                            kind: "chain-broken",
                            detail: format!(
                                "deletion-log record {seq} does not follow record {}: one of them was rewritten after it was written",
                                seq - 1
                            ),
                            snapshot: None,
                        });
                    }
                    if seq == 1
                        && let Some(rec) = &r.record
                        && rec.prev.is_some()
                    {
                        out.push(Finding {
                            kind: "chain-broken",
                            detail: "deletion-log record 1 names a record before it: the log's start was rewritten".into(),
                            snapshot: None,
                        });
                    }
                }
            }
        }
        for s in snapshots {
            let Some(h) = &s.manifest.log_head else { continue };
            if let Some(r) = by_seq.get(&h.seq)
                && r.hash != h.hash
            {
                out.push(Finding {
                    kind: "head-mismatch",
                    detail: format!(
                        "snapshot {} recorded deletion-log record {} with another hash: the record was rewritten afterwards",
                        s.id.short(),
                        h.seq
                    ),
                    snapshot: Some(s.id),
                });
            }
        }
        let present: BTreeSet<Id> = snapshots.iter().map(|s| s.id).collect();
        // Gone by policy: forgotten (prune may have deleted the manifest before its record) or pruned.
        let recorded = self.tombstones();
        let mut reported = BTreeSet::new();
        for s in snapshots {
            let Some(p) = s.manifest.previous else { continue };
            if !present.contains(&p) && !recorded.contains_key(&p) && reported.insert(p) {
                out.push(Finding {
                    kind: "deleted-outside-policy",
                    detail: format!(
                        "snapshot {} (named as the previous snapshot by {}) is gone from the vault and no deletion-log record removed it",
                        p.short(),
                        s.id.short()
                    ),
                    snapshot: Some(p),
                });
            }
        }
        for v in vanished {
            if !present.contains(&v.id) && !recorded.contains_key(&v.id) && reported.insert(v.id) {
                out.push(Finding {
                    kind: "deleted-outside-policy",
                    detail: format!(
                        "snapshot {} ({} {} of {}, {}) is gone from the vault since {} and no deletion-log record removed it",
                        v.id.short(),
                        v.kind,
                        v.job,
                        v.host,
                        v.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        v.seen_gone.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    snapshot: Some(v.id),
                });
            }
        }
        out
    }
}

/// The newest snapshot the catalog knows in `manifest`'s group (what a new manifest records as
/// `previous`).
pub fn previous_in_group(catalog: &Catalog, manifest: &SnapshotManifest) -> Result<Option<Id>> {
    let group = Group::of(manifest);
    let host = group.host();
    Ok(catalog
        .recent_snapshots(&manifest.job, host, 64)?
        .into_iter()
        .find(|s| Group::of(&s.manifest) == group)
        .map(|s| s.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PayloadKind;

    fn record(seq: u64, action: LogAction, ids: &[Id]) -> StoredRecord {
        let t = DateTime::UNIX_EPOCH;
        let entries = ids
            .iter()
            .map(|id| LogEntry {
                snapshot: *id,
                time: t,
                kind: PayloadKind::Files,
                job: "nightly".into(),
                group: "host:m/nightly".into(),
                reasons: vec![],
            })
            .collect();
        StoredRecord {
            seq,
            name: format::log_record_name(seq),
            hash: format!("h{seq}"),
            record: Some(LogRecord {
                seq,
                prev: (seq > 1).then(|| format!("h{}", seq - 1)),
                time: t,
                host: "m".into(),
                command: "test".into(),
                action,
                entries,
            }),
            unreadable: None,
        }
    }

    #[test]
    fn the_latest_record_of_a_snapshot_decides_its_tombstone() {
        let (a, b) = (Id::of_stored(b"a"), Id::of_stored(b"b"));
        let log = DeletionLog {
            records: vec![
                record(1, LogAction::Forget, &[a, b]),
                record(2, LogAction::Undelete, &[a]),
                record(3, LogAction::Prune, &[b]),
            ],
        };
        let t = log.tombstones();
        assert_eq!(t.get(&a), None);
        assert_eq!(t.get(&b), Some(&Tombstone::Pruned));
        assert!(log.forgotten().is_empty());
        assert!(log.check(&[], &[]).is_empty(), "a whole chain has no findings");
        let again = DeletionLog {
            records: vec![log.records[0].clone(), log.records[1].clone(), record(3, LogAction::Forget, &[a])],
        };
        assert_eq!(again.forgotten().into_iter().collect::<Vec<_>>(), {
            let mut v = vec![a, b];
            v.sort();
            v
        });
    }

    #[test]
    fn a_gap_and_a_broken_link_are_found() {
        let a = Id::of_stored(b"a");
        let mut third = record(3, LogAction::Forget, &[a]);
        third.record.as_mut().unwrap().prev = Some("other".into());
        let log = DeletionLog {
            records: vec![record(1, LogAction::Forget, &[a]), third],
        };
        let kinds: Vec<&str> = log.check(&[], &[]).iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            ["record-missing"],
            "record 3 follows a missing record 2: only the gap is reported"
        );
        let mut second = record(2, LogAction::Forget, &[a]);
        second.record.as_mut().unwrap().prev = Some("rewritten".into());
        let log = DeletionLog {
            records: vec![record(1, LogAction::Forget, &[a]), second],
        };
        let kinds: Vec<&str> = log.check(&[], &[]).iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["chain-broken"]);
    }
}
