//! The member's settings from `/etc/etcd/etcd.conf`, which is how OKD 3.x configures etcd: the
//! typed view the recovery flows read (so the operator types no member names or URLs), and the
//! edits they make to it.

use std::path::{Path, PathBuf};

use super::edit::FileEdit;
use super::shell_conf::ShellConf;
use super::under_root;
use crate::error::{Error, Result};

/// Where OKD 3.x keeps etcd's settings.
pub const ETCD_CONF: &str = "/etc/etcd/etcd.conf";

/// One member of `ETCD_INITIAL_CLUSTER` (`name=url`; a name given twice has two peer URLs).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// The settings of one etcd member, as `etcd.conf` gives them (unset keys are `None` or empty).
/// URL lists are split on commas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdConf {
    /// The host path it was read from (`/etc/etcd/etcd.conf`).
    pub host_path: PathBuf,
    /// The host tree's `/` (`/` itself unless `--root` was given); file paths below are in-host
    /// paths, found at [`EtcdConf::host_file`].
    pub root: PathBuf,
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// A WAL directory apart from the data dir (`ETCD_WAL_DIR`), if set: moved aside with it.
    pub wal_dir: Option<PathBuf>,
    pub initial_advertise_peer_urls: Vec<String>,
    pub initial_cluster: Vec<InitialMember>,
    pub initial_cluster_token: Option<String>,
    pub initial_cluster_state: Option<String>,
    pub listen_peer_urls: Vec<String>,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub peer_cert_file: Option<PathBuf>,
    pub peer_key_file: Option<PathBuf>,
    pub peer_trusted_ca_file: Option<PathBuf>,
    pub peer_client_cert_auth: bool,
}

impl EtcdConf {
    /// Read `host_path` (normally [`ETCD_CONF`]) on the host whose `/` is at `root`.
    pub fn load(root: &Path, host_path: &Path) -> Result<EtcdConf> {
        let conf = ShellConf::load(root, host_path)?;
        EtcdConf::from_shell(&conf, root, host_path)
    }

