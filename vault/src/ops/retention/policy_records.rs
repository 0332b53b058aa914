//! Policy records (docs/FORMAT.md section 8c): `policies/<job tag>/<time>-<random>` objects, each
//! one job's schedule and retention policy as vaultd ran it, sealed with the writer key, created
//! once and never rewritten. A change of the job's config is a new record, so an audit judges each
//! slot against the policy that was in force then, not today's.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::policy::RetentionPolicy;
use crate::crypto::random_bytes;
use crate::error::Result;
use crate::format::{self, MetaKind};
use crate::repo::{NamedMeta, Vault};
use crate::store::PutMode;

/// One job's schedule and retention policy as recorded by vaultd.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyRecord {
    pub job: String,
    /// The job's kind as configured (`etcd-v3`, `files`, ...).
    pub kind: String,
    /// `cluster` (one daemon per slot) or `host` (every daemon runs every slot).
    pub scope: String,
    /// The host whose daemon wrote the record.
    pub host: String,
    /// Cron text with a seconds field, evaluated in `timezone` (UTC when absent).
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// The job was removed from the host's config: from `time` on it expects no slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    pub time: DateTime<Utc>,
}

impl PolicyRecord {
    /// Whether `other` records the same policy (who wrote it and when aside).
    pub fn same_policy(&self, other: &PolicyRecord) -> bool {
        self.job == other.job
            && self.kind == other.kind
            && self.scope == other.scope
            && self.schedule == other.schedule
            && self.timezone == other.timezone
            && self.retention == other.retention
            && self.retired == other.retired
    }

    /// The record saying that this host's job was removed from its config (`now`).
    pub fn retirement(&self, now: DateTime<Utc>) -> PolicyRecord {
        PolicyRecord {
            retired: true,
            time: now,
            ..self.clone()
        }
    }

    pub fn is_cluster_wide(&self) -> bool {
        self.scope == "cluster"
    }
}

/// A record as stored, with its object name.
#[derive(Clone, Debug, Serialize)]
pub struct StoredPolicy {
    pub name: String,
    #[serde(flatten)]
    pub record: PolicyRecord,
}

/// Every readable policy record, oldest first (by time, then name), and the names of those that
/// do not open or parse (with why).
pub async fn read_all(vault: &Vault) -> Result<(Vec<StoredPolicy>, Vec<String>)> {
    let names: Vec<String> = vault.store.list(format::POLICY_PREFIX).await?.into_iter().map(|o| o.name).collect();
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for NamedMeta { name, value: opened, .. } in vault.read_named_meta::<PolicyRecord>(MetaKind::PolicyRecord, names).await? {
        match opened {
            Ok(r) if name.starts_with(&format!("{}{}/", format::POLICY_PREFIX, vault.writer.job_tag(&r.job))) => {
                records.push(StoredPolicy { name, record: r })
            }
            Ok(r) => unreadable.push(format!("{name}: a record of job {:?} stored under another job's name", r.job)),
            Err(e) => unreadable.push(format!("{name}: {e}")),
        }
    }
    sort(&mut records);
    Ok((records, unreadable))
}

fn sort(records: &mut [StoredPolicy]) {
    records.sort_by(|a, b| a.record.time.cmp(&b.record.time).then_with(|| a.name.cmp(&b.name)));
}

/// The newest record of `job` dated at or before `at` (`records` oldest first). For a host job,
/// `host` prefers that host's records; another host's record of the job serves when it has none.
pub fn in_force<'a>(records: &'a [StoredPolicy], job: &str, host: Option<&str>, at: DateTime<Utc>) -> Option<&'a StoredPolicy> {
    let of_job = || records.iter().filter(|r| r.record.job == job && r.record.time <= at);
    host.and_then(|h| of_job().rfind(|r| r.record.host == h))
        .or_else(|| of_job().next_back())
}

/// The newest record of each job, in job name order.
pub fn newest_per_job(records: &[StoredPolicy]) -> Vec<&StoredPolicy> {
    let mut out: std::collections::BTreeMap<&str, &StoredPolicy> = Default::default();
    for r in records {
        out.insert(&r.record.job, r);
    }
    out.into_values().collect()
}

/// The host jobs this host recorded that are gone from its config (`configured`): the retirement
/// record of each, for [`record_if_changed`]. Cluster-wide jobs are left alone: another daemon may
/// still run them.
pub fn retirements(records: &[StoredPolicy], host: &str, configured: &[&str], now: DateTime<Utc>) -> Vec<PolicyRecord> {
    let mut newest: std::collections::BTreeMap<&str, &PolicyRecord> = Default::default();
    for r in records.iter().map(|r| &r.record).filter(|r| r.host == host && !r.is_cluster_wide()) {
        newest.insert(&r.job, r);
    }
    newest
        .into_values()
        .filter(|r| !r.retired && !configured.contains(&r.job.as_str()))
        .map(|r| r.retirement(now))
        .collect()
}

