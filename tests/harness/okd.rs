//! An OKD-3.x-like etcd cluster for the disaster drill: three etcd 3.4 members with TLS (client
//! and peer), each on a host tree of its own, configured and started the way openshift-ansible
//! lays a master down:
//!
//! ```text
//! hostN/etc/etcd/etcd.conf                 ETCD_* as OKD writes it (URLs on 127.0.0.(N+1))
//! hostN/etc/etcd/{ca.crt,server.*,peer.*}  the member's certificates (IP SANs of its address)
//! hostN/etc/etcd/ca/{ca.crt,ca.key}        the etcd CA (the same on every host)
//! hostN/etc/origin/master/master-config.yaml   etcdClientInfo.urls of all three members
//! hostN/etc/sysconfig/flanneld             FLANNEL_ETCD_ENDPOINTS of all three members
//! hostN/usr/lib/systemd/system/etcd.service    EnvironmentFile=/etc/etcd/etcd.conf, /usr/bin/etcd
//! hostN/var/lib/etcd/                      the data dir
//! ```
//!
//! and a stand-in `systemctl` per host ([`Systemctl`]) that starts the member from its unit. The
//! stand-in puts the host tree in front of `ETCD_DATA_DIR` and the certificate variables, as if
//! etcd ran chrooted into the tree. Every member is stopped by PID when the cluster is dropped.
//! [`OkdCluster::new_host`] lays down one more host that is not a member yet (a scale-up's new
//! host: unit, systemctl, empty `/etc/etcd` and data dir), for `etcd member add`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::certs::Ca;
use crate::data::{Rng, k8s_like, sha256_hex};
use crate::{Ctl, Systemctl, free_port, s, tempdir};

/// Members in the cluster.
pub const MEMBERS: usize = 3;
/// Where flannel keeps its network config in the v2 keyspace.
pub const FLANNEL_PREFIX: &str = "/coreos.com/network";
/// The unit's `ExecStart` (OKD's form: bash sets GOMAXPROCS, etcd reads everything from the env).
pub const ETCD_EXEC_START: &str = "/bin/bash -c \"GOMAXPROCS=2 /usr/bin/etcd\"";
/// The initial cluster token of the cluster as first installed.
pub const TOKEN: &str = "etcd-cluster-1";