    /// The typed view of an already parsed file.
    pub fn from_shell(conf: &ShellConf, root: &Path, host_path: &Path) -> Result<EtcdConf> {
        let text = |k: &str| conf.get(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let path = |k: &str| text(k).map(PathBuf::from);
        let urls = |k: &str| split_list(conf.get(k).unwrap_or(""));
        let flag = |k: &str| text(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let initial_cluster = parse_initial_cluster(conf.get("ETCD_INITIAL_CLUSTER").unwrap_or("")).map_err(|why| {
            Error::usage(format!("{}: ETCD_INITIAL_CLUSTER {why}", host_path.display()))
                .hint("it must read NAME=https://HOST:2380,NAME=https://HOST:2380,...")
        })?;
        Ok(EtcdConf {
            host_path: host_path.to_path_buf(),
            root: root.to_path_buf(),
            name: text("ETCD_NAME"),
            data_dir: path("ETCD_DATA_DIR"),
            wal_dir: path("ETCD_WAL_DIR"),
            initial_advertise_peer_urls: urls("ETCD_INITIAL_ADVERTISE_PEER_URLS"),
            initial_cluster,
            initial_cluster_token: text("ETCD_INITIAL_CLUSTER_TOKEN"),
            initial_cluster_state: text("ETCD_INITIAL_CLUSTER_STATE"),
            listen_peer_urls: urls("ETCD_LISTEN_PEER_URLS"),
            listen_client_urls: urls("ETCD_LISTEN_CLIENT_URLS"),
            advertise_client_urls: urls("ETCD_ADVERTISE_CLIENT_URLS"),
            cert_file: path("ETCD_CERT_FILE"),
            key_file: path("ETCD_KEY_FILE"),
            trusted_ca_file: path("ETCD_TRUSTED_CA_FILE"),
            client_cert_auth: flag("ETCD_CLIENT_CERT_AUTH"),
            peer_cert_file: path("ETCD_PEER_CERT_FILE"),
            peer_key_file: path("ETCD_PEER_KEY_FILE"),
            peer_trusted_ca_file: path("ETCD_PEER_TRUSTED_CA_FILE"),
            peer_client_cert_auth: flag("ETCD_PEER_CLIENT_CERT_AUTH"),
        })
    }

    /// The member's name; an error saying where to set it when the file has none.
    pub fn require_name(&self) -> Result<&str> {
        self.name.as_deref().ok_or_else(|| self.missing("ETCD_NAME", "--name"))
    }

    /// The member's data directory (in-host path); an error when the file has none.
    pub fn require_data_dir(&self) -> Result<&Path> {
        self.data_dir.as_deref().ok_or_else(|| self.missing("ETCD_DATA_DIR", "--data-dir"))
    }

    /// Where an in-host path of this host (a data dir, a certificate) really is.
    pub fn host_file(&self, host_path: &Path) -> PathBuf {
        under_root(&self.root, host_path)
    }

    /// `ETCD_INITIAL_CLUSTER` as etcd wants it: `name=url,name=url`.
    pub fn initial_cluster_text(members: &[InitialMember]) -> String {
        members
            .iter()
            .flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn missing(&self, key: &str, flag: &str) -> Error {
        Error::usage(format!("{} does not set {key}", self.host_path.display()))
            .hint(format!("set {key} in {} or give {flag}", self.host_path.display()))
    }
}

/// The edit of `etcd.conf` that a member joining an existing cluster needs: `ETCD_INITIAL_CLUSTER`
/// as the member add returned it and `ETCD_INITIAL_CLUSTER_STATE=existing` (other keys as `extra`).
pub fn join_edit(root: &Path, host_path: &Path, members: &[InitialMember], extra: &[(&str, &str)]) -> Result<FileEdit> {
    let mut conf = ShellConf::load(root, host_path)?;
    conf.set("ETCD_INITIAL_CLUSTER", &EtcdConf::initial_cluster_text(members))?;
    conf.set("ETCD_INITIAL_CLUSTER_STATE", "existing")?;
    for (key, value) in extra {
        conf.set(key, value)?;
    }
    Ok(conf.edit())
}

/// The edit of `etcd.conf` setting only `ETCD_INITIAL_CLUSTER` (after a member remove or add).
pub fn initial_cluster_edit(root: &Path, host_path: &Path, members: &[InitialMember]) -> Result<FileEdit> {
    let mut conf = ShellConf::load(root, host_path)?;
    conf.set("ETCD_INITIAL_CLUSTER", &EtcdConf::initial_cluster_text(members))?;
    Ok(conf.edit())
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `name=url,name=url,...`, a name given twice gathering its URLs, in first-seen order.
pub fn parse_initial_cluster(text: &str) -> std::result::Result<Vec<InitialMember>, String> {
    let mut members: Vec<InitialMember> = Vec::new();
    for item in split_list(text) {
        let Some((name, url)) = item.split_once('=') else {
            return Err(format!("has {item:?}, which is not NAME=URL"));
        };
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() || !url.contains("://") {
            return Err(format!("has {item:?}, which is not NAME=URL"));
        }
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => members.push(InitialMember {
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
            }),
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("testdata/etcd.conf");

    fn host_tree(text: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/etcd")).unwrap();
        std::fs::write(root.path().join("etc/etcd/etcd.conf"), text).unwrap();
        root
    }

    #[test]
    fn an_okd_etcd_conf_reads_into_its_settings_under_a_root() {
        let root = host_tree(SAMPLE);
        let c = EtcdConf::load(root.path(), Path::new(ETCD_CONF)).unwrap();
        assert_eq!(c.require_name().unwrap(), "master-0.example.com");
        assert_eq!(c.require_data_dir().unwrap(), Path::new("/var/lib/etcd/"));
        assert_eq!(c.wal_dir, None, "#ETCD_WAL_DIR=\"\" is commented out");
        assert_eq!(c.host_file(c.data_dir.as_ref().unwrap()), root.path().join("var/lib/etcd"));
        assert_eq!(c.initial_advertise_peer_urls, ["https://192.168.55.8:2380"]);
        assert_eq!(c.listen_client_urls, ["https://192.168.55.8:2379"]);
        assert_eq!(c.advertise_client_urls, ["https://192.168.55.8:2379"]);
        assert_eq!(c.listen_peer_urls, ["https://192.168.55.8:2380"]);
        let names: Vec<&str> = c.initial_cluster.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["master-0.example.com", "master-1.example.com", "master-2.example.com"]);
        assert_eq!(c.initial_cluster[2].peer_urls, ["https://192.168.55.13:2380"]);
        assert_eq!(c.initial_cluster_token.as_deref(), Some("etcd-cluster-1"));
        assert_eq!(c.initial_cluster_state.as_deref(), Some("new"));
        assert_eq!(c.cert_file.as_deref(), Some(Path::new("/etc/etcd/server.crt")));
        assert_eq!(c.key_file.as_deref(), Some(Path::new("/etc/etcd/server.key")));
        assert_eq!(c.trusted_ca_file.as_deref(), Some(Path::new("/etc/etcd/ca.crt")));
        assert_eq!(c.peer_cert_file.as_deref(), Some(Path::new("/etc/etcd/peer.crt")));
        assert_eq!(c.peer_key_file.as_deref(), Some(Path::new("/etc/etcd/peer.key")));
        assert_eq!(c.peer_trusted_ca_file.as_deref(), Some(Path::new("/etc/etcd/ca.crt")));
        assert!(c.client_cert_auth && c.peer_client_cert_auth);
        assert_eq!(
            EtcdConf::initial_cluster_text(&c.initial_cluster),
            SAMPLE.lines().find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=")).unwrap()
        );
    }

    #[test]
    fn missing_and_malformed_settings_say_what_to_do() {
        let root = host_tree("#ETCD_NAME=x\nETCD_INITIAL_CLUSTER=a=https://h:2380,b=https://i:2380,a=https://j:2380\n");
        let c = EtcdConf::load(root.path(), Path::new(ETCD_CONF)).unwrap();
        let e = c.require_name().unwrap_err();
        assert!(
            e.to_string().contains("/etc/etcd/etcd.conf does not set ETCD_NAME") && e.to_string().contains("--name"),
            "{e}"
        );
        assert_eq!(c.initial_cluster[0].peer_urls, ["https://h:2380", "https://j:2380"]);
        assert!(!c.client_cert_auth);

        let root = host_tree("ETCD_INITIAL_CLUSTER=master-0 https://h:2380\n");
        let e = EtcdConf::load(root.path(), Path::new(ETCD_CONF)).unwrap_err();
        assert!(
            e.to_string().contains("ETCD_INITIAL_CLUSTER has \"master-0 https://h:2380\""),
            "{e}"
        );
        let e = EtcdConf::load(Path::new("/nonexistent/host"), Path::new(ETCD_CONF)).unwrap_err();
        assert!(e.to_string().contains("cannot read /etc/etcd/etcd.conf"), "{e}");
    }

    #[test]
    fn a_joining_member_gets_the_cluster_the_add_returned_and_state_existing() {
        let root = host_tree(SAMPLE);
        let members =
            parse_initial_cluster("master-0.example.com=https://192.168.55.8:2380,master-1.example.com=https://192.168.55.12:2380")
                .unwrap();
        let edit = join_edit(root.path(), Path::new(ETCD_CONF), &members, &[]).unwrap();
        let expected = SAMPLE
            .replace(",master-2.example.com=https://192.168.55.13:2380\n", "\n")
            .replace("ETCD_INITIAL_CLUSTER_STATE=new\n", "ETCD_INITIAL_CLUSTER_STATE=existing\n");
        assert_eq!(String::from_utf8(edit.new.clone()).unwrap(), expected);
        edit.apply().unwrap();
        let after = EtcdConf::load(root.path(), Path::new(ETCD_CONF)).unwrap();
        assert_eq!(
            (after.initial_cluster, after.initial_cluster_state.as_deref()),
            (members.clone(), Some("existing"))
        );
        assert!(initial_cluster_edit(root.path(), Path::new(ETCD_CONF), &members).unwrap().is_noop());
    }
}
