//! An etcd member's data directory as a capture source, taken safely from a running member:
//!
//! 1. the v2 snap files and WAL segments copied as they are (the WAL is append-only and its
//!    reader stops cleanly at a torn last record); taken again if etcd cut a new snap file meanwhile;
//! 2. then the member's v3 database through the API snapshot (`Maintenance.Snapshot`, sha256 trailer
//!    checked): a consistent copy, where copying `member/snap/db` under a running etcd is not.
//!    Taken after the WAL, it holds every v3 write the copied WAL holds (and maybe a few more);
//! 3. the installed `etcdctl backup` (etcd 3.4, `ETCDCTL_API=2`; `etcdutl backup` from 3.5) run
//!    twice on that copy, as the OKD runbook's `etcdctl backup` + `cp member/snap/db` intends:
//!    `--with-v3` for the database without its membership buckets, and `--with-v3=false` for the
//!    WAL with new node and cluster IDs, the membership changes and member attribute updates
//!    dropped, and the v3 entries dropped (the database has them). Run on the live data dir, the
//!    tool would wait forever for the running etcd to release the database's lock;
//! 4. etcd 3.4's tool renumbers the entries after each one it drops, and writes the renumbered
//!    commit index as the consistent index of the empty database it makes with `--with-v3=false`.
//!    That index is written into the API database ([`crate::source::etcd_bolt`]): with the
//!    database's own index (the old numbering, higher), etcd would take the first writes after a
//!    recovery as already applied and skip them.
//!
//! The member's settings come from `/etc/etcd/etcd.conf` (a shell-style `KEY=VALUE` file).

use std::path::{Path, PathBuf};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::host::command::find_on_path;
use crate::host::etcd_conf::{ETCD_CONF, EtcdConf};
use crate::host::shell_conf::ShellConf;
use crate::host::under_root;
use crate::source::etcd_v3::EtcdOptions;

/// What to capture.
#[derive(Clone, Debug, Default)]
pub struct DatadirOptions {
    /// The member's data dir as the host names it; default `ETCD_DATA_DIR` of etcd.conf.
    pub data_dir: Option<PathBuf>,
    /// The host's files are under this directory (`/` normally).
    pub root: Option<PathBuf>,
    /// etcd.conf to read; default `/etc/etcd/etcd.conf` under the root.
    pub conf: Option<PathBuf>,
    /// How to reach this member's client API; empty endpoints: `ETCD_ADVERTISE_CLIENT_URLS`, and
    /// no TLS files: `ETCD_TRUSTED_CA_FILE`, `ETCD_PEER_CERT_FILE`, `ETCD_PEER_KEY_FILE` (as OKD's
    /// etcdctl calls do).
    pub etcd: EtcdOptions,
    /// `etcdutl` or `etcdctl` to run; default: etcdutl, else etcdctl, from PATH.
    pub tool: Option<PathBuf>,
}

/// The member as its host configures it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Data dir as the host names it, and where this process reads it (under the root).
    pub data_dir: PathBuf,
    pub data_dir_here: PathBuf,
    pub conf: Option<PathBuf>,
    /// `ETCD_NAME` (empty when not known).
    pub name: String,
    pub etcd: EtcdOptions,
}

