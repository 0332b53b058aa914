//! What every flow is told about the host it runs on (one options struct for the CLI and the
//! library), and the member it resolves to: settings from the host's `etcd.conf`, which is how
//! OKD 3.x configures etcd, with the options overriding them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::etcd_conf::{ETCD_CONF, EtcdConf};
use crate::host::{Host, ServiceControl};
use crate::source::etcd_v3::EtcdOptions;

#[derive(Clone, Debug, Default)]
pub struct FlowOptions {
    /// The host tree's `/` (default `/`).
    pub root: Option<PathBuf>,
    /// etcd.conf, in-host (default `/etc/etcd/etcd.conf`).
    pub etcd_conf: Option<PathBuf>,
    /// `systemctl` to run (default: from PATH).
    pub systemctl: Option<String>,
    /// How etcd runs here (default: systemd unit `etcd`).
    pub service: Option<ServiceControl>,
    pub etcd_binary: Option<PathBuf>,
    /// Overrides of etcd.conf's settings.
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub peer_urls: Vec<String>,
    /// TLS files to reach etcd with (real paths); default etcd.conf's CA and peer certificate.
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Owner of a restored data dir (default `etcd` when it exists and this runs as root).
    pub owner: Option<String>,
    /// How long to wait for etcd to stop, become healthy or catch up (default 120 s).
    pub timeout_secs: Option<u64>,
    /// Override failed pre-flight checks that may be overridden.
    pub force: bool,
}

/// This host's member, resolved.
#[derive(Clone, Debug)]
pub struct LocalMember {
    pub conf: EtcdConf,
    pub host: Host,
    pub service: ServiceControl,
    pub name: String,
    /// In-host path.
    pub data_dir: PathBuf,
    /// The data dir is a mount point (a disk of its own, as OKD recommends): it cannot be renamed,
    /// so its `member` directory is moved aside and replaced instead.
    pub data_dir_is_mount: bool,
    pub peer_urls: Vec<String>,
    /// Its client URLs (`ETCD_ADVERTISE_CLIENT_URLS`).
    pub client_urls: Vec<String>,
    /// TLS files for reaching etcd (real paths); endpoints empty.
    pub tls: EtcdOptions,
    pub timeout_secs: u64,
}

impl FlowOptions {
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// Read etcd.conf and resolve this host's member.
    pub fn local_member(&self) -> Result<LocalMember> {
        let root = self.root();
        let conf_path = self.etcd_conf.clone().unwrap_or_else(|| PathBuf::from(ETCD_CONF));
        let conf = EtcdConf::load(&root, &conf_path)?;
        let name = match &self.name {
            Some(n) => n.clone(),
            None => conf.require_name()?.to_string(),
        };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => conf.require_data_dir()?.to_path_buf(),
        };
        let data_dir = PathBuf::from(data_dir.to_string_lossy().trim_end_matches('/'));
        if data_dir.parent().is_none() || data_dir.as_os_str().is_empty() {
            return Err(Error::usage(format!(
                "the data dir {} is not a directory below /",
                data_dir.display()
            )));
        }
        let peer_urls = if self.peer_urls.is_empty() {
            conf.initial_advertise_peer_urls.clone()
        } else {
            self.peer_urls.clone()
        };
        if peer_urls.is_empty() {
            return Err(
                Error::usage(format!("{} does not set ETCD_INITIAL_ADVERTISE_PEER_URLS", conf_path.display()))
                    .hint("set it there or give --peer-url"),
            );
        }
        let client_urls = conf.advertise_client_urls.clone();
        if client_urls.is_empty() {
            return Err(
                Error::usage(format!("{} does not set ETCD_ADVERTISE_CLIENT_URLS", conf_path.display()))
                    .hint("set it there: the flow checks the member's health through it"),
            );
        }
        let https = client_urls.iter().any(|u| u.starts_with("https://"));
        let in_host = |p: &Option<PathBuf>| p.as_deref().map(|p| conf.host_file(p));
        let tls = EtcdOptions {
            endpoints: Vec::new(),
            cacert: self
                .cacert
                .clone()
                .or_else(|| https.then(|| in_host(&conf.trusted_ca_file)).flatten()),
            cert: self.cert.clone().or_else(|| https.then(|| in_host(&conf.peer_cert_file)).flatten()),
            key: self.key.clone().or_else(|| https.then(|| in_host(&conf.peer_key_file)).flatten()),
            connect_timeout_secs: Some(5),
        };
        let data_dir_is_mount = is_mount_point(&conf.host_file(&data_dir));
        let host = Host {
            root: root.clone(),
            systemctl: self.systemctl.clone().unwrap_or_else(|| "systemctl".to_string()),
        };
        Ok(LocalMember {
            conf,
            host,
            service: self.service.clone().unwrap_or_else(ServiceControl::etcd_unit),
            name,
            data_dir,
            data_dir_is_mount,
            peer_urls,
            client_urls,
            tls,
            timeout_secs: self.timeout_secs.unwrap_or(120),
        })
    }
}

