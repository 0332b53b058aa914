//! etcd member data directory: capture (`vaultctl backup etcd-datadir`, vaultd kind
//! `etcd-datadir`; how it is taken from a running member: [`crate::source::etcd_datadir`]) and
//! [`lay_down_datadir`], which puts a capture back as a data dir that etcd starts from with
//! `--force-new-cluster` (`vaultctl etcd datadir restore`, and the recovery flow).

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{CaptureStats, EtcdDatadirInfo, PayloadKind, SnapshotManifest};
use crate::ops::backup::{BackupOptions, BackupReport, commit, ingest_stream};
use crate::ops::etcd_restore::{STAGED, chown_tree, make_staging_dir, place_staged, resolve_owner};
use crate::ops::read::read_stream;
use crate::repo::Vault;
use crate::source::etcd_bolt;
use crate::source::etcd_datadir::{self as src, DatadirOptions};
use crate::source::etcd_v3::{self, SelectedMember, TrailerCheck};

pub const DB_STREAM: &str = "member/snap/db";

/// A directory this run made and removes on every exit (it holds copies of the member's data).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn make_staging(beside: &Path, what: &str) -> Result<Staging> {
    let suffix = hex::encode(crate::crypto::random_bytes::<4>());
    Ok(Staging(make_staging_dir(beside, what, &suffix)?))
}

/// Write the member's API snapshot to `dest` without its sha256 trailer (checked first).
async fn save_db(member: SelectedMember, dest: &Path) -> Result<()> {
    use futures::StreamExt;
    let endpoint = member.info.endpoint.clone();
    let mut stream = Box::pin(etcd_v3::snapshot_stream(member.client, endpoint.clone()));
    let mut f = std::io::BufWriter::new(
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(dest)
            .context(ErrorKind::Io, || format!("cannot create {}", dest.display()))?,
    );
    let mut check = TrailerCheck::default();
    let mut total = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        check.update(&piece);
        total += piece.len() as u64;
        f.write_all(&piece)
            .context(ErrorKind::Io, || format!("cannot write {}", dest.display()))?;
    }
    let f = f
        .into_inner()
        .map_err(|e| Error::io(format!("cannot write {}", dest.display())).with_source(e.into_error()))?;
    if !check.finish().trailer_ok || total < 32 {
        return Err(Error::integrity(format!(
            "the database snapshot from {endpoint} failed its sha256 trailer check ({total} bytes): nothing was stored"
        ))
        .hint("retry the backup, and check the member's health if it repeats"));
    }
    f.set_len(total - 32)
        .context(ErrorKind::Io, || format!("cannot write {}", dest.display()))?;
    f.sync_all().context(ErrorKind::Io, || format!("cannot fsync {}", dest.display()))?;
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// A file as a stream of 1 MiB pieces.
fn file_stream(path: PathBuf) -> impl futures::Stream<Item = Result<Bytes>> + Unpin {
    let file = fs::File::open(&path).context(ErrorKind::Io, || format!("cannot read {}", path.display()));
    Box::pin(futures::stream::unfold(Some((file, path)), |state| async move {
        let (file, path) = state?;
        let mut f = match file {
            Ok(f) => f,
            Err(e) => return Some((Err(e), None)),
        };
        let mut buf = vec![0u8; 1 << 20];
        match crate::ops::blocking(|| f.read(&mut buf)) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some((Ok(f), path))))
            }
            Err(e) => Some((Err(Error::io(format!("cannot read {}", path.display())).with_source(e)), None)),
        }
    }))
}

fn add_stats(total: &mut CaptureStats, s: &CaptureStats) {
    total.bytes += s.bytes;
    total.chunks += s.chunks;
    total.new_chunks += s.new_chunks;
    total.new_bytes += s.new_bytes;
    total.stored_bytes += s.stored_bytes;
    total.packs += s.packs;
    total.seconds += s.seconds;
}

/// Connect to this host's member (the one etcd.conf names), before anything is claimed or copied.
pub async fn select_own_member(member: &src::Member) -> Result<SelectedMember> {
    let selected = etcd_v3::select_member(&member.etcd).await?;
    if !member.name.is_empty() && selected.info.member_name != member.name {
        return Err(Error::usage(format!(
            "{} is etcd member {:?}, but the data dir {} belongs to member {:?} (ETCD_NAME)",
            selected.info.endpoint,
            selected.info.member_name,
            member.data_dir.display(),
            member.name
        ))
        .hint("pass --endpoints with the client URL of the member running on this host"));
    }
    Ok(selected)
}

