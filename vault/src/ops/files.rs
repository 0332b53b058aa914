//! Host-file captures: back up paths into a `files` snapshot (tree stream in tree packs, content
//! in data packs), restore them to a directory or in place (never losing an existing file), and
//! compare snapshots with each other or with the live files.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{CachedFile, Catalog, SnapshotEntry};
use crate::chunker::StreamChunker;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{
    EntryKind, FileEntry, FileTree, FilesInfo, Id, PackType, PathBytes, PayloadKind, SkippedEntry, SnapshotManifest, Stream,
};
use crate::ops::backup::{BackupOptions, commit};
use crate::ops::packing;
use crate::ops::read::read_stream;
use crate::ops::restore::{move_aside, running_as_root};
use crate::repo::Vault;
use crate::source::files::{Names, Walked, kind_name, read_content, walk};

/// What to capture.
pub struct FilesOptions {
    /// Read the host's files under this directory (`/` normally; a mounted disk from a rescue system).
    pub root: PathBuf,
    /// Absolute host paths to capture (directories recursively).
    pub paths: Vec<PathBuf>,
    /// Host paths to leave out.
    pub excluded: Box<dyn Fn(&Path) -> bool + Send + Sync>,
    pub profile: Option<String>,
    /// The installed-package list to store with the tree.
    pub packages: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FilesBackupReport {
    pub id: String,
    pub kind: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
    pub seconds: f64,
    /// Bytes of files unchanged since the last capture on this host, not read again.
    pub unread_bytes: u64,
    pub incomplete: bool,
    pub skipped: Vec<SkippedReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SkippedReport {
    pub path: String,
    pub reason: String,
}

/// What the capture thread hands back.
struct Captured {
    tree: FileTree,
    tree_stream: Stream,
    content_stream: Stream,
    stats: packing::SinkStats,
    new_cache: Vec<(Vec<u8>, CachedFile)>,
    /// Cached paths not seen again.
    gone_from_cache: Vec<Vec<u8>>,
    /// Bytes of files reused from the cache without reading them.
    unread_bytes: u64,
}

fn chunk_bytes(chunker: &crate::chunker::Chunker, sink: &mut packing::ChunkSink, pack_type: PackType, data: &[u8], ids: &mut Vec<Id>) {
    let mut sc = StreamChunker::new(chunker.clone());
    sc.push(data, &mut |c| ids.push(sink.add(pack_type, c)));
    sc.finish(&mut |c| ids.push(sink.add(pack_type, c)));
}

/// `vaultctl backup files`.
pub async fn backup_files(vault: &Vault, catalog: &mut Catalog, opts: FilesOptions, bopts: &BackupOptions) -> Result<FilesBackupReport> {
    vault.check_may_write("a backup")?;
    let started = std::time::Instant::now();
    if !opts.root.is_dir() {
        return Err(Error::usage(format!("capture root {} is not a directory", opts.root.display())));
    }
    if opts.paths.is_empty() {
        return Err(Error::usage("nothing to capture: no paths given").hint("pass --profile master|node|etcd or --path P"));
    }
    let (mut sink, packer) = packing::start(vault, packing::present_chunks(vault, catalog).await?);
    let chunker = vault.chunker();
    let root = opts.root.clone();
    let progress = bopts.progress.clone();
    let profile = opts.profile.clone();
    let cache_root = fs::canonicalize(&opts.root)
        .unwrap_or_else(|_| opts.root.clone())
        .display()
        .to_string();
    let cache = catalog.file_cache(&cache_root)?;
    let walker = tokio::task::spawn_blocking(move || -> Result<Captured> {
        let names = Names::load(&opts.root);
        let mut tree = FileTree {
            packages: opts.packages.clone(),
            ..Default::default()
        };
        let mut content_ids = Vec::new();
        let mut content_bytes = 0u64;
        let mut cache = cache;
        // Files read this time (new or changed): written to the cache after the commit.
        let mut new_cache: Vec<(Vec<u8>, CachedFile)> = Vec::new();
        let mut unread_bytes = 0u64;
        walk(&opts.root, &opts.paths, &*opts.excluded, &names, &mut |w| {
            match w {
                Walked::Skipped(s) => tree.skipped.push(s),
                Walked::Entry(mut e, Some(source)) => {
                    // Whatever is left in `cache` after the walk was not seen again: it is dropped.
                    if let Some(hit) = cache.remove(&e.path.0).filter(|c| c.stamp == source.stamp)
                        && sink.reuse(&hit.chunks)
                    {
                        // Unchanged since the last capture on this host: no need to read it.
                        content_bytes += e.size;
                        content_ids.extend_from_slice(&hit.chunks);
                        unread_bytes += e.size;
                        e.chunks = hit.chunks;
                        e.blake3 = Some(hit.blake3);
                        tree.entries.push(*e);
                        return Ok(());
                    }
                    let mut sc = StreamChunker::new(chunker.clone());
                    let mut ids = Vec::new();
                    let mut h = blake3::Hasher::new();
                    let result = read_content(&source.path, &mut |piece| {
                        h.update(piece);
                        sc.push(piece, &mut |c| ids.push(sink.add(PackType::Data, c)));
                    });
                    match result {
                        Ok(n) => {
                            sc.finish(&mut |c| ids.push(sink.add(PackType::Data, c)));
                            e.size = n;
                            let b3 = h.finalize().to_hex().to_string();
                            e.blake3 = Some(b3.clone());
                            content_bytes += n;
                            if let Some(p) = &progress {
                                p(content_bytes);
                            }
                            content_ids.extend_from_slice(&ids);
                            new_cache.push((
                                e.path.0.clone(),
                                CachedFile {
                                    stamp: source.stamp,
                                    blake3: b3,
                                    chunks: ids.clone(),
                                },
                            ));
                            e.chunks = ids;
                            tree.entries.push(*e);
                        }
                        Err(reason) => {
                            // Chunks already queued stay deduplicable; the entry is not in the tree.
                            tree.skipped.push(SkippedEntry {
                                path: e.path.clone(),
                                reason,
                            });
                        }
                    }
                }
                Walked::Entry(e, None) => tree.entries.push(*e),
            }
            if sink.stopped() {
                return Err(Error::store("the upload stopped"));
            }
            Ok(())
        })?;
        let json = serde_json::to_vec(&tree).expect("serialize tree");
        let mut tree_ids = Vec::new();
        chunk_bytes(&chunker, &mut sink, PackType::Tree, &json, &mut tree_ids);
        let stats = sink.stats;
        drop(sink); // ends the packer's input
        Ok(Captured {
            tree_stream: Stream {
                name: "tree".into(),
                size: json.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&json)),
                chunks: tree_ids,
            },
            content_stream: Stream {
                name: "content".into(),
                size: content_bytes,
                // Not recorded: unchanged files are not re-read. Every chunk is authenticated by its
                // keyed ID and every file by the BLAKE3 in the tree.
                sha256: String::new(),
                chunks: content_ids,
            },
            tree,
            stats,
            new_cache,
            gone_from_cache: cache.into_keys().collect(),
            unread_bytes,
        })
    });
    let (walked, uploaded) = futures::join!(walker, packer.upload_all(vault, catalog));
    let walked = walked.map_err(|e| Error::io("capture thread failed").with_source(e));
    let (stored, packs) = uploaded?;
    let Captured {
        tree,
        tree_stream,
        content_stream,
        stats: sink_stats,
        new_cache,
        gone_from_cache,
        unread_bytes,
    } = walked??;

