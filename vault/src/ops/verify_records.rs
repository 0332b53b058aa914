//! Verification records (docs/FORMAT.md section 8d): `verifications/<snapshot>/<time>-<random>`
//! objects, one per snapshot a verify run checked, sealed with the writer key, so that an audit
//! from any host sees which snapshots were verified and when (the catalog's own `verifications`
//! table only knows this host's runs). The catalog caches them by object name
//! ([`sync`]), so an audit reads each record once.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::catalog::Catalog;
use crate::crypto::random_bytes;
use crate::error::Result;
use crate::format::{self, Id, MetaKind, VerifyRecord};
use crate::ops::verify::VerifyReport;
use crate::repo::{NamedMeta, Vault};
use crate::store::PutMode;

/// Longest detail kept in a record (the problems of a damaged snapshot can be long).
const MAX_DETAIL: usize = 300;

/// The record's level for a verify level: `structure`, or `data` when stored objects were read.
pub fn record_level(verify_level: &str) -> &'static str {
    if verify_level == "structure" { "structure" } else { "data" }
}

/// Write one record per snapshot of `report`. A record that cannot be written is returned as a
/// warning (the verification itself stands; the catalog has it); nothing here fails the verify.
pub async fn record_report(vault: &Vault, report: &VerifyReport, host: &str, now: DateTime<Utc>) -> Vec<String> {
    if let Err(e) = vault.check_may_write("recording verification results") {
        return vec![format!("verification results not recorded in the vault: {e}")];
    }
    let records: Vec<VerifyRecord> = report
        .snapshots
        .iter()
        .filter_map(|s| {
            let mut detail = s.level.clone();
            if !s.problems.is_empty() {
                detail += ": ";
                detail += &s.problems.join("; ");
            }
            if detail.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail += "...";
            }
            Some(VerifyRecord {
                snapshot: Id::parse(&s.id)?,
                level: record_level(&s.level).to_string(),
                ok: s.ok,
                detail,
                host: host.to_string(),
                time: now,
            })
        })
        .collect();
    let results: Vec<Result<()>> = futures::stream::iter(records)
        .map(|r| async move { write(vault, &r).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err()).map(|e| e.to_string()).collect();
    match failed.first() {
        None => Vec::new(),
        Some(first) => vec![format!(
            "{} of {} verification record(s) could not be written to the vault ({first}); audits from other hosts will not see them",
            failed.len(),
            report.snapshots.len()
        )],
    }
}

async fn write(vault: &Vault, r: &VerifyRecord) -> Result<()> {
    let name = format::verify_record_name(&r.snapshot, &r.time, u32::from_le_bytes(random_bytes()));
    let sealed = vault
        .writer
        .seal_meta(MetaKind::VerifyRecord, &serde_json::to_vec(r).expect("serialize verify record"));
    let mode = if vault.config.store.conditional_create {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    vault.store.put(&name, Bytes::from(sealed), mode).await
}

/// The snapshot a record's name is about.
fn snapshot_of_name(name: &str) -> Option<Id> {
    let rest = name.strip_prefix(format::VERIFY_RECORD_PREFIX)?;
    let (id, rec) = rest.split_once('/')?;
    (!rec.is_empty() && !rec.contains('/')).then_some(())?;
    Id::parse(id)
}

/// Read the records the catalog does not have yet (one listing; one read per new record) into
/// it. Returns the records that did not open or parse (name: why); they are left out.
pub async fn sync(vault: &Vault, catalog: &mut Catalog) -> Result<Vec<String>> {
    let known: HashSet<String> = catalog.verify_record_names()?;
    let new: Vec<String> = vault
        .store
        .list(format::VERIFY_RECORD_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| !known.contains(n))
        .collect();
    let mut good = Vec::new();
    let mut unreadable = Vec::new();
    for NamedMeta { name, value: opened, .. } in vault.read_named_meta::<VerifyRecord>(MetaKind::VerifyRecord, new).await? {
        match opened {
            Ok(r) if snapshot_of_name(&name) == Some(r.snapshot) => good.push((name, r)),
            Ok(_) => unreadable.push(format!("{name}: a record of another snapshot than its name says")),
            Err(e) => unreadable.push(format!("{name}: {e}")),
        }
    }
    catalog.add_verify_records(&good)?;
    Ok(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_their_snapshot_and_levels_map() {
        let id = Id::of_stored(b"s");
        let t = DateTime::parse_from_rfc3339("2026-11-25T22:00:00.412Z").unwrap().to_utc();
        let n = format::verify_record_name(&id, &t, 0xbeef);
        assert_eq!(n, format!("verifications/{id}/20261125T220000.412Z-0000beef"));
        assert_eq!(snapshot_of_name(&n), Some(id));
        assert_eq!(snapshot_of_name(&format!("verifications/{id}/a/b")), None);
        assert_eq!(record_level("structure"), "structure");
        assert_eq!(record_level("stored-objects"), "data");
        assert_eq!(record_level("content"), "data");
    }
}
