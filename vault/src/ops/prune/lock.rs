//! The prune lock (docs/FORMAT.md section 15): one prune at a time per vault, a
//! [`LeaseLockGuard`] of generations `locks/prune/<n>` ([`LockKind::prune`]).

use crate::error::Result;
use crate::ops::lease_lock::{LeaseLockGuard, LockKind};
use crate::repo::Vault;

pub use crate::ops::lease_lock::LockInfo;

/// Default lease of the prune lock.
pub const DEFAULT_LEASE_SECS: i64 = 300;

/// A held prune lock.
#[derive(Debug)]
pub struct PruneLockGuard(LeaseLockGuard);

impl std::ops::Deref for PruneLockGuard {
    type Target = LeaseLockGuard;
    fn deref(&self) -> &LeaseLockGuard {
        &self.0
    }
}

impl PruneLockGuard {
    /// Take the lock: refused while another prune's lease runs; a lease that ran out is broken
    /// (and said so in [`LockInfo::broke`]). Needs conditional create.
    pub async fn take(vault: &Vault, host: &str, lease: chrono::Duration, skew_ms: i64) -> Result<PruneLockGuard> {
        LeaseLockGuard::take(vault, LockKind::prune(), host, lease, skew_ms)
            .await
            .map(PruneLockGuard)
    }

    /// Renew the lease when less than two thirds of it are left (call between steps). Fails when
    /// another prune took the lock (this run's lease had run out): the run must stop.
    pub async fn keep(&mut self, vault: &Vault) -> Result<()> {
        self.0.keep(vault).await
    }

    /// Let go of the lock (also after an error: the caller releases on every path).
    pub async fn release(self, vault: &Vault) -> Result<()> {
        self.0.release(vault).await
    }
}
