//! Lease locks (docs/FORMAT.md sections 15 and 8e): one holder at a time, through a chain of
//! generations `<prefix><n>` each made by conditional create. The newest generation (the head)
//! says who holds the lock and until when; a lease that ran out (by the store's clock) is broken
//! by creating the next generation, a renewal is the holder creating the next generation itself,
//! and a release is a generation marked `released`. Nothing is rewritten, so two takers racing
//! for a generation cannot both win. The prune lock (`locks/prune/`) and each job's delta watcher
//! lock (`locks/deltas/<tag>/`) are two [`LockKind`]s of it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{DELTA_LOCK_PREFIX, MetaKind, PRUNE_LOCK_PREFIX, PruneLock};
use crate::repo::Vault;
use crate::store::PutMode;

/// Which lock: where its generations live, how they are sealed, and how messages name it.
#[derive(Clone, Debug)]
pub struct LockKind {
    /// Generations are `<prefix><generation, 20 digits>`.
    pub prefix: String,
    pub meta: MetaKind,
    /// Who holds it: "prune", "delta watcher".
    pub holder: String,
    /// The lock in messages: "the prune lock of this vault".
    pub lock: String,
    /// The lock in short: "the prune lock".
    pub short: String,
    /// What to do when another holder has it.
    pub wait_hint: String,
}

impl LockKind {
    /// The vault's prune lock (section 15).
    pub fn prune() -> LockKind {
        LockKind {
            prefix: PRUNE_LOCK_PREFIX.into(),
            meta: MetaKind::PruneLock,
            holder: "prune".into(),
            lock: "the prune lock of this vault".into(),
            short: "the prune lock".into(),
            wait_hint: "wait for it to finish (a crashed prune's lease runs out by itself), then run prune again".into(),
        }
    }

    /// The delta watcher lock of a job (section 8e), `job_tag` as in its links.
    pub fn delta_watcher(job: &str, job_tag: &str) -> LockKind {
        LockKind {
            prefix: format!("{DELTA_LOCK_PREFIX}{job_tag}/"),
            meta: MetaKind::DeltaLock,
            holder: "delta watcher".into(),
            lock: format!("the delta watcher lock of job {job}"),
            short: format!("the delta watcher lock of job {job}"),
            wait_hint: "one daemon watches a job at a time; this one stands by and takes over when the holder's lease runs out".into(),
        }
    }

    pub fn name(&self, generation: u64) -> String {
        format!("{}{generation:020}", self.prefix)
    }
}

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

/// A held lease lock.
#[derive(Debug)]
pub struct LeaseLockGuard {
    pub info: LockInfo,
    kind: LockKind,
    host: String,
    lease: chrono::Duration,
    /// `store - host` clock difference (ms), from the clock check.
    skew_ms: i64,
    released: bool,
}

fn store_now(skew_ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(skew_ms)
}

fn generation_of(kind: &LockKind, name: &str) -> Option<u64> {
    let g = name.strip_prefix(kind.prefix.as_str())?;
    (g.len() == 20 && g.bytes().all(|b| b.is_ascii_digit())).then(|| g.parse().ok())?
}