/// Find the member's data dir, name and client access from the options and etcd.conf.
pub fn resolve(opts: &DatadirOptions) -> Result<Member> {
    let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !root.is_dir() {
        return Err(Error::usage(format!("--root {} is not a directory", root.display())));
    }
    let host_conf = Path::new(ETCD_CONF);
    let conf_path = opts.conf.clone().unwrap_or_else(|| under_root(&root, host_conf));
    let conf = match std::fs::read(&conf_path) {
        Ok(bytes) => {
            let shell = ShellConf::parse(opts.conf.as_deref().unwrap_or(host_conf), &conf_path, bytes)?;
            Some(EtcdConf::from_shell(&shell, &root, opts.conf.as_deref().unwrap_or(host_conf))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.conf.is_none() && opts.data_dir.is_some() => None,
        Err(e) => {
            return Err(Error::usage(format!("cannot read etcd config {}", conf_path.display()))
                .with_source(e)
                .hint("pass --data-dir DIR (and --endpoints) when the host has no etcd.conf, or --root for a host tree"));
        }
    };
    let data_dir = match (&opts.data_dir, conf.as_ref().and_then(|c| c.data_dir.clone())) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(Error::usage(format!("{} sets no ETCD_DATA_DIR", conf_path.display()))
                .hint("pass --data-dir DIR, or check that this is the member's etcd.conf"));
        }
    };
    let data_dir_here = under_root(&root, &data_dir);
    for sub in ["member/wal", "member/snap"] {
        let p = data_dir_here.join(sub);
        if !p.is_dir() {
            return Err(Error::usage(format!(
                "{} is not an etcd member data dir: {} is missing",
                data_dir_here.display(),
                p.display()
            ))
            .hint("check --data-dir (or ETCD_DATA_DIR in etcd.conf) names the data dir of the member on this host"));
        }
    }
    let mut etcd = opts.etcd.clone();
    if etcd.endpoints.is_empty() {
        etcd.endpoints = conf.as_ref().map(|c| c.advertise_client_urls.clone()).unwrap_or_default();
        if etcd.endpoints.is_empty() {
            return Err(
                Error::usage("no client URL for this member: etcd.conf sets no ETCD_ADVERTISE_CLIENT_URLS")
                    .hint("pass --endpoints with this member's client URL"),
            );
        }
    }
    if etcd.cacert.is_none() && etcd.cert.is_none() && etcd.key.is_none() && etcd.endpoints.iter().any(|e| e.starts_with("https://")) {
        let file = |p: Option<&PathBuf>| p.map(|p| under_root(&root, p));
        etcd.cacert = file(conf.as_ref().and_then(|c| c.trusted_ca_file.as_ref()));
        etcd.cert = file(conf.as_ref().and_then(|c| c.peer_cert_file.as_ref()));
        etcd.key = file(conf.as_ref().and_then(|c| c.peer_key_file.as_ref()));
    }
    Ok(Member {
        data_dir,
        data_dir_here,
        name: conf.as_ref().and_then(|c| c.name.clone()).unwrap_or_default(),
        conf: conf.is_some().then_some(conf_path),
        etcd,
    })
}

/// Index of a `<term>-<index>.snap` file name (16 hex digits each).
pub fn snap_index(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".snap")?;
    let (_, idx) = stem.split_once('-')?;
    u64::from_str_radix(idx, 16).ok()
}

