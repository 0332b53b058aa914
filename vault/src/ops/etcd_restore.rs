//! Build an etcd member data directory from a vault snapshot: fetch and verify the snapshot,
//! run `etcdutl snapshot restore` (3.5+) or `etcdctl snapshot restore` (3.4) into a staging
//! directory beside the target, move any existing data dir aside (never delete), rename the
//! new one into place and hand it to the `etcd` user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::PayloadKind;
use crate::ops::restore::{move_aside, restore_to_file, running_as_root};
use crate::ops::safe_fs::SafeDir;
use crate::repo::Vault;

#[derive(Clone, Default)]
pub struct EtcdRestoreOptions {
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    /// Use this tool instead of looking for etcdutl/etcdctl on PATH.
    pub tool: Option<PathBuf>,
    /// Owner for the new data dir; default: the `etcd` user when it exists and we run as root.
    pub owner: Option<String>,
    /// Called with the bytes of the snapshot fetched so far.
    pub progress: Option<crate::ops::backup::ProgressFn>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EtcdRestoreReport {
    pub snapshot: String,
    pub data_dir: PathBuf,
    pub moved_aside: Option<PathBuf>,
    pub tool: String,
    pub owner: Option<String>,
    pub revision: Option<i64>,
    pub sha256: String,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// `(uid, gid)` of a user from /etc/passwd.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

pub async fn etcd_restore(vault: &Vault, catalog: &Catalog, snap: &SnapshotEntry, opts: &EtcdRestoreOptions) -> Result<EtcdRestoreReport> {
    if snap.manifest.kind != PayloadKind::EtcdV3 {
        return Err(Error::usage(format!(
            "snapshot {} is a {} snapshot, not etcd-v3",
            snap.id.short(),
            snap.manifest.kind
        )));
    }
    for (flag, v) in [
        ("--name", &opts.name),
        ("--initial-cluster", &opts.initial_cluster),
        ("--initial-cluster-token", &opts.initial_cluster_token),
        ("--initial-advertise-peer-urls", &opts.initial_advertise_peer_urls),
    ] {
        if v.is_empty() {
            return Err(Error::usage(format!("etcd restore needs {flag}")));
        }
    }
    let (tool, tool_name) = match &opts.tool {
        Some(t) => (
            t.clone(),
            t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        ),
        None => match find_on_path("etcdutl") {
            Some(p) => (p, "etcdutl".to_string()),
            None => match find_on_path("etcdctl") {
                Some(p) => (p, "etcdctl".to_string()),
                None => {
                    return Err(Error::usage("neither etcdutl (etcd 3.5+) nor etcdctl (3.4) is on PATH")
                        .hint("install the etcd client tools (Debian: apt-get install etcd-client) or pass --etcd-tool PATH"));
                }
            },
        },
    };
    let owner = match &opts.owner {
        Some(o) => Some((
            o.clone(),
            lookup_user(o).ok_or_else(|| Error::usage(format!("user {o} does not exist")))?,
        )),
        None if running_as_root() => lookup_user("etcd").map(|ids| ("etcd".to_string(), ids)),
        None => None,
    };

    let data_dir = &opts.data_dir;
    let data_name = data_dir
        .file_name()
        .ok_or_else(|| Error::usage(format!("--data-dir {} names no directory", data_dir.display())))?;
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    fs::create_dir_all(&parent).context(ErrorKind::Io, || format!("cannot create {}", parent.display()))?;
    let parent_dir = SafeDir::open(&parent)?;
    let staging_name = format!(
        ".vault-restore-{}-{}",
        data_name.to_string_lossy(),
        hex::encode(crate::crypto::random_bytes::<4>())
    );
    let staging = parent.join(&staging_name);
    // 0700: it holds the snapshot (every Secret of the cluster) until the data dir is in place
    parent_dir
        .mkdir(staging_name.as_ref(), 0o700)
        .context(ErrorKind::Io, || format!("cannot create staging directory {}", staging.display()))?;
    let cleanup = |staging: &Path| {
        // Only what this run created: the fetched snapshot copy and an unfinished staging data dir.
        let _ = fs::remove_dir_all(staging);
    };
    let snapshot_file = staging.join("snapshot.db");
    let restored = match restore_to_file(vault, catalog, snap, &snapshot_file, opts.progress.clone()).await {
        Ok(r) => r,
        Err(e) => {
            cleanup(&staging);
            return Err(e);
        }
    };
    let new_dir = staging.join("member-data");
    let mut cmd = Command::new(&tool);
    cmd.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(&snapshot_file)
        .arg("--name")
        .arg(&opts.name)
        .arg("--data-dir")
        .arg(&new_dir)
        .arg("--initial-cluster")
        .arg(&opts.initial_cluster)
        .arg("--initial-cluster-token")
        .arg(&opts.initial_cluster_token)
        .arg("--initial-advertise-peer-urls")
        .arg(&opts.initial_advertise_peer_urls);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            cleanup(&staging);
            return Err(Error::io(format!("cannot run {}", tool.display())).with_source(e));
        }
    };
    if !out.status.success() {
        cleanup(&staging);
        return Err(Error::source_err(format!(
            "{tool_name} snapshot restore failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("the existing data dir was not touched"));
    }
    if let Some((name, (uid, gid))) = &owner
        && let Err(e) = chown_tree(&new_dir, *uid, *gid)
    {
        cleanup(&staging);
        return Err(Error::io(format!("cannot give the restored data dir to user {name}")).with_source(e));
    }
    let moved_aside = move_aside(data_dir)?;
    let placed = SafeDir::open(&staging).and_then(|staged| {
        staged
            .rename_noreplace("member-data".as_ref(), &parent_dir, data_name)
            .context(ErrorKind::Io, || {
                format!(
                    "cannot move the restored data dir into place at {} (it is in {})",
                    data_dir.display(),
                    new_dir.display()
                )
            })
    });
    placed?;
    parent_dir
        .sync()
        .context(ErrorKind::Io, || format!("cannot fsync {}", parent.display()))?;
    cleanup(&staging);
    Ok(EtcdRestoreReport {
        snapshot: snap.id.hex(),
        data_dir: data_dir.clone(),
        moved_aside,
        tool: tool_name,
        owner: owner.map(|(n, _)| n),
        revision: snap.manifest.etcd_v3.as_ref().map(|e| e.revision),
        sha256: restored.sha256,
    })
}