/// Write `record` unless the newest record of its job (this host's, for a host job) already says
/// the same. Returns the new object's name, or `None` when nothing changed.
pub async fn record_if_changed(vault: &Vault, existing: &[StoredPolicy], record: &PolicyRecord) -> Result<Option<String>> {
    let host = (!record.is_cluster_wide()).then_some(record.host.as_str());
    let newest = in_force(existing, &record.job, host, DateTime::<Utc>::MAX_UTC);
    let newest = newest.filter(|n| host.is_none_or(|h| n.record.host == h));
    if newest.is_some_and(|n| n.record.same_policy(record)) {
        return Ok(None);
    }
    vault.check_may_write("recording a job's policy")?;
    let name = format::policy_record_name(&vault.writer.job_tag(&record.job), &record.time, u32::from_le_bytes(random_bytes()));
    let sealed = vault.writer.seal_meta(
        MetaKind::PolicyRecord,
        &serde_json::to_vec(record).expect("serialize policy record"),
    );
    let mode = if vault.config.store.conditional_create {
        PutMode::Create
    } else {
        PutMode::Overwrite
    };
    vault.store.put(&name, Bytes::from(sealed), mode).await?;
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    pub(crate) fn rec(job: &str, host: &str, scope: &str, schedule: &str, time: &str) -> StoredPolicy {
        StoredPolicy {
            name: format!("policies/x/{time}"),
            record: PolicyRecord {
                job: job.into(),
                kind: "files".into(),
                scope: scope.into(),
                host: host.into(),
                schedule: schedule.into(),
                timezone: None,
                retention: None,
                retired: false,
                time: t(time),
            },
        }
    }

    #[test]
    fn the_policy_in_force_is_the_newest_at_or_before_the_time() {
        let records = vec![
            rec("etcd", "m0", "cluster", "0 0 * * * *", "2026-11-01T00:00:00Z"),
            rec("etcd", "m1", "cluster", "0 */30 * * * *", "2026-11-10T00:00:00Z"),
            rec("files", "m0", "host", "0 0 2 * * *", "2026-11-02T00:00:00Z"),
            rec("files", "m1", "host", "0 0 3 * * *", "2026-11-03T00:00:00Z"),
        ];
        assert!(in_force(&records, "etcd", None, t("2026-10-31T00:00:00Z")).is_none());
        assert_eq!(
            in_force(&records, "etcd", None, t("2026-11-09T23:59:59Z")).unwrap().record.schedule,
            "0 0 * * * *"
        );
        assert_eq!(
            in_force(&records, "etcd", None, t("2026-11-10T00:00:00Z")).unwrap().record.schedule,
            "0 */30 * * * *"
        );
        assert_eq!(
            in_force(&records, "files", Some("m0"), t("2026-12-01T00:00:00Z"))
                .unwrap()
                .record
                .host,
            "m0"
        );
        assert_eq!(
            in_force(&records, "files", Some("m9"), t("2026-12-01T00:00:00Z"))
                .unwrap()
                .record
                .host,
            "m1"
        );
        let newest: Vec<&str> = newest_per_job(&records).iter().map(|r| r.record.host.as_str()).collect();
        assert_eq!(newest, ["m1", "m1"]);
        let mut other_host = records[1].record.clone();
        other_host.host = "m2".into();
        assert!(
            records[1].record.same_policy(&other_host),
            "who wrote it does not change the policy"
        );
        other_host.retention = Some(RetentionPolicy {
            keep_daily: Some(7),
            ..Default::default()
        });
        assert!(!records[1].record.same_policy(&other_host));
    }

    #[test]
    fn host_jobs_gone_from_the_config_are_retired_once_and_cluster_jobs_never() {
        let mut records = vec![
            rec("etcd", "m0", "cluster", "0 0 * * * *", "2026-11-01T00:00:00Z"),
            rec("files", "m0", "host", "0 0 2 * * *", "2026-11-02T00:00:00Z"),
            rec("files", "m1", "host", "0 0 2 * * *", "2026-11-02T00:00:00Z"),
            rec("conf", "m0", "host", "0 0 3 * * *", "2026-11-02T00:00:00Z"),
        ];
        let now = t("2026-11-20T00:00:00Z");
        let r = retirements(&records, "m0", &["conf"], now);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].job.as_str(), r[0].retired, r[0].time), ("files", true, now));
        assert!(!r[0].same_policy(&records[1].record), "a retirement is a change");
        records.push(StoredPolicy {
            name: "policies/x/retired".into(),
            record: r[0].clone(),
        });
        assert!(retirements(&records, "m0", &["conf"], now).is_empty(), "retired once");
        assert!(retirements(&records, "m0", &["conf", "files"], now).is_empty());
    }
}
