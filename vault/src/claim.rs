//! Slot claims (docs/FORMAT.md section 3a): how several daemons sharing one vault run a
//! cluster-wide job (the etcd snapshot) once per schedule slot instead of once per host.
//!
//! The claim of a slot is a chain of objects, generation 0, 1, 2, ..., each created with
//! `PutMode::Create`: the store lets exactly one creator of a name succeed. The newest readable
//! generation (the head) says who holds the slot and until when (its lease). The holder renews its
//! lease by creating the next generation; when the lease has run out with no snapshot for the slot,
//! another daemon takes the slot over the same way, and the first creator of that name wins.
//! A daemon that sees a slot pass with no snapshot closes the chain with a "missed" generation
//! (and is the one that sends the alert).
//!
//! Claims are sealed metadata (writer key) and named by a keyed tag of the job name, so the store
//! learns neither job nor host names. A claim only counts under its own name: its job, slot and
//! generation must be the ones its name says (a claim copied onto another name is ignored).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, MetaKind, SlotClaim};
use crate::repo::Vault;
use crate::store::PutMode;

/// How often a create answered "exists" for a name that could then not be read is tried again
/// (S3 answers 409 to the loser of two racing conditional writes even when the winner's write
/// fails in turn).
pub const CREATE_ATTEMPTS: u32 = 5;

/// Who claims: the daemon's host name (for people), its ID (random, kept across restarts: what
/// makes a claim its own) and the lease it takes.
#[derive(Clone, Debug)]
pub struct Claimant<'a> {
    pub host: &'a str,
    pub daemon: &'a str,
    pub lease: chrono::Duration,
}

/// The result of claiming a slot.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// This daemon holds the slot (the head generation, its own): run it. `took_over` is the
    /// expired claim of another daemon it replaced.
    Won { held: SlotClaim, took_over: Option<SlotClaim> },
    /// Another daemon holds a lease on the slot that has not run out.
    Taken(SlotClaim),
    /// The slot was closed as missed (or the lease of this daemon was lost when renewing).
    Closed(SlotClaim),
}

/// A claim step's outcome and the objects of the chain that were not valid claims (damaged,
/// sealed with another key, or copied from another name), for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimReport {
    pub outcome: ClaimOutcome,
    pub ignored: Vec<String>,
}

/// The chain of a slot's claim as read from the store.
struct Chain {
    /// The generation the next create uses (one past the last existing object).
    next: u32,
    /// The newest valid claim.
    head: Option<SlotClaim>,
    ignored: Vec<String>,
}

/// What a daemon wants from the chain.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Intent {
    /// Hold the slot (at its start, or to take over an expired lease).
    Claim,
    /// Extend the lease this daemon holds.
    Renew,
    /// Record that the slot passed with no snapshot.
    CloseMissed,
}

/// The end of a claim's lease (claims of older daemons have none: their claiming time plus the
/// reader's lease).
pub fn lease_end(c: &SlotClaim, lease: chrono::Duration) -> DateTime<Utc> {
    c.expires.unwrap_or(c.claimed_at + lease)
}

