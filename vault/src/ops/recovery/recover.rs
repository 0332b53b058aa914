//! Flow 1, `vaultctl etcd recover ID`: bring the cluster back on this host as a new one-member
//! cluster from a snapshot, after which the other members join (flow 2, [`super::join`]).
//!
//! From an etcd-v3 snapshot (the runbook's v3 path): stage the data dir with `etcdctl snapshot
//! restore` (new cluster token, this member alone), stop etcd, move the old data dir aside, put
//! the new one in place, start, wait healthy, check the peer URL. From an etcd-datadir snapshot
//! (the runbook's v2 path): lay the backup down, start once with `--force-new-cluster` through a
//! systemd drop-in, remove it, restart, and fix the peer URL that comes back as localhost.

use crate::catalog::SnapshotEntry;
use crate::error::{Error, Result};
use crate::format::{EtcdMember, PayloadKind};
use crate::host::etcd_conf::EtcdConf;
use crate::host::{HostAction, ServiceControl, ServiceOp, dropin};
use crate::ops::etcd_restore::restore_tool;

use super::options::{FlowOptions, LocalMember};
use super::plan::{Plan, Step};
use super::preflight::{self, Check};

/// The plan for `etcd recover` and its pre-flight checks (nothing is changed by either).
pub async fn plan_recover(opts: &FlowOptions, snap: &SnapshotEntry) -> Result<(Plan, Vec<Check>)> {
    let me = opts.local_member()?;
    let id = hex::encode(crate::crypto::random_bytes::<4>());
    let staging = me.staging("recover", &id);
    let (cluster_id, members, version, db_bytes) = match (&snap.manifest.kind, &snap.manifest.etcd_v3, &snap.manifest.etcd_datadir) {
        (PayloadKind::EtcdV3, Some(info), _) => (
            info.cluster_id.clone(),
            info.members.clone(),
            info.version.clone(),
            snap.manifest.stats.bytes.max(info.db_size.max(0) as u64),
        ),
        (PayloadKind::EtcdDatadir, _, Some(info)) => (
            info.cluster_id.clone(),
            info.members.clone(),
            info.version.clone(),
            snap.manifest.stats.bytes,
        ),
        (kind, _, _) => {
            return Err(Error::usage(format!(
                "snapshot {} is a {kind} snapshot; `etcd recover` needs an etcd-v3 or etcd-datadir snapshot",
                snap.id.short()
            ))
            .hint("list them with `vaultctl snapshots --kind etcd-v3`"));
        }
    };
    let stop = HostAction::Service(me.service.clone(), ServiceOp::Stop);
    let start = HostAction::Service(me.service.clone(), ServiceOp::Start);
    let endpoint = me.client_urls[0].clone();
    let wait_healthy = Step::WaitHealthy {
        endpoint: endpoint.clone(),
        timeout_secs: me.timeout_secs,
    };
    let mut steps = Vec::new();
    let datadir = snap.manifest.kind == PayloadKind::EtcdDatadir;
    let token = format!("vault-recover-{id}");
    if datadir {
        steps.push(Step::StageDatadir {
            staging: staging.clone(),
            owner: opts.owner.clone(),
        });
    } else {
        steps.push(Step::StageV3 {
            staging: staging.clone(),
            name: me.name.clone(),
            initial_cluster: EtcdConf::initial_cluster_text(&[crate::host::etcd_conf::InitialMember {
                name: me.name.clone(),
                peer_urls: me.peer_urls.clone(),
            }]),
            token: token.clone(),
            peer_urls: me.peer_urls.join(","),
            owner: opts.owner.clone(),
            point: None,
        });
    }
    steps.push(Step::Host { action: stop });
    steps.push(Step::WaitStopped {
        addrs: me.listen_addrs(),
        timeout_secs: me.timeout_secs,
    });
    steps.push(Step::MoveAside { path: me.replaced_dir() });
    steps.push(Step::PlaceStaged {
        from: me.staged_dir(&staging),
        to: me.replaced_dir(),
    });
    if let Some(restorecon) = me.restorecon() {
        steps.push(Step::Host { action: restorecon });
    }
    if datadir {
        let ServiceControl::Systemd { unit } = &me.service else {
            return Err(
                Error::usage("the force-new-cluster path (an etcd-datadir snapshot) needs etcd to run as a systemd unit")
                    .hint("recover from an etcd-v3 snapshot instead, which needs no --force-new-cluster"),
            );
        };
        // A raft snapshot at the end of the forced start: after the restart the log begins there,
        // so members that join get the database sent whole. Without it they would replay the
        // backup's log, which holds no v3 writes (they are in the database), and stay empty.
        let flags: &[&str] = if snapshot_count_set(&me)? { &[] } else { &["--snapshot-count=1"] };
        let drop_in = dropin::force_new_cluster_with(&me.host, unit, flags)?;
        steps.push(Step::Host {
            action: HostAction::WriteDropIn(drop_in.clone()),
        });
        steps.push(Step::Host {
            action: HostAction::DaemonReload,
        });
        steps.push(Step::Host { action: start });
        steps.push(wait_healthy.clone());
        steps.push(Step::Host {
            action: HostAction::RemoveDropIn(drop_in),
        });
        steps.push(Step::Host {
            action: HostAction::DaemonReload,
        });
        steps.push(Step::Host {
            action: HostAction::Service(me.service.clone(), ServiceOp::Restart),
        });
        steps.push(wait_healthy);
    } else {
        steps.push(Step::Host { action: start });
        steps.push(wait_healthy);
    }
    steps.push(Step::FixPeerUrls {
        name: me.name.clone(),
        peer_urls: me.peer_urls.clone(),
    });
    steps.push(Step::RemoveStaging { staging });

    let others = other_members(&me, &members);
    let checks = recover_checks(opts, &me, snap, &cluster_id, &members, &others, &version, db_bytes).await;
    let summary = vec![
        format!(
            "member {} ({}) on this host, data dir {}{}, run as {}",
            me.name,
            me.peer_urls.join(","),
            me.data_dir.display(),
            if me.data_dir_is_mount {
                " (a mount point: its member/ directory is replaced)"
            } else {
                ""
            },
            me.service.name()
        ),
        format!(
            "snapshot {} ({}) taken {} from cluster {cluster_id}{}",
            snap.id.short(),
            snap.manifest.kind,
            snap.manifest.time.format("%Y-%m-%d %H:%M:%S UTC"),
            snap.manifest
                .etcd_v3
                .as_ref()
                .map(|i| format!(" at revision {}", i.revision))
                .unwrap_or_default()
        ),
        if datadir {
            "the member starts once with --force-new-cluster, as a new one-member cluster".to_string()
        } else {
            format!("a new one-member cluster (token {token}); the other members join it afterwards")
        },
    ];
    let next = others
        .iter()
        .map(|m| {
            format!(
                "on {} ({}): vaultctl etcd join --cluster {endpoint} --execute",
                m.name,
                m.peer_urls.join(",")
            )
        })
        .collect();
    let plan = Plan {
        flow: "etcd recover".to_string(),
        id,
        made_at: chrono::Utc::now(),
        host: me.host.clone(),
        etcd: me.etcd(std::slice::from_ref(&endpoint)),
        snapshot: Some(snap.id.hex()),
        summary,
        steps,
        next,
    };
    Ok((plan, checks))
}

