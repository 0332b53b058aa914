//! Flows 3 and 4: `member remove` of a failed member and `member add` of a new one (the OKD 3.x
//! runbook's "removing a failed etcd host" and "scaling etcd up"), the parts that are pure: the
//! quorum arithmetic that decides whether a change is safe, the three config rewrites on this host
//! (`ETCD_INITIAL_CLUSTER` in etcd.conf, `etcdClientInfo.urls` in master-config.yaml,
//! `FLANNEL_ETCD_ENDPOINTS` in /etc/sysconfig/flanneld) with the service restarts the runbook asks
//! for after each, and the new member's etcd.conf.
//!
//! The rewrites change only what the membership change must: the entries of the removed member go
//! (found by its name and the hosts of its URLs, so `https://master-2.example.com:2379` goes with the
//! member `master-2.example.com` whose URLs say `192.168.55.13`), the new member's entry is added
//! after the last one, and every other entry, and every other byte of the file, stays as it was.
//! A file this host does not have is skipped and the plan says so.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::host::etcd_conf::{EtcdConf, InitialMember, parse_initial_cluster};
use crate::host::master_config::{MASTER_CONFIG, MasterConfig};
use crate::host::shell_conf::{FLANNEL_ETCD_ENDPOINTS, FLANNELD, ShellConf};
use crate::host::{Applied, FileEdit, Host, HostAction, ServiceControl, ServiceOp, diff, under_root};
use crate::source::etcd_v3::EtcdOptions;

use super::certs::{self, CertRequest};
use super::cluster::{self, quorum, same_urls};
use super::options::{FlowOptions, LocalMember};
use super::plan::{Plan, Step};
use super::preflight::Check;

/// Units that serve the OKD master API, in the order they are looked for; the first the host has
/// is restarted after master-config.yaml changes (the runbook: `atomic-openshift-master-api`, or
/// `atomic-openshift-master` on a single-master install; `origin-*` on OKD).
pub const MASTER_API_UNITS: [&str; 4] = [
    "atomic-openshift-master-api",
    "origin-master-api",
    "atomic-openshift-master",
    "origin-master",
];
/// OKD 3.10+ runs the master API as a static pod, restarted with this command.
pub const MASTER_RESTART: [&str; 2] = ["master-restart", "api"];
/// flanneld's unit.
pub const FLANNELD_UNIT: &str = "flanneld";

/// One member as the cluster lists it, with what vault learnt of its health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub id: u64,
    /// Empty for a member added but never started.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty for a member added but never started.
    pub client_urls: Vec<String>,
    /// It answered a health check.
    pub healthy: bool,
}

impl MemberState {
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }

    /// `master-2.example.com (8372784203e11288)`.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("unstarted member {:x} ({})", self.id, self.peer_urls.join(","))
        } else {
            format!("{} ({:x})", self.name, self.id)
        }
    }

    /// Who this member is, for finding its entries in config files.
    pub fn identity(&self) -> MemberIdentity {
        MemberIdentity::new(&self.name, self.peer_urls.iter().chain(&self.client_urls))
    }
}

/// The member `NAME|ID` names: its name, or its ID in hex (as etcdctl prints it) or decimal.
pub fn find_member<'a>(members: &'a [MemberState], name_or_id: &str) -> Option<&'a MemberState> {
    members.iter().find(|m| !m.name.is_empty() && m.name == name_or_id).or_else(|| {
        let hex = u64::from_str_radix(name_or_id, 16).ok();
        let dec = name_or_id.parse::<u64>().ok();
        members
            .iter()
            .find(|m| Some(m.id) == hex)
            .or_else(|| members.iter().find(|m| Some(m.id) == dec))
    })
}

/// Members a cluster of `members` can lose and still commit.
pub fn tolerates(members: usize) -> usize {
    members.saturating_sub(quorum(members))
}

/// A failed check, overridable with `--force` when `forcible`.
fn fail(name: &str, detail: String, hint: String, forcible: bool) -> Check {
    let c = Check::fail(name, detail, hint);
    if forcible { c.forcible() } else { c }
}

fn healthy_count<'a>(members: impl IntoIterator<Item = &'a MemberState>) -> usize {
    members.into_iter().filter(|m| m.healthy).count()
}

/// Whether removing `target` from `members` is safe: refused when the target is healthy (it is
/// not a failed member) or when the members left cannot form a quorum, both allowed with
/// `--force`; never when the cluster cannot commit the removal at all, or it is the last member.
pub fn check_remove(members: &[MemberState], target: &MemberState) -> Vec<Check> {
    const NAME: &str = "quorum";
    let n = members.len();
    let healthy = healthy_count(members);
    let mut out = Vec::new();
    if n <= 1 {
        out.push(fail(
            NAME,
            format!("{} is the cluster's only member", target.label()),
            "a cluster cannot remove its last member; to start over, restore a snapshot with `vaultctl etcd recover`".into(),
            false,
        ));
        return out;
    }
    if healthy < quorum(n) {
        out.push(fail(
            NAME,
            format!(
                "only {healthy} of {n} members are healthy and {} are needed to commit the removal",
                quorum(n)
            ),
            "the cluster has lost quorum: bring members back, or rebuild it from a snapshot with `vaultctl etcd recover`".into(),
            false,
        ));
        return out;
    }
    if target.healthy {
        out.push(fail(
            "member down",
            format!("{} is healthy: it is not a failed member", target.label()),
            format!(
                "stop etcd on that member first if it is to go, or give --force to remove a working member ({} of {n} members healthy)",
                healthy
            ),
            true,
        ));
    } else {
        out.push(Check::pass("member down", format!("{} does not answer", target.label())));
    }
    let after = n - 1;
    let healthy_after = healthy - usize::from(target.healthy);
    if healthy_after < quorum(after) {
        out.push(fail(
            NAME,
            format!(
                "after the removal {healthy_after} of {after} members are healthy and {} are needed: the cluster would lose quorum",
                quorum(after)
            ),
            "bring the other members back first, or give --force".into(),
            true,
        ));
    } else {
        out.push(Check::pass(
            NAME,
            format!(
                "{n} -> {after} members: quorum {}, {healthy_after} healthy, tolerates {} failure(s)",
                quorum(after),
                tolerates(after)
            ),
        ));
    }
    if after.is_multiple_of(2) {
        out.push(even_warning(n, after));
    }
    out
}

