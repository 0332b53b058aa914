//! File operations for restores that cannot be led astray: a directory is held open as a handle
//! and every name below it is resolved one component at a time with `O_NOFOLLOW`, so neither a
//! crafted tree nor a local user swapping a directory for a symlink mid-restore can lead a write,
//! chmod or chown outside it. Metadata is set through file descriptors, never through paths. A
//! rename never replaces what is at its destination (`RENAME_NOREPLACE`, with a fallback for
//! kernels before 3.15). Every system call used exists in Linux 3.10 (RHEL/CentOS 7).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// An open directory; names below it are resolved without following symlinks.
pub struct SafeDir {
    fd: OwnedFd,
    /// Where it was when opened, for messages only.
    path: PathBuf,
}

/// The kind of file a `stat` describes.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl SafeDir {
    /// Open the directory `path` names (symlinks in `path` itself are followed: the caller chose it).
    pub fn open(path: &Path) -> Result<SafeDir> {
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("cannot open directory {}", path.display())).with_source(io::Error::from(e)))?;
        Ok(SafeDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Where this directory was when it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn try_clone(&self) -> Result<SafeDir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io(format!("cannot duplicate the handle of {}", self.path.display())).with_source(e))?;
        Ok(SafeDir {
            fd,
            path: self.path.clone(),
        })
    }

    /// The child directory `name`, only if it is a real directory (never through a symlink).
    pub fn open_child(&self, name: &OsStr) -> io::Result<SafeDir> {
        let fd = rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty())?;
        Ok(SafeDir {
            fd,
            path: self.path.join(name),
        })
    }

    /// The directory `rel` (plain relative components) below this one, creating the missing ones
    /// with `create` (a mode, less the umask) when given. Refuses, naming it, anything on the way
    /// that is not a real directory: a symlink is never followed.
    pub fn walk(&self, rel: &Path, create: Option<u32>) -> Result<SafeDir> {
        let mut cur = self.try_clone()?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::integrity(format!(
                    "refusing {}: not a plain relative path below {}",
                    rel.display(),
                    self.path.display()
                )));
            };
            cur = match cur.open_child(name) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                    match cur.mkdir(name, create.unwrap_or(0o700)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(Error::io(format!("cannot create {}", cur.path.join(name).display())).with_source(e));
                        }
                    }
                    cur.open_child(name).map_err(|e| cur.not_a_directory(name, e))?
                }
                Err(e) => return Err(cur.not_a_directory(name, e)),
            };
        }
        Ok(cur)
    }

    /// The directory holding `rel` (created as [`SafeDir::walk`] does) and `rel`'s last name.
    pub fn parent_of<'a>(&self, rel: &'a Path, create: Option<u32>) -> Result<(SafeDir, &'a OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| Error::integrity(format!("refusing {}: it names no file", rel.display())))?;
        let dir = self.walk(rel.parent().unwrap_or(Path::new("")), create)?;
        Ok((dir, name))
    }

    /// The error for a child that could not be opened as a directory: names what is in the way.
    pub fn not_a_directory(&self, name: &OsStr, err: io::Error) -> Error {
        let path = self.path.join(name);
        match self.lstat(name) {
            Ok(Some(st)) if file_type(&st) == FileType::Symlink => {
                let to = self.read_link(name).map(|t| t.display().to_string()).unwrap_or_default();
                Error::integrity(format!(
                    "refusing to write below {}: it is a symlink (to {to}), and a restore never writes through a symlink: it could lead outside the restore target",
                    path.display()
                ))
                .hint("move the symlink out of the way, or restore into an empty directory with --to")
            }
            Ok(Some(st)) if file_type(&st) != FileType::Directory => Error::io(format!(
                "cannot restore below {}: it is a {}, not a directory",
                path.display(),
                type_name(file_type(&st))
            ))
            .hint("move it out of the way and restore again"),
            _ => Error::io(format!("cannot open directory {}", path.display())).with_source(err),
        }
    }

    /// `lstat` of a child; `None` if there is nothing by that name.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove the partial files (`.NAME.vault-part-*`) that restores killed mid-write left in this
    /// directory and that nothing has written to for `max_age`. Returns their names.
    pub fn remove_stale_parts(&self, max_age: std::time::Duration) -> io::Result<Vec<OsString>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut removed = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let bytes = name.as_bytes();
            if !(bytes.starts_with(b".") && bytes.windows(12).any(|w| w == b".vault-part-")) {
                continue;
            }
            let Some(st) = self.lstat(name)? else { continue };
            #[allow(clippy::unnecessary_cast)] // st_mtime is not i64 on every target
            let stale = now.saturating_sub(st.st_mtime as i64) >= max_age.as_secs() as i64;
            if file_type(&st) == FileType::RegularFile && stale {
                match self.remove_file(name) {
                    Ok(()) => removed.push(name.to_os_string()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Create the directory `name` (`mode` less the umask); fails if anything is there.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))?)
    }

    /// Create the new file `name` with `mode` (less the umask) for writing; fails if anything,
    /// even a dangling symlink, is there.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))?.into())
    }

    /// Open the child `name` for reading if it is a regular file (`None` otherwise: a symlink is
    /// not followed, and a fifo or device is not opened).
    pub fn open_regular(&self, name: &OsStr) -> io::Result<Option<File>> {
        match self.lstat(name)? {
            Some(st) if file_type(&st) == FileType::RegularFile => {}
            _ => return Ok(None),
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // it may have been swapped between the lstat and the open
        if file_type(&rustix::fs::fstat(&fd)?) != FileType::RegularFile {
            return Ok(None);
        }
        Ok(Some(fd.into()))
    }

    pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Create the symlink `name` -> `target`; fails if anything is there.
    pub fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    /// Give `from`'s entry `from_name` the further name `name` here (a symlink is linked, not
    /// followed); fails if anything is there.
    pub fn hard_link(&self, from: &SafeDir, from_name: &OsStr, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::linkat(&from.fd, from_name, &self.fd, name, AtFlags::empty())?)
    }

    /// Remove the non-directory `name`.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Rename `from` here to `to` in `to_dir`, failing with `AlreadyExists` if anything is at `to`.
    pub fn rename_noreplace(&self, from: &OsStr, to_dir: &SafeDir, to: &OsStr) -> io::Result<()> {
        match rustix::fs::renameat_with(&self.fd, from, &to_dir.fd, to, RenameFlags::NOREPLACE) {
            // renameat2 is Linux 3.15+ (NOSYS on RHEL 7's 3.10); some file systems lack the flag
            Err(Errno::NOSYS) | Err(Errno::INVAL) => self.rename_noreplace_fallback(from, to_dir, to),
            r => Ok(r?),
        }
    }

    /// [`SafeDir::rename_noreplace`] without `renameat2`. A non-directory gets its new name with
    /// `link` (which never replaces) before its old one is removed. A directory is renamed onto an
    /// empty directory made for the purpose: `rename` onto a directory replaces only an empty one,
    /// and never a non-directory, so nothing with content can be lost (at worst an empty directory
    /// someone put there in the instant after ours was removed).
    pub fn rename_noreplace_fallback(&self, from: &OsStr, to_dir: &SafeDir, to: &OsStr) -> io::Result<()> {
        let st = self.lstat(from)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if file_type(&st) == FileType::Directory {
            to_dir.mkdir(to, 0o700)?;
            if let Err(e) = rustix::fs::renameat(&self.fd, from, &to_dir.fd, to) {
                // only ever removes an empty directory
                let _ = rustix::fs::unlinkat(&to_dir.fd, to, AtFlags::REMOVEDIR);
                return Err(e.into());
            }
            Ok(())
        } else {
            to_dir.hard_link(self, from, to)?;
            self.remove_file(from)
        }
    }

    /// Move the entry `name` aside to `name.old` (or `name.old.<time>`, ...), never replacing
    /// anything and never deleting. `None` if nothing is at `name`.
    pub fn move_aside(&self, name: &OsStr) -> io::Result<Option<OsString>> {
        if self.lstat(name)?.is_none() {
            return Ok(None);
        }
        let ts = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        for attempt in 0..1000u32 {
            let mut aside = name.to_os_string();
            match attempt {
                0 => aside.push(".old"),
                1 => aside.push(format!(".old.{ts}")),
                n => aside.push(format!(".old.{ts}.{n}")),
            }
            match self.rename_noreplace(name, self, &aside) {
                Ok(()) => return Ok(Some(aside)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.lstat(name)?.is_none() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("every name to move {} aside to is taken", self.path.join(name).display()),
        ))
    }

    /// Set a symlink's own owner (never its target's).
    pub fn set_link_owner(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
        Ok(rustix::fs::chownat(&self.fd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Set a symlink's own times (never its target's).
    pub fn set_link_times(&self, name: &OsStr, sec: i64, nsec: u32) -> io::Result<()> {
        Ok(rustix::fs::utimensat(&self.fd, name, &times(sec, nsec), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// fsync the directory, so the renames and creations in it survive a crash.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }
}

impl AsFd for SafeDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn times(sec: i64, nsec: u32) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Metadata set through an open file or directory (never through a path).
pub fn set_owner(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::fchown(fd, Some(u), Some(g))?)
}

pub fn set_mode(fd: impl AsFd, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

pub fn set_xattr(fd: impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())?)
}

pub fn set_times(fd: impl AsFd, sec: i64, nsec: u32) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &times(sec, nsec))?)
}

