//! Pending sets (docs/FORMAT.md section 15): the packs a prune pass found unused, recorded in the
//! vault so that every capture, on any host, stops deduplicating against them, and a prune after
//! the grace period deletes those still unused.

use std::collections::HashSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::crypto::random_bytes;
use crate::error::Result;
use crate::format::{self, Id, MetaKind, PrunePending};
use crate::repo::Vault;
use crate::store::PutMode;

/// A pending set as read from the vault.
#[derive(Clone, Debug)]
pub struct StoredPending {
    pub name: String,
    pub pending: PrunePending,
}

/// What the listing of `prune/pending/` holds: the sets that open, and the names of those that do
/// not (damaged, another key: they are ignored, and nothing they name is deleted).
#[derive(Clone, Debug, Default)]
pub struct PendingSets {
    pub sets: Vec<StoredPending>,
    pub unreadable: Vec<String>,
}

impl PendingSets {
    /// Every pack of every readable set.
    pub fn packs(&self) -> HashSet<Id> {
        self.sets.iter().flat_map(|s| s.pending.packs.iter().copied()).collect()
    }
}

/// Read every pending set of the vault, oldest first.
pub async fn read_all(vault: &Vault) -> Result<PendingSets> {
    let mut out = PendingSets::default();
    for o in vault.store.list(format::PRUNE_PENDING_PREFIX).await? {
        let bytes = match vault.store.get(&o.name).await {
            Ok(b) => b,
            // Deleted by a prune since the listing: it no longer holds anything back.
            Err(e) if e.kind == crate::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let opened = vault.writer.open_meta(MetaKind::PrunePending, &bytes, &o.name).and_then(|json| {
            serde_json::from_slice::<PrunePending>(&json)
                .map_err(|e| crate::Error::integrity(format!("{} does not parse", o.name)).with_source(e))
        });
        match opened {
            Ok(pending) => out.sets.push(StoredPending { name: o.name, pending }),
            Err(e) => out.unreadable.push(format!("{}: {e}", o.name)),
        }
    }
    out.sets.sort_by(|a, b| (a.pending.time, &a.name).cmp(&(b.pending.time, &b.name)));
    Ok(out)
}

/// The packs captures must not deduplicate against (C1 with pending sets, P2). A pending set that
/// does not open is named in the log; its packs are not deleted by prune either (P4).
pub async fn pending_packs(vault: &Vault) -> Result<HashSet<Id>> {
    let sets = read_all(vault).await?;
    for u in &sets.unreadable {
        tracing::warn!("prune pending set {u}: ignored (prune deletes nothing it names)");
    }
    Ok(sets.packs())
}

/// Record a pending set; returns its object name.
pub async fn write(vault: &Vault, pending: &PrunePending) -> Result<String> {
    vault.check_may_write("recording a prune pending set")?;
    let name = format::prune_pending_name(&pending.time, u32::from_le_bytes(random_bytes()));
    let sealed = vault
        .writer
        .seal_meta(MetaKind::PrunePending, &serde_json::to_vec(pending).expect("serialize pending set"));
    let mode = if vault.config.store.conditional_create {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    vault.store.put(&name, Bytes::from(sealed), mode).await?;
    Ok(name)
}

/// Whether a set recorded at `time` has waited out `grace` at `now`.
pub fn matured(time: DateTime<Utc>, grace: chrono::Duration, now: DateTime<Utc>) -> bool {
    now - time >= grace
}
