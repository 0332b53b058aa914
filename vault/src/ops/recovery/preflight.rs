//! Pre-flight checks: what a flow looks at before it changes anything, each with a verdict and,
//! when it fails, what to do. A failed check stops `--execute`; checks marked `forcible` can be
//! overridden with `--force` (the operator knows better, e.g. a deliberate restore over a live
//! cluster).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::cluster::quorum;
use super::plan::{port_in_use, url_addr};
use crate::format::EtcdMember;
use crate::host::command::find_on_path;
use crate::host::etcd_conf::EtcdConf;
use crate::host::{Host, ServiceControl, ServiceState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// `--force` overrides this failure.
    pub forcible: bool,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Pass,
            detail: detail.into(),
            hint: None,
            forcible: false,
        }
    }

    pub fn warn(name: &str, detail: impl Into<String>) -> Check {
        Check {
            status: CheckStatus::Warn,
            ..Check::pass(name, detail)
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            status: CheckStatus::Fail,
            hint: Some(hint.into()),
            ..Check::pass(name, detail)
        }
    }

    pub fn forcible(mut self) -> Check {
        self.forcible = true;
        self
    }
}

/// The checks that stop the flow: failed ones, less those `--force` overrides.
pub fn blocking(checks: &[Check], force: bool) -> Vec<&Check> {
    checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail && !(force && c.forcible))
        .collect()
}

/// The etcd binary the service runs exists, and its version. For a systemd unit the binary is the
/// one its `ExecStart` names (after drop-ins); otherwise `etcd` on PATH. `binary` overrides.
pub fn etcd_binary(host: &Host, service: &ServiceControl, binary: Option<&Path>, snapshot_version: Option<&str>) -> Check {
    const NAME: &str = "etcd binary";
    let (path, whence) = match (binary, service) {
        (Some(b), _) => (Some(b.to_path_buf()), "--etcd-binary".to_string()),
        (None, ServiceControl::Systemd { unit }) => match crate::host::dropin::effective_exec_start(host, unit) {
            Ok(exec) => (binary_in(&exec), format!("the ExecStart of unit {unit}")),
            Err(e) => return Check::fail(NAME, e.to_string(), "say how etcd runs here (--service-unit, --static-pod)"),
        },
        (None, ServiceControl::StaticPod { manifest, .. }) => {
            return Check::pass(NAME, format!("runs in the static pod {} (its image)", manifest.display()));
        }
        (None, ServiceControl::Commands { .. }) => (find_on_path("etcd"), "PATH".to_string()),
    };
    let Some(path) = path else {
        return Check::fail(
            NAME,
            format!("no etcd binary found in {whence}"),
            "install etcd (RHEL: yum install etcd) or name it with --etcd-binary",
        );
    };
    if !path.is_file() {
        return Check::fail(
            NAME,
            format!("{whence} runs {}, which does not exist", path.display()),
            "install etcd (RHEL: yum install etcd), or fix the unit, before recovering",
        );
    }
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("etcd Version:"))
                .map(str::trim)
                .unwrap_or("unknown")
                .to_string();
            let older = snapshot_version.is_some_and(|snap| minor(&version) < minor(snap) && minor(&version) != (0, 0));
            if older {
                Check::warn(
                    NAME,
                    format!(
                        "{} is etcd {version}, older than the {} that took the snapshot",
                        path.display(),
                        snapshot_version.unwrap_or_default()
                    ),
                )
            } else {
                Check::pass(NAME, format!("{} is etcd {version}", path.display()))
            }
        }
        Ok(out) => Check::fail(
            NAME,
            format!("{} --version failed ({})", path.display(), out.status),
            "check the etcd installation",
        ),
        Err(e) => Check::fail(NAME, format!("cannot run {}: {e}", path.display()), "check the etcd installation"),
    }
}

fn minor(version: &str) -> (u32, u32) {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The word of an `ExecStart` that is the etcd binary (`/usr/bin/etcd`, inside `bash -c "..."` too).
fn binary_in(exec: &str) -> Option<PathBuf> {
    exec.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .map(|w| w.trim_start_matches(['-', '@']))
        .find(|w| Path::new(w).file_name().is_some_and(|n| n == "etcd"))
        .map(|w| {
            if w.contains('/') {
                PathBuf::from(w)
            } else {
                find_on_path(w).unwrap_or_else(|| PathBuf::from(w))
            }
        })
}

/// Free space for `need` bytes (twice the database) where `dir` (a real path; its nearest
/// existing ancestor) is.
pub fn disk_space(dir: &Path, shown: &Path, need: u64) -> Check {
    const NAME: &str = "disk space";
    let mut at = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_path_buf(),
            None => break,
        }
    }
    match rustix::fs::statvfs(&at) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free >= need {
                Check::pass(NAME, format!("{} free at {} (need {})", mib(free), shown.display(), mib(need)))
            } else {
                Check::fail(
                    NAME,
                    format!(
                        "only {} free at {}, need {} (twice the database)",
                        mib(free),
                        shown.display(),
                        mib(need)
                    ),
                    format!("free space on the file system of {}", shown.display()),
                )
            }
        }
        Err(e) => Check::warn(NAME, format!("cannot tell the free space at {}: {e}", shown.display())),
    }
}