/// Whether adding a member named `name` at `peer_urls` is safe: refused when the name or a peer
/// URL is taken, while another added member is unstarted (one at a time), or when the cluster
/// would lose quorum until the new member starts (`--force` for that); a warning with the numbers
/// when the count becomes even. `Pass` "already a member" when exactly this member is there (a
/// resumed plan, or the rewrite on another host).
pub fn check_add(members: &[MemberState], name: &str, peer_urls: &[String]) -> Vec<Check> {
    const NAME: &str = "quorum";
    let mut out = Vec::new();
    if let Some(same) = members.iter().find(|m| same_urls(&m.peer_urls, peer_urls))
        && (same.name == name || !same.is_started())
    {
        out.push(Check::pass(
            "new member",
            format!("{} is already a member with peer URL {}", name, peer_urls.join(",")),
        ));
        return out;
    }
    if let Some(m) = members.iter().find(|m| m.name == name) {
        out.push(fail(
            "new member",
            format!("a member named {name} already exists: {}", m.label()),
            format!("remove it first (`vaultctl etcd member remove {name}`) or choose another name"),
            false,
        ));
    }
    if let Some(m) = members.iter().find(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u))) {
        out.push(fail(
            "new member",
            format!("peer URL {} is already used by {}", peer_urls.join(","), m.label()),
            "give the new member's own peer URL".into(),
            false,
        ));
    }
    if let Some(m) = members.iter().find(|m| !m.is_started()) {
        out.push(fail(
            "one at a time",
            format!("{} was added but has not started", m.label()),
            "start that member (or remove it) before adding another; etcd takes members one at a time".into(),
            false,
        ));
    }
    let n = members.len();
    let healthy = healthy_count(members);
    let after = n + 1;
    if healthy < quorum(after) {
        out.push(fail(
            NAME,
            format!(
                "{healthy} of {n} members are healthy; with {after} members {} are needed, so the cluster would lose quorum until the new member starts",
                quorum(after)
            ),
            "remove or bring back the failed members first, or give --force".into(),
            true,
        ));
    } else {
        out.push(Check::pass(
            NAME,
            format!(
                "{n} -> {after} members: quorum {}, {healthy} healthy before the new member starts, tolerates {} failure(s) once it runs",
                quorum(after),
                tolerates(after)
            ),
        ));
    }
    if after.is_multiple_of(2) {
        out.push(even_warning(n, after));
    }
    out
}

fn even_warning(before: usize, after: usize) -> Check {
    let odd = after + 1;
    warn_with_hint(
        "odd member count",
        format!(
            "the cluster will have {after} members: quorum {}, it tolerates {} failure(s), no more than {} members do, and every write waits for one vote more",
            quorum(after),
            tolerates(after),
            after - 1
        ),
        Some(format!(
            "etcd clusters should have an odd number of members: {} to {odd} members tolerates {} failure(s)",
            if after > before {
                "add one more; going"
            } else {
                "add one back; going"
            },
            tolerates(odd)
        )),
    )
}

/// What identifies a member's entries in config files: its name, and the host and port of each
/// of its URLs, also with its name as the host (`https://master-2.example.com:2379` is the member
/// `master-2.example.com` whose client URL is `https://192.168.55.13:2379`). Ports count, so
/// members sharing a host are told apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub name: String,
    /// `host:port`s (hosts lower case).
    pub addrs: Vec<String>,
}

impl MemberIdentity {
    pub fn new<'a>(name: &str, urls: impl IntoIterator<Item = &'a String>) -> MemberIdentity {
        let mut addrs: Vec<String> = Vec::new();
        for (host, port) in urls.into_iter().filter_map(|u| url_host_port(u)) {
            let by_name = (!name.is_empty()).then(|| format!("{}:{port}", name.to_ascii_lowercase()));
            for a in std::iter::once(format!("{host}:{port}")).chain(by_name) {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
        }
        MemberIdentity {
            name: name.to_string(),
            addrs,
        }
    }

    fn owns_url(&self, url: &str) -> bool {
        url_host_port(url).is_some_and(|(h, p)| self.addrs.contains(&format!("{h}:{p}")))
    }

    fn owns_entry(&self, m: &InitialMember) -> bool {
        (!self.name.is_empty() && m.name == self.name) || m.peer_urls.iter().any(|u| self.owns_url(u))
    }
}

/// The host of a URL, lower case, IPv6 without brackets.
pub fn url_host(url: &str) -> Option<String> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Domain(d) => Some(d.to_ascii_lowercase()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

fn url_host_port(url: &str) -> Option<(String, u16)> {
    Some((url_host(url)?, url::Url::parse(url).ok()?.port_or_known_default()?))
}

/// A membership change, as the config files see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    /// The member that goes.
    pub removed: Option<MemberIdentity>,
    /// The member that comes: name, peer URLs, client URLs.
    pub added: Option<NewMember>,
}

/// A member being added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl NewMember {
    /// `--client-url` defaults to the peer URL's scheme and host on port 2379.
    pub fn new(name: &str, peer_urls: Vec<String>, client_urls: Vec<String>) -> Result<NewMember> {
        if name.is_empty() || name.contains([',', '=']) || name.chars().any(char::is_whitespace) {
            return Err(Error::usage(format!("{name:?} cannot be an etcd member name"))
                .hint("give a name without spaces, commas or '=', normally the host name"));
        }
        if peer_urls.is_empty() {
            return Err(Error::usage(format!("no peer URL for {name}")).hint("give --peer-url https://HOST:2380"));
        }
        let mut client = client_urls;
        for u in &peer_urls {
            let mut parsed = url::Url::parse(u)
                .ok()
                .filter(|p| p.host().is_some())
                .ok_or_else(|| Error::usage(format!("peer URL {u:?} is not a URL")).hint("give --peer-url https://HOST:2380"))?;
            if parsed.path() != "/" || parsed.port().is_none() {
                return Err(Error::usage(format!("peer URL {u:?} must be SCHEME://HOST:PORT")).hint("give --peer-url https://HOST:2380"));
            }
            if client.is_empty() {
                parsed.set_port(Some(2379)).expect("URL with a host takes a port");
                client.push(parsed.as_str().trim_end_matches('/').to_string());
            }
        }
        Ok(NewMember {
            name: name.to_string(),
            peer_urls: peer_urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            client_urls: client,
        })
    }

    pub fn identity(&self) -> MemberIdentity {
        MemberIdentity::new(&self.name, self.peer_urls.iter().chain(&self.client_urls))
    }
}

