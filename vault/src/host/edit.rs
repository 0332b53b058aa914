//! One planned change of one file: shown as a diff before anything is written, applied atomically,
//! with the original kept beside it as `FILE.old` (or `FILE.old.<time>`).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Applied;
use super::diff;
use crate::error::{Error, Result};

/// A change of one existing file from `old` to `new` bytes. Made by the editors
/// ([`super::shell_conf`], [`super::master_config`]) without touching the file; [`FileEdit::apply`]
/// writes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEdit {
    /// The path as the operator knows it on the host (`/etc/etcd/etcd.conf`), for messages.
    pub host_path: PathBuf,
    /// Where the file really is (below `--root`, if one was given).
    pub file: PathBuf,
    /// What it says, e.g. `set ETCD_INITIAL_CLUSTER_STATE=existing`.
    pub summary: String,
    #[serde(with = "bytes_b64")]
    pub old: Vec<u8>,
    #[serde(with = "bytes_b64")]
    pub new: Vec<u8>,
}

impl FileEdit {
    /// True when the file already says what the edit would make it say.
    pub fn is_noop(&self) -> bool {
        self.old == self.new
    }

    /// One line for a plan: `edit /etc/etcd/etcd.conf: set ...` (or that nothing needs changing).
    pub fn describe(&self) -> String {
        if self.is_noop() {
            format!(
                "edit {}: {} (already so; nothing to change)",
                self.host_path.display(),
                self.summary
            )
        } else {
            format!(
                "edit {}: {} (original kept as {}.old)",
                self.host_path.display(),
                self.summary,
                self.host_path.display()
            )
        }
    }

    /// The change as a unified diff (empty when there is none).
    pub fn diff(&self) -> String {
        diff::unified(&self.host_path.display().to_string(), &self.old, &self.new)
    }

    /// Write the new content. The file must still hold the bytes the edit was planned from (or
    /// already the new ones: then nothing is done, so a resumed plan does not edit twice). The
    /// original is kept as `FILE.old`, or `FILE.old.<time>` when that exists (an existing backup
    /// is never replaced); the new content goes to a temporary file with the original's mode,
    /// owner and SELinux label, is fsynced and renamed over the file, and the directory fsynced.
    pub fn apply(&self) -> Result<Applied> {
        let shown = self.host_path.display();
        refuse_link(&self.host_path, &self.file)?;
        let current =
            fs::read(&self.file).map_err(|e| Error::io(format!("cannot read {shown} ({})", self.file.display())).with_source(e))?;
        if current == self.new {
            return Ok(Applied::AlreadyDone(format!("{shown} already says so: {}", self.summary)));
        }
        if current != self.old {
            return Err(Error::io(format!("{shown} changed since the plan was made; it was left as it is"))
                .hint("run the command again without --execute to see the plan for the file as it is now"));
        }
        let backup =
            keep_original(&self.file, &self.old).map_err(|e| Error::io(format!("cannot keep a copy of {shown}")).with_source(e))?;
        write_atomically(&self.file, &self.new, 0o600).map_err(|e| Error::io(format!("cannot write {shown}")).with_source(e))?;
        Ok(Applied::Done(format!(
            "edited {shown}: {} (original kept as {})",
            self.summary,
            backup.display()
        )))
    }
}

/// File contents in a journal: base64, so any bytes survive JSON.
mod bytes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Read the file at `host_path` on the host whose `/` is at `root`, for an edit: it must be a
/// regular file (an edit replaces the file, which would turn a symlink into a copy). Returns where it
/// really is and its bytes.
pub fn read_for_edit(root: &Path, host_path: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let file = super::under_root(root, host_path);
    let cannot_read = |e: io::Error| {
        let err = Error::io(format!("cannot read {} ({})", host_path.display(), file.display())).with_source(e);
        if root == Path::new("/") {
            err
        } else {
            err.hint(format!("the host tree is {}; check --root", root.display()))
        }
    };
    refuse_link(host_path, &file)?;
    let bytes = fs::read(&file).map_err(cannot_read)?;
    Ok((file, bytes))
}

/// An error unless `file` is a regular file or absent (then reading it says so).
fn refuse_link(host_path: &Path, file: &Path) -> Result<()> {
    match fs::symlink_metadata(file) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(file).map(|t| t.display().to_string()).unwrap_or_default();
            Err(Error::usage(format!(
                "{} is a symlink (to {target}); vault edits only regular files",
                host_path.display()
            ))
            .hint("give the path of the file it points to, or replace the link with the file, then run this again"))
        }
        Ok(m) if !m.is_file() => Err(Error::usage(format!("{} is not a regular file", host_path.display()))),
        _ => Ok(()),
    }
}

