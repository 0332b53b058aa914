//! Resolve a point-in-time target (`--revision REV` or `--at TIME`) to a base etcd-v3 snapshot
//! and the delta segments to replay on it, in order. Only links place a segment in a chain
//! (an unlinked segment manifest is an orphan and ignored). A chain is usable up to its first
//! problem: a missing link, a segment manifest missing from the catalog, a manifest that does
//! not match its link, or a chunk missing from the index. A target past that point is refused,
//! naming the segment at fault and the last whole revision and time, unless the caller asks to
//! restore up to the last whole point instead.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Error, Result};
use crate::format::{Id, PayloadKind};
use crate::ops::deltas::chain::{self, Chain};
use crate::ops::deltas::replay::StopAt;
use crate::ops::deltas::segment_read;
use crate::repo::Vault;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Revision(i64),
    /// The last change received at or before this time.
    Time(DateTime<Utc>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Revision(r) => write!(f, "revision {r}"),
            Target::Time(t) => write!(f, "{}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

/// Which chains to consider.
#[derive(Clone, Debug, Default)]
pub struct TargetQuery {
    pub job: Option<String>,
    pub cluster_id: Option<String>,
    /// Restore up to the last whole point when a segment needed for the target is missing or broken.
    pub up_to_last_whole: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedBase {
    pub id: Id,
    pub time: DateTime<Utc>,
    /// The revision recorded at capture (a lower bound: the snapshot may hold a few more).
    pub revision: i64,
    pub job: String,
    pub cluster_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedSegment {
    pub seq: u64,
    pub id: Id,
    pub first_revision: i64,
    pub last_revision: i64,
    pub events: u64,
    pub first_event_time: DateTime<Utc>,
    pub last_event_time: DateTime<Utc>,
    pub catch_up: bool,
    /// Bytes of its events stream.
    pub bytes: u64,
}

/// A base and the segments to replay on it.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub target: Target,
    pub base: PlannedBase,
    pub segments: Vec<PlannedSegment>,
    /// Events in those segments (an upper bound on what is replayed: the last segment may be
    /// cut at the target, and groups the base holds already are skipped).
    pub events: u64,
    pub bytes: u64,
    /// Where to stop the replay.
    pub stop: StopAt,
    /// The last revision the chain covers without a problem, and when it was known to be current.
    pub last_whole_revision: i64,
    pub last_whole_time: DateTime<Utc>,
    /// The chain's first problem, naming the segment (with `up_to_last_whole`, the reason the
    /// target was cut).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The target was past the chain's last whole point, and the plan stops there instead.
    pub cut_to_last_whole: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One chain, read and checked up to its first problem.
struct UsableChain {
    base: PlannedBase,
    whole: Vec<PlannedSegment>,
    /// The revision range the links claim (whole or not).
    claimed_until: i64,
    last_whole_revision: i64,
    last_whole_time: DateTime<Utc>,
    problem: Option<String>,
    /// Why the chain was closed, when it was.
    end: Option<crate::format::DeltaChainEnd>,
}

fn base_of(s: &SnapshotEntry) -> Option<PlannedBase> {
    let e = s.manifest.etcd_v3.as_ref()?;
    (s.manifest.kind == PayloadKind::EtcdV3).then(|| PlannedBase {
        id: s.id,
        time: s.manifest.time,
        revision: e.revision,
        job: s.manifest.job.clone(),
        cluster_id: e.cluster_id.clone(),
    })
}

async fn usable_chain(vault: &Vault, catalog: &Catalog, snaps: &[SnapshotEntry], base: PlannedBase) -> Result<UsableChain> {
    let chain: Chain = chain::read_chain(vault, &base.job, &base.id, base.revision).await?;
    let mut u = UsableChain {
        claimed_until: chain.links.iter().map(|l| l.last_revision).max().unwrap_or(base.revision),
        last_whole_revision: base.revision,
        last_whole_time: base.time,
        whole: Vec::new(),
        problem: None,
        end: chain.end.clone(),
        base,
    };
    let whole_until = chain.whole_until(u.base.revision);
    for l in &chain.links {
        let what = segment_read::describe_link(l);
        if l.last_revision > whole_until || (l.seq as usize) != u.whole.len() {
            u.problem = Some(
                chain
                    .problems
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("{what} does not continue the chain")),
            );
            break;
        }
        let Some(seg) = snaps.iter().find(|s| s.id == l.segment) else {
            u.problem = Some(format!("{what}: its manifest is missing from the vault"));
            break;
        };
        if let Err(p) = segment_read::check_against_link(seg, l) {
            u.problem = Some(p);
            break;
        }
        let stream = &seg.manifest.streams[0];
        if let Err(e) = crate::ops::read::locate(catalog, stream) {
            u.problem = Some(format!("{what}: {}", e.what));
            break;
        }
        let i = segment_read::info(seg)?;
        u.whole.push(PlannedSegment {
            seq: l.seq,
            id: l.segment,
            first_revision: l.first_revision,
            last_revision: l.last_revision,
            events: i.events,
            first_event_time: i.first_event_time,
            last_event_time: i.last_event_time,
            catch_up: i.catch_up,
            bytes: stream.size,
        });
        u.last_whole_revision = l.last_revision;
        u.last_whole_time = i.covered_until.max(i.last_event_time);
    }
    if u.problem.is_none()
        && let Some(p) = chain.problems.first()
    {
        u.problem = Some(p.clone());
    }
    Ok(u)
}

/// The candidate plans for `target`, best first: the newest base whose chain reaches it first.
/// A later candidate is for when the replay finds the first one's base past the target (its
/// snapshot holds a few revisions more than recorded). Refuses when no chain reaches the target.
pub async fn resolve(vault: &Vault, catalog: &Catalog, target: Target, q: &TargetQuery) -> Result<Vec<Plan>> {
    let snaps = catalog.snapshots()?;
    let mut bases: Vec<PlannedBase> = snaps
        .iter()
        .filter_map(base_of)
        .filter(|b| q.job.as_ref().is_none_or(|j| *j == b.job))
        .filter(|b| q.cluster_id.as_ref().is_none_or(|c| *c == b.cluster_id))
        .filter(|b| match target {
            Target::Revision(r) => b.revision <= r,
            Target::Time(t) => b.time <= t,
        })
        .collect();
    // Only bases that have a chain (listed once per job).
    let mut with_chain = std::collections::HashSet::new();
    let jobs: std::collections::BTreeSet<String> = bases.iter().map(|b| b.job.clone()).collect();
    for j in &jobs {
        with_chain.extend(chain::list_bases(vault, j).await?);
    }
    bases.retain(|b| with_chain.contains(&b.id));
    let sources: std::collections::BTreeSet<(String, String)> = bases.iter().map(|b| (b.job.clone(), b.cluster_id.clone())).collect();
    if sources.len() > 1 {
        let list: Vec<String> = sources.iter().map(|(j, c)| format!("job {j} cluster {c}")).collect();
        return Err(Error::usage(format!(
            "delta chains of more than one etcd cluster or job reach back to {target}: {}",
            list.join(", ")
        ))
        .hint("pass --job or --cluster-id"));
    }
    if bases.is_empty() {
        return Err(
            Error::not_found(format!("no etcd-v3 snapshot with a delta chain is at or before {target}"))
                .hint("list the snapshots with `vaultctl snapshots`; restore one of them with `vaultctl etcd restore ID`"),
        );
    }
    bases.sort_by_key(|b| std::cmp::Reverse((b.revision, b.time)));
    let mut plans = Vec::new();
    let mut broken: Option<UsableChain> = None;
    let mut newest_reach: Option<(i64, DateTime<Utc>)> = None;
    let mut closed = Vec::new();
    for b in bases {
        let u = usable_chain(vault, catalog, &snaps, b).await?;
        if let Some(e) = &u.end {
            closed.push(e.clone());
        }
        if newest_reach.is_none_or(|(r, _)| u.last_whole_revision > r) {
            newest_reach = Some((u.last_whole_revision, u.last_whole_time));
        }
        let reaches = match target {
            Target::Revision(r) => r <= u.last_whole_revision,
            Target::Time(t) => t <= u.last_whole_time,
        };
        let claims = match target {
            Target::Revision(r) => r <= u.claimed_until,
            Target::Time(_) => u.problem.is_some(),
        };
        if reaches {
            plans.push(plan(target, u, false));
        } else if claims && broken.is_none() && plans.is_empty() {
            broken = Some(u);
        }
    }
    if !plans.is_empty() {
        if let Some(u) = broken {
            let used = plans[0].base.id.short();
            plans[0].warnings.push(format!(
                "the newer chain of base {} does not reach {target} ({}); the chain of base {used} does",
                u.base.id.short(),
                u.problem.as_deref().unwrap_or("it is broken")
            ));
        }
        return Ok(plans);
    }
    match broken {
        // A chain would have reached the target but for a problem.
        Some(u) if q.up_to_last_whole => Ok(vec![plan(target, u, true)]),
        Some(u) => Err(Error::integrity(format!(
            "cannot restore to {target}: {}; the chain of base {} is whole up to revision {} ({})",
            u.problem.as_deref().unwrap_or("the chain is broken"),
            u.base.id.short(),
            u.last_whole_revision,
            u.last_whole_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ))
        .hint("pass --up-to-last-whole to restore to that point, or choose an earlier --revision/--at")),
        None => {
            if let Some(lost) = lost_to_compaction(&closed, target) {
                return Err(Error::not_found(format!("cannot restore to {target}: {lost}"))
                    .hint("choose a point before the loss, or one covered by the next chain (see `vaultctl snapshots`)"));
            }
            let (rev, time) = newest_reach.expect("a base was considered");
            Err(Error::not_found(format!(
                "no delta chain reaches {target}: the newest point covered is revision {rev} ({})",
                time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .hint("choose an earlier --revision/--at; a change newer than the last committed segment is not in the vault yet"))
        }
    }
}

/// A sentence naming the revisions a chain lost to etcd's compaction, when the target is in them.
fn lost_to_compaction(ends: &[crate::format::DeltaChainEnd], target: Target) -> Option<String> {
    ends.iter().find_map(|e| {
        let c = e.compact_revision?;
        let lost = match target {
            Target::Revision(r) => r > e.last_revision && r < c,
            Target::Time(_) => false,
        };
        (e.reason == "compacted" && lost).then(|| {
            format!(
                "the chain of base {} ended at revision {}: the watch fell behind etcd's compaction, and revisions {}..={} were never captured",
                e.base.short(),
                e.last_revision,
                e.last_revision + 1,
                c - 1
            )
        })
    })
}

fn plan(target: Target, u: UsableChain, cut: bool) -> Plan {
    let stop = if cut {
        StopAt::Revision(u.last_whole_revision)
    } else {
        match target {
            Target::Revision(r) => StopAt::Revision(r),
            Target::Time(t) => StopAt::ReceivedBy(t.timestamp_millis()),
        }
    };
    let needed = |s: &PlannedSegment| match stop {
        StopAt::Revision(r) => s.first_revision <= r,
        StopAt::ReceivedBy(ms) => s.first_event_time.timestamp_millis() <= ms,
    };
    let mut n = u.whole.iter().take_while(|s| needed(s)).count();
    if matches!(stop, StopAt::ReceivedBy(_)) && n < u.whole.len() {
        // One more: its first group, past the time, shows the base (which may hold a few more
        // revisions than recorded) is not past the target.
        n += 1;
    }
    let segments: Vec<PlannedSegment> = u.whole.into_iter().take(n).collect();
    let mut warnings = Vec::new();
    if segments.iter().any(|s| s.catch_up) {
        warnings.push(
            "some changes were received while the watch was catching up: their times are receive times, later than the changes".to_string(),
        );
    }
    Plan {
        target,
        events: segments.iter().map(|s| s.events).sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        segments,
        base: u.base,
        stop,
        last_whole_revision: u.last_whole_revision,
        last_whole_time: u.last_whole_time,
        problem: u.problem,
        cut_to_last_whole: cut,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    /// Base at revision 10 (time 1000), three segments of 10 revisions, 10 ms per revision.
    fn chain(problem: Option<&str>) -> UsableChain {
        let whole: Vec<PlannedSegment> = (0..3u64)
            .map(|i| {
                let first = 11 + 10 * i as i64;
                PlannedSegment {
                    seq: i,
                    id: Id::of_stored(&i.to_le_bytes()),
                    first_revision: first,
                    last_revision: first + 9,
                    events: 10,
                    first_event_time: t(1000 + 10 * (first - 10)),
                    last_event_time: t(1000 + 10 * (first - 1)),
                    catch_up: i == 2,
                    bytes: 100,
                }
            })
            .collect();
        UsableChain {
            base: PlannedBase {
                id: Id::of_stored(b"base"),
                time: t(1000),
                revision: 10,
                job: "etcd".into(),
                cluster_id: "c".into(),
            },
            claimed_until: 40,
            last_whole_revision: whole.last().unwrap().last_revision,
            last_whole_time: whole.last().unwrap().last_event_time,
            whole,
            problem: problem.map(String::from),
            end: None,
        }
    }

    fn seqs(p: &Plan) -> Vec<u64> {
        p.segments.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn a_revision_target_takes_the_segments_up_to_the_one_holding_it() {
        let p = plan(Target::Revision(21), chain(None), false);
        assert_eq!((seqs(&p), p.stop, p.events), (vec![0, 1], StopAt::Revision(21), 20));
        let p = plan(Target::Revision(20), chain(None), false);
        assert_eq!(seqs(&p), vec![0], "the last revision of a segment needs no more");
        let p = plan(Target::Revision(10), chain(None), false);
        assert!(p.segments.is_empty(), "the base's own revision needs no segment");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_time_target_reads_one_segment_past_it_and_warns_of_catch_up() {
        // Segment 1's first group is received at 1110 ms: a time right on it includes it.
        let p = plan(Target::Time(t(1110)), chain(None), false);
        assert_eq!((seqs(&p), p.stop), (vec![0, 1, 2], StopAt::ReceivedBy(1110)));
        assert_eq!(p.warnings.len(), 1, "segment 2 was caught up: {:?}", p.warnings);
        let p = plan(Target::Time(t(1109)), chain(None), false);
        assert_eq!(seqs(&p), vec![0, 1], "one segment past the time, to check the base against");
        let p = plan(Target::Time(t(5000)), chain(None), false);
        assert_eq!(seqs(&p), vec![0, 1, 2]);
    }

    #[test]
    fn a_revision_lost_to_compaction_is_named() {
        let end = crate::format::DeltaChainEnd {
            base: Id::of_stored(b"base"),
            reason: "compacted".into(),
            last_revision: 40,
            next_base: None,
            compact_revision: Some(50),
            watcher: "w".into(),
            time: t(0),
        };
        let ends = [end];
        let lost = lost_to_compaction(&ends, Target::Revision(45)).unwrap();
        assert!(lost.contains("revisions 41..=49 were never captured"), "{lost}");
        assert!(lost_to_compaction(&ends, Target::Revision(40)).is_none());
        assert!(lost_to_compaction(&ends, Target::Revision(50)).is_none());
    }

    #[test]
    fn cut_to_the_last_whole_point() {
        let mut c = chain(Some("delta segment seq 2 (...): its manifest is missing from the vault"));
        c.whole.pop();
        c.last_whole_revision = 30;
        let p = plan(Target::Revision(35), c, true);
        assert_eq!((seqs(&p), p.stop, p.cut_to_last_whole), (vec![0, 1], StopAt::Revision(30), true));
        assert!(p.problem.unwrap().contains("seq 2"));
    }
}