impl MemberChange {
    /// A URL list (master-config.yaml's, flanneld's) after the change: the removed member's URLs
    /// dropped, the new member's client URLs appended unless it is listed already.
    pub fn urls_after(&self, current: &[String]) -> Vec<String> {
        let mut out: Vec<String> = current
            .iter()
            .filter(|u| !self.removed.as_ref().is_some_and(|r| r.owns_url(u)))
            .cloned()
            .collect();
        if let Some(new) = &self.added {
            let id = new.identity();
            if !out.iter().any(|u| id.owns_url(u)) {
                out.extend(new.client_urls.iter().cloned());
            }
        }
        out
    }

    /// `ETCD_INITIAL_CLUSTER` after the change, the same way.
    pub fn initial_cluster_after(&self, current: &[InitialMember]) -> Vec<InitialMember> {
        let mut out: Vec<InitialMember> = current
            .iter()
            .filter(|m| !self.removed.as_ref().is_some_and(|r| r.owns_entry(m)))
            .cloned()
            .collect();
        if let Some(new) = &self.added {
            let id = new.identity();
            if !out.iter().any(|m| id.owns_entry(m)) {
                out.push(InitialMember {
                    name: new.name.clone(),
                    peer_urls: new.peer_urls.clone(),
                });
            }
        }
        out
    }
}

/// A service to restart after a config file changed, as the runbook asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// `systemctl restart UNIT`.
    Unit(String),
    /// A command (`master-restart api`).
    Command(Vec<String>),
    /// Nothing vault found to restart; the text says what the operator should do.
    Manual(String),
}

impl Restart {
    pub fn describe(&self) -> String {
        match self {
            Restart::Unit(u) => format!("systemctl restart {u}"),
            Restart::Command(argv) => crate::host::command::shell_join(argv),
            Restart::Manual(text) => text.clone(),
        }
    }
}

/// One of the three files, rewritten (or skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRewrite {
    pub host_path: PathBuf,
    /// `None` when this host does not have the file.
    pub edit: Option<FileEdit>,
    /// What restarts after the edit (`None`: nothing, as for etcd.conf, which etcd reads only when
    /// a member first starts).
    pub restart: Option<Restart>,
    /// What the plan says about it.
    pub note: String,
}

/// Which of the services the runbook restarts this host has: `known(unit)` asks systemd,
/// `has_master_restart` whether `master-restart` (OKD 3.10+) is installed.
pub struct ServicesOnHost<'a> {
    pub known: &'a dyn Fn(&str) -> bool,
    pub has_master_restart: bool,
}

/// The three rewrites the change needs on the host under `root`: etcd.conf (at `etcd_conf`,
/// normally /etc/etcd/etcd.conf), master-config.yaml and /etc/sysconfig/flanneld. A file the host
/// does not have is skipped and said so; an edit that changes nothing is kept as a no-op (the plan
/// shows "already so").
pub fn config_rewrites(root: &Path, etcd_conf: &Path, change: &MemberChange, services: &ServicesOnHost<'_>) -> Result<Vec<ConfigRewrite>> {
    let mut out = Vec::new();
    let skipped = |host_path: &Path, what: &str| ConfigRewrite {
        host_path: host_path.to_path_buf(),
        edit: None,
        restart: None,
        note: format!("{} is not on this host; skipped ({what})", host_path.display()),
    };

    if exists(root, etcd_conf)? {
        let mut conf = ShellConf::load(root, etcd_conf)?;
        let current = parse_initial_cluster(conf.get("ETCD_INITIAL_CLUSTER").unwrap_or("")).map_err(|why| {
            Error::usage(format!("{}: ETCD_INITIAL_CLUSTER {why}", etcd_conf.display()))
                .hint("it must read NAME=https://HOST:2380,NAME=https://HOST:2380,...")
        })?;
        let after = change.initial_cluster_after(&current);
        if after.is_empty() {
            return Err(Error::usage(format!(
                "{}: ETCD_INITIAL_CLUSTER would list no member after the change",
                etcd_conf.display()
            ))
            .hint("check ETCD_INITIAL_CLUSTER in the file"));
        }
        if after != current {
            conf.set("ETCD_INITIAL_CLUSTER", &EtcdConf::initial_cluster_text(&after))?;
        }
        out.push(ConfigRewrite {
            host_path: etcd_conf.to_path_buf(),
            edit: Some(conf.edit()),
            restart: None,
            note: "etcd reads it only when a member first starts: no restart needed".into(),
        });
    } else {
        out.push(skipped(etcd_conf, "not an etcd host"));
    }

    let master = Path::new(MASTER_CONFIG);
    if exists(root, master)? {
        let config = MasterConfig::load(root, master)?;
        let current = config.etcd_client_urls()?;
        let after = change.urls_after(&current);
        let edit = config.etcd_urls_edit(&after)?;
        let restart = if let Some(unit) = MASTER_API_UNITS.iter().find(|u| (services.known)(u)) {
            Restart::Unit(unit.to_string())
        } else if services.has_master_restart {
            Restart::Command(MASTER_RESTART.iter().map(|s| s.to_string()).collect())
        } else {
            Restart::Manual("restart the OKD master API on this host (no master API unit or master-restart found)".into())
        };
        out.push(ConfigRewrite {
            host_path: master.to_path_buf(),
            note: "the master API reads it at start: restart it on every master".into(),
            restart: (!edit.is_noop()).then_some(restart),
            edit: Some(edit),
        });
    } else {
        out.push(skipped(master, "not a master"));
    }

    let flanneld = Path::new(FLANNELD);
    if exists(root, flanneld)? {
        let mut conf = ShellConf::load(root, flanneld)?;
        let current: Vec<String> = conf
            .get(FLANNEL_ETCD_ENDPOINTS)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let after = change.urls_after(&current);
        if after != current {
            conf.set(FLANNEL_ETCD_ENDPOINTS, &after.join(","))?;
        }
        let edit = conf.edit();
        out.push(ConfigRewrite {
            host_path: flanneld.to_path_buf(),
            note: "flanneld reads it at start: restart it on every host that runs flannel".into(),
            restart: (!edit.is_noop() && (services.known)(FLANNELD_UNIT)).then(|| Restart::Unit(FLANNELD_UNIT.into())),
            edit: Some(edit),
        });
    } else {
        out.push(skipped(flanneld, "flannel is not used here"));
    }
    Ok(out)
}

