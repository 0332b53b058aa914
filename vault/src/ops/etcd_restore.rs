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
use crate::host::command::find_on_path;
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

/// The name of the built data dir inside a staging directory.
pub const STAGED: &str = "member-data";

/// The snapshot restore tool to run: `tool` if given, else etcdutl (3.5+), else etcdctl (3.4),
/// from PATH. Returns its path and name.
pub fn restore_tool(tool: Option<&Path>) -> Result<(PathBuf, String)> {
    if let Some(t) = tool {
        let name = t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok((t.to_path_buf(), name));
    }
    for name in ["etcdutl", "etcdctl"] {
        if let Some(p) = find_on_path(name) {
            return Ok((p, name.to_string()));
        }
    }
    Err(Error::usage("neither etcdutl (etcd 3.5+) nor etcdctl (3.4) is on PATH")
        .hint("install the etcd client tools (Debian: apt-get install etcd-client) or pass --etcd-tool PATH"))
}

/// The owner to give a restored data dir: `owner`, or `etcd` when it exists and this runs as root.
pub(crate) fn resolve_owner(owner: Option<&str>) -> Result<Option<(String, (u32, u32))>> {
    Ok(match owner {
        Some(o) => Some((
            o.to_string(),
            lookup_user(o).ok_or_else(|| Error::usage(format!("user {o} does not exist")))?,
        )),
        None if running_as_root() => lookup_user("etcd").map(|ids| ("etcd".to_string(), ids)),
        None => None,
    })
}

/// What [`stage_snapshot_restore`] built.
#[derive(Clone, Debug, Serialize)]
pub struct Staged {
    /// The new data dir: `STAGING/member-data`.
    pub dir: PathBuf,
    pub tool: String,
    pub owner: Option<String>,
    pub sha256: String,
}

/// Fetch and verify the snapshot into `staging` (an existing, private directory), build a member
/// data dir from it with the snapshot restore tool at `staging/member-data` and give it to its
/// owner. Nothing outside `staging` is touched; on an error what this made in it is removed.
pub async fn stage_snapshot_restore(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    opts: &EtcdRestoreOptions,
    staging: &Path,
) -> Result<Staged> {
    if snap.manifest.kind != PayloadKind::EtcdV3 {
        return Err(Error::usage(format!(
            "snapshot {} is a {} snapshot, not etcd-v3",
            snap.id.short(),
            snap.manifest.kind
        )));
    }
    check_member_flags(opts)?;
    restore_tool(opts.tool.as_deref())?;
    resolve_owner(opts.owner.as_deref())?;
    let snapshot_file = staging.join("snapshot.db");
    let _ = fs::remove_file(&snapshot_file);
    let _ = fs::remove_dir_all(staging.join(STAGED));
    let restored = match restore_to_file(vault, catalog, snap, &snapshot_file, opts.progress.clone()).await {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&snapshot_file);
            return Err(e);
        }
    };
    let staged = stage_file_restore(&snapshot_file, restored.sha256, opts, staging);
    let _ = fs::remove_file(&snapshot_file);
    staged
}

pub(crate) fn check_member_flags(opts: &EtcdRestoreOptions) -> Result<()> {
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
    Ok(())
}

/// Build a member data dir at `staging/member-data` from a local, already checked etcd v3
/// snapshot file (`sha256`: its recorded digest, reported) with the snapshot restore tool, and
/// give it to its owner. The file itself is left alone; on an error the data dir is removed.
pub fn stage_file_restore(snapshot_file: &Path, sha256: String, opts: &EtcdRestoreOptions, staging: &Path) -> Result<Staged> {
    check_member_flags(opts)?;
    let (tool, tool_name) = restore_tool(opts.tool.as_deref())?;
    let owner = resolve_owner(opts.owner.as_deref())?;
    let new_dir = staging.join(STAGED);
    let cleanup = || {
        let _ = fs::remove_dir_all(&new_dir);
    };
    cleanup();
    let mut cmd = Command::new(&tool);
    cmd.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot_file)
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
            cleanup();
            return Err(Error::io(format!("cannot run {}", tool.display())).with_source(e));
        }
    };
    if !out.status.success() {
        cleanup();
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
        cleanup();
        return Err(Error::io(format!("cannot give the restored data dir to user {name}")).with_source(e));
    }
    Ok(Staged {
        dir: new_dir,
        tool: tool_name,
        owner: owner.map(|(n, _)| n),
        sha256,
    })
}