/// The v2 snap files and WAL segments of a data dir (names relative to it), and the newest snap index.
pub fn v2_files(data_dir: &Path) -> Result<(Vec<PathBuf>, u64)> {
    let mut files = Vec::new();
    let mut newest = 0;
    for (sub, ext) in [("member/snap", ".snap"), ("member/wal", ".wal")] {
        let dir = data_dir.join(sub);
        let rd = std::fs::read_dir(&dir).context(ErrorKind::Source, || format!("cannot list {}", dir.display()))?;
        for e in rd {
            let e = e.context(ErrorKind::Source, || format!("cannot list {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(ext) {
                continue; // the db, *.snap.db, *.tmp preallocated segments, locks
            }
            if let Some(i) = snap_index(&name) {
                newest = newest.max(i);
            }
            files.push(Path::new(sub).join(name));
        }
    }
    files.sort();
    Ok((files, newest))
}

/// The backup tool: etcdutl (3.5+) or etcdctl (3.4), and its version line.
pub fn find_tool(given: Option<&Path>) -> Result<(PathBuf, String)> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match find_on_path("etcdutl").or_else(|| find_on_path("etcdctl")) {
            Some(p) => p,
            None => {
                return Err(Error::usage("neither etcdutl (etcd 3.5+) nor etcdctl (3.4) is on PATH")
                    .hint("install the etcd client tools (Debian: apt-get install etcd-client) or pass --etcd-tool PATH"));
            }
        },
    };
    let out = std::process::Command::new(&path)
        .env("ETCDCTL_API", "3")
        .arg("version")
        .output()
        .map_err(|e| Error::usage(format!("cannot run {}", path.display())).with_source(e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("version"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((path, version))
}

/// Run the tool's `backup` from `src` (a data dir copy) into `dest`, with or without the v3 data.
pub fn run_backup_tool(tool: &Path, src: &Path, dest: &Path, with_v3: bool) -> Result<()> {
    let is_etcdutl = tool.file_name().is_some_and(|n| n.to_string_lossy().contains("etcdutl"));
    let mut cmd = std::process::Command::new(tool);
    if !is_etcdutl {
        cmd.env("ETCDCTL_API", "2");
    }
    cmd.arg("backup")
        .arg("--data-dir")
        .arg(src)
        .arg("--backup-dir")
        .arg(dest)
        .arg(format!("--with-v3={with_v3}"));
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("cannot run {}", tool.display())).with_source(e))?;
    if !out.status.success() {
        return Err(Error::source_err(format!(
            "{} backup failed ({}): {}",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .hint("nothing was stored; the member's data dir was only read"));
    }
    Ok(())
}

/// Copy a file (0600) — the WAL and snap files hold every secret of the cluster.
pub fn copy_private(from: &Path, to: &Path) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(from).context(ErrorKind::Source, || format!("cannot read {}", from.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .context(ErrorKind::Io, || format!("cannot create {}", to.display()))?;
    std::io::copy(&mut src, &mut dst).context(ErrorKind::Io, || format!("cannot copy {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_names_give_their_index() {
        assert_eq!(snap_index("0000000000000002-00000000000186a1.snap"), Some(0x186a1));
        assert_eq!(snap_index("0000000000000002-00000000000186a1.snap.db"), None);
        assert_eq!(snap_index("db"), None);
    }

    #[test]
    fn a_missing_data_dir_or_conf_is_named() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let opts = DatadirOptions {
            root: Some(root.to_path_buf()),
            ..Default::default()
        };
        let e = resolve(&opts).unwrap_err();
        assert!(e.to_string().contains("etc/etcd/etcd.conf"), "{e}");
        std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
        std::fs::write(root.join("etc/etcd/etcd.conf"), "ETCD_NAME=m0\n").unwrap();
        let e = resolve(&opts).unwrap_err();
        assert!(e.to_string().contains("sets no ETCD_DATA_DIR"), "{e}");
        std::fs::write(root.join("etc/etcd/etcd.conf"), "ETCD_NAME=m0\nETCD_DATA_DIR=/var/lib/etcd\n").unwrap();
        let e = resolve(&opts).unwrap_err();
        assert!(e.to_string().contains("member/wal is missing"), "{e}");
        std::fs::create_dir_all(root.join("var/lib/etcd/member/wal")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/etcd/member/snap")).unwrap();
        let e = resolve(&opts).unwrap_err();
        assert!(e.to_string().contains("ETCD_ADVERTISE_CLIENT_URLS"), "{e}");
        std::fs::write(
            root.join("etc/etcd/etcd.conf"),
            "ETCD_NAME=m0\nETCD_DATA_DIR=/var/lib/etcd\nETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379\nETCD_TRUSTED_CA_FILE=/etc/etcd/ca.crt\n",
        )
        .unwrap();
        let m = resolve(&opts).unwrap();
        assert_eq!(m.name, "m0");
        assert_eq!(m.data_dir, PathBuf::from("/var/lib/etcd"));
        assert_eq!(m.data_dir_here, root.join("var/lib/etcd"));
        assert_eq!(m.etcd.cacert, Some(root.join("etc/etcd/ca.crt")));
    }
}