fn mib(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}

/// The member's listen ports are free, or held by this host's etcd, which the plan stops.
pub fn ports_free(conf: &EtcdConf, state: &ServiceState) -> Check {
    const NAME: &str = "ports";
    let urls: Vec<(&str, &String)> = conf
        .listen_peer_urls
        .iter()
        .map(|u| ("ETCD_LISTEN_PEER_URLS", u))
        .chain(conf.listen_client_urls.iter().map(|u| ("ETCD_LISTEN_CLIENT_URLS", u)))
        .collect();
    if urls.is_empty() {
        return Check::warn(NAME, format!("{} sets no listen URLs", conf.host_path.display()));
    }
    let busy: Vec<String> = urls
        .iter()
        .filter_map(|(key, u)| url_addr(u).filter(|a| port_in_use(a)).map(|a| format!("{a} ({key})")))
        .collect();
    let all: Vec<String> = urls.iter().filter_map(|(_, u)| url_addr(u)).collect();
    if busy.is_empty() {
        Check::pass(NAME, format!("{} free", all.join(", ")))
    } else if *state == ServiceState::Running {
        Check::pass(
            NAME,
            format!("{} in use by this host's etcd, which the plan stops first", busy.join(", ")),
        )
    } else {
        Check::fail(
            NAME,
            format!("{} in use, and this host's etcd is not running", busy.join(", ")),
            "find what listens there (`ss -ltnp`) and stop it; etcd needs these ports",
        )
    }
}

/// Which of `others` (the other members: name and peer URLs, client URLs if known) answer on a
/// port. Restoring while they run would split the cluster; while they have quorum, it throws away
/// every write since the snapshot.
pub async fn others_down(others: &[EtcdMember], cluster_size: usize) -> Check {
    const NAME: &str = "other members down";
    let mut up = Vec::new();
    for m in others {
        let addrs: Vec<String> = m.peer_urls.iter().chain(&m.client_urls).filter_map(|u| url_addr(u)).collect();
        for a in addrs {
            if answers(&a).await {
                up.push(format!("{} at {a}", m.name));
                break;
            }
        }
    }
    if up.is_empty() {
        return Check::pass(
            NAME,
            if others.is_empty() {
                "this is the only member".to_string()
            } else {
                format!(
                    "none of {} answers",
                    others.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            },
        );
    }
    let n = cluster_size.max(others.len() + 1);
    let live = up.len();
    let detail = if live >= quorum(n) {
        format!(
            "{} running: {live} of {n} members are up, a quorum is {}, so the cluster still works; a restore would throw away every write since the snapshot",
            up.join(", "),
            quorum(n)
        )
    } else {
        format!(
            "{} running ({live} of {n} up, no quorum): they would fight the restored member",
            up.join(", ")
        )
    };
    Check::fail(
        NAME,
        detail,
        "stop etcd on every other member first (`systemctl stop etcd`); to replace a single failed member of a working cluster use `vaultctl etcd member remove` and `vaultctl etcd join` instead; --force restores anyway",
    )
    .forcible()
}

async fn answers(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The snapshot comes from the cluster this host's etcd.conf describes: this member (by name, and
/// its peer URL) is one of the snapshot's members.
pub fn same_cluster(conf: &EtcdConf, name: &str, snap_cluster: &str, snap_members: &[EtcdMember]) -> Check {
    const NAME: &str = "same cluster";
    let listed = snap_members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| !n.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let conf_names: Vec<&str> = conf.initial_cluster.iter().map(|m| m.name.as_str()).collect();
    let me = snap_members.iter().find(|m| m.name == name);
    let peer_ok = me.is_some_and(|m| {
        conf.initial_advertise_peer_urls.is_empty()
            || m.peer_urls
                .iter()
                .any(|u| conf.initial_advertise_peer_urls.contains(u) || u.contains("localhost"))
    });
    let overlap = conf_names.iter().filter(|n| snap_members.iter().any(|m| &m.name == *n)).count();
    if me.is_some() && peer_ok {
        Check::pass(
            NAME,
            format!("the snapshot is of cluster {snap_cluster} (members {listed}), which has member {name}"),
        )
    } else {
        Check::fail(
            NAME,
            format!(
                "the snapshot is of cluster {snap_cluster} with members {listed}; {} describes member {name} of {} ({overlap} name(s) in common){}",
                conf.host_path.display(),
                conf_names.join(", "),
                if me.is_some() { ", with another peer URL" } else { "" }
            ),
            "pick a snapshot of this cluster (`vaultctl snapshots --kind etcd-v3`), or pass --force if this host really is to take over that cluster's data",
        )
        .forcible()
    }
}
