//! Host files as a capture source: walk paths (under an alternative `--root` if given) and record
//! everything needed to put each entry back as it was: content, owner and group (ids and names),
//! mode, mtime, symlinks as links, empty directories, hard links and extended attributes
//! (including `security.selinux`). Sockets, fifos and devices are recorded but have no content.
//! Unreadable or vanished entries are reported per entry and the walk goes on.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::error::{Error, Result};
use crate::format::{EntryKind, FileEntry, PathBytes, SkippedEntry};

/// uid/gid -> name tables, read from the captured system's /etc/passwd and /etc/group.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

fn parse_ids(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

impl Names {
    /// Names of the system under `root` (falls back to this host's when `root` has none).
    pub fn load(root: &Path) -> Names {
        let read = |rel: &str| {
            fs::read_to_string(root.join(rel))
                .or_else(|_| fs::read_to_string(Path::new("/").join(rel)))
                .unwrap_or_default()
        };
        Names {
            users: parse_ids(&read("etc/passwd")),
            groups: parse_ids(&read("etc/group")),
        }
    }
    pub fn user(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }
    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups.get(&gid).cloned()
    }
}

pub use crate::host::under_root;

/// Where a regular file's content is read from, and its stat stamp (size, mtime, ctime, inode):
/// an unchanged stamp lets a capture reuse what it read last time.
pub struct ContentSource {
    pub path: PathBuf,
    pub stamp: String,
}

/// A regular file's stat stamp: size, mtime, ctime and inode. Any write changes it.
fn stamp_of(md: &fs::Metadata) -> String {
    format!(
        "{}:{}.{}:{}.{}:{}",
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
        md.ino()
    )
}

/// The stamp of the file at `path` now (`None` if it cannot be stat'ed).
pub fn current_stamp(path: &Path) -> Option<String> {
    fs::symlink_metadata(path).ok().map(|md| stamp_of(&md))
}

/// One thing the walk found.
pub enum Walked {
    /// An entry; for regular files, where to read the content.
    Entry(Box<FileEntry>, Option<ContentSource>),
    Skipped(SkippedEntry),
}

/// Read an entry's extended attributes (values base64). Errors (e.g. no xattr support) yield none.
pub fn read_xattrs(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(path, &name) {
                out.insert(
                    name.to_string_lossy().into_owned(),
                    base64::engine::general_purpose::STANDARD.encode(value),
                );
            }
        }
    }
    out
}

/// Walk `paths` (absolute host paths) under `root`, depth first in byte order, calling `visit`
/// for every entry. `excluded` decides which host paths to leave out.
pub fn walk(
    root: &Path,
    paths: &[PathBuf],
    excluded: &dyn Fn(&Path) -> bool,
    names: &Names,
    visit: &mut dyn FnMut(Walked) -> Result<()>,
) -> Result<()> {
    let mut seen_inodes: HashMap<(u64, u64), PathBytes> = HashMap::new();
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    sorted.dedup();
    for p in sorted {
        if !p.is_absolute() {
            return Err(Error::usage(format!("capture path {} is not absolute", p.display())));
        }
        walk_one(root, p, excluded, names, &mut seen_inodes, visit)?;
    }
    Ok(())
}

fn walk_one(
    root: &Path,
    host: &Path,
    excluded: &dyn Fn(&Path) -> bool,
    names: &Names,
    seen: &mut HashMap<(u64, u64), PathBytes>,
    visit: &mut dyn FnMut(Walked) -> Result<()>,
) -> Result<()> {
    if excluded(host) {
        return Ok(());
    }
    let real = under_root(root, host);
    let skip = |reason: String| {
        Walked::Skipped(SkippedEntry {
            path: PathBytes::from_path(host),
            reason,
        })
    };
    let md = match fs::symlink_metadata(&real) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return visit(skip("vanished during capture".into())),
        Err(e) => return visit(skip(format!("cannot stat: {e}"))),
    };
    let ft = md.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else {
        EntryKind::BlockDevice
    };
    let mut entry = FileEntry {
        path: PathBytes::from_path(host),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: names.user(md.uid()),
        group: names.group(md.gid()),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        size: 0,
        chunks: Vec::new(),
        blake3: None,
        target: None,
        xattrs: if kind == EntryKind::Symlink {
            BTreeMap::new()
        } else {
            read_xattrs(&real)
        },
    };
    match kind {
        EntryKind::File => {
            if md.nlink() > 1 {
                if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                    entry.kind = EntryKind::Hardlink;
                    entry.target = Some(first.clone());
                    return visit(Walked::Entry(Box::new(entry), None));
                }
                seen.insert((md.dev(), md.ino()), entry.path.clone());
            }
            entry.size = md.len();
            let stamp = stamp_of(&md);
            visit(Walked::Entry(Box::new(entry), Some(ContentSource { path: real, stamp })))
        }
        EntryKind::Symlink => match fs::read_link(&real) {
            Ok(t) => {
                entry.target = Some(PathBytes::from_path(&t));
                visit(Walked::Entry(Box::new(entry), None))
            }
            Err(e) => visit(skip(format!("cannot read symlink: {e}"))),
        },
        EntryKind::Dir => {
            let mut children: Vec<_> = match fs::read_dir(&real) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(e) => return visit(skip(format!("cannot list directory: {e}"))),
            };
            visit(Walked::Entry(Box::new(entry), None))?;
            children.sort_by(|a, b| {
                use std::os::unix::ffi::OsStrExt;
                a.as_bytes().cmp(b.as_bytes())
            });
            for c in children {
                walk_one(root, &host.join(c), excluded, names, seen, visit)?;
            }
            Ok(())
        }
        _ => {
            visit(Walked::Entry(Box::new(entry.clone()), None))?;
            visit(skip(format!("{} recorded, not captured (no content to back up)", kind_name(kind))))
        }
    }
}

pub fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hard link",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
    }
}

/// Read a regular file's content in pieces, for chunking. `Err(reason)` if it cannot be read.
pub fn read_content(path: &Path, piece: &mut dyn FnMut(&[u8])) -> std::result::Result<u64, String> {
    let mut f = fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "vanished during capture".to_string(),
        _ => format!("cannot open: {e}"),
    })?;
    // Sized to the file (small config files are the common case), at most 1 MiB.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; (len as usize + 1).clamp(4096, 1 << 20)];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        piece(&buf[..n]);
    }
}