/// The etcd unit as OKD's RHEL package ships it (minus the flags etcd 3.4 refuses next to env).
pub fn etcd_unit(exec_start: &str) -> String {
    format!(
        "[Unit]\nDescription=Etcd Server\nAfter=network.target\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nType=notify\nWorkingDirectory=/var/lib/etcd/\nEnvironmentFile=-/etc/etcd/etcd.conf\nUser=etcd\n\
         # set GOMAXPROCS to number of processors\nExecStart={exec_start}\nRestart=on-failure\nLimitNOFILE=65536\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// The etcd.conf variables that hold in-host paths (the stand-in puts the tree in front).
const ROOTED_VARS: [&str; 7] = [
    "ETCD_DATA_DIR",
    "ETCD_CERT_FILE",
    "ETCD_KEY_FILE",
    "ETCD_TRUSTED_CA_FILE",
    "ETCD_PEER_CERT_FILE",
    "ETCD_PEER_KEY_FILE",
    "ETCD_PEER_TRUSTED_CA_FILE",
];

/// One member of `etcd member list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// One master: its host tree, address, URLs and stand-in systemctl.
pub struct OkdHost {
    pub index: usize,
    /// `ETCD_NAME`.
    pub name: String,
    /// The loopback address the member listens on.
    pub ip: String,
    pub root: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    pub systemctl: Systemctl,
}

impl OkdHost {
    /// `hostN/etc/etcd/<rel>`.
    pub fn etc_etcd(&self, rel: &str) -> PathBuf {
        self.root.join("etc/etcd").join(rel)
    }

    /// `hostN/etc/etcd/etcd.conf`.
    pub fn etcd_conf(&self) -> PathBuf {
        self.etc_etcd("etcd.conf")
    }

    /// The data dir in the tree (`hostN/var/lib/etcd`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("var/lib/etcd")
    }

    /// The recovery journal vault keeps on this host.
    pub fn journal(&self) -> PathBuf {
        self.root.join("var/lib/vault/recovery/journal.json")
    }

    /// An in-host path (`/etc/sysconfig/flanneld`) in this host's tree.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// The text of an in-host file; panics naming the file and the host.
    pub fn read(&self, host_path: &str) -> String {
        std::fs::read_to_string(self.path(host_path)).unwrap_or_else(|e| panic!("read {host_path} on host{}: {e}", self.index))
    }

    /// `--root hostN` as a string.
    pub fn root_arg(&self) -> String {
        self.root.display().to_string()
    }

    /// `--cacert`, `--cert`, `--key` with this host's CA and peer certificate (as OKD's etcdctl
    /// calls use them).
    pub fn tls_args(&self) -> Vec<String> {
        let p = |f: &str| self.etc_etcd(f).display().to_string();
        vec![
            "--cacert".into(),
            p("ca.crt"),
            "--cert".into(),
            p("peer.crt"),
            "--key".into(),
            p("peer.key"),
        ]
    }

    /// `systemctl start etcd` through the stand-in; `Err` with systemctl's output and the unit log.
    pub fn start(&self) -> Result<(), String> {
        self.systemctl_run(&["start", "etcd"])
    }

    /// `systemctl stop etcd` through the stand-in.
    pub fn stop(&self) -> Result<(), String> {
        self.systemctl_run(&["stop", "etcd"])
    }

    /// SIGKILL the member (by its PID; a crash).
    pub fn kill(&self) {
        self.systemctl.kill_all();
    }

    /// Whether the unit's process runs.
    pub fn running(&self) -> bool {
        self.systemctl.main_pid("etcd").is_some()
    }

    fn systemctl_run(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(self.systemctl.program())
            .args(args)
            .output()
            .map_err(|e| format!("run stand-in systemctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "systemctl {args:?} on host{} failed ({}): {}{}\n--- unit log:\n{}",
            self.index,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            crate::process::tail(&self.systemctl.state.join("etcd.service.log"), 15)
        ))
    }

    /// Wait until this member answers healthy; `Err` with its unit log if not.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        wait_all_healthy(&[self], timeout)
    }

    /// `etcdctl endpoint health` against this member with its own certificates.
    pub fn healthy(&self) -> bool {
        self.etcdctl(&["--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"])
            .is_ok_and(|o| o.status.success())
    }

    /// `ETCDCTL_API=3 etcdctl --endpoints <this member> <TLS> ARGS`.
    pub fn etcdctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_url))
            .args(self.tls_args())
            .args(args)
            .output()
    }

    /// `ETCDCTL_API=2 etcdctl` against this member; stdout, or `Err` with stderr.
    pub fn etcdctl_v2(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "2")
            .arg("--endpoints")
            .arg(&self.client_url)
            .arg("--ca-file")
            .arg(self.etc_etcd("ca.crt"))
            .arg("--cert-file")
            .arg(self.etc_etcd("peer.crt"))
            .arg("--key-file")
            .arg(self.etc_etcd("peer.key"))
            .args(args)
            .output()
            .map_err(|e| format!("run etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("etcdctl v2 {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Replace the etcd unit's `ExecStart` (and forget the loaded unit, as after daemon-reload).
    pub fn set_exec_start(&self, exec_start: &str) {
        self.systemctl.add_unit("etcd", &etcd_unit(exec_start));
        let _ = std::fs::remove_file(self.systemctl.state.join("etcd.service.loaded"));
    }

    /// What the unit's process wrote.
    pub fn unit_log(&self) -> String {
        self.systemctl.unit_log("etcd")
    }

    /// A vaultctl session for this host: the drill's vault, with the host's stand-in systemctl
    /// first on PATH.
    pub fn ctl(&self, base: &Ctl) -> Ctl {
        let mut ctl = base.clone();
        ctl.env.push(self.systemctl.path_env());
        ctl
    }

    /// Every entry of the host tree: relative path -> kind, mode and content hash (or link
    /// target), leaving out paths under any of `skip` (relative). Compare two of these to show
    /// that a refused command changed nothing.
    pub fn fingerprint(&self, skip: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        fingerprint_into(&self.root, &self.root, skip, &mut out);
        out
    }

    /// Files whose name is `name` anywhere in the host tree (relative paths).
    pub fn find(&self, name: &str) -> Vec<PathBuf> {
        let mut all = BTreeMap::new();
        fingerprint_into(&self.root, &self.root, &[], &mut all);
        all.keys()
            .map(PathBuf::from)
            .filter(|p| p.file_name().is_some_and(|n| n == name))
            .collect()
    }
}

fn fingerprint_into(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).expect("under root").display().to_string();
        if skip.iter().any(|s| rel == *s || rel.starts_with(&format!("{s}/"))) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        let mode = md.permissions().mode() & 0o7777;
        let what = if md.file_type().is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default()
            )
        } else if md.is_dir() {
            fingerprint_into(root, &p, skip, out);
            format!("dir {mode:o} uid {}", md.uid())
        } else {
            let data = std::fs::read(&p).unwrap_or_default();
            format!("file {mode:o} {}", sha256_hex(&data))
        };
        out.insert(rel, what);
    }
}

