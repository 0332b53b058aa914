//! etcd v2 keyspace: capture (`vaultctl backup etcd-v2`, vaultd kind `etcd-v2`) and restore into
//! a running cluster (`vaultctl etcd v2 restore`): a plan first (create, already there, left alone,
//! overwrite, expired), then the writes. Nothing in the cluster is ever deleted.

use bytes::Bytes;
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Error, Result};
use crate::format::{PayloadKind, SnapshotManifest, V2Keyspace, V2Node};
use crate::ops::backup::{BackupOptions, BackupReport, commit, ingest_stream};
use crate::ops::read::read_stream;
use crate::repo::Vault;
use crate::source::etcd_v2::{Live, NODE_EXISTS, V2Client, is_hidden, normalize_key};
use crate::source::etcd_v3::EtcdOptions;

pub const STREAM_NAME: &str = "v2-keyspace.json";

/// `vaultctl backup etcd-v2`: read the v2 keyspace (and the named hidden nodes) and store it.
pub async fn backup_etcd_v2(
    vault: &Vault,
    catalog: &mut Catalog,
    etcd: &EtcdOptions,
    hidden: &[String],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let client = V2Client::connect(etcd).await?;
    backup_etcd_v2_from(vault, catalog, &client, hidden, opts).await
}

/// Capture through an already connected client (the daemon connects before claiming a slot).
pub async fn backup_etcd_v2_from(
    vault: &Vault,
    catalog: &mut Catalog,
    client: &V2Client,
    hidden: &[String],
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let (keyspace, info) = client.read_keyspace(hidden).await?;
    let json = serde_json::to_vec(&keyspace).map_err(|e| Error::io("cannot encode the v2 keyspace").with_source(e))?;
    let source = futures::stream::iter([Ok(Bytes::from(json))]);
    let ingested = ingest_stream(vault, catalog, STREAM_NAME, source, false, opts.progress.clone()).await?;
    let manifest = SnapshotManifest {
        etcd_v2: Some(info.clone()),
        ..opts.manifest(PayloadKind::EtcdV2, vec![ingested.stream.clone()], ingested.stats)
    };
    let id = commit(vault, catalog, &manifest).await?;
    Ok(BackupReport {
        revision: Some(info.etcd_index as i64),
        endpoint: Some(info.endpoint),
        cluster_id: Some(info.cluster_id),
        ..BackupReport::committed(&id, PayloadKind::EtcdV2, &ingested.stats, ingested.stream.sha256)
    })
}

/// Read a v2 snapshot's keyspace back, checking its sha256.
pub async fn load_keyspace(vault: &Vault, catalog: &Catalog, snap: &SnapshotEntry) -> Result<V2Keyspace> {
    if snap.manifest.kind != PayloadKind::EtcdV2 {
        return Err(Error::usage(format!(
            "snapshot {} is a {} snapshot, not etcd-v2",
            snap.id.short(),
            snap.manifest.kind
        ))
        .hint("`vaultctl snapshots` lists each snapshot's kind; pick an etcd-v2 one"));
    }
    let stream = snap
        .manifest
        .streams
        .iter()
        .find(|s| s.name == STREAM_NAME)
        .ok_or_else(|| Error::integrity(format!("snapshot {} has no {STREAM_NAME} stream", snap.id.short())))?;
    let json = read_stream(vault, catalog, stream, |rx| Ok(rx.into_iter().flatten().collect::<Vec<u8>>())).await?;
    if hex::encode(sha2::Sha256::digest(&json)) != stream.sha256 {
        return Err(Error::integrity(format!(
            "the v2 keyspace of snapshot {} does not match its recorded sha256",
            snap.id.short()
        )));
    }
    serde_json::from_slice(&json)
        .map_err(|e| Error::integrity(format!("the v2 keyspace of snapshot {} does not parse", snap.id.short())).with_source(e))
}

#[derive(Clone, Debug, Default)]
pub struct V2RestoreOptions {
    /// Restore only this key or directory and what is under it.
    pub prefix: Option<String>,
    /// Set keys that exist with another value to the captured one.
    pub overwrite: bool,
    /// Plan only.
    pub dry_run: bool,
}

