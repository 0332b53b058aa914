//! A recovery flow's plan: numbered steps, each one a thing done on this host or to the etcd
//! cluster, made without changing anything, shown to the operator (the command each step runs or
//! the edit it makes, with its diff), and then applied one at a time through the journal
//! ([`super::journal`]). Every step can tell when it already took effect and then does nothing, so
//! a resumed flow never does a step twice.

use std::net::{TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cluster::{self, same_urls};
use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Error, Result};
use crate::host::etcd_conf::{EtcdConf, InitialMember};
use crate::host::{Applied, Host, HostAction};
use crate::ops::etcd_datadir::stage_datadir;
use crate::ops::etcd_restore::{EtcdRestoreOptions, STAGED, place_staged, private_staging_dir, stage_snapshot_restore};
use crate::ops::restore::move_aside;
use crate::repo::Vault;
use crate::source::etcd_v3::EtcdOptions;

/// A flow's whole plan; the journal keeps it, so a resumed flow runs exactly what was shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The command that made it, e.g. `etcd recover`.
    pub flow: String,
    /// Random; names the staging directory and the new cluster token.
    pub id: String,
    pub made_at: DateTime<Utc>,
    pub host: Host,
    /// How the steps reach the etcd cluster (the member's client URLs and TLS files).
    pub etcd: EtcdOptions,
    /// The vault snapshot the plan restores, if any.
    pub snapshot: Option<String>,
    /// Lines shown above the steps: which member, which snapshot, which cluster.
    pub summary: Vec<String>,
    pub steps: Vec<Step>,
    /// What the operator does once the plan is done (commands for the other members).
    pub next: Vec<String>,
}

impl Plan {
    /// A new plan with a fresh random ID, made now (`snapshot` unset).
    pub fn new(flow: &str, host: Host, etcd: EtcdOptions, summary: Vec<String>, steps: Vec<Step>, next: Vec<String>) -> Plan {
        Plan {
            flow: flow.to_string(),
            id: hex::encode(crate::crypto::random_bytes::<4>()),
            made_at: Utc::now(),
            host,
            etcd,
            snapshot: None,
            summary,
            steps,
            next,
        }
    }
}

/// One step of a plan. Paths are in-host paths (under [`Host::root`] when a `--root` was given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Fetch the etcd-v3 snapshot, verify it, and build the new member data dir from it with the
    /// snapshot restore tool in a private staging directory. Nothing else on the host changes.
    StageV3 {
        staging: PathBuf,
        name: String,
        initial_cluster: String,
        token: String,
        peer_urls: String,
        owner: Option<String>,
        /// Replay delta segments on the snapshot up to this point first (`--revision`/`--at`):
        /// the snapshot is then the newest base whose chain reaches it, chosen again when run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        point: Option<crate::ops::deltas::restore::PointInTime>,
    },
    /// Fetch the etcd-datadir snapshot, every file checked, into a private staging directory.
    StageDatadir { staging: PathBuf, owner: Option<String> },
    /// A service, drop-in, config edit or command on this host.
    Host { action: HostAction },
    /// Wait until nothing listens on these `host:port`s any more (a stopped static pod takes a while).
    WaitStopped { addrs: Vec<String>, timeout_secs: u64 },
    /// Move a data (or WAL) directory aside to `NAME.old` (or `NAME.old.<time>`); never deleted.
    MoveAside { path: PathBuf },
    /// Put the staged data dir `from` in place at `to` (renamed, never replacing anything). When the
    /// data dir is a mount point, these are its `member` directories instead.
    PlaceStaged { from: PathBuf, to: PathBuf },
    /// Wait until the member at `endpoint` is healthy.
    WaitHealthy { endpoint: String, timeout_secs: u64 },
    /// Make the member's peer URLs the real ones (a data-dir restore brings back `http://localhost:2380`).
    FixPeerUrls { name: String, peer_urls: Vec<String> },
    /// `member add` through the API; `expect` is the membership afterwards the plan's edits assume.
    MemberAdd {
        name: String,
        peer_urls: Vec<String>,
        expect: Vec<InitialMember>,
    },
    /// Wait until the member is healthy and has applied what the leader had when it started.
    WaitCaughtUp { name: String, endpoint: String, timeout_secs: u64 },
    /// Remove the staging directory (what is left in it: nothing the host needs).
    RemoveStaging { staging: PathBuf },
    /// `member remove` through the API (a member no longer listed: done).
    MemberRemove { id: u64, name: String },
    /// Issue a new member's certificates from the etcd CA ([`super::certs`]).
    IssueCerts { request: super::certs::CertRequest },
    /// Write a new file (the new member's etcd.conf), never replacing other content.
    WriteFile { file: super::member::NewFile },
}