fn exists(root: &Path, host_path: &Path) -> Result<bool> {
    match fs::symlink_metadata(under_root(root, host_path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("cannot look at {}", host_path.display())).with_source(e)),
    }
}

/// The new member's etcd.conf: this host's (`this`, at `etcd_conf`) with `ETCD_NAME`, the
/// advertised URLs, the listen URLs that name this host moved to the new member's host (loopback
/// and wildcard ones kept), `ETCD_INITIAL_CLUSTER` = `members` (every member's peer URLs, as the
/// cluster has them, and the new one: etcd checks them against the cluster when it joins) and
/// `ETCD_INITIAL_CLUSTER_STATE=existing`. Every other byte is this host's file.
pub fn new_member_conf(root: &Path, etcd_conf: &Path, new: &NewMember, members: &[InitialMember]) -> Result<Vec<u8>> {
    let mut conf = ShellConf::load(root, etcd_conf)?;
    let this = EtcdConf::from_shell(&conf, root, etcd_conf)?;
    let own: Vec<String> = this
        .initial_advertise_peer_urls
        .iter()
        .chain(&this.advertise_client_urls)
        .filter_map(|u| url_host(u))
        .collect();
    let new_host = url_host(&new.peer_urls[0]).expect("NewMember::new checked the URL");
    // a listen URL that is an advertised one becomes the new member's; one on this host's address
    // with another port gets the new host; loopback and wildcard ones stay
    let move_listen = |urls: &[String], advertised: &[String], replacement: &[String]| -> Vec<String> {
        let advertised: Vec<(String, u16)> = advertised.iter().filter_map(|u| url_host_port(u)).collect();
        let mut out: Vec<String> = Vec::new();
        for u in urls {
            let moved: Vec<String> = match (url::Url::parse(u), url_host_port(u)) {
                (_, Some(hp)) if advertised.contains(&hp) => replacement.to_vec(),
                (Ok(mut parsed), Some((h, _))) if own.contains(&h) => {
                    let host = if new_host.contains(':') {
                        format!("[{new_host}]")
                    } else {
                        new_host.clone()
                    };
                    vec![
                        parsed
                            .set_host(Some(&host))
                            .map(|_| parsed.as_str().trim_end_matches('/').to_string())
                            .unwrap_or(u.clone()),
                    ]
                }
                _ => vec![u.clone()],
            };
            for m in moved {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    };
    conf.set("ETCD_NAME", &new.name)?;
    let listen_peer = move_listen(&this.listen_peer_urls, &this.initial_advertise_peer_urls, &new.peer_urls);
    let listen_client = move_listen(&this.listen_client_urls, &this.advertise_client_urls, &new.client_urls);
    for (key, urls) in [
        ("ETCD_LISTEN_PEER_URLS", &listen_peer),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", &new.peer_urls),
        ("ETCD_LISTEN_CLIENT_URLS", &listen_client),
        ("ETCD_ADVERTISE_CLIENT_URLS", &new.client_urls),
    ] {
        if conf.get(key).is_some() || !urls.is_empty() {
            conf.set(key, &urls.join(","))?;
        }
    }
    conf.set("ETCD_INITIAL_CLUSTER", &EtcdConf::initial_cluster_text(members))?;
    conf.set("ETCD_INITIAL_CLUSTER_STATE", "existing")?;
    Ok(conf.edit().new)
}

/// The members' `ETCD_INITIAL_CLUSTER` once `new` is added: every member as the cluster lists it
/// (an unstarted one by its name in this host's etcd.conf, found by peer URL), in the order of this
/// host's etcd.conf (the others after them), then the new one.
pub fn initial_cluster_with(members: &[MemberState], this_conf: &[InitialMember], new: &NewMember) -> Result<Vec<InitialMember>> {
    let position = |m: &MemberState| {
        this_conf
            .iter()
            .position(|c| (m.is_started() && c.name == m.name) || same_urls(&c.peer_urls, &m.peer_urls))
            .unwrap_or(usize::MAX)
    };
    let mut members: Vec<&MemberState> = members.iter().collect();
    members.sort_by_key(|m| position(m));
    let mut out = Vec::new();
    for m in members.into_iter().filter(|m| !same_urls(&m.peer_urls, &new.peer_urls)) {
        let name = if m.is_started() {
            m.name.clone()
        } else {
            this_conf
                .iter()
                .find(|c| same_urls(&c.peer_urls, &m.peer_urls))
                .map(|c| c.name.clone())
                .ok_or_else(|| {
                    Error::usage(format!("{} has no name yet", m.label())).hint("start that member, or remove it, before adding another")
                })?
        };
        out.push(InitialMember {
            name,
            peer_urls: m.peer_urls.clone(),
        });
    }
    out.push(InitialMember {
        name: new.name.clone(),
        peer_urls: new.peer_urls.clone(),
    });
    Ok(out)
}

/// A file a plan creates (the new member's etcd.conf): never replacing one that is there with
/// other content; one that already has exactly this content counts as done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    pub host_path: PathBuf,
    pub content: String,
    pub mode: u32,
}

impl NewFile {
    pub fn describe(&self) -> String {
        format!("write {} (mode {:o})", self.host_path.display(), self.mode)
    }

    pub fn diff(&self) -> String {
        diff::unified(&self.host_path.display().to_string(), b"", self.content.as_bytes())
    }

    pub fn apply(&self, root: &Path) -> Result<Applied> {
        let shown = self.host_path.display();
        let file = under_root(root, &self.host_path);
        let cannot = |e: io::Error| Error::io(format!("cannot write {shown}")).with_source(e);
        if let Some(dir) = file.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(cannot)?;
        }
        let temp = file.with_file_name(format!(".{}.vault-new", file.file_name().expect("a file name").to_string_lossy()));
        let _ = fs::remove_file(&temp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(&temp)
            .map_err(cannot)?;
        f.write_all(self.content.as_bytes()).and_then(|_| f.sync_all()).map_err(cannot)?;
        drop(f);
        // link never replaces what is there
        let linked = fs::hard_link(&temp, &file);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(Applied::Done(format!("wrote {shown}"))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::read(&file).map_err(cannot)? == self.content.as_bytes() {
                    Ok(Applied::AlreadyDone(format!("{shown} already says so")))
                } else {
                    Err(Error::new(ErrorKind::AlreadyExists, format!("{shown} exists with other content"))
                        .hint(format!("vault never replaces it: move {shown} aside, then run this again")))
                }
            }
            Err(e) => Err(cannot(e)),
        }
    }
}