    let count = |k: EntryKind| tree.entries.iter().filter(|e| e.kind == k).count() as u64;
    let info = FilesInfo {
        root: root.display().to_string(),
        profile,
        files: count(EntryKind::File) + count(EntryKind::Hardlink),
        dirs: count(EntryKind::Dir),
        symlinks: count(EntryKind::Symlink),
        skipped: tree.skipped.len() as u64,
        incomplete: tree.skipped.iter().any(|s| !s.reason.contains("not captured (no content")),
    };
    let stats = sink_stats.capture_stats(content_stream.size, stored, packs, started);
    let manifest = SnapshotManifest {
        files: Some(info.clone()),
        ..bopts.manifest(PayloadKind::Files, vec![tree_stream, content_stream], stats)
    };
    let id = commit(vault, catalog, &manifest).await?;
    catalog.update_file_cache(&cache_root, &gone_from_cache, &new_cache)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(FilesBackupReport {
        id: id.hex(),
        kind: PayloadKind::Files.to_string(),
        files: info.files,
        dirs: info.dirs,
        symlinks: info.symlinks,
        bytes: stats.bytes,
        new_bytes: stats.new_bytes,
        stored_bytes: stats.stored_bytes,
        packs: stats.packs,
        seconds,
        unread_bytes,
        incomplete: info.incomplete,
        skipped: tree
            .skipped
            .iter()
            .map(|s| SkippedReport {
                path: s.path.display(),
                reason: s.reason.clone(),
            })
            .collect(),
    })
}