/// What a step needs besides the plan: the vault for staging steps, and the restore tool.
#[derive(Default)]
pub struct FlowContext<'a> {
    pub vault: Option<(&'a Vault, &'a Catalog, &'a SnapshotEntry)>,
    /// etcdutl/etcdctl to restore a v3 snapshot with (default from PATH).
    pub tool: Option<PathBuf>,
    pub progress: Option<crate::ops::backup::ProgressFn>,
}

const DONE_MARK: &str = "staged.done";

impl Step {
    /// One line for the numbered plan: what it does and the command it runs.
    pub fn describe(&self, plan: &Plan) -> String {
        let host = &plan.host;
        let snap = plan.snapshot.as_deref().map(|s| &s[..s.len().min(8)]).unwrap_or("?");
        match self {
            Step::StageV3 {
                staging,
                name,
                initial_cluster,
                token,
                peer_urls,
                point,
                ..
            } => format!(
                "fetch snapshot {snap}, verify it{} and build the new data dir in {} (changes nothing else): \
                 etcdctl snapshot restore snapshot.db --name {name} --initial-cluster {initial_cluster} \
                 --initial-cluster-token {token} --initial-advertise-peer-urls {peer_urls} --data-dir {}",
                point
                    .as_ref()
                    .map(|p| format!(", replay its delta segments up to {} in a temporary etcd on 127.0.0.1", p.target))
                    .unwrap_or_default(),
                staging.display(),
                staging.join(STAGED).display()
            ),
            Step::StageDatadir { staging, .. } => format!(
                "fetch data-dir snapshot {snap}, verify every file and lay it out in {} (changes nothing else)",
                staging.join(STAGED).display()
            ),
            Step::Host { action } => action.describe(host),
            Step::WaitStopped { addrs, .. } => format!("wait until nothing listens on {} any more", addrs.join(", ")),
            Step::MoveAside { path } => format!("move {} aside to {}.old (kept, never deleted)", path.display(), path.display()),
            Step::PlaceStaged { from, to } => format!("put the new data in place: mv {} {}", from.display(), to.display()),
            Step::WaitHealthy { endpoint, .. } => format!("wait until etcd at {endpoint} is healthy"),
            Step::FixPeerUrls { name, peer_urls } => format!(
                "check member {name}'s peer URL is {} (not localhost); if not: etcdctl member update ID {}",
                peer_urls.join(","),
                peer_urls.join(",")
            ),
            Step::MemberAdd { name, peer_urls, .. } => format!(
                "add the member through {}: etcdctl member add {name} --peer-urls={}",
                plan.etcd.endpoints.join(","),
                peer_urls.join(",")
            ),
            Step::WaitCaughtUp { name, endpoint, .. } => {
                format!("wait until member {name} at {endpoint} is healthy and has caught up with the leader")
            }
            Step::RemoveStaging { staging } => format!("remove the staging directory {}", staging.display()),
            Step::MemberRemove { id, name } => format!(
                "remove the member through {}: etcdctl member remove {id:x} ({name})",
                plan.etcd.endpoints.join(",")
            ),
            Step::IssueCerts { request } => request.describe(),
            Step::WriteFile { file } => file.describe(),
        }
    }

    /// The unified diff of the file this step edits, if it edits one.
    pub fn diff(&self) -> String {
        match self {
            Step::Host { action } => action.diff(),
            Step::WriteFile { file } => file.diff(),
            _ => String::new(),
        }
    }

    /// Whether the step changes the host or the cluster (a staging step or a wait does not): a
    /// flow that failed before any such step can be planned afresh.
    pub fn changes_host(&self) -> bool {
        !matches!(
            self,
            Step::StageV3 { .. }
                | Step::StageDatadir { .. }
                | Step::WaitStopped { .. }
                | Step::WaitHealthy { .. }
                | Step::WaitCaughtUp { .. }
        )
    }

