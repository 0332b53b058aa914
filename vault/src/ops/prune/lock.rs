//! The prune lock (docs/FORMAT.md section 15): one prune at a time per vault, through a chain of
//! generations `locks/prune/<n>` each made by conditional create. The newest generation (the head)
//! says who holds the lock and until when; a lease that ran out (by the store's clock) is broken
//! by creating the next generation, a renewal is the holder creating the next generation itself,
//! and a release is a generation marked `released`. Nothing is rewritten, so two prunes racing
//! for a generation cannot both win.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, MetaKind, PRUNE_LOCK_PREFIX, PruneLock};
use crate::repo::Vault;
use crate::store::PutMode;

/// Default lease of the prune lock.
pub const DEFAULT_LEASE_SECS: i64 = 300;

/// The head of the lock chain as read from the store.
#[derive(Clone, Debug)]
pub enum Head {
    /// No generation at all.
    Free,
    /// A generation that opens and parses.
    Lock(PruneLock),
    /// A generation that does not (damaged, another key): held by nobody known until `modified`
    /// (the store's time it was written) plus the lease.
    Unreadable {
        generation: u64,
        modified: Option<DateTime<Utc>>,
        problem: String,
    },
}

/// What taking the lock found and did (for `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct LockInfo {
    pub owner: String,
    pub generation: u64,
    pub expires: DateTime<Utc>,
    /// The lock whose lease had run out and that this run broke, described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broke: Option<String>,
}

/// A held prune lock.
#[derive(Debug)]
pub struct PruneLockGuard {
    pub info: LockInfo,
    host: String,
    lease: chrono::Duration,
    /// `store - host` clock difference (ms), from the clock check.
    skew_ms: i64,
    released: bool,
}

fn store_now(skew_ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(skew_ms)
}

fn generation_of(name: &str) -> Option<u64> {
    let g = name.strip_prefix(PRUNE_LOCK_PREFIX)?;
    (g.len() == 20 && g.bytes().all(|b| b.is_ascii_digit())).then(|| g.parse().ok())?
}

/// Read the head of the lock chain, and every older generation's name.
pub async fn read_head(vault: &Vault) -> Result<(Head, Vec<String>)> {
    let mut gens: Vec<(u64, String)> = vault
        .store
        .list(PRUNE_LOCK_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| Some((generation_of(&o.name)?, o.name)))
        .collect();
    gens.sort();
    let Some((generation, name)) = gens.pop() else {
        return Ok((Head::Free, Vec::new()));
    };
    let older = gens.into_iter().map(|(_, n)| n).collect();
    let bytes = match vault.store.get(&name).await {
        Ok(b) => b,
        // Removed since the listing: a holder cleans older generations only, so this is
        // someone's doing; read again.
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(Error::store(format!("prune lock {name} vanished while being read")).hint("run prune again"));
        }
        Err(e) => return Err(e),
    };
    let opened = vault.writer.open_meta(MetaKind::PruneLock, &bytes, &name).and_then(|json| {
        serde_json::from_slice::<PruneLock>(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))
    });
    let head = match opened {
        Ok(l) if l.generation == generation => Head::Lock(l),
        Ok(l) => Head::Unreadable {
            generation,
            modified: vault.store.modified(&name).await?,
            problem: format!("{name} holds generation {} (copied from another name)", l.generation),
        },
        Err(e) => Head::Unreadable {
            generation,
            modified: vault.store.modified(&name).await?,
            problem: e.to_string(),
        },
    };
    Ok((head, older))
}