/// Read the head of the lock chain, and every older generation's name.
pub async fn read_head(vault: &Vault, kind: &LockKind) -> Result<(Head, Vec<String>)> {
    let mut gens: Vec<(u64, String)> = vault
        .store
        .list(&kind.prefix)
        .await?
        .into_iter()
        .filter_map(|o| Some((generation_of(kind, &o.name)?, o.name)))
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
            return Err(Error::store(format!("lock generation {name} vanished while being read")).hint("try again"));
        }
        Err(e) => return Err(e),
    };
    let opened = vault.writer.open_meta(kind.meta, &bytes, &name).and_then(|json| {
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
pub fn holder(kind: &LockKind, head: &Head, lease: chrono::Duration, now: DateTime<Utc>) -> Option<String> {
    match head {
        Head::Free => None,
        Head::Lock(l) if l.released => None,
        Head::Lock(l) => {
            let expires = l.expires.unwrap_or(l.created + lease);
            (expires > now).then(|| describe(kind, l))
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

fn describe(kind: &LockKind, l: &PruneLock) -> String {
    format!(
        "the {} of {} (owner {}) since {}, lease until {}",
        kind.holder,
        l.host,
        l.owner,
        rfc(l.created),
        l.expires.map(rfc).unwrap_or_else(|| "?".into())
    )
}

async fn create(vault: &Vault, kind: &LockKind, lock: &PruneLock) -> Result<()> {
    let sealed = vault
        .writer
        .seal_meta(kind.meta, &serde_json::to_vec(lock).expect("serialize lock"));
    vault
        .store
        .put(&kind.name(lock.generation), Bytes::from(sealed), PutMode::Create)
        .await
}

impl LeaseLockGuard {
    /// Take the lock: refused (`AlreadyExists`) while another holder's lease runs; a lease that
    /// ran out is broken (and said so in [`LockInfo::broke`]). Needs conditional create.
    pub async fn take(vault: &Vault, kind: LockKind, host: &str, lease: chrono::Duration, skew_ms: i64) -> Result<LeaseLockGuard> {
        vault.check_may_write(&format!("taking {}", kind.short))?;
        if !vault.config.store.conditional_create {
            return Err(Error::usage(format!(
                "{} has no conditional create (recorded at init): {} cannot make sure it runs alone",
                vault.store.describe(),
                kind.holder
            ))
            .hint(format!(
                "{} needs a store that honours create-if-absent (a local or NFS directory, AWS S3, a recent MinIO)",
                kind.holder
            )));
        }
        let (head, older) = read_head(vault, &kind).await?;
        let now = store_now(skew_ms);
        if let Some(who) = holder(&kind, &head, lease, now) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("another {} holds {}: {who}", kind.holder, kind.lock),
            )
            .hint(kind.wait_hint.clone()));
        }
        let (generation, broke) = match &head {
            Head::Free => (0, None),
            Head::Lock(l) if l.released => (l.generation + 1, None),
            Head::Lock(l) => (l.generation + 1, Some(format!("{} (lease ran out)", describe(&kind, l)))),
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
        match create(vault, &kind, &lock).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("another {} took {} at the same moment", kind.holder, kind.lock),
                )
                .hint(kind.wait_hint.clone()));
            }
            Err(e) => return Err(e),
        }
        if let Some(b) = &broke {
            tracing::warn!("broke {} of {b}", kind.short);
        }
        // Older generations are history nobody needs: the head alone says who holds the lock.
        for name in older.into_iter().chain(generation.checked_sub(1).map(|g| kind.name(g))) {
            let _ = vault.store.delete(&name).await;
        }
        Ok(LeaseLockGuard {
            kind,
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
    /// another holder took the lock (this run's lease had run out): the run must stop.
    pub async fn keep(&mut self, vault: &Vault) -> Result<()> {
        if self.left() > self.lease * 2 / 3 {
            return Ok(());
        }
        self.next(vault, false).await
    }

    /// How much of the lease is left now (store time; negative once it ran out).
    pub fn left(&self) -> chrono::Duration {
        self.info.expires - store_now(self.skew_ms)
    }

    pub fn lease(&self) -> chrono::Duration {
        self.lease
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
        match create(vault, &self.kind, &lock).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.released = true;
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "another {} took {} (generation {}) after this run's lease ran out; this run stopped",
                        self.kind.holder, self.kind.short, lock.generation
                    ),
                )
                .hint(format!(
                    "give {} a longer lease, or look for what stalled this run",
                    self.kind.holder
                )));
            }
            Err(e) => return Err(e),
        }
        let _ = vault.store.delete(&self.kind.name(self.info.generation)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use crate::store::Store;

    #[tokio::test]
    async fn each_jobs_watcher_lock_is_its_own_and_separate_from_prune() {
        let dir = tempfile::tempdir().unwrap();
        let (_, recipient) = crate::crypto::generate_identity();
        let store = Store::open(dir.path().join("vault").to_str().unwrap(), &Default::default()).unwrap();
        store.create_root().unwrap();
        let opts = InitOptions {
            recipients: vec![recipient],
            ..Default::default()
        };
        let (vault, _) = Vault::init(store, &opts).await.unwrap();
        let lease = chrono::Duration::seconds(30);
        let etcd = || LockKind::delta_watcher("etcd", "t1");
        let a = LeaseLockGuard::take(&vault, etcd(), "master-0", lease, 0).await.unwrap();
        let e = LeaseLockGuard::take(&vault, etcd(), "master-1", lease, 0).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(
            e.what.contains("another delta watcher holds the delta watcher lock of job etcd"),
            "{}",
            e.what
        );
        assert!(e.what.contains("master-0"), "{}", e.what);
        // another job's lock and the prune lock are free
        let other = LeaseLockGuard::take(&vault, LockKind::delta_watcher("etcd-b", "t2"), "master-1", lease, 0)
            .await
            .unwrap();
        let prune = LeaseLockGuard::take(&vault, LockKind::prune(), "master-1", lease, 0).await.unwrap();
        assert!(a.left() > chrono::Duration::seconds(25));
        a.release(&vault).await.unwrap();
        let b = LeaseLockGuard::take(&vault, etcd(), "master-1", lease, 0).await.unwrap();
        assert_eq!(b.info.broke, None, "a released lock is taken, not broken");
        assert!(vault.store.list("locks/deltas/t1/").await.unwrap().len() <= 2);
        for g in [b, other, prune] {
            g.release(&vault).await.unwrap();
        }
    }
}