/// What `member remove` and `member add` are told besides the host options.
#[derive(Clone, Debug, Default)]
pub struct MemberFlow {
    /// Run the service restarts as plan steps (otherwise they are printed under "then").
    pub restart: bool,
    /// `member add`: issue the new member's certificates from the CA (in-host CA dir).
    pub issue_certs: Option<PathBuf>,
}

fn warn_with_hint(name: &str, detail: String, hint: Option<String>) -> Check {
    Check {
        hint,
        ..Check::warn(name, detail)
    }
}

/// The cluster's members through this host's member, each asked whether it is healthy.
async fn members_with_health(etcd: &EtcdOptions) -> Result<Vec<MemberState>> {
    let mut client = cluster::connect(etcd).await?;
    let members = cluster::members(&mut client).await?;
    let mut out = Vec::new();
    for m in members {
        let mut healthy = false;
        for url in &m.client_urls {
            let quick = EtcdOptions {
                connect_timeout_secs: Some(2),
                ..etcd.clone()
            };
            if cluster::healthy(url, &quick).await.is_ok() {
                healthy = true;
                break;
            }
        }
        out.push(MemberState {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            healthy,
        });
    }
    Ok(out)
}

fn services_on(host: &Host) -> (Vec<String>, bool) {
    let known: Vec<String> = MASTER_API_UNITS
        .iter()
        .chain(std::iter::once(&FLANNELD_UNIT))
        .filter(|u| crate::host::service::unit_is_known(host, u).unwrap_or(false))
        .map(|u| u.to_string())
        .collect();
    (known, crate::host::command::find_on_path(MASTER_RESTART[0]).is_some())
}