/// Who holds the lock at `now` (store time), if anyone: (description, generation).
pub fn holder(head: &Head, lease: chrono::Duration, now: DateTime<Utc>) -> Option<String> {
    match head {
        Head::Free => None,
        Head::Lock(l) if l.released => None,
        Head::Lock(l) => {
            let expires = l.expires.unwrap_or(l.created + lease);
            (expires > now).then(|| describe(l))
        }
        Head::Unreadable { modified, problem, .. } => {
            let until = modified.map(|m| m + lease).unwrap_or(now);
            (until > now).then(|| format!("an unreadable lock generation ({problem}) until {}", rfc(until)))
        }
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn describe(l: &PruneLock) -> String {
    format!(
        "the prune of {} (owner {}) since {}, lease until {}",
        l.host,
        l.owner,
        rfc(l.created),
        l.expires.map(rfc).unwrap_or_else(|| "?".into())
    )
}

async fn create(vault: &Vault, lock: &PruneLock) -> Result<()> {
    let sealed = vault
        .writer
        .seal_meta(MetaKind::PruneLock, &serde_json::to_vec(lock).expect("serialize prune lock"));
    vault
        .store
        .put(&format::prune_lock_name(lock.generation), Bytes::from(sealed), PutMode::Create)
        .await
}

impl PruneLockGuard {
    /// Take the lock: refused while another prune's lease runs; a lease that ran out is broken
    /// (and said so in [`LockInfo::broke`]). Needs conditional create.
    pub async fn take(vault: &Vault, host: &str, lease: chrono::Duration, skew_ms: i64) -> Result<PruneLockGuard> {
        vault.check_may_write("taking the prune lock")?;
        if !vault.config.store.conditional_create {
            return Err(Error::usage(format!(
                "{} has no conditional create (recorded at init): prune cannot make sure it runs alone",
                vault.store.describe()
            ))
            .hint("prune needs a store that honours create-if-absent (a local or NFS directory, AWS S3, a recent MinIO)"));
        }
        let (head, older) = read_head(vault).await?;
        let now = store_now(skew_ms);
        if let Some(who) = holder(&head, lease, now) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("another prune holds the prune lock of this vault: {who}"),
            )
            .hint("wait for it to finish (a crashed prune's lease runs out by itself), then run prune again"));
        }
        let (generation, broke) = match &head {
            Head::Free => (0, None),
            Head::Lock(l) if l.released => (l.generation + 1, None),
            Head::Lock(l) => (l.generation + 1, Some(format!("{} (lease ran out)", describe(l)))),
            Head::Unreadable { generation, problem, .. } => (generation + 1, Some(format!("unreadable lock generation: {problem}"))),
        };
        let owner = hex::encode(crate::crypto::random_bytes::<8>());
        let lock = PruneLock {
            generation,
            owner: owner.clone(),
            host: host.to_string(),
            created: now,
            expires: Some(now + lease),
            released: false,
        };
        match create(vault, &lock).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "another prune took the prune lock of this vault at the same moment",
                )
                .hint("run prune again after it finished"));
            }
            Err(e) => return Err(e),
        }
        if let Some(b) = &broke {
            tracing::warn!("broke the prune lock of {b}");
        }
        // Older generations are history nobody needs: the head alone says who holds the lock.
        for name in older.into_iter().chain(generation.checked_sub(1).map(format::prune_lock_name)) {
            let _ = vault.store.delete(&name).await;
        }
        Ok(PruneLockGuard {
            info: LockInfo {
                owner,
                generation,
                expires: now + lease,
                broke,
            },
            host: host.to_string(),
            lease,
            skew_ms,
            released: false,
        })
    }

    /// Renew the lease when less than two thirds of it are left (call between steps). Fails when
    /// another prune took the lock (this run's lease had run out): the run must stop.
    pub async fn keep(&mut self, vault: &Vault) -> Result<()> {
        let now = store_now(self.skew_ms);
        if self.info.expires - now > self.lease * 2 / 3 {
            return Ok(());
        }
        self.next(vault, false).await
    }

    async fn next(&mut self, vault: &Vault, released: bool) -> Result<()> {
        let now = store_now(self.skew_ms);
        let lock = PruneLock {
            generation: self.info.generation + 1,
            owner: self.info.owner.clone(),
            host: self.host.clone(),
            created: now,
            expires: (!released).then_some(now + self.lease),
            released,
        };
        match create(vault, &lock).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.released = true;
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "another prune took the prune lock (generation {}) after this run's lease ran out; this run stopped",
                        lock.generation
                    ),
                )
                .hint("give prune a longer lease, or look for what stalled this run; run prune again"));
            }
            Err(e) => return Err(e),
        }
        let _ = vault.store.delete(&format::prune_lock_name(self.info.generation)).await;
        self.info.generation = lock.generation;
        if let Some(e) = lock.expires {
            self.info.expires = e;
        }
        Ok(())
    }

    /// Let go of the lock (also after an error: the caller releases on every path).
    pub async fn release(mut self, vault: &Vault) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        self.next(vault, true).await
    }
}