/// Keep `file`'s current content as `file.old` (or `.old.<time>`, `.old.<time>.N`), never
/// replacing anything. A hard link keeps the very inode (mode, owner, times, label); where links
/// fail, a copy with the same mode. When `file.old` already holds exactly `content` (an edit that
/// was interrupted after this step), it is reused.
pub fn keep_original(file: &Path, content: &[u8]) -> io::Result<PathBuf> {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    for attempt in 0..1000u32 {
        let mut name: OsString = file.as_os_str().to_os_string();
        match attempt {
            0 => name.push(".old"),
            1 => name.push(format!(".old.{ts}")),
            n => name.push(format!(".old.{ts}.{n}")),
        }
        let backup = PathBuf::from(name);
        if attempt == 0 && fs::symlink_metadata(&backup).is_ok_and(|m| m.is_file()) && fs::read(&backup)? == content {
            return Ok(backup);
        }
        match fs::hard_link(file, &backup) {
            Ok(()) => return Ok(backup),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                let mode = fs::metadata(file)?.mode() & 0o7777;
                match OpenOptions::new().write(true).create_new(true).mode(mode).open(&backup) {
                    Ok(mut f) => {
                        f.write_all(content)?;
                        f.sync_all()?;
                        return Ok(backup);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("every name to keep {} as is taken", file.display()),
    ))
}

/// Replace `file` with `content` atomically: a temporary file beside it (created 0600, then given
/// the original's mode, owner and SELinux label if it exists, else `new_mode`), fsync, rename, fsync
/// of the directory.
pub fn write_atomically(file: &Path, content: &[u8], new_mode: u32) -> io::Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".vault-edit-{}", hex::encode(crate::crypto::random_bytes::<4>())));
    let temp = dir.join(temp_name);
    let original = fs::metadata(file).ok();
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        f.write_all(content)?;
        match &original {
            Some(meta) => {
                if meta.uid() != f.metadata()?.uid() || meta.gid() != f.metadata()?.gid() {
                    std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
                }
                f.set_permissions(Permissions::from_mode(meta.mode() & 0o7777))?;
                copy_selinux_label(file, &temp);
            }
            None => f.set_permissions(Permissions::from_mode(new_mode))?,
        }
        f.sync_all()?;
        fs::rename(&temp, file)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Give `to` the SELinux label of `from`, where there is one (best effort: without SELinux there is
/// nothing to copy, and a file created in the same directory gets the same default label anyway).
fn copy_selinux_label(from: &Path, to: &Path) {
    if let Ok(Some(label)) = xattr::get(from, "security.selinux") {
        let _ = xattr::set(to, "security.selinux", &label);
    }
}

/// The file's line end: CRLF if its first line has one.
pub(crate) fn line_end(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if text[..i].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(file: &Path, old: &[u8], new: &[u8]) -> FileEdit {
        FileEdit {
            host_path: PathBuf::from("/etc/etcd/etcd.conf"),
            file: file.to_path_buf(),
            summary: "set X".into(),
            old: old.to_vec(),
            new: new.to_vec(),
        }
    }

    #[test]
    fn applying_keeps_the_original_and_never_replaces_an_existing_backup() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("etcd.conf");
        fs::write(&file, b"X=1\n").unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o640)).unwrap();

        let first = edit(&file, b"X=1\n", b"X=2\n");
        assert!(first.diff().contains("-X=1\n+X=2\n"));
        assert!(matches!(first.apply().unwrap(), Applied::Done(_)));
        assert_eq!(fs::read(&file).unwrap(), b"X=2\n");
        assert_eq!(fs::read(dir.path().join("etcd.conf.old")).unwrap(), b"X=1\n");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o640, "the original's mode");
        assert!(
            matches!(first.apply().unwrap(), Applied::AlreadyDone(_)),
            "applying twice is a no-op"
        );

        let second = edit(&file, b"X=2\n", b"X=3\n");
        let Applied::Done(msg) = second.apply().unwrap() else { panic!() };
        assert_eq!(
            fs::read(dir.path().join("etcd.conf.old")).unwrap(),
            b"X=1\n",
            ".old is never replaced"
        );
        let stamped: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("etcd.conf.old."))
            .collect();
        assert_eq!(stamped.len(), 1, "{stamped:?}");
        assert!(msg.contains(&stamped[0]), "{msg}");
        assert_eq!(fs::read(dir.path().join(&stamped[0])).unwrap(), b"X=2\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_symlink_is_not_edited_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/etcd")).unwrap();
        fs::write(dir.path().join("real.conf"), b"X=1\n").unwrap();
        std::os::unix::fs::symlink("../../real.conf", dir.path().join("etc/etcd/etcd.conf")).unwrap();
        let e = read_for_edit(dir.path(), Path::new("/etc/etcd/etcd.conf")).unwrap_err();
        assert!(
            e.to_string().contains("/etc/etcd/etcd.conf is a symlink (to ../../real.conf)") && e.hint.is_some(),
            "{e}"
        );
        let e = edit(&dir.path().join("etc/etcd/etcd.conf"), b"X=1\n", b"X=2\n")
            .apply()
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(
            fs::symlink_metadata(dir.path().join("etc/etcd/etcd.conf"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(dir.path().join("real.conf")).unwrap(), b"X=1\n");
        let e = read_for_edit(&dir.path().join("nope"), Path::new("/etc/etcd/etcd.conf")).unwrap_err();
        assert!(
            e.to_string().contains("cannot read /etc/etcd/etcd.conf") && e.to_string().contains("--root"),
            "{e}"
        );
    }

    #[test]
    fn a_file_changed_since_the_plan_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flanneld");
        fs::write(&file, b"A=changed\n").unwrap();
        let e = edit(&file, b"A=1\n", b"A=2\n").apply().unwrap_err();
        assert!(e.to_string().contains("changed since the plan was made"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"A=changed\n");
        assert!(!dir.path().join("flanneld.old").exists());
    }
}