/// A name for a temporary file beside `name`: `.NAME.vault-part-<random>`.
pub fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".");
    // keep the whole name within NAME_MAX (255 bytes)
    let bytes = name.as_bytes();
    t.push(OsStr::from_bytes(&bytes[..bytes.len().min(200)]));
    t.push(format!(".vault-part-{}", hex::encode(crate::crypto::random_bytes::<4>())));
    t
}

/// A temporary file this process created (mode 0600): removed when dropped unless it was put in
/// place, so no error path leaves a partial copy behind.
pub struct TempFile {
    dir: SafeDir,
    name: OsString,
    kept: bool,
}

impl TempFile {
    /// Create a new temporary file beside `for_name` in `dir`, readable by its owner only.
    pub fn create(dir: &SafeDir, for_name: &OsStr) -> Result<(TempFile, File)> {
        let name = temp_name(for_name);
        let file = dir
            .create_new(&name, 0o600)
            .map_err(|e| Error::io(format!("cannot create {}", dir.path.join(&name).display())).with_source(e))?;
        let guard = TempFile {
            dir: dir.try_clone()?,
            name,
            kept: false,
        };
        Ok((guard, file))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Rename it to `name` in its directory (never replacing anything there) and fsync the directory.
    pub fn persist(mut self, name: &OsStr) -> Result<()> {
        let dest = self.dir.path.join(name);
        self.dir.rename_noreplace(&self.name, &self.dir, name).map_err(|e| {
            Error::io(format!("cannot move the restored file into place at {}", dest.display()))
                .with_source(e)
                .hint("something was created there during the restore; it was left as it is")
        })?;
        self.kept = true;
        self.dir
            .sync()
            .map_err(|e| Error::io(format!("cannot fsync {}", self.dir.path.display())).with_source(e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// A kind of file, for messages.
pub fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> (tempfile::TempDir, SafeDir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = SafeDir::open(t.path()).expect("open");
        (t, d)
    }

    #[test]
    fn walk_never_follows_a_symlink_even_one_leading_inside() {
        let (t, d) = scratch();
        fs::create_dir_all(t.path().join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
        let err = d.walk(Path::new("link/sub"), None).err().expect("refused").to_string();
        assert!(err.contains("refusing") && err.contains("symlink"), "{err}");
        let err = d.walk(Path::new("link/new"), Some(0o700)).err().expect("refused").to_string();
        assert!(err.contains("symlink"), "{err}");
        assert!(!t.path().join("real/new").exists(), "created through the symlink");
        fs::write(t.path().join("file"), b"x").unwrap();
        let err = d.walk(Path::new("file/x"), Some(0o700)).err().expect("refused").to_string();
        assert!(err.contains("not a directory"), "{err}");
        let made = d.walk(Path::new("a/b/c"), Some(0o750)).expect("created");
        assert_eq!(made.path(), t.path().join("a/b/c"));
        assert!(t.path().join("a/b/c").is_dir());
    }

    #[test]
    fn rename_noreplace_and_its_fallback_never_replace_anything() {
        let (t, d) = scratch();
        let p = |n: &str| t.path().join(n);
        let n = |s: &'static str| OsStr::new(s);
        for fallback in [false, true] {
            let rename = |from: &OsStr, to: &OsStr| {
                if fallback {
                    d.rename_noreplace_fallback(from, &d, to)
                } else {
                    d.rename_noreplace(from, &d, to)
                }
            };
            fs::write(p("src"), b"new").unwrap();
            fs::write(p("file"), b"keep").unwrap();
            fs::create_dir_all(p("full")).unwrap();
            fs::write(p("full/x"), b"keep").unwrap();
            fs::create_dir_all(p("empty")).unwrap();
            fs::create_dir_all(p("srcdir")).unwrap();
            fs::write(p("srcdir/y"), b"moved").unwrap();
            for (from, to) in [
                ("src", "file"),
                ("src", "full"),
                ("src", "empty"),
                ("srcdir", "file"),
                ("srcdir", "full"),
                ("srcdir", "empty"),
            ] {
                let e = rename(n(from), n(to)).expect_err(&format!("{from} -> {to} (fallback {fallback})"));
                assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{from} -> {to}: {e}");
            }
            assert_eq!(fs::read(p("file")).unwrap(), b"keep");
            assert_eq!(fs::read(p("full/x")).unwrap(), b"keep");
            rename(n("src"), n("dst")).expect("file to a free name");
            rename(n("srcdir"), n("dstdir")).expect("directory to a free name");
            assert_eq!(fs::read(p("dst")).unwrap(), b"new");
            assert_eq!(fs::read(p("dstdir/y")).unwrap(), b"moved");
            assert!(!p("src").exists() && !p("srcdir").exists());
            for x in ["dst", "file"] {
                fs::remove_file(p(x)).unwrap();
            }
            for x in ["dstdir", "full", "empty"] {
                fs::remove_dir_all(p(x)).unwrap();
            }
        }
    }

    #[test]
    fn stale_partial_files_of_killed_restores_are_removed_and_fresh_ones_kept() {
        let (tmp, dir) = scratch();
        let old = tmp.path().join(".ca.key.vault-part-0011aabb");
        let fresh = tmp.path().join(".ca.key.vault-part-ccdd2233");
        let other = tmp.path().join("ca.key");
        for p in [&old, &fresh, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        filetime::set_file_mtime(&old, filetime::FileTime::from_system_time(an_hour_ago)).unwrap();
        filetime::set_file_mtime(&other, filetime::FileTime::from_system_time(an_hour_ago)).unwrap();
        let removed = dir.remove_stale_parts(std::time::Duration::from_secs(600)).unwrap();
        assert_eq!(removed, vec![OsString::from(".ca.key.vault-part-0011aabb")]);
        assert!(!old.exists() && fresh.exists() && other.exists());
    }

    #[test]
    fn a_temp_file_is_private_and_gone_unless_persisted() {
        let (t, d) = scratch();
        let (guard, file) = TempFile::create(&d, OsStr::new("secret.key")).expect("create");
        let tmp = guard.path();
        assert_eq!(fs::metadata(&tmp).unwrap().permissions().mode() & 0o777, 0o600);
        drop(file);
        drop(guard);
        assert!(!tmp.exists(), "a dropped temp file is removed");
        let (guard, mut file) = TempFile::create(&d, OsStr::new("secret.key")).expect("create");
        std::io::Write::write_all(&mut file, b"k").unwrap();
        guard.persist(OsStr::new("secret.key")).expect("persist");
        assert_eq!(fs::read(t.path().join("secret.key")).unwrap(), b"k");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "only the file itself is left");
    }
}