/// Put the staged data dir `staged` in place at `data_dir`: an existing `data_dir` is moved aside
/// first (never deleted; returned), the rename never replaces anything, and the parent is fsynced.
pub fn place_staged(staged: &Path, data_dir: &Path) -> Result<Option<PathBuf>> {
    let data_name = data_dir
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no directory", data_dir.display())))?;
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let parent_dir = SafeDir::open(parent)?;
    let moved_aside = move_aside(data_dir)?;
    let (staging, staged_name) = match (staged.parent(), staged.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(Error::usage(format!("{} names no directory", staged.display()))),
    };
    SafeDir::open(staging)?
        .rename_noreplace(staged_name, &parent_dir, data_name)
        .context(ErrorKind::Io, || {
            format!(
                "cannot move the restored data dir into place at {} (it is in {})",
                data_dir.display(),
                staged.display()
            )
        })?;
    parent_dir
        .sync()
        .context(ErrorKind::Io, || format!("cannot fsync {}", parent.display()))?;
    Ok(moved_aside)
}

/// Create a private staging directory beside `data_dir`, named `.vault-WHAT-DATANAME-SUFFIX`.
pub fn make_staging_dir(data_dir: &Path, what: &str, suffix: &str) -> Result<PathBuf> {
    let data_name = data_dir
        .file_name()
        .ok_or_else(|| Error::usage(format!("--data-dir {} names no directory", data_dir.display())))?;
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = parent.join(format!(".vault-{what}-{}-{suffix}", data_name.to_string_lossy()));
    private_staging_dir(&staging)?;
    Ok(staging)
}

/// Create the staging directory `staging` 0700 (it holds the snapshot, every Secret of the
/// cluster, until the data dir is in place), its parents as needed. One that exists already is
/// fine when it is a real directory, not a link to elsewhere (a resumed recovery finds its own).
pub fn private_staging_dir(staging: &Path) -> Result<()> {
    let (parent, name) = match (staging.parent().filter(|p| !p.as_os_str().is_empty()), staging.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(Error::usage(format!("{} names no directory", staging.display()))),
    };
    fs::create_dir_all(parent).context(ErrorKind::Io, || format!("cannot create {}", parent.display()))?;
    match SafeDir::open(parent)?.mkdir(name, 0o700) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && fs::symlink_metadata(staging).is_ok_and(|m| m.is_dir()) => Ok(()),
        Err(e) => Err(Error::io(format!("cannot create staging directory {}", staging.display())).with_source(e)),
    }
}

pub async fn etcd_restore(vault: &Vault, catalog: &Catalog, snap: &SnapshotEntry, opts: &EtcdRestoreOptions) -> Result<EtcdRestoreReport> {
    let suffix = hex::encode(crate::crypto::random_bytes::<4>());
    let staging = make_staging_dir(&opts.data_dir, "restore", &suffix)?;
    let result = async {
        let staged = stage_snapshot_restore(vault, catalog, snap, opts, &staging).await?;
        let moved_aside = place_staged(&staged.dir, &opts.data_dir)?;
        Ok(EtcdRestoreReport {
            snapshot: snap.id.hex(),
            data_dir: opts.data_dir.clone(),
            moved_aside,
            tool: staged.tool,
            owner: staged.owner,
            revision: snap.manifest.etcd_v3.as_ref().map(|e| e.revision),
            sha256: staged.sha256,
        })
    }
    .await;
    // Only what this run created: an unfinished staging data dir (the snapshot copy is gone).
    let _ = fs::remove_dir_all(&staging);
    result
}