/// `vaultctl backup etcd-datadir`.
pub async fn backup_etcd_datadir(
    vault: &Vault,
    catalog: &mut Catalog,
    opts: &DatadirOptions,
    bopts: &BackupOptions,
) -> Result<BackupReport> {
    let member = src::resolve(opts)?;
    let (tool, _) = src::find_tool(opts.tool.as_deref())?;
    let selected = select_own_member(&member).await?;
    backup_etcd_datadir_of(vault, catalog, &member, selected, &tool, bopts).await
}

/// Capture a resolved member through an already selected client (see the module docs of
/// [`crate::source::etcd_datadir`] for the order of the steps and why).
pub async fn backup_etcd_datadir_of(
    vault: &Vault,
    catalog: &mut Catalog,
    member: &src::Member,
    selected: SelectedMember,
    tool: &Path,
    bopts: &BackupOptions,
) -> Result<BackupReport> {
    vault.check_may_write("a backup")?;
    let (_, tool_version) = src::find_tool(Some(tool))?;
    let staging = make_staging(&member.data_dir_here, "datadir")?;
    let src_dir = staging.0.join("src");
    let out_dir = staging.0.join("out");
    let mut attempt = 0;
    let (snap_index, info) = loop {
        attempt += 1;
        let _ = fs::remove_dir_all(&src_dir);
        for sub in ["member/snap", "member/wal"] {
            fs::create_dir_all(src_dir.join(sub)).context(ErrorKind::Io, || format!("cannot create {}", src_dir.display()))?;
        }
        let (files, before) = src::v2_files(&member.data_dir_here)?;
        let mut copied = true;
        for f in &files {
            if let Err(e) = src::copy_private(&member.data_dir_here.join(f), &src_dir.join(f)) {
                // etcd purged an old segment between the listing and the copy
                tracing::info!("copying the data dir again: {e}");
                copied = false;
                break;
            }
        }
        let (_, after) = src::v2_files(&member.data_dir_here)?;
        if after == before && copied {
            // After the WAL: the database holds every v3 write the copied WAL holds.
            let info = selected.info.clone();
            save_db(selected, &src_dir.join(DB_STREAM)).await?;
            break (after, info);
        }
        if attempt == 3 {
            return Err(Error::source_err(format!(
                "etcd kept writing new v2 snapshots into {} while it was copied (3 attempts)",
                member.data_dir_here.display()
            ))
            .hint("retry the backup at a quieter time"));
        }
    };
    // The database without membership (`--with-v3`), and the v2-only WAL (v3 entries dropped:
    // the database has them) with the consistent index its renumbering gives; the database gets
    // that index, so etcd neither replays nor skips anything (see the module docs).
    let out_v3 = staging.0.join("out-v3");
    src::run_backup_tool(tool, &src_dir, &out_v3, true)?;
    src::run_backup_tool(tool, &src_dir, &out_dir, false)?;
    let consistent_index = etcd_bolt::read_u64(&out_dir.join(DB_STREAM), "meta", "consistent_index")?;
    let v3_db = out_v3.join(DB_STREAM);
    // A member that never applied a v3 request has no consistent index and no v3 data: the
    // v2-only backup's own database is the one to keep then.
    if etcd_bolt::read_u64_if_present(&v3_db, "meta", "consistent_index")?.is_some() {
        etcd_bolt::write_u64(&v3_db, "meta", "consistent_index", consistent_index)?;
        fs::rename(&v3_db, out_dir.join(DB_STREAM))
            .context(ErrorKind::Io, || format!("cannot move the database into {}", out_dir.display()))?;
    }

    let mut layout = Vec::new();
    for sub in ["member/snap", "member/wal"] {
        let dir = out_dir.join(sub);
        for e in fs::read_dir(&dir).context(ErrorKind::Io, || format!("cannot list {}", dir.display()))? {
            let e = e.context(ErrorKind::Io, || format!("cannot list {}", dir.display()))?;
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                layout.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    layout.sort();
    if !layout.iter().any(|l| l == DB_STREAM) {
        return Err(Error::source_err(format!("{} backup wrote no {DB_STREAM}", tool.display())));
    }
    let mut streams = Vec::new();
    let mut stats = CaptureStats::default();
    let done_before = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for name in &layout {
        let progress = bopts.progress.clone().map(|p| {
            let base = done_before.load(std::sync::atomic::Ordering::Relaxed);
            std::sync::Arc::new(move |n: u64| p(base + n)) as crate::ops::backup::ProgressFn
        });
        let ingested = ingest_stream(vault, catalog, name, file_stream(out_dir.join(name)), false, progress).await?;
        done_before.fetch_add(ingested.stats.bytes, std::sync::atomic::Ordering::Relaxed);
        add_stats(&mut stats, &ingested.stats);
        streams.push(ingested.stream);
    }
    let db_sha256 = streams
        .iter()
        .find(|s| s.name == DB_STREAM)
        .map(|s| s.sha256.clone())
        .unwrap_or_default();
    let datadir = EtcdDatadirInfo {
        data_dir: member.data_dir.display().to_string(),
        conf: member.conf.as_ref().map(|c| c.display().to_string()),
        member_name: info.member_name.clone(),
        member_id: info.member_id.clone(),
        cluster_id: info.cluster_id.clone(),
        members: info.members.clone(),
        version: info.version.clone(),
        endpoint: info.endpoint.clone(),
        revision: info.revision,
        tool: format!(
            "{} backup --with-v3{}",
            tool.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            if tool_version.is_empty() {
                String::new()
            } else {
                format!(" ({tool_version})")
            }
        ),
        snap_index,
        consistent_index,
        db_sha256: db_sha256.clone(),
        layout,
    };
    let manifest = SnapshotManifest {
        etcd_datadir: Some(datadir),
        ..bopts.manifest(PayloadKind::EtcdDatadir, streams, stats)
    };
    let id = commit(vault, catalog, &manifest).await?;
    drop(staging);
    Ok(BackupReport {
        revision: Some(info.revision),
        member: Some(info.member_name),
        member_id: Some(info.member_id),
        endpoint: Some(info.endpoint),
        cluster_id: Some(info.cluster_id),
        ..BackupReport::committed(&id, PayloadKind::EtcdDatadir, &stats, db_sha256)
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct LayDownReport {
    pub snapshot: String,
    pub data_dir: PathBuf,
    pub moved_aside: Option<PathBuf>,
    pub files: Vec<String>,
    pub bytes: u64,
    pub db_sha256: String,
    pub owner: Option<String>,
    pub member_name: String,
    pub cluster_id: String,
}

/// A stream name that is a plain relative path under `member/`.
fn layout_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let ok = p.starts_with("member") && p.components().all(|c| matches!(c, Component::Normal(_))) && p.components().count() >= 2;
    ok.then(|| p.to_path_buf())
}

/// Lay an `etcd-datadir` snapshot down as the data dir `dest` (`member/snap/db`, `member/snap/*.snap`,
/// `member/wal/*.wal`), every file checked against its recorded size and sha256 before the new
/// dir is renamed into place. An existing `dest` is moved aside, never deleted. The result is
/// what etcd starts from with `--force-new-cluster` (the membership was stripped at capture).
/// `owner`: a user to give the new dir to; default `etcd` when it exists and this runs as root.
pub async fn lay_down_datadir(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    dest: &Path,
    owner: Option<&str>,
) -> Result<LayDownReport> {
    let staging = make_staging(dest, "laydown")?;
    let mut report = stage_datadir(vault, catalog, snap, &staging.0, owner).await?;
    report.moved_aside = place_staged(&staging.0.join(STAGED), dest)?;
    report.data_dir = dest.to_path_buf();
    Ok(report)
}

/// Fetch an `etcd-datadir` snapshot into `staging` (an existing, private directory) as the data
/// dir `staging/member-data`, every file checked against its recorded size and sha256, and give it
/// to its owner. Nothing outside `staging` is touched. [`place_staged`] puts it in place.
pub async fn stage_datadir(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    staging: &Path,
    owner: Option<&str>,
) -> Result<LayDownReport> {
    if snap.manifest.kind != PayloadKind::EtcdDatadir {
        return Err(Error::usage(format!(
            "snapshot {} is a {} snapshot, not etcd-datadir",
            snap.id.short(),
            snap.manifest.kind
        )));
    }
    vault.identities("laying down an etcd data dir")?;
    let owner = resolve_owner(owner)?;
    let mut plan = Vec::new();
    for s in &snap.manifest.streams {
        let rel = layout_path(&s.name).ok_or_else(|| {
            Error::integrity(format!(
                "snapshot {} has a stream named {:?}, which is no data dir file",
                snap.id.short(),
                s.name
            ))
        })?;
        plan.push((s.clone(), rel));
    }
    if !plan.iter().any(|(s, _)| s.name == DB_STREAM) {
        return Err(Error::integrity(format!("snapshot {} has no {DB_STREAM}", snap.id.short())));
    }
    let new_dir = staging.join(STAGED);
    let _ = fs::remove_dir_all(&new_dir); // an unfinished one from an interrupted run
    let result = fetch_layout(vault, catalog, snap, &plan, &new_dir).await.and_then(|bytes| {
        fs::set_permissions(&new_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .context(ErrorKind::Io, || format!("cannot set the mode of {}", new_dir.display()))?;
        if let Some((name, (uid, gid))) = &owner {
            chown_tree(&new_dir, *uid, *gid)
                .map_err(|e| Error::io(format!("cannot give the laid down data dir to user {name}")).with_source(e))?;
        }
        Ok(bytes)
    });
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&new_dir);
            return Err(e);
        }
    };
    let info = snap.manifest.etcd_datadir.clone().unwrap_or_default();
    Ok(LayDownReport {
        snapshot: snap.id.hex(),
        data_dir: new_dir,
        moved_aside: None,
        files: plan.iter().map(|(s, _)| s.name.clone()).collect(),
        bytes,
        db_sha256: plan
            .iter()
            .find(|(s, _)| s.name == DB_STREAM)
            .map(|(s, _)| s.sha256.clone())
            .unwrap_or_default(),
        owner: owner.map(|(n, _)| n),
        member_name: info.member_name,
        cluster_id: info.cluster_id,
    })
}

/// Write every stream of the snapshot to its file under `new_dir`, checked; returns the bytes written.
async fn fetch_layout(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    plan: &[(crate::format::Stream, PathBuf)],
    new_dir: &Path,
) -> Result<u64> {
    let mut bytes = 0u64;
    for (stream, rel) in plan {
        let path = new_dir.join(rel);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).context(ErrorKind::Io, || format!("cannot create {}", d.display()))?;
            let _ = fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&path)
            .context(ErrorKind::Io, || format!("cannot create {}", path.display()))?;
        let for_sink = path.clone();
        let (n, sha) = read_stream(vault, catalog, stream, move |rx| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut h = sha2::Sha256::new();
            let mut n = 0u64;
            for chunk in rx {
                n += chunk.len() as u64;
                h.update(&chunk);
                out.write_all(&chunk)
                    .context(ErrorKind::Io, || format!("cannot write {}", for_sink.display()))?;
            }
            let f = out
                .into_inner()
                .map_err(|e| Error::io(format!("cannot write {}", for_sink.display())).with_source(e.into_error()))?;
            f.sync_all()
                .context(ErrorKind::Io, || format!("cannot fsync {}", for_sink.display()))?;
            Ok((n, hex::encode(h.finalize())))
        })
        .await?;
        if n != stream.size || sha != stream.sha256 {
            return Err(Error::integrity(format!(
                "snapshot {}: {} came back as {n} bytes with another sha256 than recorded; nothing was put in place",
                snap.id.short(),
                stream.name
            )));
        }
        bytes += n;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_member_files_are_laid_down() {
        assert!(layout_path("member/snap/db").is_some());
        assert!(layout_path("member/wal/0000000000000000-0000000000000000.wal").is_some());
        for bad in ["../etc/passwd", "/etc/passwd", "member/../../x", "member", "other/x"] {
            assert!(layout_path(bad).is_none(), "{bad}");
        }
    }
}