/// What the restore does (or did) with one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Absent: created.
    Create,
    /// Present with the captured value (or a directory as captured): nothing to do.
    Present,
    /// Present with another value, or as the other type: left alone (no --overwrite).
    LeftAlone,
    /// Present with another value: set to the captured one (--overwrite).
    Overwrite,
    /// Its TTL ran out since capture: not restored.
    Expired,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanStep {
    pub key: String,
    pub dir: bool,
    pub action: Action,
    /// TTL in seconds the node gets (remaining time of the captured one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Set after the write when etcd refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct V2RestoreReport {
    pub snapshot: String,
    pub endpoint: String,
    pub prefix: String,
    pub dry_run: bool,
    /// When the keyspace was read and at which etcd index.
    pub read_at: chrono::DateTime<chrono::Utc>,
    pub etcd_index: u64,
    pub steps: Vec<PlanStep>,
    pub created: usize,
    pub overwritten: usize,
    pub present: usize,
    pub left_alone: usize,
    pub expired: usize,
    pub failed: usize,
}

fn under(key: &str, prefix: &str) -> bool {
    prefix == "/" || key == prefix || key.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
}

/// Seconds left of a node's TTL at `now` (rounded up); `None` without a TTL, `Some(<=0)` expired.
pub fn remaining_ttl(n: &V2Node, read_at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let expires = match (n.expiration, n.ttl) {
        (Some(e), _) => e,
        (None, Some(t)) => read_at + chrono::Duration::seconds(t),
        (None, None) => return None,
    };
    let ms = (expires - now).num_milliseconds();
    Some(if ms <= 0 { 0 } else { (ms + 999) / 1000 })
}