impl LocalMember {
    /// EtcdOptions with these endpoints and this member's TLS files.
    pub fn etcd(&self, endpoints: &[String]) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.to_vec(),
            ..self.tls.clone()
        }
    }

    /// The `host:port`s the member listens on (peer and client).
    pub fn listen_addrs(&self) -> Vec<String> {
        self.conf
            .listen_peer_urls
            .iter()
            .chain(&self.conf.listen_client_urls)
            .filter_map(|u| super::plan::url_addr(u))
            .collect()
    }

    /// An in-host staging dir for plan `id`, on the data dir's file system (so the new data is
    /// put in place by a rename): beside the data dir, or inside it when it is a mount point.
    pub fn staging(&self, flow: &str, id: &str) -> PathBuf {
        let name = self
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.data_dir_is_mount {
            return self.data_dir.join(format!(".vault-{flow}-{id}"));
        }
        self.data_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!(".vault-{flow}-{name}-{id}"))
    }

    /// What is moved aside and replaced: the data dir, or its `member` directory when the data
    /// dir is a mount point.
    pub fn replaced_dir(&self) -> PathBuf {
        if self.data_dir_is_mount {
            self.data_dir.join("member")
        } else {
            self.data_dir.clone()
        }
    }

    /// Where the new data is in a staging dir: the whole data dir, or its `member` directory.
    pub fn staged_dir(&self, staging: &Path) -> PathBuf {
        let staged = staging.join(crate::ops::etcd_restore::STAGED);
        if self.data_dir_is_mount { staged.join("member") } else { staged }
    }

    /// `restorecon -R DATA_DIR` when SELinux is on and restorecon exists (as the runbook does).
    pub fn restorecon(&self) -> Option<crate::host::HostAction> {
        let on = Path::new("/sys/fs/selinux/enforce").exists();
        let tool = crate::host::command::find_on_path("restorecon")?;
        on.then(|| {
            crate::host::HostAction::Run(vec![
                tool.display().to_string(),
                "-R".to_string(),
                self.host.path(&self.data_dir).display().to_string(),
            ])
        })
    }
}

/// Whether `dir` is a mount point: on another device than its parent, or listed in
/// `/proc/self/mountinfo` (a bind mount of the same file system has the same device).
pub fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::symlink_metadata(dir), dir.parent()) else {
        return false;
    };
    if !me.is_dir() {
        return false;
    }
    if std::fs::metadata(parent).is_ok_and(|p| p.dev() != me.dev()) {
        return true;
    }
    let Ok(real) = std::fs::canonicalize(dir) else { return false };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mount(m)) == real)
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_mount(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount("/var/lib/etcd"), "/var/lib/etcd");
        assert_eq!(unescape_mount("/mnt/a\\040b"), "/mnt/a b");
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