/// Whether etcd.conf sets ETCD_SNAPSHOT_COUNT (etcd 3.4 refuses that variable together with the flag).
fn snapshot_count_set(me: &LocalMember) -> Result<bool> {
    let conf = crate::host::shell_conf::ShellConf::load(&me.host.root, &me.conf.host_path)?;
    Ok(conf.get("ETCD_SNAPSHOT_COUNT").is_some_and(|v| !v.trim().is_empty()))
}

/// The other members: those of etcd.conf's ETCD_INITIAL_CLUSTER and of the snapshot, but this one.
fn other_members(me: &LocalMember, snap_members: &[EtcdMember]) -> Vec<EtcdMember> {
    let mut others: Vec<EtcdMember> = Vec::new();
    for m in &me.conf.initial_cluster {
        if m.name != me.name {
            others.push(EtcdMember {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                ..Default::default()
            });
        }
    }
    for m in snap_members {
        if m.name == me.name || m.name.is_empty() {
            continue;
        }
        match others.iter_mut().find(|o| o.name == m.name) {
            Some(o) => {
                o.client_urls = m.client_urls.clone();
                for u in &m.peer_urls {
                    if !o.peer_urls.contains(u) {
                        o.peer_urls.push(u.clone());
                    }
                }
            }
            None => others.push(m.clone()),
        }
    }
    others
}