    /// Do the step. A step that can tell it already took effect does nothing and says so.
    pub async fn apply(&self, plan: &Plan, cx: &FlowContext<'_>) -> Result<Applied> {
        let host = &plan.host;
        match self {
            Step::StageV3 {
                staging,
                name,
                initial_cluster,
                token,
                peer_urls,
                owner,
                point,
            } => {
                let dir = prepare_staging(host, staging)?;
                if dir.join(DONE_MARK).exists() && dir.join(STAGED).is_dir() {
                    return Ok(Applied::AlreadyDone(format!("the new data dir is staged in {}", staging.display())));
                }
                let (vault, catalog, snap) = need_vault(cx)?;
                let opts = EtcdRestoreOptions {
                    data_dir: PathBuf::new(),
                    name: name.clone(),
                    initial_cluster: initial_cluster.clone(),
                    initial_cluster_token: token.clone(),
                    initial_advertise_peer_urls: peer_urls.clone(),
                    tool: cx.tool.clone(),
                    owner: owner.clone(),
                    progress: cx.progress.clone(),
                };
                if let Some(point) = point {
                    let replay = crate::ops::deltas::replay::ReplayOptions {
                        etcd_binary: point.etcd_binary.clone(),
                        tool: cx.tool.clone(),
                    };
                    let (staged, r) = crate::ops::deltas::restore::stage_to_point(vault, catalog, point, &opts, &replay, &dir).await?;
                    mark_staged(&dir)?;
                    return Ok(Applied::Done(format!(
                        "fetched snapshot {}, replayed {} revision(s) ({} events) up to revision {} (received {}){}, built the new data dir with {}",
                        r.plan.base.id.short(),
                        r.groups_applied,
                        r.events_applied,
                        r.revision,
                        r.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        r.stopped_early
                            .as_ref()
                            .map(|w| format!(" (stopped at the last whole segment: {w})"))
                            .unwrap_or_default(),
                        staged.tool
                    )));
                }
                let staged = stage_snapshot_restore(vault, catalog, snap, &opts, &dir).await?;
                mark_staged(&dir)?;
                Ok(Applied::Done(format!(
                    "fetched and verified snapshot {} (sha256 {}), built the new data dir with {}",
                    snap.id.short(),
                    &staged.sha256[..16],
                    staged.tool
                )))
            }
            Step::StageDatadir { staging, owner } => {
                let dir = prepare_staging(host, staging)?;
                if dir.join(DONE_MARK).exists() && dir.join(STAGED).is_dir() {
                    return Ok(Applied::AlreadyDone(format!("the data dir is staged in {}", staging.display())));
                }
                let (vault, catalog, snap) = need_vault(cx)?;
                let report = stage_datadir(vault, catalog, snap, &dir, owner.as_deref()).await?;
                mark_staged(&dir)?;
                Ok(Applied::Done(format!(
                    "fetched and verified snapshot {}: {} files, {} bytes",
                    snap.id.short(),
                    report.files.len(),
                    report.bytes
                )))
            }
            Step::Host { action } => {
                let action = action.clone();
                let host = host.clone();
                crate::ops::blocking(move || action.apply(&host))
            }
            Step::WaitStopped { addrs, timeout_secs } => wait_ports_free(addrs, Duration::from_secs(*timeout_secs)).await,
            Step::MoveAside { path } => {
                let real = host.path(path);
                if std::fs::symlink_metadata(&real).is_err() {
                    return Ok(Applied::AlreadyDone(format!("nothing is at {}", path.display())));
                }
                let moved = move_aside(&real)?;
                Ok(Applied::Done(format!(
                    "moved {} aside to {}",
                    path.display(),
                    moved.map(|m| in_host(host, &m)).unwrap_or_default()
                )))
            }
            Step::PlaceStaged { from, to } => {
                let (staged, dest) = (host.path(from), host.path(to));
                if !staged.is_dir() {
                    if dest.is_dir() {
                        return Ok(Applied::AlreadyDone(format!("{} is in place", to.display())));
                    }
                    return Err(Error::not_found(format!(
                        "the staged data {} is gone and {} does not exist",
                        from.display(),
                        to.display()
                    ))
                    .hint("plan the flow again (without --resume)"));
                }
                let moved = place_staged(&staged, &dest)?;
                Ok(Applied::Done(match moved {
                    Some(m) => format!(
                        "put the new data in place at {} (what was there is at {})",
                        to.display(),
                        in_host(host, &m)
                    ),
                    None => format!("put the new data in place at {}", to.display()),
                }))
            }
            Step::WaitHealthy { endpoint, timeout_secs } => {
                let st = cluster::wait_healthy(endpoint, &plan.etcd, Duration::from_secs(*timeout_secs))
                    .await
                    .map_err(|e| e.hint(service_hint(plan)))?;
                Ok(Applied::Done(format!(
                    "etcd {} at {endpoint} is healthy (revision {})",
                    st.version, st.revision
                )))
            }
            Step::FixPeerUrls { name, peer_urls } => fix_peer_urls(plan, name, peer_urls).await,
            Step::MemberAdd { name, peer_urls, expect } => member_add(plan, name, peer_urls, expect).await,
            Step::WaitCaughtUp {
                name,
                endpoint,
                timeout_secs,
            } => wait_caught_up(plan, name, endpoint, Duration::from_secs(*timeout_secs)).await,
            Step::RemoveStaging { staging } => {
                let dir = host.path(staging);
                if !dir.exists() {
                    return Ok(Applied::AlreadyDone(format!("{} is gone", staging.display())));
                }
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("cannot remove {}", staging.display())).with_source(e))?;
                Ok(Applied::Done(format!("removed {}", staging.display())))
            }
            Step::MemberRemove { id, name } => super::member::remove_member(plan, *id, name).await,
            Step::IssueCerts { request } => request.apply(&host.root),
            Step::WriteFile { file } => file.apply(&host.root),
        }
    }
}