/// Decide what to do with every captured node under `prefix`, given what the cluster holds.
pub fn plan(
    keyspace: &V2Keyspace,
    prefix: &str,
    live: &std::collections::BTreeMap<String, Live>,
    overwrite: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<PlanStep> {
    let mut steps = Vec::new();
    for n in keyspace.nodes.iter().filter(|n| under(&n.key, prefix)) {
        let ttl = remaining_ttl(n, keyspace.read_at, now);
        let (action, detail) = match (ttl, live.get(&n.key)) {
            (Some(t), _) if t <= 0 => (Action::Expired, "its TTL ran out since the capture".to_string()),
            (_, None) => (Action::Create, String::new()),
            (_, Some(Live::Dir)) if n.dir => (Action::Present, String::new()),
            (_, Some(Live::Key(v))) if !n.dir && Some(v) == n.value.as_ref() => (Action::Present, String::new()),
            (_, Some(Live::Dir)) => (Action::LeftAlone, "exists as a directory; captured as a key".to_string()),
            (_, Some(Live::Key(_))) if n.dir => (Action::LeftAlone, "exists as a key; captured as a directory".to_string()),
            (_, Some(Live::Key(_))) if overwrite => (Action::Overwrite, "exists with another value".to_string()),
            (_, Some(Live::Key(_))) => (Action::LeftAlone, "exists with another value (--overwrite sets it)".to_string()),
        };
        steps.push(PlanStep {
            key: n.key.clone(),
            dir: n.dir,
            action,
            ttl: ttl.filter(|t| *t > 0),
            detail,
            error: None,
        });
    }
    steps
}

/// `vaultctl etcd v2 restore`: plan, and unless `dry_run`, write.
pub async fn restore_etcd_v2(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    etcd: &EtcdOptions,
    opts: &V2RestoreOptions,
) -> Result<V2RestoreReport> {
    let keyspace = load_keyspace(vault, catalog, snap).await?;
    let client = V2Client::connect(etcd).await?;
    let prefix = normalize_key(opts.prefix.as_deref().unwrap_or("/"));
    // Hidden nodes are never listed: ask for each captured one by name.
    let hidden: Vec<String> = keyspace
        .nodes
        .iter()
        .filter(|n| under(&n.key, &prefix) && is_hidden(&n.key))
        .map(|n| n.key.clone())
        .collect();
    let live = client.live_nodes(&prefix, &hidden).await?;
    let mut steps = plan(&keyspace, &prefix, &live, opts.overwrite, chrono::Utc::now());
    if !opts.dry_run {
        let by_key: std::collections::HashMap<&str, &V2Node> = keyspace.nodes.iter().map(|n| (n.key.as_str(), n)).collect();
        for s in steps.iter_mut() {
            if !matches!(s.action, Action::Create | Action::Overwrite) {
                continue;
            }
            let node = by_key[s.key.as_str()];
            // TTLs are counted from now, not from when the plan was made.
            let ttl = remaining_ttl(node, keyspace.read_at, chrono::Utc::now());
            if ttl.is_some_and(|t| t <= 0) {
                s.action = Action::Expired;
                s.detail = "its TTL ran out while the restore ran".into();
                continue;
            }
            s.ttl = ttl;
            let must_not_exist = s.action == Action::Create;
            match client.put(node, ttl, must_not_exist).await? {
                Ok(()) => {}
                Err(r) if r.code == NODE_EXISTS && must_not_exist => {
                    s.action = Action::LeftAlone;
                    s.detail = "appeared in the cluster while the restore ran".into();
                }
                Err(r) => s.error = Some(format!("{} (etcd error {})", r.message, r.code)),
            }
        }
    }
    let count = |a: Action| steps.iter().filter(|s| s.action == a && s.error.is_none()).count();
    Ok(V2RestoreReport {
        snapshot: snap.id.hex(),
        endpoint: client.endpoint.clone(),
        prefix,
        dry_run: opts.dry_run,
        read_at: keyspace.read_at,
        etcd_index: keyspace.etcd_index,
        created: count(Action::Create),
        overwritten: count(Action::Overwrite),
        present: count(Action::Present),
        left_alone: count(Action::LeftAlone),
        expired: count(Action::Expired),
        failed: steps.iter().filter(|s| s.error.is_some()).count(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn node(key: &str, dir: bool, value: Option<&str>, ttl: Option<i64>) -> V2Node {
        V2Node {
            key: key.into(),
            dir,
            value: value.map(String::from),
            ttl,
            expiration: None,
        }
    }

    #[test]
    fn plan_reports_existing_keys_and_expired_ttls() {
        let read_at = Utc::now() - Duration::seconds(30);
        let ks = V2Keyspace {
            etcd_index: 9,
            read_at,
            nodes: vec![
                node("/a", true, None, None),
                node("/a/same", false, Some("1"), None),
                node("/a/other", false, Some("2"), None),
                node("/a/short", false, Some("3"), Some(10)),
                node("/a/long", false, Some("4"), Some(100)),
                node("/b", false, Some("5"), None),
            ],
        };
        let live = [
            ("/a".to_string(), Live::Dir),
            ("/a/same".to_string(), Live::Key("1".into())),
            ("/a/other".to_string(), Live::Key("changed".into())),
        ]
        .into_iter()
        .collect();
        let steps = plan(&ks, "/a", &live, false, Utc::now());
        let got: Vec<(&str, Action)> = steps.iter().map(|s| (s.key.as_str(), s.action)).collect();
        assert_eq!(
            got,
            [
                ("/a", Action::Present),
                ("/a/same", Action::Present),
                ("/a/other", Action::LeftAlone),
                ("/a/short", Action::Expired),
                ("/a/long", Action::Create),
            ]
        );
        let long = steps.iter().find(|s| s.key == "/a/long").unwrap();
        assert!((69..=71).contains(&long.ttl.unwrap()), "{:?}", long.ttl);
        let steps = plan(&ks, "/", &live, true, Utc::now());
        assert_eq!(steps.iter().find(|s| s.key == "/a/other").unwrap().action, Action::Overwrite);
        assert_eq!(steps.len(), 6);
    }

    #[test]
    fn prefix_matches_whole_names_only() {
        assert!(under("/coreos.com/network/config", "/coreos.com/network"));
        assert!(under("/coreos.com/network", "/coreos.com/network"));
        assert!(!under("/coreos.com/network2", "/coreos.com/network"));
        assert!(under("/x", "/"));
    }
}