/// The snapshot IDs of the drill's backups.
#[derive(Clone, Debug)]
pub struct Backups {
    /// `backup etcd` (v3 snapshot through the API).
    pub v3: String,
    /// `backup etcd-v2` (the v2 keyspace).
    pub v2: String,
    /// `backup etcd-datadir --root hostN`, per host.
    pub datadir: Vec<String>,
    /// `backup files --root hostN --profile etcd`, per host.
    pub files: Vec<String>,
}

/// The three masters, the CA, a local vault, and the keys loaded into the cluster.
pub struct OkdCluster {
    pub hosts: Vec<OkdHost>,
    pub ca: Ca,
    /// The drill's vault (keys made, initialised), without any host's PATH.
    pub ctl: Ctl,
    /// The v3 keys loaded, with their values.
    pub v3: BTreeMap<String, Vec<u8>>,
    /// The v2 keys loaded, with their values.
    pub v2: BTreeMap<String, String>,
    /// Where [`OkdCluster::destroy`] put each member's real data dir.
    pub wreck: PathBuf,
    tmp: tempfile::TempDir,
}

impl OkdCluster {
    /// Lay down three hosts, start their members through systemctl and wait until all are
    /// healthy (new ports and trees on up to three attempts), then make the vault.
    pub fn start(label: &str) -> OkdCluster {
        let tmp = tempdir(label);
        let ca = Ca::generate(&tmp.path().join("ca"));
        let mut last = String::new();
        for attempt in 0..3 {
            let hosts = lay_down(&tmp.path().join(format!("try{attempt}")), &ca);
            match start_all(&hosts) {
                Ok(()) => {
                    let repo = tmp.path().join("vault").display().to_string();
                    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo, vec![]);
                    ctl.setup(&[]);
                    let wreck = tmp.path().join("wreck");
                    return OkdCluster {
                        hosts,
                        ca,
                        ctl,
                        v3: BTreeMap::new(),
                        v2: BTreeMap::new(),
                        wreck,
                        tmp,
                    };
                }
                Err(e) => {
                    eprintln!("okd cluster attempt {attempt} failed: {e}");
                    last = e;
                    for h in &hosts {
                        h.kill();
                    }
                }
            }
        }
        panic!("the OKD-like etcd cluster did not come up: {last}");
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Host `index` of a scale-up, not a member yet: a tree with the etcd unit, a stand-in
    /// systemctl, an empty `/etc/etcd` (the runbook copies the new member's
    /// `generated_certs/etcd-NAME/` there) and an empty data dir, named `master-INDEX.example.com`
    /// on fresh ports. Its URLs are on 127.0.0.1, not 127.0.0.(INDEX+1): the certificates vault
    /// issues name only the member's URL hosts, and the peers check a member's certificate
    /// against 127.0.0.1, where every loopback connection comes from (see the certificates in
    /// `lay_down`).
    pub fn new_host(&self, index: usize) -> OkdHost {
        let ip = "127.0.0.1";
        let client = format!("https://{ip}:{}", free_port());
        let peer = format!("https://{ip}:{}", free_port());
        host_tree(self.dir(), index, &host_name(index), ip, &client, &peer)
    }