/// Read and parse the tree of a `files` snapshot (needs the identity).
pub async fn load_tree(vault: &Vault, catalog: &Catalog, snap: &SnapshotEntry) -> Result<FileTree> {
    if snap.manifest.kind != PayloadKind::Files {
        return Err(Error::usage(format!(
            "snapshot {} is a {} snapshot, not a files snapshot",
            snap.id.short(),
            snap.manifest.kind
        )));
    }
    let stream = snap
        .manifest
        .streams
        .iter()
        .find(|s| s.name == "tree")
        .ok_or_else(|| Error::integrity(format!("files snapshot {} has no tree stream", snap.id.short())))?;
    let json = read_stream(vault, catalog, stream, |rx| Ok(rx.into_iter().flatten().collect::<Vec<u8>>())).await?;
    if hex::encode(sha2::Sha256::digest(&json)) != stream.sha256 {
        return Err(Error::integrity(format!(
            "the tree of snapshot {} does not match its recorded sha256",
            snap.id.short()
        )));
    }
    serde_json::from_slice(&json)
        .map_err(|e| Error::integrity(format!("the tree of snapshot {} does not parse", snap.id.short())).with_source(e))
}

/// Where a restore writes.
#[derive(Clone, Debug)]
pub enum RestoreTarget {
    /// Materialise the tree under this directory (`DIR/etc/origin/...`).
    Dir(PathBuf),
    /// Put files back at their original paths (under `root`, normally `/`).
    InPlace { root: PathBuf },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FilesRestoreReport {
    pub snapshot: String,
    pub target: String,
    /// Host paths written (files whose content differed or was missing, created directories,
    /// links). What to restart is derived from these.
    pub restored: Vec<String>,
    /// Files already present with the snapshot's content: left in place, metadata set.
    pub unchanged: usize,
    /// Existing entries that were in the way and where they were moved.
    pub moved_aside: Vec<(String, String)>,
    /// Metadata that could not be set (e.g. owners when not root).
    pub warnings: Vec<String>,
}

/// The relative form of an absolute tree path, refusing anything that could escape the target.
pub fn safe_relative(path: &PathBytes) -> Result<PathBuf> {
    let p = path.to_path_buf();
    let bad = || {
        Error::integrity(format!(
            "refusing manifest path {:?}: it is not a plain absolute path",
            path.display()
        ))
        .hint("the snapshot's tree is malformed or was crafted; nothing was written")
    };
    let mut comps = p.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(bad());
    }
    let mut rel = PathBuf::new();
    for c in comps {
        match c {
            Component::Normal(n) => rel.push(n),
            _ => return Err(bad()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad());
    }
    Ok(rel)
}

/// `dest`'s parent must be a real directory inside `base` (no symlink leading out).
fn check_inside(base_canonical: &Path, dest: &Path) -> Result<()> {
    resolves_inside(base_canonical, dest.parent().expect("dest has a parent"), dest)
}

/// Create `dest`'s missing parent directories, refusing before creating any if the nearest one that
/// exists resolves outside `base` (a symlink leading out), then check the parent.
fn create_parent_inside(base_canonical: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().expect("dest has a parent");
    if let Some(existing) = parent.ancestors().find(|a| fs::symlink_metadata(a).is_ok()) {
        resolves_inside(base_canonical, existing, dest)?;
    }
    fs::create_dir_all(parent).context(ErrorKind::Io, || format!("cannot create {}", parent.display()))?;
    check_inside(base_canonical, dest)
}

fn resolves_inside(base_canonical: &Path, dir: &Path, dest: &Path) -> Result<()> {
    let real = fs::canonicalize(dir).context(ErrorKind::Io, || format!("cannot resolve {}", dir.display()))?;
    if !real.starts_with(base_canonical) {
        return Err(Error::integrity(format!(
            "refusing to write {}: its directory resolves to {}, outside the restore target {}",
            dest.display(),
            real.display(),
            base_canonical.display()
        ))
        .hint("a symlink in the target leads outside it; nothing is written through it"));
    }
    Ok(())
}

/// Apply owner, mode, xattrs and mtime (in that order: chown clears set-id bits).
fn apply_metadata(dest: &Path, e: &FileEntry, as_root: bool, warnings: &mut Vec<String>) {
    let shown = e.path.display();
    if as_root && let Err(err) = std::os::unix::fs::lchown(dest, Some(e.uid), Some(e.gid)) {
        warnings.push(format!("{shown}: cannot set owner {}:{}: {err}", e.uid, e.gid));
    }
    if e.kind != EntryKind::Symlink {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = fs::set_permissions(dest, fs::Permissions::from_mode(e.mode)) {
            warnings.push(format!("{shown}: cannot set mode {:o}: {err}", e.mode));
        }
        for (name, value) in &e.xattrs {
            let Ok(v) = base64::engine::general_purpose::STANDARD.decode(value) else {
                continue;
            };
            if let Err(err) = xattr::set(dest, name, &v) {
                warnings.push(format!("{shown}: cannot set extended attribute {name}: {err}"));
            }
        }
    }
    let t = filetime::FileTime::from_unix_time(e.mtime, e.mtime_nsec);
    if let Err(err) = filetime::set_symlink_file_times(dest, t, t) {
        warnings.push(format!("{shown}: cannot set mtime: {err}"));
    }
}

/// Whether `dest` already is the symlink or hard link `e` describes (then it is left as it is).
fn link_in_place(dest: &Path, e: &FileEntry, base: &Path, restored: &HashMap<Vec<u8>, PathBuf>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(t) = &e.target else { return false };
    match e.kind {
        EntryKind::Symlink => fs::read_link(dest).is_ok_and(|have| have == t.to_path_buf()),
        EntryKind::Hardlink => {
            let first = restored.get(&t.0).cloned().or_else(|| safe_relative(t).ok().map(|r| base.join(r)));
            match (first.map(fs::symlink_metadata), fs::symlink_metadata(dest)) {
                (Some(Ok(a)), Ok(b)) => a.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether `dest` is a regular file holding exactly `e`'s content.
fn same_content(dest: &Path, e: &FileEntry) -> bool {
    let Ok(m) = fs::symlink_metadata(dest) else { return false };
    if !m.is_file() || m.len() != e.size {
        return false;
    }
    let mut h = blake3::Hasher::new();
    read_content(dest, &mut |p| {
        h.update(p);
    })
    .is_ok()
        && e.blake3.as_deref() == Some(h.finalize().to_hex().as_str())
}

fn selected(e: &FileEntry, filters: &[PathBuf]) -> bool {
    if filters.is_empty() {
        return true;
    }
    let p = e.path.to_path_buf();
    filters.iter().any(|f| p == *f || p.starts_with(f))
}

/// `vaultctl restore ID --to DIR [PATH...]` and `--in-place`.
pub async fn restore_files(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    target: &RestoreTarget,
    filters: &[PathBuf],
) -> Result<FilesRestoreReport> {
    let tree = load_tree(vault, catalog, snap).await?;
    let base = match target {
        RestoreTarget::Dir(d) => {
            fs::create_dir_all(d).context(ErrorKind::Io, || format!("cannot create restore directory {}", d.display()))?;
            d.clone()
        }
        RestoreTarget::InPlace { root } => root.clone(),
    };
    let base_canonical = fs::canonicalize(&base).context(ErrorKind::Io, || format!("cannot resolve {}", base.display()))?;
    // Validate every path first: a crafted manifest gets refused before anything is written.
    let mut plan: Vec<(&FileEntry, PathBuf)> = Vec::new();
    for e in tree.entries.iter().filter(|e| selected(e, filters)) {
        plan.push((e, base.join(safe_relative(&e.path)?)));
        if let Some(t) = e.target.as_ref().filter(|_| e.kind == EntryKind::Hardlink) {
            safe_relative(t)?;
        }
    }
    if plan.is_empty() {
        return Err(Error::not_found(format!(
            "snapshot {} holds none of the requested paths",
            snap.id.short()
        )));
    }
    // Refuse before writing anything if an existing directory on the way leads out of the target.
    for (_, dest) in &plan {
        if let Some(existing) = dest.parent().and_then(|p| p.ancestors().find(|a| fs::symlink_metadata(a).is_ok())) {
            resolves_inside(&base_canonical, existing, dest)?;
        }
    }
    let as_root = running_as_root();
    let mut written: Vec<String> = Vec::new();
    let mut report = FilesRestoreReport {
        snapshot: snap.id.hex(),
        target: base.display().to_string(),
        ..Default::default()
    };
    if !as_root {
        report.warnings.push("not running as root: file owners were not restored".into());
    }

    // 1. directories (parents first: the tree is in walk order)
    for (e, dest) in plan.iter().filter(|(e, _)| e.kind == EntryKind::Dir) {
        match fs::symlink_metadata(dest) {
            // its metadata is set in step 4: it must not be reached through a symlink leading out
            Ok(m) if m.is_dir() => check_inside(&base_canonical, dest)?,
            Ok(_) => {
                check_inside(&base_canonical, dest)?;
                if let Some(old) = move_aside(dest)? {
                    report.moved_aside.push((e.path.display(), old.display().to_string()));
                }
                fs::create_dir(dest).context(ErrorKind::Io, || format!("cannot create {}", dest.display()))?;
            }
            Err(_) => {
                create_parent_inside(&base_canonical, dest)?;
                fs::create_dir(dest).context(ErrorKind::Io, || format!("cannot create {}", dest.display()))?;
                written.push(e.path.display());
            }
        }
    }

    // 2. file contents, in one ordered pass over the content of the selected files
    let files: Vec<(FileEntry, PathBuf)> = plan
        .iter()
        .filter(|(e, _)| e.kind == EntryKind::File)
        .map(|(e, d)| ((*e).clone(), d.clone()))
        .collect();
    for (_, dest) in &files {
        create_parent_inside(&base_canonical, dest)?;
    }
    // A file already there with the same content is not replaced (no .old copy): only its metadata is set.
    let (unchanged, files): (Vec<_>, Vec<_>) = files.into_iter().partition(|(e, dest)| same_content(dest, e));
    for (e, dest) in &unchanged {
        apply_metadata(dest, e, as_root, &mut report.warnings);
    }
    report.unchanged = unchanged.len();
    written.extend(files.iter().map(|(e, _)| e.path.display()));
    let content = Stream {
        name: "content".into(),
        size: files.iter().map(|(e, _)| e.size).sum(),
        sha256: String::new(),
        chunks: files.iter().flat_map(|(e, _)| e.chunks.iter().copied()).collect(),
    };
    let files_for_sink = files.clone();
    let (moved, warnings) = read_stream(vault, catalog, &content, move |rx| {
        let mut rx = rx.into_iter();
        let mut moved = Vec::new();
        let mut warnings = Vec::new();
        for (e, dest) in &files_for_sink {
            let dir = dest.parent().expect("parent");
            let tmp = dir.join(format!(
                ".{}.vault-part-{}",
                dest.file_name().expect("name").to_string_lossy(),
                hex::encode(crate::crypto::random_bytes::<4>())
            ));
            let mut f = fs::File::create(&tmp).context(ErrorKind::Io, || format!("cannot create {}", tmp.display()))?;
            let mut h = blake3::Hasher::new();
            for _ in &e.chunks {
                let data = rx.next().ok_or_else(|| Error::integrity("the content stream ended early"))?;
                h.update(&data);
                f.write_all(&data)
                    .context(ErrorKind::Io, || format!("cannot write {}", tmp.display()))?;
            }
            f.sync_all().context(ErrorKind::Io, || format!("cannot fsync {}", tmp.display()))?;
            drop(f);
            if e.blake3.as_deref() != Some(h.finalize().to_hex().as_str()) {
                let _ = fs::remove_file(&tmp);
                return Err(Error::integrity(format!(
                    "restored content of {} does not match its recorded hash",
                    e.path.display()
                )));
            }
            if let Some(old) = move_aside(dest)? {
                moved.push((e.path.display(), old.display().to_string()));
            }
            fs::rename(&tmp, dest).context(ErrorKind::Io, || {
                format!("cannot move the restored file into place at {}", dest.display())
            })?;
            apply_metadata(dest, e, as_root, &mut warnings);
        }
        Ok((moved, warnings))
    })
    .await?;
    report.moved_aside.extend(moved);
    report.warnings.extend(warnings);

    // 3. symlinks, hard links and special files
    let mut restored_paths: HashMap<Vec<u8>, PathBuf> = plan.iter().map(|(e, d)| (e.path.0.clone(), d.clone())).collect();
    for (e, dest) in plan.iter().filter(|(e, _)| !matches!(e.kind, EntryKind::Dir | EntryKind::File)) {
        if !matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) {
            // Not recreated, so whatever is there now stays (moving it aside would only remove it).
            report
                .warnings
                .push(format!("{}: {} not recreated", e.path.display(), kind_name(e.kind)));
            continue;
        }
        create_parent_inside(&base_canonical, dest)?;
        if link_in_place(dest, e, &base, &restored_paths) {
            apply_metadata(dest, e, as_root, &mut report.warnings);
            report.unchanged += 1;
            continue;
        }
        if let Some(old) = move_aside(dest)? {
            report.moved_aside.push((e.path.display(), old.display().to_string()));
        }
        written.push(e.path.display());
        match e.kind {
            EntryKind::Symlink => {
                let t = e
                    .target
                    .as_ref()
                    .ok_or_else(|| Error::integrity(format!("symlink {} has no target", e.path.display())))?;
                std::os::unix::fs::symlink(t.to_path_buf(), dest)
                    .context(ErrorKind::Io, || format!("cannot create symlink {}", dest.display()))?;
                apply_metadata(dest, e, as_root, &mut report.warnings);
            }
            EntryKind::Hardlink => {
                let t = e
                    .target
                    .as_ref()
                    .ok_or_else(|| Error::integrity(format!("hard link {} has no target", e.path.display())))?;
                let first = match restored_paths.get(&t.0) {
                    Some(p) => p.clone(),
                    None => {
                        let first = base.join(safe_relative(t)?);
                        check_inside(&base_canonical, &first)?;
                        first
                    }
                };
                if fs::symlink_metadata(&first).is_ok() {
                    fs::hard_link(&first, dest).context(ErrorKind::Io, || format!("cannot create hard link {}", dest.display()))?;
                } else {
                    report.warnings.push(format!(
                        "{}: hard link to {} not restored (its target was not restored)",
                        e.path.display(),
                        t.display()
                    ));
                }
            }
            _ => unreachable!("special files are skipped above"),
        }
        restored_paths.insert(e.path.0.clone(), dest.clone());
    }

    // 4. directory metadata last (children change a directory's mtime), deepest first
    for (e, dest) in plan.iter().rev().filter(|(e, _)| e.kind == EntryKind::Dir) {
        apply_metadata(dest, e, as_root, &mut report.warnings);
    }
    report.restored = written;
    Ok(report)
}

/// One difference between two trees.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Change {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// For `changed`: what differs (content, mode, owner, mtime, target, xattrs, kind).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<String>,
}

/// Compare two trees (`old` -> `new`).
pub fn diff_trees(old: &[FileEntry], new: &[FileEntry]) -> Vec<Change> {
    let a: BTreeMap<&PathBytes, &FileEntry> = old.iter().map(|e| (&e.path, e)).collect();
    let b: BTreeMap<&PathBytes, &FileEntry> = new.iter().map(|e| (&e.path, e)).collect();
    let mut out = Vec::new();
    for (p, x) in &a {
        match b.get(p) {
            None => out.push(Change {
                path: p.display(),
                change: "removed".into(),
                what: vec![],
            }),
            Some(y) => {
                let mut what = Vec::new();
                if x.kind != y.kind {
                    what.push("kind".to_string());
                }
                if x.kind == EntryKind::File && y.kind == EntryKind::File && (x.blake3 != y.blake3 || x.size != y.size) {
                    what.push("content".into());
                }
                if x.mode != y.mode {
                    what.push(format!("mode {:o} -> {:o}", x.mode, y.mode));
                }
                if x.uid != y.uid || x.gid != y.gid {
                    what.push(format!("owner {}:{} -> {}:{}", x.uid, x.gid, y.uid, y.gid));
                }
                if x.kind != EntryKind::Dir && (x.mtime, x.mtime_nsec) != (y.mtime, y.mtime_nsec) {
                    what.push("mtime".into());
                }
                if x.target != y.target {
                    what.push("target".into());
                }
                if x.xattrs != y.xattrs {
                    what.push("xattrs".into());
                }
                if !what.is_empty() {
                    out.push(Change {
                        path: p.display(),
                        change: "changed".into(),
                        what,
                    });
                }
            }
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(Change {
            path: p.display(),
            change: "added".into(),
            what: vec![],
        });
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

/// The live files at the paths a tree covers (top-level entries), hashed but not stored.
pub fn live_entries(root: &Path, tree: &FileTree) -> Result<Vec<FileEntry>> {
    let all: std::collections::HashSet<PathBuf> = tree.entries.iter().map(|e| e.path.to_path_buf()).collect();
    let tops: Vec<PathBuf> = all
        .iter()
        .filter(|p| p.parent().is_none_or(|pp| !all.contains(pp)))
        .cloned()
        .collect();
    let names = Names::load(root);
    let mut out = Vec::new();
    walk(root, &tops, &|_| false, &names, &mut |w| {
        if let Walked::Entry(mut e, real) = w {
            if let Some(real) = real {
                let mut h = blake3::Hasher::new();
                match read_content(&real.path, &mut |p| {
                    h.update(p);
                }) {
                    Ok(n) => {
                        e.size = n;
                        e.blake3 = Some(h.finalize().to_hex().to_string());
                    }
                    Err(_) => e.blake3 = None,
                }
            }
            out.push(*e);
        }
        Ok(())
    })?;
    Ok(out)
}
