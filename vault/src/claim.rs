//! Slot claims (docs/FORMAT.md section 3a): how several daemons sharing one vault run a
//! cluster-wide job (the etcd snapshot) once per schedule slot instead of once per host.
//!
//! The claim of a slot is an object created with `PutMode::Create`: the store lets exactly one
//! creator succeed, and that daemon runs the slot. The others read the claim to say who has it.
//! Claims are sealed metadata (writer key) and named by a keyed tag of the job name, so the store
//! learns neither job nor host names. A claim is written once and never changed.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, MetaKind, SlotClaim};
use crate::repo::Vault;
use crate::store::PutMode;

/// The result of claiming a slot.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// This daemon holds the slot: run it.
    Won,
    /// Another daemon created the claim first (its claim, when it could be read).
    Taken(Option<SlotClaim>),
}

impl Vault {
    /// Claim `slot` of `job` for `host` / `daemon` (a random per-process ID). A claim this host
    /// already holds wins again: a retry after a lost response, or the same host's daemon
    /// restarted after it was killed mid-slot (one daemon runs per host; the caller checks that the
    /// slot has no snapshot yet).
    ///
    /// Needs a store that honours conditional create (recorded at `init` in the config); without
    /// it two daemons could both believe they won, so this refuses.
    pub async fn claim_slot(&self, job: &str, slot: DateTime<Utc>, host: &str, daemon: &str) -> Result<ClaimOutcome> {
        if !self.config.store.conditional_create {
            return Err(Error::usage(format!(
                "cannot claim a schedule slot of job {job}: the vault's store ({}) did not honour conditional create when the vault was initialised",
                self.store.describe()
            ))
            .hint("give the job scope = \"host\" (every daemon runs it), or keep the vault on a store with conditional writes (S3 with If-None-Match, a local or NFS directory)"));
        }
        let name = format::claim_name(&self.writer.job_tag(job), &slot);
        let claim = SlotClaim {
            job: job.to_string(),
            slot,
            host: host.to_string(),
            daemon: daemon.to_string(),
            claimed_at: Utc::now(),
        };
        let sealed = self
            .writer
            .seal_meta(MetaKind::SlotClaim, &serde_json::to_vec(&claim).expect("serialize claim"));
        match self.store.put(&name, Bytes::from(sealed), PutMode::Create).await {
            Ok(()) => Ok(ClaimOutcome::Won),
            Err(e) if e.kind == ErrorKind::AlreadyExists => match self.read_claim(&name).await {
                Ok(c) if c.daemon == daemon || c.host == host => Ok(ClaimOutcome::Won),
                Ok(c) => Ok(ClaimOutcome::Taken(Some(c))),
                // The claim exists but cannot be read now: let the caller retry rather than skip
                // a slot it may hold itself.
                Err(e) if matches!(e.kind, ErrorKind::Store | ErrorKind::Io) => Err(e),
                // Unreadable for good (damaged, another key): someone else's.
                Err(_) => Ok(ClaimOutcome::Taken(None)),
            },
            Err(e) => Err(e),
        }
    }

    /// Read a claim object.
    pub async fn read_claim(&self, name: &str) -> Result<SlotClaim> {
        let bytes = self.store.get(name).await?;
        let json = self.writer.open_meta(MetaKind::SlotClaim, &bytes, name)?;
        serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{InitOptions, Vault};
    use crate::store::Store;

    async fn vault() -> Vault {
        let (_, recipient) = crate::crypto::generate_identity();
        let opts = InitOptions {
            recipients: vec![recipient],
            ..Default::default()
        };
        Vault::init(Store::open("memory://", &Default::default()).unwrap(), &opts)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn one_daemon_wins_each_slot_and_a_retry_by_the_winner_wins_again() {
        let v = vault().await;
        let slot = DateTime::parse_from_rfc3339("2026-11-25T22:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(v.claim_slot("etcd", slot, "master-1", "d1").await.unwrap(), ClaimOutcome::Won);
        assert_eq!(v.claim_slot("etcd", slot, "master-1", "d1").await.unwrap(), ClaimOutcome::Won);
        // The same host's next daemon process (restarted mid-slot) takes its claim back.
        assert_eq!(v.claim_slot("etcd", slot, "master-1", "d9").await.unwrap(), ClaimOutcome::Won);
        match v.claim_slot("etcd", slot, "master-2", "d2").await.unwrap() {
            ClaimOutcome::Taken(Some(c)) => assert_eq!((c.host.as_str(), c.slot), ("master-1", slot)),
            other => panic!("{other:?}"),
        }
        // Another slot, another job: free.
        let next = slot + chrono::Duration::hours(1);
        assert_eq!(v.claim_slot("etcd", next, "master-2", "d2").await.unwrap(), ClaimOutcome::Won);
        assert_eq!(v.claim_slot("other", slot, "master-2", "d2").await.unwrap(), ClaimOutcome::Won);
        // Names hide the job name.
        let names: Vec<_> = v
            .store
            .list(format::CLAIM_PREFIX)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| !n.contains("etcd") && !n.contains("other")), "{names:?}");
    }

    #[tokio::test]
    async fn a_store_without_conditional_create_refuses_to_claim() {
        let mut v = vault().await;
        v.config.store.conditional_create = false;
        let e = v.claim_slot("etcd", Utc::now(), "h", "d").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.to_string().contains("conditional create"), "{e}");
    }
}