#[cfg(test)]
thread_local! {
    /// Creates to answer "exists" without writing anything (S3's 409 to a conditional write that
    /// raced another whose write then failed): the one fault a test cannot provoke from outside.
    static PHANTOM_CONFLICTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Create a claim object.
async fn create(vault: &Vault, name: &str, data: Bytes) -> Result<()> {
    #[cfg(test)]
    if PHANTOM_CONFLICTS.with(|n| n.replace(n.get().saturating_sub(1))) > 0 {
        return Err(Error::new(ErrorKind::AlreadyExists, format!("{name} exists (conflict)")));
    }
    vault.store.put(name, data, PutMode::Create).await
}

impl Vault {
    /// Claim `slot` of `job`: create the first generation of its claim, or, when the head's lease
    /// ran out, the next one (a takeover: the caller checks first that the slot has no snapshot).
    /// A head of this daemon's own (a retry after a lost response, or this daemon restarted
    /// mid-slot) is kept, renewed if its lease is running low.
    ///
    /// Needs a store that honours conditional create (recorded at `init` in the config); without
    /// it two daemons could both believe they won, so this refuses.
    pub async fn claim_slot(&self, job: &str, slot: DateTime<Utc>, me: &Claimant<'_>) -> Result<ClaimReport> {
        self.claim_step(job, slot, me, Intent::Claim).await
    }

    /// Extend the lease this daemon holds on `slot` (while its run goes on): `Won` with the new
    /// head, or `Taken`/`Closed` when another daemon took the slot over after the lease ran out.
    pub async fn renew_claim(&self, job: &str, slot: DateTime<Utc>, me: &Claimant<'_>) -> Result<ClaimReport> {
        self.claim_step(job, slot, me, Intent::Renew).await
    }

    /// Close a slot that passed with no snapshot (the caller checked): `Ok(true)` when this daemon
    /// wrote the closing generation (and so sends the alert), `Ok(false)` when the slot was closed
    /// already or another daemon still holds a live lease on it.
    pub async fn close_missed_slot(&self, job: &str, slot: DateTime<Utc>, me: &Claimant<'_>) -> Result<(bool, ClaimReport)> {
        let r = self.claim_step(job, slot, me, Intent::CloseMissed).await?;
        let mine = matches!(&r.outcome, ClaimOutcome::Closed(c) if c.daemon == me.daemon && c.missed);
        Ok((mine, r))
    }

    /// The head of a slot's claim (none when it has no valid claim), with the ignored objects.
    pub async fn slot_holder(&self, job: &str, slot: DateTime<Utc>) -> Result<(Option<SlotClaim>, Vec<String>)> {
        let chain = self.claim_chain(job, slot).await?;
        Ok((chain.head, chain.ignored))
    }

    async fn claim_step(&self, job: &str, slot: DateTime<Utc>, me: &Claimant<'_>, intent: Intent) -> Result<ClaimReport> {
        if !self.config.store.conditional_create {
            return Err(Error::usage(format!(
                "cannot claim a schedule slot of job {job}: the vault's store ({}) did not honour conditional create when the vault was initialised",
                self.store.describe()
            ))
            .hint("give the job scope = \"host\" (every daemon runs it), or keep the vault on a store with conditional writes (S3 with If-None-Match, a local or NFS directory)"));
        }
        let tag = self.writer.job_tag(job);
        for attempt in 0..CREATE_ATTEMPTS {
            let chain = self.claim_chain(job, slot).await?;
            let now = Utc::now();
            let report = |outcome| ClaimReport {
                outcome,
                ignored: chain.ignored.clone(),
            };
            let mut took_over = None;
            match &chain.head {
                Some(c) if c.missed => return Ok(report(ClaimOutcome::Closed(c.clone()))),
                Some(c) if c.daemon == me.daemon => {
                    let low = lease_end(c, me.lease) - now < me.lease * 2 / 3;
                    if intent == Intent::Claim && !low {
                        return Ok(report(ClaimOutcome::Won {
                            held: c.clone(),
                            took_over: None,
                        }));
                    }
                }
                Some(c) if lease_end(c, me.lease) > now => return Ok(report(ClaimOutcome::Taken(c.clone()))),
                // Another daemon's lease ran out: this daemon's own was lost to it, or it may be
                // taken over.
                Some(c) if intent == Intent::Renew => return Ok(report(ClaimOutcome::Closed(c.clone()))),
                Some(c) => took_over = Some(c.clone()),
                None => {}
            }
            let claim = SlotClaim {
                job: job.to_string(),
                slot,
                generation: chain.next,
                host: me.host.to_string(),
                daemon: me.daemon.to_string(),
                claimed_at: now,
                expires: (intent != Intent::CloseMissed).then_some(now + me.lease),
                missed: intent == Intent::CloseMissed,
            };
            let name = format::claim_name(&tag, &slot, chain.next);
            let sealed = self
                .writer
                .seal_meta(MetaKind::SlotClaim, &serde_json::to_vec(&claim).expect("serialize claim"));
            match create(self, &name, Bytes::from(sealed)).await {
                Ok(()) if claim.missed => return Ok(report(ClaimOutcome::Closed(claim))),
                Ok(()) => return Ok(report(ClaimOutcome::Won { held: claim, took_over })),
                // Someone created it first, or the store answered "exists" for a write that then
                // failed (S3's 409 to racing conditional writes): read the chain again.
                Err(e) if e.kind == ErrorKind::AlreadyExists => {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::store(format!(
            "cannot claim slot {} of job {job}: the store refused to create the claim {CREATE_ATTEMPTS} times, saying it exists, yet no claim could be read there",
            slot.to_rfc3339()
        ))
        .hint("the store answers conditional writes inconsistently; the run is tried again, and if this persists check the store (S3 If-None-Match support)"))
    }

    /// Read a slot's claim chain from generation 0 up to the first name that does not exist.
    async fn claim_chain(&self, job: &str, slot: DateTime<Utc>) -> Result<Chain> {
        let tag = self.writer.job_tag(job);
        let mut chain = Chain {
            next: 0,
            head: None,
            ignored: Vec::new(),
        };
        loop {
            let name = format::claim_name(&tag, &slot, chain.next);
            match self.read_claim(&name, job, slot, chain.next).await {
                Ok(c) => chain.head = Some(c),
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(chain),
                // Cannot be read now: let the caller retry rather than act on half a chain.
                Err(e) if matches!(e.kind, ErrorKind::Store | ErrorKind::Io) => return Err(e),
                // Not a valid claim for good (damaged, another key, copied from another name):
                // it holds its name but counts for nothing.
                Err(e) => chain.ignored.push(e.to_string()),
            }
            chain.next += 1;
        }
    }

    /// Read generation `generation` of the claim of `slot` of `job` from `name`: an integrity
    /// error unless the claim says it is exactly that (a claim copied onto another slot's name,
    /// or another job's, does not count).
    pub async fn read_claim(&self, name: &str, job: &str, slot: DateTime<Utc>, generation: u32) -> Result<SlotClaim> {
        let bytes = self.store.get(name).await?;
        let json = self.writer.open_meta(MetaKind::SlotClaim, &bytes, name)?;
        let c: SlotClaim = serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))?;
        if c.job != job || c.slot != slot || c.generation != generation {
            return Err(Error::integrity(format!(
                "claim object {name} holds the claim of job {:?} slot {} generation {}, not of the slot its name says: it was copied there; it is ignored",
                c.job,
                c.slot.to_rfc3339(),
                c.generation
            ))
            .hint("claim objects are never copied by vault; check who can write to the vault's store"));
        }
        Ok(c)
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

    fn slot() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T22:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn me<'a>(host: &'a str, daemon: &'a str) -> Claimant<'a> {
        Claimant {
            host,
            daemon,
            lease: chrono::Duration::minutes(5),
        }
    }

    async fn claim(v: &Vault, job: &str, slot: DateTime<Utc>, c: &Claimant<'_>) -> ClaimOutcome {
        v.claim_slot(job, slot, c).await.unwrap().outcome
    }

    fn won(o: &ClaimOutcome) -> bool {
        matches!(o, ClaimOutcome::Won { .. })
    }

    fn holder(o: &ClaimOutcome) -> (String, String) {
        match o {
            ClaimOutcome::Taken(c) => (c.host.clone(), c.daemon.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn one_daemon_wins_each_slot_and_a_retry_by_the_winner_wins_again() {
        let v = vault().await;
        let slot = slot();
        assert!(won(&claim(&v, "etcd", slot, &me("master-1", "d1")).await));
        // A retry, or the same daemon restarted (its ID is kept): its own claim.
        assert!(won(&claim(&v, "etcd", slot, &me("master-1", "d1")).await));
        assert_eq!(
            holder(&claim(&v, "etcd", slot, &me("master-2", "d2")).await),
            ("master-1".into(), "d1".into())
        );
        // Another slot, another job: free.
        let next = slot + chrono::Duration::hours(1);
        assert!(won(&claim(&v, "etcd", next, &me("master-2", "d2")).await));
        assert!(won(&claim(&v, "other", slot, &me("master-2", "d2")).await));
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

    /// Two daemons given the same host name are two claimants: the second does not win too.
    #[tokio::test]
    async fn a_second_daemon_with_the_same_host_name_does_not_win() {
        let v = vault().await;
        let slot = slot();
        assert!(won(&claim(&v, "etcd", slot, &me("master-1", "d1")).await));
        assert_eq!(
            holder(&claim(&v, "etcd", slot, &me("master-1", "d9")).await),
            ("master-1".into(), "d1".into())
        );
    }

    /// An old claim copied onto a future slot's name (or another job's) does not hold that slot:
    /// it is ignored, named in the report, and the slot is claimed past it.
    #[tokio::test]
    async fn a_claim_copied_onto_another_name_is_ignored() {
        let v = vault().await;
        let slot = slot();
        assert!(won(&claim(&v, "etcd", slot, &me("master-1", "d1")).await));
        let tag = v.writer.job_tag("etcd");
        let old = v.store.get(&format::claim_name(&tag, &slot, 0)).await.unwrap();
        let future = slot + chrono::Duration::hours(1);
        let other_job = format::claim_name(&v.writer.job_tag("files"), &slot, 0);
        for name in [format::claim_name(&tag, &future, 0), other_job] {
            v.store.put(&name, old.clone(), PutMode::Create).await.unwrap();
        }
        let r = v.claim_slot("etcd", future, &me("master-2", "d2")).await.unwrap();
        match &r.outcome {
            ClaimOutcome::Won { held, took_over: None } => assert_eq!(held.generation, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.ignored.len(), 1, "{r:?}");
        assert!(r.ignored[0].contains("copied"), "{r:?}");
        assert!(won(&claim(&v, "files", slot, &me("master-2", "d2")).await));
    }

    /// A store that answers "exists" to a create whose object then cannot be read (S3's 409 to
    /// racing conditional writes whose winner failed) gets the create again instead of every
    /// daemon skipping the slot; an object at the claim's name that is no claim at all (damaged)
    /// does not hold the slot either.
    #[tokio::test]
    async fn a_conflict_with_nothing_behind_it_is_tried_again() {
        let v = vault().await;
        let slot = slot();
        PHANTOM_CONFLICTS.with(|n| n.set(2));
        match v.claim_slot("etcd", slot, &me("master-1", "d1")).await.unwrap().outcome {
            ClaimOutcome::Won { held, .. } => assert_eq!((held.daemon.as_str(), held.generation), ("d1", 0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(PHANTOM_CONFLICTS.with(|n| n.get()), 0);
        // A store that keeps saying so: a transient store error (the run is retried), not a skip.
        PHANTOM_CONFLICTS.with(|n| n.set(CREATE_ATTEMPTS));
        let next = slot + chrono::Duration::hours(1);
        let e = v.claim_slot("etcd", next, &me("master-1", "d1")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Store, "{e}");
        // Damaged bytes at the claim's name.
        let name = format::claim_name(&v.writer.job_tag("etcd"), &next, 0);
        v.store.put(&name, Bytes::from_static(b"damaged"), PutMode::Create).await.unwrap();
        let r = v.claim_slot("etcd", next, &me("master-2", "d2")).await.unwrap();
        assert!(
            matches!(&r.outcome, ClaimOutcome::Won { held, .. } if held.generation == 1),
            "{r:?}"
        );
        assert_eq!(r.ignored.len(), 1, "{r:?}");
    }

    /// A claimant that stops renewing loses the slot once its lease ran out: another daemon takes
    /// it over with the next generation, and the old holder's renewal then fails.
    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_a_live_one_renewed() {
        let v = vault().await;
        let slot = slot();
        let short = |host, daemon| Claimant {
            lease: chrono::Duration::milliseconds(300),
            ..me(host, daemon)
        };
        assert!(won(&claim(&v, "etcd", slot, &short("master-1", "d1")).await));
        // Renewed while live: generation 1, still d1's.
        match v.renew_claim("etcd", slot, &short("master-1", "d1")).await.unwrap().outcome {
            ClaimOutcome::Won { held, .. } => assert_eq!((held.generation, held.daemon.as_str()), (1, "d1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(holder(&claim(&v, "etcd", slot, &short("master-2", "d2")).await).1, "d1");
        tokio::time::sleep(Duration::from_millis(400)).await;
        match claim(&v, "etcd", slot, &short("master-2", "d2")).await {
            ClaimOutcome::Won {
                held,
                took_over: Some(old),
            } => {
                assert_eq!((held.generation, old.daemon.as_str()), (2, "d1"));
            }
            other => panic!("{other:?}"),
        }
        // The first holder learns it lost the slot.
        match v.renew_claim("etcd", slot, &short("master-1", "d1")).await.unwrap().outcome {
            ClaimOutcome::Taken(c) => assert_eq!(c.daemon, "d2"),
            other => panic!("{other:?}"),
        }
        // A slot that passed with no snapshot is closed once, by whoever comes first, and then
        // nobody claims it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (first, _) = v.close_missed_slot("etcd", slot, &short("master-3", "d3")).await.unwrap();
        let (second, _) = v.close_missed_slot("etcd", slot, &short("master-1", "d1")).await.unwrap();
        assert_eq!((first, second), (true, false));
        assert!(matches!(
            claim(&v, "etcd", slot, &short("master-1", "d1")).await,
            ClaimOutcome::Closed(c) if c.missed && c.daemon == "d3"
        ));
        // A live lease is not closed.
        let next = slot + chrono::Duration::hours(1);
        assert!(won(&claim(&v, "etcd", next, &me("master-1", "d1")).await));
        assert!(!v.close_missed_slot("etcd", next, &me("master-3", "d3")).await.unwrap().0);
    }

    #[tokio::test]
    async fn a_store_without_conditional_create_refuses_to_claim() {
        let mut v = vault().await;
        v.config.store.conditional_create = false;
        let e = v.claim_slot("etcd", Utc::now(), &me("h", "d")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.to_string().contains("conditional create"), "{e}");
    }
}