fn need_vault<'a>(cx: &FlowContext<'a>) -> Result<(&'a Vault, &'a Catalog, &'a SnapshotEntry)> {
    cx.vault
        .ok_or_else(|| Error::usage("this step fetches the snapshot: the vault must be given (--vault, --identity)"))
}

/// The staging dir (in-host `staging`) as a real path, created private if missing.
fn prepare_staging(host: &Host, staging: &Path) -> Result<PathBuf> {
    let real = host.path(staging);
    private_staging_dir(&real)?;
    Ok(real)
}

fn mark_staged(dir: &Path) -> Result<()> {
    let mark = dir.join(DONE_MARK);
    std::fs::write(&mark, b"").map_err(|e| Error::io(format!("cannot write {}", mark.display())).with_source(e))
}

/// `real` (a path under the host's root) as the host names it.
fn in_host(host: &Host, real: &Path) -> String {
    match real.strip_prefix(&host.root) {
        Ok(rel) if host.root != Path::new("/") => format!("/{}", rel.display()),
        _ => real.display().to_string(),
    }
}

fn service_hint(plan: &Plan) -> String {
    format!(
        "look at etcd's log (`journalctl -u etcd`), fix the cause, then run `vaultctl {} --resume`",
        plan.flow
    )
}

/// `host:port` of a URL (`https://10.0.0.1:2380` -> `10.0.0.1:2380`).
pub fn url_addr(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let port = u.port_or_known_default()?;
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Whether something listens on `addr` (a bind of it fails because it is in use).
pub fn port_in_use(addr: &str) -> bool {
    let Ok(mut addrs) = addr.to_socket_addrs() else { return false };
    addrs.any(|a| matches!(TcpListener::bind(a), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse))
}

async fn wait_ports_free(addrs: &[String], timeout: Duration) -> Result<Applied> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut waited = false;
    loop {
        let busy: Vec<&String> = addrs.iter().filter(|a| port_in_use(a)).collect();
        if busy.is_empty() {
            let what = format!("nothing listens on {}", addrs.join(", "));
            return Ok(if waited { Applied::Done(what) } else { Applied::AlreadyDone(what) });
        }
        if tokio::time::Instant::now() >= deadline {
            let list: Vec<&str> = busy.iter().map(|s| s.as_str()).collect();
            return Err(Error::io(format!(
                "{} still in use {}s after etcd was stopped",
                list.join(", "),
                timeout.as_secs()
            ))
            .hint(format!(
                "find what listens there (`ss -ltnp`), stop it, then run the flow again with --resume (first port: {})",
                list[0]
            )));
        }
        waited = true;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fix_peer_urls(plan: &Plan, name: &str, peer_urls: &[String]) -> Result<Applied> {
    let mut client = cluster::connect(&plan.etcd).await?;
    let members = cluster::members(&mut client).await?;
    let me = members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::source_err(format!("the cluster has no member named {name}")))?;
    if same_urls(&me.peer_urls, peer_urls) {
        return Ok(Applied::AlreadyDone(format!("member {name}'s peer URL is {}", peer_urls.join(","))));
    }
    cluster::update_peer_urls(&mut client, me.id, peer_urls).await?;
    Ok(Applied::Done(format!(
        "member {name}'s peer URL was {}, now {} (etcdctl member update {} {})",
        me.peer_urls.join(","),
        peer_urls.join(","),
        me.id_hex(),
        peer_urls.join(",")
    )))
}

/// The membership as `ETCD_INITIAL_CLUSTER` wants it, `name` standing in for an unstarted member
/// with these peer URLs.
pub fn as_initial_cluster(members: &[cluster::Member], name: &str, peer_urls: &[String]) -> Vec<InitialMember> {
    members
        .iter()
        .map(|m| InitialMember {
            name: if m.is_unstarted() && same_urls(&m.peer_urls, peer_urls) {
                name.to_string()
            } else {
                m.name.clone()
            },
            peer_urls: m.peer_urls.clone(),
        })
        .collect()
}

fn same_membership(a: &[InitialMember], b: &[InitialMember]) -> bool {
    let key = |v: &[InitialMember]| {
        let mut k: Vec<(String, Vec<String>)> = v
            .iter()
            .map(|m| {
                let mut u = m.peer_urls.clone();
                u.sort();
                (m.name.clone(), u)
            })
            .collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

async fn member_add(plan: &Plan, name: &str, peer_urls: &[String], expect: &[InitialMember]) -> Result<Applied> {
    let mut client = cluster::connect(&plan.etcd).await?;
    let members = cluster::members(&mut client).await?;
    if let Some(m) = members.iter().find(|m| same_urls(&m.peer_urls, peer_urls)) {
        if m.is_unstarted() || m.name == name {
            return Ok(Applied::AlreadyDone(format!(
                "the cluster has member {} with peer URL {}",
                m.id_hex(),
                peer_urls.join(",")
            )));
        }
        return Err(Error::usage(format!(
            "member {} ({}) already has peer URL {}",
            m.name,
            m.id_hex(),
            peer_urls.join(",")
        ))
        .hint("remove it first (`vaultctl etcd member remove`) if this host replaces it"));
    }
    if let Some(m) = members.iter().find(|m| m.is_unstarted()) {
        return Err(Error::usage(format!(
            "member {} ({}) was added but has not started yet; etcd members join one at a time",
            m.id_hex(),
            m.peer_urls.join(",")
        ))
        .hint("finish joining that member first, or remove it (`vaultctl etcd member remove ID`)"));
    }
    // etcd refuses a member add ("unhealthy cluster") until every started member has been
    // connected for a few seconds, as right after the previous member joined: retry a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (added, after) = loop {
        match cluster::add(&mut client, peer_urls).await {
            Err(e) if e.to_string().contains("unhealthy cluster") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            result => break result?,
        }
    };
    let got = as_initial_cluster(&after, name, peer_urls);
    if !same_membership(&got, expect) {
        return Err(Error::source_err(format!(
            "member {name} was added as {}, but the membership is now {} where the plan expected {}; etcd.conf was not changed",
            added.id_hex(),
            EtcdConf::initial_cluster_text(&got),
            EtcdConf::initial_cluster_text(expect)
        ))
        .hint("the cluster changed since the plan was made: remove the new member if it is wrong and plan again"));
    }
    Ok(Applied::Done(format!(
        "added member {name} as {} (ETCD_INITIAL_CLUSTER={})",
        added.id_hex(),
        EtcdConf::initial_cluster_text(&got)
    )))
}

async fn wait_caught_up(plan: &Plan, name: &str, endpoint: &str, timeout: Duration) -> Result<Applied> {
    let deadline = tokio::time::Instant::now() + timeout;
    let st = cluster::wait_healthy(endpoint, &plan.etcd, timeout)
        .await
        .map_err(|e| e.hint(service_hint(plan)))?;
    // what the leader had committed when the member became healthy
    let mut target = 0;
    for ep in &plan.etcd.endpoints {
        if let Ok(leader) = cluster::status(ep, &plan.etcd).await {
            target = target.max(leader.raft_index);
        }
    }
    let mut applied = st.raft_applied_index;
    while applied < target {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::source_err(format!(
                "member {name} at {endpoint} has applied raft index {applied} of {target} after {}s",
                timeout.as_secs()
            ))
            .hint(service_hint(plan)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        applied = cluster::status(endpoint, &plan.etcd).await?.raft_applied_index;
    }
    Ok(Applied::Done(format!(
        "member {name} at {endpoint} is healthy and caught up (raft index {applied})"
    )))
}
