//! The clock check before a prune (docs/FORMAT.md section 15, P6): the grace period and the lock's
//! lease are judged with clocks, so the host's and the store's must agree.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::PRUNE_LOCK_PREFIX;
use crate::repo::Vault;
use crate::store::PutMode;

/// Default largest difference between the host and store clocks a prune accepts.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;

/// The host's and the store's clocks, compared.
#[derive(Clone, Debug, Serialize)]
pub struct ClockCheck {
    pub host: DateTime<Utc>,
    pub store: DateTime<Utc>,
    /// `store - host`, in milliseconds.
    pub skew_ms: i64,
}

impl ClockCheck {
    /// The store's time now, judged from the host clock and the measured skew.
    pub fn store_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.skew_ms)
    }
}

/// Write a probe object, read back the time the store gives it, remove it, and compare with the
/// host clock at the middle of the write. Refuses (naming both times) when they differ by more than
/// `max_skew`.
pub async fn check(vault: &Vault, max_skew: chrono::Duration) -> Result<ClockCheck> {
    let name = format!("{PRUNE_LOCK_PREFIX}clock-probe-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    let before = Utc::now();
    vault
        .store
        .put(&name, Bytes::from_static(b"clock probe"), PutMode::Overwrite)
        .await?;
    let after = Utc::now();
    let stored = vault.store.modified(&name).await;
    vault.store.delete(&name).await?;
    let store = stored?.ok_or_else(|| {
        Error::store(format!(
            "{} lost the clock probe {name} right after writing it",
            vault.store.describe()
        ))
    })?;
    let host = before + (after - before) / 2;
    judge(host, store, max_skew, &vault.store.describe())
}

/// Accept or refuse two clock readings (store times have a resolution of a second on S3: the
/// comparison allows for it).
pub fn judge(host: DateTime<Utc>, store: DateTime<Utc>, max_skew: chrono::Duration, store_name: &str) -> Result<ClockCheck> {
    let skew = store - host;
    if skew.abs() > max_skew + chrono::Duration::seconds(1) {
        return Err(Error::usage(format!(
            "the host clock ({}) and the clock of {store_name} ({}) differ by {} s, more than the {} s prune accepts",
            host.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            store.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            skew.num_seconds(),
            max_skew.num_seconds()
        ))
        .hint("prune judges its grace period and lock lease by these clocks: set the host clock right (NTP) and run prune again"));
    }
    Ok(ClockCheck {
        host,
        store,
        skew_ms: skew.num_milliseconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_refuses_a_skew_beyond_the_limit_naming_both_times() {
        let host = "2026-11-30T04:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let store = host + chrono::Duration::minutes(7);
        let e = judge(host, store, chrono::Duration::minutes(5), "s3://b/v").unwrap_err();
        assert!(e.what.contains("2026-11-30T04:00:00.000Z"), "{}", e.what);
        assert!(e.what.contains("2026-11-30T04:07:00.000Z"), "{}", e.what);
        assert!(e.what.contains("s3://b/v"), "{}", e.what);
        let e = judge(store, host, chrono::Duration::minutes(5), "s3://b/v").unwrap_err();
        assert!(e.what.contains("-420 s"), "{}", e.what);
        let ok = judge(host, host + chrono::Duration::minutes(4), chrono::Duration::minutes(5), "x").unwrap();
        assert_eq!(ok.skew_ms, 240_000);
    }
}
