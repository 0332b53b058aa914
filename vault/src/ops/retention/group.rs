//! The group a snapshot belongs to for retention: a policy counts and removes within one group
//! only, never across groups.
//!
//! Cluster-wide etcd jobs (`etcd-v3`, `etcd-v2`) group by the etcd cluster ID recorded in the
//! manifest and the job: any member's host may capture them, and the cluster is the thing backed
//! up. Host jobs (`files`, `etcd-datadir`, `packages`, anything else) group by host and job. A
//! capture that recorded no cluster ID falls back to its host.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::{PayloadKind, SnapshotManifest};

/// Whose snapshots a group holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An etcd cluster, by its cluster ID.
    Cluster(String),
    /// A host, by the host name recorded in the manifest.
    Host(String),
}

/// A retention group: a source and a job. Shown as `cluster:ID/JOB` or `host:NAME/JOB`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub source: Source,
    pub job: String,
}

impl Group {
    /// The group of a snapshot.
    pub fn of(m: &SnapshotManifest) -> Group {
        let cluster = match m.kind {
            PayloadKind::EtcdV3 => m.etcd_v3.as_ref().map(|e| e.cluster_id.as_str()),
            PayloadKind::EtcdV2 => m.etcd_v2.as_ref().map(|e| e.cluster_id.as_str()),
            _ => None,
        };
        let source = match cluster.filter(|c| !c.is_empty()) {
            Some(c) => Source::Cluster(c.to_string()),
            None => Source::Host(m.host.clone()),
        };
        Group {
            source,
            job: m.job.clone(),
        }
    }

    /// The host of a host group (none for a cluster's).
    pub fn host(&self) -> Option<&str> {
        match &self.source {
            Source::Host(h) => Some(h),
            Source::Cluster(_) => None,
        }
    }

    /// Whether `selector` names this group: its full name (`host:master-0/files`), or a source
    /// alone (`host:master-0`, `cluster:ID`, or a bare host name or cluster ID).
    pub fn matches(&self, selector: &str) -> bool {
        let (kind, name) = match &self.source {
            Source::Cluster(c) => ("cluster", c),
            Source::Host(h) => ("host", h),
        };
        selector == self.to_string() || selector == format!("{kind}:{name}") || selector == name.as_str()
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Cluster(c) => write!(f, "cluster:{c}/{}", self.job),
            Source::Host(h) => write!(f, "host:{h}/{}", self.job),
        }
    }
}

impl Serialize for Group {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Which groups a run covers: all, or those of one job and/or one group selector. An unknown job
/// or group is an error naming what exists (a typo must not look like "nothing to do").
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub job: Option<String>,
    pub group: Option<String>,
}

impl Scope {
    pub fn covers(&self, g: &Group) -> bool {
        self.job.as_ref().is_none_or(|j| &g.job == j) && self.group.as_ref().is_none_or(|s| g.matches(s))
    }

    /// Check that the scope names something among `groups`.
    pub fn check<'a>(&self, groups: impl IntoIterator<Item = &'a Group> + Clone) -> Result<()> {
        if groups.clone().into_iter().any(|g| self.covers(g)) {
            return Ok(());
        }
        if self.job.is_none() && self.group.is_none() {
            return Ok(());
        }
        let mut known: Vec<String> = groups.into_iter().map(|g| g.to_string()).collect();
        known.sort();
        known.dedup();
        let what = match (&self.job, &self.group) {
            (Some(j), Some(g)) => format!("no snapshot group of job {j:?} matches {g:?}"),
            (Some(j), None) => format!("no snapshot of job {j:?} in the vault"),
            (None, Some(g)) => format!("no snapshot group matches {g:?}"),
            (None, None) => unreachable!(),
        };
        Err(Error::usage(what).hint(if known.is_empty() {
            "the vault holds no snapshots".to_string()
        } else {
            format!("the groups are: {}", known.join(", "))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{EtcdV3Info, FilesInfo};

    fn manifest(kind: PayloadKind, host: &str, job: &str) -> SnapshotManifest {
        SnapshotManifest {
            time: "2026-11-20T00:00:00Z".parse().unwrap(),
            kind,
            host: host.into(),
            job: job.into(),
            tags: Default::default(),
            streams: vec![],
            stats: Default::default(),
            slot: None,
            etcd_v3: None,
            files: None,
            etcd_v2: None,
            etcd_datadir: None,
            etcd_v3_delta: None,
            log_head: None,
            previous: None,
        }
    }

    #[test]
    fn etcd_groups_by_cluster_and_host_jobs_by_host() {
        let mut a = manifest(PayloadKind::EtcdV3, "master-0", "etcd");
        a.etcd_v3 = Some(EtcdV3Info {
            cluster_id: "cdf818194e3a8c32".into(),
            ..Default::default()
        });
        let mut b = a.clone();
        b.host = "master-1".into();
        assert_eq!(Group::of(&a), Group::of(&b), "members of one cluster share a group");
        assert_eq!(Group::of(&a).to_string(), "cluster:cdf818194e3a8c32/etcd");

        let mut f = manifest(PayloadKind::Files, "master-0", "files");
        f.files = Some(FilesInfo::default());
        let mut g = f.clone();
        g.host = "master-1".into();
        assert_ne!(Group::of(&f), Group::of(&g), "host jobs never mix hosts");
        let mut h = f.clone();
        h.job = "files-etc".into();
        assert_ne!(Group::of(&f), Group::of(&h), "nor jobs");
        assert!(Group::of(&f).matches("master-0"));
        assert!(Group::of(&f).matches("host:master-0/files"));
        assert!(!Group::of(&g).matches("master-0"));

        let no_id = manifest(PayloadKind::EtcdV3, "master-2", "etcd");
        assert_eq!(Group::of(&no_id).to_string(), "host:master-2/etcd");
    }

    #[test]
    fn an_unknown_scope_names_the_groups() {
        let f = Group::of(&manifest(PayloadKind::Files, "master-0", "files"));
        let scope = Scope {
            job: Some("fils".into()),
            group: None,
        };
        let e = scope.check([&f]).unwrap_err().to_string();
        assert!(e.contains("\"fils\"") && e.contains("host:master-0/files"), "{e}");
        assert!(Scope::default().check([&f]).is_ok());
    }
}
