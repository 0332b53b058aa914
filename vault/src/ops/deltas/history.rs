//! `etcd history`: the changes to a key or prefix recorded in delta segments over a time window,
//! across the chains that cover it. Chains overlap where a new base's chain started before the
//! old one ended; each revision is listed once (the first chain that holds it). Needs the
//! identity: keys and values are content.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::delta_stream::{Event, Record};
use crate::error::{Error, Result};
use crate::format::PayloadKind;
use crate::ops::deltas::{chain, segment_read};
use crate::repo::Vault;

#[derive(Clone, Debug)]
pub enum KeyMatch {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl KeyMatch {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyMatch::Exact(k) => key == k.as_slice(),
            KeyMatch::Prefix(p) => key.starts_with(p),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HistoryQuery {
    pub keys: KeyMatch,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub job: Option<String>,
    pub cluster_id: Option<String>,
}

/// One change to one key.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// When the watcher received it (a receive time: see `catch_up`).
    pub time: DateTime<Utc>,
    pub revision: i64,
    /// `put` or `delete`.
    pub op: &'static str,
    /// The key (lossy UTF-8).
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<i64>,
    /// The lease (hex) the key is attached to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Received while the watch was catching up: the change was made earlier than `time`.
    pub catch_up: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub changes: Vec<Change>,
    /// Segments read.
    pub segments: u64,
    /// Segments that could not be read, each named (their changes are missing from the list).
    pub problems: Vec<String>,
}

pub async fn history(vault: &Vault, catalog: &Catalog, q: &HistoryQuery) -> Result<History> {
    let snaps = catalog.snapshots()?;
    let mut bases: Vec<_> = snaps
        .iter()
        .filter(|s| s.manifest.kind == PayloadKind::EtcdV3)
        .filter_map(|s| s.manifest.etcd_v3.as_ref().map(|e| (s, e)))
        .filter(|(s, e)| q.job.as_ref().is_none_or(|j| *j == s.manifest.job) && q.cluster_id.as_ref().is_none_or(|c| *c == e.cluster_id))
        .filter(|(s, _)| s.manifest.time <= q.until)
        .collect();
    let mut with_chain = std::collections::HashSet::new();
    let jobs: std::collections::BTreeSet<&str> = bases.iter().map(|(s, _)| s.manifest.job.as_str()).collect();
    for j in jobs {
        with_chain.extend(chain::list_bases(vault, j).await?);
    }
    bases.retain(|(s, _)| with_chain.contains(&s.id));
    let sources: std::collections::BTreeSet<(&str, &str)> = bases
        .iter()
        .map(|(s, e)| (s.manifest.job.as_str(), e.cluster_id.as_str()))
        .collect();
    if sources.len() > 1 {
        let list: Vec<String> = sources.iter().map(|(j, c)| format!("job {j} cluster {c}")).collect();
        return Err(
            Error::usage(format!("delta chains of more than one etcd cluster or job: {}", list.join(", ")))
                .hint("pass --job or --cluster-id"),
        );
    }
    bases.sort_by_key(|(s, e)| (e.revision, s.manifest.time));
    let (since_ms, until_ms) = (q.since.timestamp_millis(), q.until.timestamp_millis());
    let mut out = History::default();
    let mut listed_until = i64::MIN;
    for (base, e) in bases {
        let chain = chain::read_chain(vault, &base.manifest.job, &base.id, e.revision).await?;
        out.problems.extend(chain.problems.iter().cloned());
        for l in &chain.links {
            if l.last_revision <= listed_until || l.last_event_time < q.since {
                continue;
            }
            let what = segment_read::describe_link(l);
            let Some(seg) = snaps.iter().find(|s| s.id == l.segment) else {
                out.problems.push(format!("{what}: its manifest is missing from the vault"));
                continue;
            };
            let Ok(info) = segment_read::info(seg) else {
                out.problems.push(format!("{what}: its manifest is not a delta segment"));
                continue;
            };
            if info.first_event_time > q.until {
                break;
            }
            let records = match segment_read::read(vault, catalog, seg, &what).await {
                Ok((r, _)) => r,
                Err(e) => {
                    out.problems.push(e.what);
                    continue;
                }
            };
            out.segments += 1;
            for rec in records {
                let Record::Group(g) = rec else { continue };
                if g.revision <= listed_until || g.received_ms < since_ms || g.received_ms > until_ms {
                    continue;
                }
                listed_until = g.revision;
                let time = DateTime::from_timestamp_millis(g.received_ms).unwrap_or_default();
                for ev in g.events.iter().filter(|ev| q.keys.matches(ev.key())) {
                    out.changes.push(match ev {
                        Event::Put {
                            key,
                            value,
                            create_revision,
                            version,
                            lease,
                        } => Change {
                            time,
                            revision: g.revision,
                            op: "put",
                            key: String::from_utf8_lossy(key).into_owned(),
                            value_size: Some(value.len() as u64),
                            version: Some(*version),
                            create_revision: Some(*create_revision),
                            lease: (*lease != 0).then(|| format!("{lease:x}")),
                            catch_up: g.catch_up,
                        },
                        Event::Delete { key } => Change {
                            time,
                            revision: g.revision,
                            op: "delete",
                            key: String::from_utf8_lossy(key).into_owned(),
                            value_size: None,
                            version: None,
                            create_revision: None,
                            lease: None,
                            catch_up: g.catch_up,
                        },
                    });
                }
            }
        }
    }
    Ok(out)
}