    /// Every member's client URL, comma separated.
    pub fn endpoints(&self) -> String {
        self.hosts.iter().map(|h| h.client_url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Load the flannel network config (config and subnets, with TTLs as flannel sets them) and a
    /// legacy key into the v2 keyspace, and `v3_keys` Kubernetes-like keys into v3.
    pub fn load(&mut self, v3_keys: usize) {
        let h = &self.hosts[0];
        let mut v2 = BTreeMap::new();
        v2.insert(
            format!("{FLANNEL_PREFIX}/config"),
            r#"{"Network":"10.128.0.0/14","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#.to_string(),
        );
        for (i, host) in self.hosts.iter().enumerate() {
            v2.insert(
                format!("{FLANNEL_PREFIX}/subnets/10.128.{}.0-24", 4 * i),
                format!(
                    r#"{{"PublicIP":"{}","BackendType":"vxlan","BackendData":{{"VtepMAC":"0e:00:00:00:00:0{i}"}}}}"#,
                    host.ip
                ),
            );
        }
        v2.insert("/openshift.io/legacy/upgraded-from-3.5".into(), "kept in v2".into());
        for (k, v) in &v2 {
            let ttl: &[&str] = if k.contains("/subnets/") { &["--ttl", "86400"] } else { &[] };
            let mut args = vec!["set"];
            args.extend_from_slice(ttl);
            args.extend([k.as_str(), v.as_str()]);
            h.etcdctl_v2(&args).unwrap_or_else(|e| panic!("{e}"));
        }
        let kvs = k8s_like(&mut Rng::new(8), v3_keys, 300);
        block_on(async {
            let mut c = client(h).await;
            for (k, v) in &kvs {
                c.put(k.as_str(), v.clone(), None).await.unwrap_or_else(|e| panic!("put {k}: {e}"));
            }
        });
        self.v2 = v2;
        self.v3 = kvs.into_iter().collect();
    }

    /// Wait until every member in `which` answers healthy; `Err` with the unit logs if not.
    pub fn wait_healthy(&self, which: &[usize], timeout: Duration) -> Result<(), String> {
        let hosts: Vec<&OkdHost> = which.iter().map(|&i| &self.hosts[i]).collect();
        wait_all_healthy(&hosts, timeout)
    }

    /// `member list` through member `via`.
    pub fn member_list(&self, via: usize) -> Vec<ListedMember> {
        block_on(async {
            let mut c = client(&self.hosts[via]).await;
            let r = c.member_list().await.unwrap_or_else(|e| panic!("member list via host{via}: {e}"));
            let mut out: Vec<ListedMember> = r
                .members()
                .iter()
                .map(|m| ListedMember {
                    id: m.id(),
                    name: m.name().to_string(),
                    peer_urls: m.peer_urls().to_vec(),
                    client_urls: m.client_urls().to_vec(),
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out
        })
    }

    /// The cluster ID, through member `via`.
    pub fn cluster_id(&self, via: usize) -> u64 {
        block_on(async {
            let mut c = client(&self.hosts[via]).await;
            let r = c.member_list().await.unwrap_or_else(|e| panic!("member list via host{via}: {e}"));
            r.header().expect("response header").cluster_id()
        })
    }

    /// The whole v3 keyspace through member `via`.
    pub fn v3_all(&self, via: usize) -> BTreeMap<String, Vec<u8>> {
        block_on(async {
            let mut c = client(&self.hosts[via]).await;
            let mut out = BTreeMap::new();
            let mut from = vec![0u8];
            loop {
                let r = c
                    .get(from.clone(), Some(GetOptions::new().with_from_key().with_limit(100)))
                    .await
                    .unwrap_or_else(|e| panic!("get all keys via host{via}: {e}"));
                for kv in r.kvs() {
                    out.insert(String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec());
                }
                match r.kvs().last() {
                    Some(last) if r.more() => from = [last.key(), b"\0"].concat(),
                    _ => return out,
                }
            }
        })
    }

    /// Every v2 key (not directories) with its value, through member `via`.
    pub fn v2_all(&self, via: usize) -> BTreeMap<String, String> {
        let h = &self.hosts[via];
        let listing = h.etcdctl_v2(&["ls", "--recursive", "-p", "/"]).unwrap_or_else(|e| panic!("{e}"));
        let mut out = BTreeMap::new();
        for key in listing.lines().filter(|l| !l.is_empty() && !l.ends_with('/')) {
            let v = h.etcdctl_v2(&["get", key]).unwrap_or_else(|e| panic!("{e}"));
            out.insert(key.to_string(), v.trim_end_matches('\n').to_string());
        }
        out
    }

    /// Back the cluster up as an operator would before the disaster: the v3 snapshot and the v2
    /// keyspace through host0's member, then each member's data dir and `/etc/etcd`.
    pub fn backup_all(&self) -> Backups {
        let h0 = &self.hosts[0];
        let tls = h0.tls_args();
        let ep = self.endpoints();
        let run = |kind: &str, extra: &[String]| -> String {
            let mut args: Vec<String> = ["backup", kind, "--json"].map(String::from).to_vec();
            args.extend_from_slice(extra);
            s(&self.ctl.writer(&args).ok().json(), "id")
        };
        let mut api = vec!["--endpoints".to_string(), ep];
        api.extend(tls);
        let v3 = run("etcd", &api);
        let v2 = run("etcd-v2", &api);
        let datadir = self
            .hosts
            .iter()
            .map(|h| run("etcd-datadir", &["--root".into(), h.root_arg()]))
            .collect();
        let files = self
            .hosts
            .iter()
            .map(|h| {
                let args = ["--root", &h.root_arg(), "--profile", "etcd", "--no-packages"].map(String::from);
                run("files", &args)
            })
            .collect();
        Backups { v3, v2, datadir, files }
    }

    /// The disaster: SIGKILL every member, then wreck every data dir: the real one goes to
    /// `wreck/hostN` (outside the trees), and in its place stays a data dir etcd cannot start
    /// from (a WAL of garbage) holding a marker file `DRILL-MARKER` that says which host it was,
    /// so that a test can find it again wherever a recovery moved it.
    pub fn destroy(&self) {
        for h in &self.hosts {
            h.kill();
        }
        for h in &self.hosts {
            let dd = h.data_dir();
            let away = self.wreck.join(format!("host{}", h.index));
            std::fs::create_dir_all(&self.wreck).expect("create wreck dir");
            std::fs::rename(&dd, &away).unwrap_or_else(|e| panic!("move {} away: {e}", dd.display()));
            std::fs::create_dir_all(dd.join("member/wal")).expect("create wrecked data dir");
            std::fs::create_dir_all(dd.join("member/snap")).expect("create wrecked data dir");
            std::fs::set_permissions(&dd, std::fs::Permissions::from_mode(0o700)).expect("chmod data dir");
            std::fs::write(dd.join("member/wal/0000000000000000-0000000000000000.wal"), [0xde; 4096]).expect("write garbage WAL");
            std::fs::write(dd.join("DRILL-MARKER"), marker(h.index)).expect("write marker");
        }
    }
}

/// The content of host N's marker in its wrecked data dir.
pub fn marker(index: usize) -> String {
    format!("the wrecked data dir of host{index}\n")
}

fn lay_down(base: &Path, ca: &Ca) -> Vec<OkdHost> {
    let spec: Vec<(String, String, String, String)> = (0..MEMBERS)
        .map(|i| {
            let ip = format!("127.0.0.{}", i + 1);
            let client = format!("https://{ip}:{}", free_port());
            let peer = format!("https://{ip}:{}", free_port());
            (host_name(i), ip, client, peer)
        })
        .collect();
    let initial_cluster: Vec<String> = spec.iter().map(|(n, _, _, p)| format!("{n}={p}")).collect();
    let initial_cluster = initial_cluster.join(",");
    let clients: Vec<&str> = spec.iter().map(|(_, _, c, _)| c.as_str()).collect();
    spec.iter()
        .enumerate()
        .map(|(index, (name, ip, client, peer))| {
            let host = host_tree(base, index, name, ip, client, peer);
            let etc = host.root.join("etc/etcd");
            std::fs::create_dir_all(etc.join("ca")).expect("create etc/etcd/ca");
            for f in ["ca.crt", "ca.key"] {
                std::fs::copy(ca.dir.join(f), etc.join("ca").join(f)).expect("copy CA");
            }
            std::fs::copy(&ca.cert, etc.join("ca.crt")).expect("copy ca.crt");
            // etcd checks a peer's client certificate against the address the connection comes
            // from, and on loopback every connection comes from 127.0.0.1 whatever address it
            // goes to: so the certificates of the members on 127.0.0.2 and .3 name 127.0.0.1 too.
            let ips: Vec<&str> = if ip == "127.0.0.1" { vec![ip] } else { vec![ip, "127.0.0.1"] };
            ca.issue(&etc, "server", name, &ips, &[name]);
            ca.issue(&etc, "peer", name, &ips, &[name]);
            for f in ["ca/ca.key", "server.key", "peer.key"] {
                std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
            }
            std::fs::write(etc.join("etcd.conf"), etcd_conf(name, client, peer, &initial_cluster)).expect("write etcd.conf");
            write_okd_files(&host.root, &clients);
            host
        })
        .collect()
}

/// `ETCD_NAME` of host N.
fn host_name(index: usize) -> String {
    format!("master-{index}.example.com")
}

/// `base/hostN` with an empty `/etc/etcd`, an empty data dir (0700), the etcd unit and a stand-in
/// systemctl (`base/systemctl-hostN`) that roots [`ROOTED_VARS`].
fn host_tree(base: &Path, index: usize, name: &str, ip: &str, client: &str, peer: &str) -> OkdHost {
    let root = base.join(format!("host{index}"));
    std::fs::create_dir_all(root.join("etc/etcd")).expect("create etc/etcd");
    let data_dir = root.join("var/lib/etcd");
    std::fs::create_dir_all(&data_dir).expect("create data dir");
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod data dir");
    let systemctl = Systemctl::install(&root, &base.join(format!("systemctl-host{index}")));
    systemctl.add_unit("etcd", &etcd_unit(ETCD_EXEC_START));
    systemctl.root_paths(&ROOTED_VARS);
    OkdHost {
        index,
        name: name.to_string(),
        ip: ip.to_string(),
        root,
        client_url: client.to_string(),
        peer_url: peer.to_string(),
        systemctl,
    }
}

/// etcd.conf in openshift-ansible 3.x's layout (vault/src/host/testdata/etcd.conf), with fast raft
/// timers for a test and the v2 API on (etcd 3.2's default, which OKD 3.x relies on).
fn etcd_conf(name: &str, client: &str, peer: &str, initial_cluster: &str) -> String {
    format!(
        "# /etc/etcd/etcd.conf as openshift-ansible 3.x lays it down (vault drill)\n\
         ETCD_NAME={name}\n\
         ETCD_LISTEN_PEER_URLS={peer}\n\
         ETCD_DATA_DIR=/var/lib/etcd/\n\
         #ETCD_WAL_DIR=\"\"\n\
         #ETCD_SNAPSHOT_COUNT=100000\n\
         ETCD_HEARTBEAT_INTERVAL=50\n\
         ETCD_ELECTION_TIMEOUT=500\n\
         ETCD_LISTEN_CLIENT_URLS={client}\n\
         #ETCD_MAX_SNAPSHOTS=5\n\
         #ETCD_MAX_WALS=5\n\
         #ETCD_CORS=\n\
         \n\
         #[cluster]\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\n\
         ETCD_INITIAL_CLUSTER={initial_cluster}\n\
         ETCD_INITIAL_CLUSTER_STATE=new\n\
         ETCD_INITIAL_CLUSTER_TOKEN={TOKEN}\n\
         #ETCD_DISCOVERY=\n\
         ETCD_ADVERTISE_CLIENT_URLS={client}\n\
         #ETCD_STRICT_RECONFIG_CHECK=\"false\"\n\
         ETCD_ENABLE_V2=\"true\"\n\
         ETCD_QUOTA_BACKEND_BYTES=4294967296\n\
         \n\
         #[proxy]\n\
         #ETCD_PROXY=\"off\"\n\
         \n\
         #[security]\n\
         ETCD_TRUSTED_CA_FILE=/etc/etcd/ca.crt\n\
         ETCD_CLIENT_CERT_AUTH=\"true\"\n\
         ETCD_CERT_FILE=/etc/etcd/server.crt\n\
         ETCD_KEY_FILE=/etc/etcd/server.key\n\
         #ETCD_AUTO_TLS=\"false\"\n\
         ETCD_PEER_TRUSTED_CA_FILE=/etc/etcd/ca.crt\n\
         ETCD_PEER_CLIENT_CERT_AUTH=\"true\"\n\
         ETCD_PEER_CERT_FILE=/etc/etcd/peer.crt\n\
         ETCD_PEER_KEY_FILE=/etc/etcd/peer.key\n\
         #ETCD_PEER_AUTO_TLS=\"false\"\n\
         \n\
         #[logging]\n\
         ETCD_DEBUG=\"False\"\n"
    )
}

/// master-config.yaml and sysconfig/flanneld from the host layer's test data, pointing at the
/// three members' client URLs.
fn write_okd_files(root: &Path, clients: &[&str]) {
    let example = [
        "https://master-0.example.com:2379",
        "https://master-1.example.com:2379",
        "https://master-2.example.com:2379",
    ];
    let mut master = include_str!("../../vault/src/host/testdata/master-config.yaml").to_string();
    let mut flanneld = include_str!("../../vault/src/host/testdata/flanneld").to_string();
    for (from, to) in example.iter().zip(clients) {
        master = master.replace(from, to);
        flanneld = flanneld.replace(from, to);
    }
    flanneld = flanneld.replace("/openshift.com/network", FLANNEL_PREFIX);
    let m = root.join("etc/origin/master/master-config.yaml");
    let f = root.join("etc/sysconfig/flanneld");
    for (path, text) in [(&m, master), (&f, flanneld)] {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create config dir");
        std::fs::write(path, text).expect("write OKD config file");
    }
}

fn start_all(hosts: &[OkdHost]) -> Result<(), String> {
    for h in hosts {
        h.start()?;
    }
    let all: Vec<&OkdHost> = hosts.iter().collect();
    wait_all_healthy(&all, Duration::from_secs(40))
}

fn wait_all_healthy(hosts: &[&OkdHost], timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let mut pending = vec![];
        for h in hosts {
            if !h.healthy() {
                pending.push(h);
            }
        }
        if pending.is_empty() {
            eprintln!(
                "okd: {} member(s) healthy after {:.1}s",
                hosts.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            let logs: Vec<String> = pending
                .iter()
                .map(|h| {
                    format!(
                        "--- host{} ({}, {}):\n{}",
                        h.index,
                        if h.running() { "running" } else { "not running" },
                        h.client_url,
                        crate::process::tail(&h.systemctl.state.join("etcd.service.log"), 12)
                    )
                })
                .collect();
            return Err(format!("not healthy after {timeout:?}:\n{}", logs.join("\n")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A client of one member with that host's CA and peer certificate.
async fn client(h: &OkdHost) -> Client {
    let read = |f: &str| {
        let p = h.etc_etcd(f);
        std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("peer.crt"), read("peer.key")));
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)).with_tls(tls);
    Client::connect([h.client_url.as_str()], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect to etcd at {}: {e}", h.client_url))
}