/// The rewrites as steps (edits that change something), the restarts as steps (`--restart`) or
/// as lines for "then", and notes for the summary.
fn rewrite_steps(me: &LocalMember, change: &MemberChange, flow: &MemberFlow) -> Result<(Vec<Step>, Vec<String>, Vec<String>)> {
    let (known, has_master_restart) = services_on(&me.host);
    let services = ServicesOnHost {
        known: &|u| known.iter().any(|k| k == u),
        has_master_restart,
    };
    let rewrites = config_rewrites(&me.host.root, &me.conf.host_path, change, &services)?;
    let (mut steps, mut restarts, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for r in rewrites {
        match r.edit {
            None => notes.push(r.note),
            Some(edit) if edit.is_noop() => notes.push(format!("{} already lists the members as they will be", r.host_path.display())),
            Some(edit) => steps.push(Step::Host {
                action: HostAction::Edit(edit),
            }),
        }
        match r.restart {
            Some(Restart::Unit(unit)) if flow.restart => steps.push(Step::Host {
                action: HostAction::Service(ServiceControl::Systemd { unit }, ServiceOp::Restart),
            }),
            Some(Restart::Command(argv)) if flow.restart => steps.push(Step::Host {
                action: HostAction::Run(argv),
            }),
            Some(other) => restarts.push(other.describe()),
            None => {}
        }
    }
    Ok((steps, restarts, notes))
}

/// `vaultctl etcd member remove NAME|ID`: the plan (member remove through this host's member,
/// then the three rewrites and their restarts) and its checks. A member that is gone already
/// (the command run again on another host) leaves only the rewrites.
pub async fn plan_member_remove(opts: &FlowOptions, target: &str, flow: &MemberFlow) -> Result<(Plan, Vec<Check>)> {
    let me = opts.local_member()?;
    let etcd = me.etcd(&me.client_urls);
    let members = members_with_health(&etcd).await?;
    let mut checks = Vec::new();
    let mut steps = Vec::new();
    let mut summary = vec![format!(
        "through member {} on this host ({}); members: {}",
        me.name,
        me.client_urls.join(","),
        members
            .iter()
            .map(|m| format!("{}{}", m.label(), if m.healthy { "" } else { " DOWN" }))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    let identity = match find_member(&members, target) {
        Some(m) => {
            checks.extend(check_remove(&members, m));
            if m.name == me.name || same_urls(&m.peer_urls, &me.peer_urls) {
                checks.push(
                    Check::fail(
                        "other member",
                        format!("{} is this host's own member", m.label()),
                        "run member remove on a host that stays in the cluster",
                    )
                    .forcible(),
                );
            }
            steps.push(Step::MemberRemove {
                id: m.id,
                name: m.name.clone(),
            });
            m.identity()
        }
        None => {
            let known = me.conf.initial_cluster.iter().find(|c| c.name == target);
            if known.is_none() && u64::from_str_radix(target, 16).is_ok() && target.len() > 8 {
                return Err(Error::usage(format!("the cluster has no member {target}"))
                    .hint("give the member's NAME to rewrite this host's files after it was removed"));
            }
            summary.push(format!(
                "{target} is not a member (removed already): only this host's files are rewritten"
            ));
            checks.push(Check::pass("member gone", format!("the cluster has no member {target}")));
            MemberIdentity::new(target, known.map(|k| k.peer_urls.as_slice()).unwrap_or_default())
        }
    };
    let change = MemberChange {
        removed: Some(identity.clone()),
        added: None,
    };
    let (edits, restarts, notes) = rewrite_steps(&me, &change, flow)?;
    steps.extend(edits);
    summary.extend(notes);
    let mut next: Vec<String> = restarts.into_iter().map(|r| format!("restart: {r}")).collect();
    next.push(format!(
        "on every other etcd host and master: vaultctl etcd member remove {} --execute (rewrites its etcd.conf, master-config.yaml and flanneld)",
        identity.name
    ));
    Ok((Plan::new("etcd member remove", me.host.clone(), etcd, summary, steps, next), checks))
}

/// `vaultctl etcd member add NAME --peer-url U`: the plan (certificates with `--issue-certs`,
/// member add, the new member's etcd.conf, the three rewrites and their restarts) and its checks.
pub async fn plan_member_add(opts: &FlowOptions, new: &NewMember, flow: &MemberFlow) -> Result<(Plan, Vec<Check>)> {
    let me = opts.local_member()?;
    let etcd = me.etcd(&me.client_urls);
    let members = members_with_health(&etcd).await?;
    let mut checks = check_add(&members, &new.name, &new.peer_urls);
    let expect = initial_cluster_with(&members, &me.conf.initial_cluster, new)?;
    let dir = certs::member_dir(&new.name);
    let mut steps = Vec::new();
    if let Some(ca_dir) = &flow.issue_certs {
        let trusted = me.conf.trusted_ca_file.clone().unwrap_or_else(|| PathBuf::from(certs::TRUSTED_CA));
        let urls: Vec<String> = new.peer_urls.iter().chain(&new.client_urls).cloned().collect();
        let mut request = CertRequest::new(&new.name, &urls, &trusted)?;
        request.ca_dir = ca_dir.clone();
        match request.check(&me.host.root) {
            Ok(detail) => checks.push(Check::pass("etcd CA", detail)),
            Err(e) => checks.push(Check::fail("etcd CA", e.what.clone(), e.hint.clone().unwrap_or_default())),
        }
        steps.push(Step::IssueCerts { request });
    }
    steps.push(Step::MemberAdd {
        name: new.name.clone(),
        peer_urls: new.peer_urls.clone(),
        expect: expect.clone(),
    });
    let conf = new_member_conf(&me.host.root, &me.conf.host_path, new, &expect)?;
    steps.push(Step::WriteFile {
        file: NewFile {
            host_path: dir.join("etcd.conf"),
            content: String::from_utf8(conf).expect("etcd.conf is UTF-8"),
            mode: 0o644,
        },
    });
    let change = MemberChange {
        removed: None,
        added: Some(new.clone()),
    };
    let (edits, restarts, notes) = rewrite_steps(&me, &change, flow)?;
    steps.extend(edits);
    let mut summary = vec![
        format!(
            "adds {} (peer {}, client {}) through member {} on this host",
            new.name,
            new.peer_urls.join(","),
            new.client_urls.join(","),
            me.name
        ),
        format!("members after: {}", EtcdConf::initial_cluster_text(&expect)),
    ];
    summary.extend(notes);
    let shown = dir.display();
    let mut next = vec![
        format!(
            "copy {shown}/ to the new host: tar -czf /tmp/etcd-{0}.tgz -C {shown} . && scp /tmp/etcd-{0}.tgz {0}:/tmp/",
            new.name
        ),
        format!(
            "on {}: systemctl disable etcd --now; move /var/lib/etcd and /etc/etcd aside; tar -xzf /tmp/etcd-{0}.tgz -C /etc/etcd/; chown -R etcd:etcd /etc/etcd /var/lib/etcd; systemctl enable etcd --now",
            new.name
        ),
    ];
    if flow.issue_certs.is_none() {
        next.insert(
            0,
            format!("make the new member's server.crt/key, peer.crt/key in {shown}/ with the etcd CA (or run this with --issue-certs), and copy /etc/etcd/ca.crt there"),
        );
    }
    next.extend(restarts.into_iter().map(|r| format!("restart: {r}")));
    next.push(format!(
        "on every other etcd host and master: vaultctl etcd member add {} --peer-url {} --execute (rewrites its files; the member is added already)",
        new.name,
        new.peer_urls.join(",")
    ));
    Ok((Plan::new("etcd member add", me.host.clone(), etcd, summary, steps, next), checks))
}

/// The `MemberRemove` step: remove the member through the API (already gone: done).
pub async fn remove_member(plan: &Plan, id: u64, name: &str) -> Result<Applied> {
    let mut client = cluster::connect(&plan.etcd).await?;
    let members = cluster::members(&mut client).await?;
    if !members.iter().any(|m| m.id == id) {
        return Ok(Applied::AlreadyDone(format!("member {name} ({id:x}) is not in the cluster")));
    }
    cluster::remove(&mut client, id).await?;
    Ok(Applied::Done(format!("removed member {name} ({id:x}) from the cluster")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::etcd_conf::ETCD_CONF;
    use crate::ops::recovery::preflight::CheckStatus;

    const ETCD: &str = include_str!("../../host/testdata/etcd.conf");
    const FLANNEL: &str = include_str!("../../host/testdata/flanneld");
    const MASTER: &str = include_str!("../../host/testdata/master-config.yaml");

    fn member(id: u64, n: u32, ip: u8, healthy: bool) -> MemberState {
        MemberState {
            id,
            name: format!("master-{n}.example.com"),
            peer_urls: vec![format!("https://192.168.55.{ip}:2380")],
            client_urls: vec![format!("https://192.168.55.{ip}:2379")],
            healthy,
        }
    }

    /// The runbook's cluster: master-0, -1, -2 at .8, .12, .13.
    fn cluster(healthy: [bool; 3]) -> Vec<MemberState> {
        vec![
            member(0x2a529ba1840722c0, 0, 8, healthy[0]),
            member(0x5ee217d19001, 1, 12, healthy[1]),
            member(0x8372784203e11288, 2, 13, healthy[2]),
        ]
    }

    fn verdicts(findings: &[Check]) -> Vec<(&str, CheckStatus, bool)> {
        findings.iter().map(|f| (f.name.as_str(), f.status, f.forcible)).collect()
    }

    fn host(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let file = under_root(root.path(), Path::new(path));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        root
    }

    fn all_known() -> ServicesOnHost<'static> {
        ServicesOnHost {
            known: &|_| true,
            has_master_restart: false,
        }
    }

    #[test]
    fn quorum_arithmetic() {
        assert_eq!((1..=7).map(quorum).collect::<Vec<_>>(), [1, 2, 2, 3, 3, 4, 4]);
        assert_eq!((1..=7).map(tolerates).collect::<Vec<_>>(), [0, 0, 1, 1, 2, 2, 3]);
    }

    #[test]
    fn members_are_found_by_name_or_id_in_hex_or_decimal() {
        let c = cluster([true; 3]);
        assert_eq!(find_member(&c, "master-1.example.com").unwrap().id, 0x5ee217d19001);
        assert_eq!(find_member(&c, "8372784203e11288").unwrap().name, "master-2.example.com");
        assert_eq!(
            find_member(&c, &0x5ee217d19001u64.to_string()).unwrap().name,
            "master-1.example.com"
        );
        assert!(find_member(&c, "master-9").is_none());
    }

    #[test]
    fn removing_a_failed_member_passes_a_healthy_one_or_a_quorum_loss_needs_force() {
        let c = cluster([true, true, false]);
        assert_eq!(
            verdicts(&check_remove(&c, &c[2])),
            [
                ("member down", CheckStatus::Pass, false),
                ("quorum", CheckStatus::Pass, false),
                ("odd member count", CheckStatus::Warn, false)
            ]
        );
        let w = &check_remove(&c, &c[2])[2];
        assert!(
            w.detail.contains("will have 2 members: quorum 2, it tolerates 0 failure(s)"),
            "{}",
            w.detail
        );
        // a healthy member, and then only one healthy member of two: quorum lost
        let v = check_remove(&c, &c[0]);
        assert_eq!(
            verdicts(&v)[..2],
            [("member down", CheckStatus::Fail, true), ("quorum", CheckStatus::Fail, true)]
        );
        assert!(
            v[0].detail.contains("master-0.example.com (2a529ba1840722c0) is healthy"),
            "{}",
            v[0].detail
        );
        assert!(
            v[1].detail
                .contains("after the removal 1 of 2 members are healthy and 2 are needed"),
            "{}",
            v[1].detail
        );
        // 5 members, 2 down: removing one of them leaves 3 of 4, quorum 3: fine
        let mut five = cluster([true, true, true]);
        five.push(member(4, 3, 14, false));
        five.push(member(5, 4, 15, false));
        assert!(check_remove(&five, &five[3]).iter().all(|f| f.status != CheckStatus::Fail));
        // no quorum at all: the removal cannot commit, not even with --force
        let c = cluster([true, false, false]);
        assert_eq!(verdicts(&check_remove(&c, &c[2])), [("quorum", CheckStatus::Fail, false)]);
        let one = vec![member(1, 0, 8, false)];
        assert_eq!(verdicts(&check_remove(&one, &one[0])), [("quorum", CheckStatus::Fail, false)]);
    }

    #[test]
    fn adding_warns_on_an_even_count_and_refuses_a_taken_name_an_unstarted_member_or_lost_quorum() {
        let new = NewMember::new("etcd0.example.com", vec!["https://192.168.55.21:2380".into()], vec![]).unwrap();
        assert_eq!(new.client_urls, ["https://192.168.55.21:2379"]);
        let c = cluster([true; 3]);
        let v = check_add(&c, &new.name, &new.peer_urls);
        assert_eq!(
            verdicts(&v),
            [("quorum", CheckStatus::Pass, false), ("odd member count", CheckStatus::Warn, false)]
        );
        assert!(
            v[1].detail
                .contains("will have 4 members: quorum 3, it tolerates 1 failure(s), no more than 3 members do"),
            "{}",
            v[1].detail
        );
        assert!(
            v[1].hint.as_ref().unwrap().contains("going to 5 members tolerates 2"),
            "{:?}",
            v[1].hint
        );
        // 2 of 3 healthy: with 4 members 3 are needed until the new one runs
        let v = check_add(&cluster([true, true, false]), &new.name, &new.peer_urls);
        assert_eq!(verdicts(&v)[0], ("quorum", CheckStatus::Fail, true));
        // the name is taken, the peer URL is taken
        let v = check_add(&c, "master-1.example.com", &["https://192.168.55.13:2380".to_string()]);
        let failed: Vec<&str> = v
            .iter()
            .filter(|f| f.status == CheckStatus::Fail)
            .map(|f| f.detail.as_str())
            .collect();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("a member named master-1.example.com already exists"));
        assert!(failed[1].contains("peer URL https://192.168.55.13:2380 is already used by master-2.example.com"));
        // an added member has not started yet: one at a time
        let mut pending = c.clone();
        pending.push(MemberState {
            id: 9,
            name: String::new(),
            peer_urls: vec!["https://192.168.55.30:2380".into()],
            client_urls: vec![],
            healthy: false,
        });
        let v = check_add(&pending, &new.name, &new.peer_urls);
        assert!(
            v.iter()
                .any(|f| f.name == "one at a time" && f.status == CheckStatus::Fail && !f.forcible),
            "{v:?}"
        );
        // this very member added already (a resume, or the rewrite on another host)
        pending[3].peer_urls = new.peer_urls.clone();
        assert_eq!(
            verdicts(&check_add(&pending, &new.name, &new.peer_urls)),
            [("new member", CheckStatus::Pass, false)]
        );
        // bad input
        assert!(NewMember::new("a b", vec!["https://h:2380".into()], vec![]).is_err());
        assert!(NewMember::new("m", vec!["192.168.55.21:2380".into()], vec![]).is_err());
        assert!(NewMember::new("m", vec!["https://h".into()], vec![]).is_err());
    }

    #[test]
    fn a_removal_rewrites_the_three_files_changing_only_the_removed_members_entries() {
        let root = host(&[(ETCD_CONF, ETCD), (FLANNELD, FLANNEL), (MASTER_CONFIG, MASTER)]);
        let c = cluster([true, true, false]);
        let change = MemberChange {
            removed: Some(c[2].identity()),
            added: None,
        };
        let rewrites = config_rewrites(root.path(), Path::new(ETCD_CONF), &change, &all_known()).unwrap();
        let new_text = |i: usize| String::from_utf8(rewrites[i].edit.as_ref().unwrap().new.clone()).unwrap();
        assert_eq!(new_text(0), ETCD.replace(",master-2.example.com=https://192.168.55.13:2380", ""));
        assert_eq!(rewrites[0].restart, None);
        assert_eq!(new_text(1), MASTER.replace("  - https://master-2.example.com:2379\n", ""));
        assert_eq!(rewrites[1].restart, Some(Restart::Unit("atomic-openshift-master-api".into())));
        assert_eq!(new_text(2), FLANNEL.replace(",https://master-2.example.com:2379", ""));
        assert_eq!(rewrites[2].restart, Some(Restart::Unit("flanneld".into())));
        for r in &rewrites {
            r.edit.as_ref().unwrap().apply().unwrap();
        }
        // run again (a resume, or a second run): nothing left to change, nothing to restart
        let again = config_rewrites(root.path(), Path::new(ETCD_CONF), &change, &all_known()).unwrap();
        assert!(
            again.iter().all(|r| r.edit.as_ref().unwrap().is_noop() && r.restart.is_none()),
            "{again:?}"
        );
    }

    #[test]
    fn an_add_appends_the_new_member_and_a_missing_file_is_skipped() {
        let root = host(&[(ETCD_CONF, ETCD), (FLANNELD, FLANNEL)]);
        let new = NewMember::new(
            "etcd0.example.com",
            vec!["https://192.168.55.21:2380".into()],
            vec!["https://etcd0.example.com:2379".into()],
        )
        .unwrap();
        let change = MemberChange {
            removed: None,
            added: Some(new),
        };
        let services = ServicesOnHost {
            known: &|u| u == "origin-master-api",
            has_master_restart: true,
        };
        let rewrites = config_rewrites(root.path(), Path::new(ETCD_CONF), &change, &services).unwrap();
        let new_text = |i: usize| String::from_utf8(rewrites[i].edit.as_ref().unwrap().new.clone()).unwrap();
        assert_eq!(
            new_text(0),
            ETCD.replace(
                "master-2.example.com=https://192.168.55.13:2380\n",
                "master-2.example.com=https://192.168.55.13:2380,etcd0.example.com=https://192.168.55.21:2380\n"
            )
        );
        assert!(rewrites[1].edit.is_none());
        assert!(
            rewrites[1]
                .note
                .contains("/etc/origin/master/master-config.yaml is not on this host; skipped"),
            "{}",
            rewrites[1].note
        );
        assert_eq!(
            new_text(2),
            FLANNEL.replace(
                "master-2.example.com:2379\n",
                "master-2.example.com:2379,https://etcd0.example.com:2379\n"
            )
        );
        assert_eq!(rewrites[2].restart, None, "this host has no flanneld unit");

        // the master API restart: a unit of the host's, else master-restart, else said
        let root = host(&[(MASTER_CONFIG, MASTER)]);
        let pick = |services: &ServicesOnHost<'_>| {
            config_rewrites(root.path(), Path::new(ETCD_CONF), &change, services).unwrap()[1]
                .restart
                .clone()
                .unwrap()
        };
        assert_eq!(pick(&services), Restart::Unit("origin-master-api".into()));
        let static_pods = ServicesOnHost {
            known: &|_| false,
            has_master_restart: true,
        };
        assert_eq!(pick(&static_pods), Restart::Command(vec!["master-restart".into(), "api".into()]));
        let nothing = ServicesOnHost {
            known: &|_| false,
            has_master_restart: false,
        };
        assert!(matches!(pick(&nothing), Restart::Manual(_)));
    }

    #[test]
    fn the_new_members_etcd_conf_is_this_hosts_with_its_own_name_urls_and_the_cluster() {
        let root = host(&[(ETCD_CONF, ETCD)]);
        let new = NewMember::new("etcd0.example.com", vec!["https://192.168.55.21:2380".into()], vec![]).unwrap();
        let this = parse_initial_cluster(ETCD.lines().find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=")).unwrap()).unwrap();
        let members = initial_cluster_with(&cluster([true; 3]), &this, &new).unwrap();
        let text = String::from_utf8(new_member_conf(root.path(), Path::new(ETCD_CONF), &new, &members).unwrap()).unwrap();
        let expected = ETCD
            .replace("ETCD_NAME=master-0.example.com", "ETCD_NAME=etcd0.example.com")
            .replace("=https://192.168.55.8:2380\n", "=https://192.168.55.21:2380\n")
            .replace("=https://192.168.55.8:2379\n", "=https://192.168.55.21:2379\n")
            .replace(
                "master-2.example.com=https://192.168.55.13:2380\n",
                "master-2.example.com=https://192.168.55.13:2380,etcd0.example.com=https://192.168.55.21:2380\n",
            )
            .replace("ETCD_INITIAL_CLUSTER_STATE=new", "ETCD_INITIAL_CLUSTER_STATE=existing");
        assert_eq!(text, expected);
        // every one of the four URL lines moved, and only they, the name, the cluster and the state
        let changed = ETCD.lines().zip(text.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 7);

        // loopback listen URLs stay; an unstarted member gets its name from this host's file
        let root = host(&[(
            ETCD_CONF,
            "ETCD_NAME=a\nETCD_LISTEN_CLIENT_URLS=\"https://10.0.0.1:2379,https://127.0.0.1:2379\"\nETCD_ADVERTISE_CLIENT_URLS=https://10.0.0.1:2379\nETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.1:2380\nETCD_INITIAL_CLUSTER=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380\n",
        )]);
        let new = NewMember::new("c", vec!["https://10.0.0.3:2380".into()], vec![]).unwrap();
        let mut two = vec![member(1, 0, 1, true), member(2, 0, 2, false)];
        two[0].name = "a".into();
        two[0].peer_urls = vec!["https://10.0.0.1:2380".into()];
        two[1].name = String::new();
        two[1].peer_urls = vec!["https://10.0.0.2:2380".into()];
        let this = parse_initial_cluster("a=https://10.0.0.1:2380,b=https://10.0.0.2:2380").unwrap();
        let members = initial_cluster_with(&two, &this, &new).unwrap();
        let text = String::from_utf8(new_member_conf(root.path(), Path::new(ETCD_CONF), &new, &members).unwrap()).unwrap();
        assert!(
            text.contains("ETCD_LISTEN_CLIENT_URLS=\"https://10.0.0.3:2379,https://127.0.0.1:2379\"\n"),
            "{text}"
        );
        assert!(text.contains("ETCD_INITIAL_CLUSTER=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380\n"));
        assert!(
            text.ends_with("c=https://10.0.0.3:2380\nETCD_INITIAL_CLUSTER_STATE=existing\n") && !text.contains("LISTEN_PEER"),
            "a key this host leaves unset stays unset, the state is added: {text}"
        );
        assert!(initial_cluster_with(&two, &[], &new).is_err(), "an unstarted member without a name");
    }

    #[test]
    fn a_new_file_is_written_once_and_never_replaces_other_content() {
        let root = tempfile::tempdir().unwrap();
        let file = NewFile {
            host_path: PathBuf::from("/etc/etcd/generated_certs/etcd-x/etcd.conf"),
            content: "ETCD_NAME=x\n".into(),
            mode: 0o644,
        };
        assert!(file.diff().contains("+ETCD_NAME=x"));
        assert!(matches!(file.apply(root.path()).unwrap(), Applied::Done(_)));
        assert!(matches!(file.apply(root.path()).unwrap(), Applied::AlreadyDone(_)));
        let other = NewFile {
            content: "ETCD_NAME=y\n".into(),
            ..file.clone()
        };
        let e = other.apply(root.path()).unwrap_err();
        assert!(e.to_string().contains("exists with other content"), "{e}");
        let on_disk = under_root(root.path(), &file.host_path);
        assert_eq!(fs::read_to_string(&on_disk).unwrap(), "ETCD_NAME=x\n");
        let names: Vec<_> = fs::read_dir(on_disk.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["etcd.conf"], "no temporary file left");
    }
}
