//! Host-file captures: back up paths into a `files` snapshot (tree stream in tree packs, content
//! in data packs), restore them to a directory or in place (never losing an existing file), and
//! compare snapshots with each other or with the live files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use rustix::fs::FileType;
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
use crate::ops::restore::running_as_root;
use crate::ops::safe_fs::{SafeDir, TempFile, file_type, set_mode, set_owner, set_times, set_xattr};
use crate::repo::Vault;
use crate::source::files::{Names, Walked, current_stamp, kind_name, read_content, walk};

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
    /// Files that kept changing while read: stored as last read, possibly torn.
    pub changed_while_read: Vec<String>,
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
                    // A file written to while it is read would be stored torn: compare its stat
                    // stamp after reading and read it again (twice at most) until it held still.
                    let mut stamp = source.stamp;
                    let mut attempts = 0;
                    let result = loop {
                        let mut sc = StreamChunker::new(chunker.clone());
                        let mut ids = Vec::new();
                        let mut h = blake3::Hasher::new();
                        let read = read_content(&source.path, &mut |piece| {
                            h.update(piece);
                            sc.push(piece, &mut |c| ids.push(sink.add(PackType::Data, c)));
                        });
                        let after = current_stamp(&source.path);
                        attempts += 1;
                        match read {
                            Ok(n) if after.as_deref() == Some(stamp.as_str()) || attempts == 3 => {
                                sc.finish(&mut |c| ids.push(sink.add(PackType::Data, c)));
                                let still = after.as_deref() == Some(stamp.as_str());
                                break Ok((n, ids, h.finalize().to_hex().to_string(), still));
                            }
                            Ok(_) => stamp = after.unwrap_or_default(),
                            Err(reason) => break Err(reason),
                        }
                    };
                    match result {
                        Ok((n, ids, b3, held_still)) => {
                            e.size = n;
                            e.blake3 = Some(b3.clone());
                            content_bytes += n;
                            if let Some(p) = &progress {
                                p(content_bytes);
                            }
                            content_ids.extend_from_slice(&ids);
                            if held_still {
                                new_cache.push((
                                    e.path.0.clone(),
                                    CachedFile {
                                        stamp,
                                        blake3: b3,
                                        chunks: ids.clone(),
                                    },
                                ));
                            } else {
                                // Stored as last read, flagged, and read again next time.
                                tree.changed_while_read.push(e.path.clone());
                            }
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
        changed_while_read: tree.changed_while_read.iter().map(|p| p.display()).collect(),
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

/// How long a partial file of a restore must have been left untouched before a later restore
/// removes it (a running restore writes its partial file continuously).
const STALE_PART_AGE: std::time::Duration = std::time::Duration::from_secs(600);

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

/// Mode of the tree's directories until step 4 sets their captured metadata: nobody else may list
/// or enter them while the restore writes below them.
const DIR_MODE_UNTIL_SET: u32 = 0o700;
/// Mode (less the umask) of missing directories on the way that the tree does not list.
const MISSING_PARENT_MODE: u32 = 0o755;

/// Refuse a tree whose shape could lead a restore astray, before anything is written: every path
/// plain and absolute, none listed twice, nothing below an entry that is not a directory (such as a
/// symlink), every hard link naming a file. Returns each entry's path relative to the target.
fn check_tree(entries: &[FileEntry]) -> Result<Vec<PathBuf>> {
    let refused = |path: &PathBytes, why: String| {
        Error::integrity(format!("refusing the snapshot's tree: {} {why}", path.display()))
            .hint("the snapshot's tree is malformed or was crafted; nothing was written")
    };
    let mut kinds: HashMap<PathBuf, EntryKind> = HashMap::with_capacity(entries.len());
    let mut rels = Vec::with_capacity(entries.len());
    for e in entries {
        let rel = safe_relative(&e.path)?;
        if kinds.insert(rel.clone(), e.kind).is_some() {
            return Err(refused(&e.path, "is listed twice".into()));
        }
        rels.push(rel);
    }
    // The nearest ancestor the tree lists as something other than a directory.
    let below_non_dir = |rel: &Path| {
        rel.ancestors().skip(1).find_map(|a| {
            kinds
                .get(a)
                .filter(|k| **k != EntryKind::Dir)
                .map(|k| (a.display().to_string(), kind_name(*k)))
        })
    };
    for (e, rel) in entries.iter().zip(&rels) {
        if let Some((a, k)) = below_non_dir(rel) {
            return Err(refused(&e.path, format!("lies below /{a}, which the tree lists as a {k}")));
        }
        match (e.kind, &e.target) {
            (EntryKind::Symlink, None) => return Err(refused(&e.path, "is a symlink without a target".into())),
            (EntryKind::Hardlink, None) => return Err(refused(&e.path, "is a hard link without a target".into())),
            (EntryKind::Hardlink, Some(t)) => {
                let target = safe_relative(t)?;
                if let Some((a, k)) = below_non_dir(&target) {
                    return Err(refused(
                        &e.path,
                        format!("is a hard link to {}, below /{a}, which the tree lists as a {k}", t.display()),
                    ));
                }
                if let Some(k) = kinds.get(&target).filter(|k| **k != EntryKind::File) {
                    return Err(refused(
                        &e.path,
                        format!(
                            "is a hard link to {}, which the tree lists as a {}, not a file",
                            t.display(),
                            kind_name(*k)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(rels)
}

/// Refuse, before anything is written, anything on the way to the directory `rel` that exists but
/// is not a real directory (a symlink could lead outside the target), unless the restore puts one
/// of the tree's directories there (moving what is there aside).
fn check_way(base: &SafeDir, rel: &Path, tree_dirs: &HashSet<&Path>) -> Result<()> {
    let mut dir = base.try_clone()?;
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        let name = c.as_os_str();
        so_far.push(name);
        let st = dir
            .lstat(name)
            .context(ErrorKind::Io, || format!("cannot stat {}", dir.path().join(name).display()))?;
        match st {
            None => return Ok(()),
            Some(st) if file_type(&st) == FileType::Directory => {
                dir = dir.open_child(name).map_err(|e| dir.not_a_directory(name, e))?;
            }
            Some(_) if tree_dirs.contains(so_far.as_path()) => return Ok(()),
            Some(_) => return Err(dir.not_a_directory(name, io::ErrorKind::NotADirectory.into())),
        }
    }
    Ok(())
}

/// Apply owner, mode, xattrs and mtime through an open file or directory, never through a path (in
/// that order: chown clears set-id bits).
fn apply_metadata(fd: impl AsFd, e: &FileEntry, as_root: bool, warnings: &mut Vec<String>) {
    let fd = fd.as_fd();
    let shown = e.path.display();
    if as_root && let Err(err) = set_owner(fd, e.uid, e.gid) {
        warnings.push(format!("{shown}: cannot set owner {}:{}: {err}", e.uid, e.gid));
    }
    if let Err(err) = set_mode(fd, e.mode) {
        warnings.push(format!("{shown}: cannot set mode {:o}: {err}", e.mode));
    }
    for (name, value) in &e.xattrs {
        let Ok(v) = base64::engine::general_purpose::STANDARD.decode(value) else {
            continue;
        };
        if let Err(err) = set_xattr(fd, name, &v) {
            warnings.push(format!("{shown}: cannot set extended attribute {name}: {err}"));
        }
    }
    if let Err(err) = set_times(fd, e.mtime, e.mtime_nsec) {
        warnings.push(format!("{shown}: cannot set mtime: {err}"));
    }
}

/// A symlink's own owner and mtime (never its target's).
fn apply_link_metadata(dir: &SafeDir, name: &OsStr, e: &FileEntry, as_root: bool, warnings: &mut Vec<String>) {
    let shown = e.path.display();
    if as_root && let Err(err) = dir.set_link_owner(name, e.uid, e.gid) {
        warnings.push(format!("{shown}: cannot set owner {}:{}: {err}", e.uid, e.gid));
    }
    if let Err(err) = dir.set_link_times(name, e.mtime, e.mtime_nsec) {
        warnings.push(format!("{shown}: cannot set mtime: {err}"));
    }
}

/// Whether the open regular file `f` holds exactly `e`'s content.
fn same_content(mut f: &fs::File, e: &FileEntry) -> bool {
    if !f.metadata().is_ok_and(|m| m.len() == e.size) {
        return false;
    }
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).is_ok() && e.blake3.as_deref() == Some(h.finalize().to_hex().as_str())
}

/// Move what is at `name` in `dir` aside for entry `e`; the (entry, where it went) pair to report.
fn move_aside_for(dir: &SafeDir, name: &OsStr, e: &FileEntry) -> Result<Option<(String, String)>> {
    let shown = || dir.path().join(name).display().to_string();
    let moved = dir
        .move_aside(name)
        .context(ErrorKind::Io, || format!("cannot move existing {} aside", shown()))?;
    Ok(moved.map(|old| (e.path.display(), dir.path().join(old).display().to_string())))
}

fn selected(e: &FileEntry, filters: &[PathBuf]) -> bool {
    if filters.is_empty() {
        return true;
    }
    let p = e.path.to_path_buf();
    filters.iter().any(|f| p == *f || p.starts_with(f))
}

/// `vaultctl restore ID --to DIR [PATH...]` and `--in-place`.
///
/// Everything below the target is reached from a handle on the target, one name at a time,
/// never through a symlink; metadata is set through file descriptors. Files are written 0600 and
/// the tree's directories made 0700 until their captured metadata is applied.
pub async fn restore_files(
    vault: &Vault,
    catalog: &Catalog,
    snap: &SnapshotEntry,
    target: &RestoreTarget,
    filters: &[PathBuf],
) -> Result<FilesRestoreReport> {
    let tree = load_tree(vault, catalog, snap).await?;
    // The whole tree is checked first: a crafted tree is refused before anything is written.
    let rels = check_tree(&tree.entries)?;
    let plan: Vec<(&FileEntry, &PathBuf)> = tree.entries.iter().zip(&rels).filter(|(e, _)| selected(e, filters)).collect();
    if plan.is_empty() {
        return Err(Error::not_found(format!(
            "snapshot {} holds none of the requested paths",
            snap.id.short()
        )));
    }
    let base_path = match target {
        RestoreTarget::Dir(d) => {
            fs::create_dir_all(d).context(ErrorKind::Io, || format!("cannot create restore directory {}", d.display()))?;
            d.clone()
        }
        RestoreTarget::InPlace { root } => root.clone(),
    };
    let base = SafeDir::open(&base_path)?;
    // Refuse before writing anything if something on the way is not a real directory.
    let is = |k: EntryKind| move |(e, _): &&(&FileEntry, &PathBuf)| e.kind == k;
    let tree_dirs: HashSet<&Path> = plan.iter().filter(is(EntryKind::Dir)).map(|(_, r)| r.as_path()).collect();
    let link_targets = plan
        .iter()
        .filter(is(EntryKind::Hardlink))
        .filter_map(|(e, _)| e.target.as_ref().map(safe_relative))
        .collect::<Result<Vec<_>>>()?;
    let ways: BTreeSet<&Path> = plan
        .iter()
        .map(|(_, r)| r.as_path())
        .chain(link_targets.iter().map(|r| r.as_path()))
        .filter_map(Path::parent)
        .collect();
    for way in ways {
        check_way(&base, way, &tree_dirs)?;
    }
    let as_root = running_as_root();
    let mut written: Vec<String> = Vec::new();
    let mut report = FilesRestoreReport {
        snapshot: snap.id.hex(),
        target: base_path.display().to_string(),
        ..Default::default()
    };
    if !as_root {
        report.warnings.push("not running as root: file owners were not restored".into());
    }

    // 1. directories (parents first: the tree is in walk order)
    for (e, rel) in plan.iter().filter(is(EntryKind::Dir)) {
        let (parent, name) = base.parent_of(rel, Some(MISSING_PARENT_MODE))?;
        let st = parent
            .lstat(name)
            .context(ErrorKind::Io, || format!("cannot stat {}", parent.path().join(name).display()))?;
        if st.is_some_and(|st| file_type(&st) == FileType::Directory) {
            continue; // its metadata is set in step 4
        }
        let moved = move_aside_for(&parent, name, e)?;
        parent
            .mkdir(name, DIR_MODE_UNTIL_SET)
            .context(ErrorKind::Io, || format!("cannot create {}", parent.path().join(name).display()))?;
        match moved {
            Some(m) => report.moved_aside.push(m),
            None => written.push(e.path.display()),
        }
    }

    // 2. file contents, in one ordered pass over the content of the selected files. A file already
    //    there with the same content is not replaced (no .old copy): only its metadata is set.
    let mut files: Vec<(FileEntry, PathBuf)> = Vec::new();
    for (e, rel) in plan.iter().filter(is(EntryKind::File)) {
        let (parent, name) = base.parent_of(rel, Some(MISSING_PARENT_MODE))?;
        // one that cannot be read (mode 000 when not root) is replaced, as if it differed
        match parent.open_regular(name).ok().flatten() {
            Some(f) if same_content(&f, e) => {
                apply_metadata(&f, e, as_root, &mut report.warnings);
                report.unchanged += 1;
            }
            _ => files.push(((*e).clone(), (*rel).clone())),
        }
    }
    written.extend(files.iter().map(|(e, _)| e.path.display()));
    let content = Stream {
        name: "content".into(),
        size: files.iter().map(|(e, _)| e.size).sum(),
        sha256: String::new(),
        chunks: files.iter().flat_map(|(e, _)| e.chunks.iter().copied()).collect(),
    };
    let sink_base = base.try_clone()?;
    let (moved, warnings) = read_stream(vault, catalog, &content, move |rx| {
        let mut rx = rx.into_iter();
        let mut moved = Vec::new();
        let mut warnings = Vec::new();
        let mut swept: HashSet<PathBuf> = HashSet::new();
        for (e, rel) in &files {
            let (parent, name) = sink_base.parent_of(rel, Some(MISSING_PARENT_MODE))?;
            // What an earlier restore killed mid-write left here: plaintext nobody will finish.
            let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if swept.insert(dir_rel.clone()) {
                for part in parent.remove_stale_parts(STALE_PART_AGE).unwrap_or_default() {
                    warnings.push(format!(
                        "removed {}: a partial file left by an interrupted restore",
                        dir_rel.join(part).display()
                    ));
                }
            }
            // 0600 until its captured metadata is set; removed if anything fails before it is in place
            let (tmp, mut f) = TempFile::create(&parent, name)?;
            let mut h = blake3::Hasher::new();
            for _ in &e.chunks {
                let data = rx.next().ok_or_else(|| Error::integrity("the content stream ended early"))?;
                h.update(&data);
                f.write_all(&data)
                    .context(ErrorKind::Io, || format!("cannot write {}", tmp.path().display()))?;
            }
            if e.blake3.as_deref() != Some(h.finalize().to_hex().as_str()) {
                return Err(Error::integrity(format!(
                    "restored content of {} does not match its recorded hash",
                    e.path.display()
                )));
            }
            apply_metadata(&f, e, as_root, &mut warnings);
            f.sync_all()
                .context(ErrorKind::Io, || format!("cannot fsync {}", tmp.path().display()))?;
            drop(f);
            moved.extend(move_aside_for(&parent, name, e)?);
            tmp.persist(name)?;
        }
        Ok((moved, warnings))
    })
    .await?;
    report.moved_aside.extend(moved);
    report.warnings.extend(warnings);

    // 3. symlinks, hard links and special files
    for (e, rel) in plan.iter().filter(|(e, _)| !matches!(e.kind, EntryKind::Dir | EntryKind::File)) {
        let (EntryKind::Symlink | EntryKind::Hardlink, Some(t)) = (e.kind, &e.target) else {
            // Not recreated, so whatever is there now stays (moving it aside would only remove it).
            report
                .warnings
                .push(format!("{}: {} not recreated", e.path.display(), kind_name(e.kind)));
            continue;
        };
        let (parent, name) = base.parent_of(rel, Some(MISSING_PARENT_MODE))?;
        let shown = || parent.path().join(name).display().to_string();
        if e.kind == EntryKind::Symlink {
            let want = t.to_path_buf();
            if parent.read_link(name).is_ok_and(|have| have == want) {
                apply_link_metadata(&parent, name, e, as_root, &mut report.warnings);
                report.unchanged += 1;
                continue;
            }
            report.moved_aside.extend(move_aside_for(&parent, name, e)?);
            parent
                .symlink(&want, name)
                .context(ErrorKind::Io, || format!("cannot create symlink {}", shown()))?;
            apply_link_metadata(&parent, name, e, as_root, &mut report.warnings);
            written.push(e.path.display());
            continue;
        }
        // A hard link: its target is a file restored above or already in the target.
        let first_rel = safe_relative(t)?;
        let first = base.parent_of(&first_rel, None).ok().and_then(|(dir, first_name)| {
            let st = dir.lstat(first_name).ok().flatten()?;
            (file_type(&st) == FileType::RegularFile).then_some((dir, first_name, st))
        });
        let Some((first_dir, first_name, first_st)) = first else {
            report.warnings.push(format!(
                "{}: hard link to {} not restored (its target was not restored)",
                e.path.display(),
                t.display()
            ));
            continue;
        };
        let live = parent.lstat(name).ok().flatten();
        if live.is_some_and(|st| (st.st_dev, st.st_ino) == (first_st.st_dev, first_st.st_ino)) {
            report.unchanged += 1;
            continue;
        }
        report.moved_aside.extend(move_aside_for(&parent, name, e)?);
        parent
            .hard_link(&first_dir, first_name, name)
            .context(ErrorKind::Io, || format!("cannot create hard link {}", shown()))?;
        written.push(e.path.display());
    }

    // 4. directory metadata last (children change a directory's mtime), deepest first
    for (e, rel) in plan.iter().rev().filter(is(EntryKind::Dir)) {
        let dir = base.walk(rel, None)?;
        apply_metadata(&dir, e, as_root, &mut report.warnings);
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