#[allow(clippy::too_many_arguments)]
async fn recover_checks(
    opts: &FlowOptions,
    me: &LocalMember,
    snap: &SnapshotEntry,
    cluster_id: &str,
    members: &[EtcdMember],
    others: &[EtcdMember],
    version: &str,
    db_bytes: u64,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let state = me.service.status(&me.host);
    match &state {
        Ok(crate::host::ServiceState::NotInstalled) => checks.push(Check::fail(
            "service",
            format!("this host has no {}", me.service.name()),
            "install etcd, or say how it runs here (--service-unit, --static-pod)",
        )),
        Ok(s) => checks.push(Check::pass("service", format!("{} is {s:?}", me.service.name()).to_lowercase())),
        Err(e) => checks.push(Check::fail("service", e.to_string(), "check systemctl works on this host")),
    }
    checks.push(preflight::etcd_binary(
        &me.host,
        &me.service,
        opts.etcd_binary.as_deref(),
        Some(version),
    ));
    if snap.manifest.kind == PayloadKind::EtcdV3 {
        checks.push(match restore_tool(None) {
            Ok((path, _)) => Check::pass("restore tool", format!("{}", path.display())),
            Err(e) => Check::fail("restore tool", e.to_string(), e.hint.clone().unwrap_or_default()),
        });
    }
    // where the staging dir goes: beside the data dir, or inside it when it is a mount point
    let data_parent = match me.data_dir_is_mount {
        true => me.data_dir.as_path(),
        false => me.data_dir.parent().unwrap_or(std::path::Path::new("/")),
    };
    checks.push(preflight::disk_space(
        &me.host.path(data_parent),
        data_parent,
        db_bytes.saturating_mul(2),
    ));
    let state = state.unwrap_or(crate::host::ServiceState::Unknown);
    checks.push(preflight::ports_free(&me.conf, &state));
    checks.push(preflight::others_down(others, members.len().max(me.conf.initial_cluster.len())).await);
    checks.push(preflight::same_cluster(&me.conf, &me.name, cluster_id, members));
    if snap.manifest.kind == PayloadKind::EtcdDatadir && snapshot_count_set(me).unwrap_or(false) {
        checks.push(Check::fail(
            "snapshot count",
            format!(
                "{} sets ETCD_SNAPSHOT_COUNT, so the forced start cannot add --snapshot-count=1; members joining later would get no v3 data from the backup's log",
                me.conf.host_path.display()
            ),
            "comment ETCD_SNAPSHOT_COUNT out of etcd.conf for the recovery (put it back afterwards), or recover from an etcd-v3 snapshot",
        ));
    }
    if let Some(wal) = &me.conf.wal_dir {
        checks.push(Check::fail(
            "wal dir",
            format!("{} sets ETCD_WAL_DIR={}", me.conf.host_path.display(), wal.display()),
            "vault lays the WAL down inside the data dir: comment ETCD_WAL_DIR out of etcd.conf, then run this again",
        ));
    }
    checks
}

/// Make a recover plan restore to a point in time: its staging step replays the delta segments
/// of the snapshot (the base the target resolved to) up to `point`. Refused for a data-dir plan.
pub fn replay_to_point(plan: &mut Plan, point: crate::ops::deltas::restore::PointInTime) -> Result<()> {
    let Some(Step::StageV3 { point: p, .. }) = plan.steps.iter_mut().find(|s| matches!(s, Step::StageV3 { .. })) else {
        return Err(Error::usage("a point-in-time recovery needs an etcd-v3 base snapshot"));
    };
    plan.summary
        .push(format!("point in time: {}, replayed from delta segments", point.target));
    *p = Some(point);
    Ok(())
}
