//! etcd members as child processes on free loopback ports, with fast raft timers, logs in files,
//! optional client TLS with client-certificate authentication, and key-value helpers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::certs::Certs;
use crate::process::Proc;

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    proc: Proc,
}

impl EtcdMember {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL this member (a crash).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Stop this member (SIGTERM, wait, SIGKILL after 15 s).
    pub fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(15));
    }
}

/// A running cluster. Dropping it stops every member, one at a time.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub tls: Option<Certs>,
    dir: Option<tempfile::TempDir>,
    pub base: PathBuf,
}

struct Spec<'a> {
    name: &'a str,
    data_dir: &'a Path,
    client_url: String,
    peer_url: String,
    initial_cluster: &'a str,
    token: &'a str,
    tls: Option<&'a Certs>,
    log_dir: &'a Path,
}

fn spawn_member(s: &Spec) -> EtcdMember {
    let log = s.log_dir.join(format!("{}.log", s.name));
    let out = s.log_dir.join(format!("{}.out", s.name));
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg(s.name)
        .arg("--data-dir")
        .arg(s.data_dir)
        .args(["--listen-client-urls", &s.client_url, "--advertise-client-urls", &s.client_url])
        .args(["--listen-peer-urls", &s.peer_url, "--initial-advertise-peer-urls", &s.peer_url])
        .args(["--initial-cluster", s.initial_cluster, "--initial-cluster-token", s.token])
        .args(["--initial-cluster-state", "new"])
        .args(["--heartbeat-interval=10", "--election-timeout=100", "--enable-v2", "--logger=zap"])
        .arg(format!("--log-outputs={}", log.display()));
    if let Some(c) = s.tls {
        cmd.arg("--cert-file")
            .arg(&c.server_cert)
            .arg("--key-file")
            .arg(&c.server_key)
            .arg("--trusted-ca-file")
            .arg(&c.ca)
            .arg("--client-cert-auth");
    }
    let proc = Proc::spawn(&format!("etcd {}", s.name), &mut cmd, &out);
    EtcdMember {
        name: s.name.to_string(),
        client_url: s.client_url.clone(),
        peer_url: s.peer_url.clone(),
        data_dir: s.data_dir.to_path_buf(),
        log,
        proc,
    }
}

/// `GET /health` over plain HTTP says healthy.
pub fn http_healthy(url: &str) -> bool {
    let Some(addr) = url.strip_prefix("http://") else { return false };
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if write!(s, "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains(r#""health":"true""#)
}

/// `etcdctl endpoint health` with the client certificate says healthy.
fn tls_healthy(url: &str, c: &Certs) -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg("--cacert")
        .arg(&c.ca)
        .arg("--cert")
        .arg(&c.client_cert)
        .arg("--key")
        .arg(&c.client_key)
        .args(["--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl EtcdCluster {
    /// Start `n` members (names m1..mn) on free ports and wait until every one is healthy.
    pub fn start(n: usize, tls: Option<&Certs>) -> EtcdCluster {
        let dir = crate::tempdir("etcd");
        let base = dir.path().to_path_buf();
        let mut last_err = String::new();
        for attempt in 0..3 {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
            let clients: Vec<String> = (0..n).map(|_| format!("{scheme}://127.0.0.1:{}", crate::free_port())).collect();
            let peers: Vec<String> = (0..n).map(|_| format!("http://127.0.0.1:{}", crate::free_port())).collect();
            let ic: Vec<String> = names.iter().zip(&peers).map(|(n, p)| format!("{n}={p}")).collect();
            let ic = ic.join(",");
            let token = format!("vault-e2e-{}-{attempt}", std::process::id());
            let run_dir = base.join(format!("try{attempt}"));
            std::fs::create_dir_all(&run_dir).expect("create etcd dir");
            let members: Vec<EtcdMember> = (0..n)
                .map(|i| {
                    spawn_member(&Spec {
                        name: &names[i],
                        data_dir: &run_dir.join(format!("{}.etcd", names[i])),
                        client_url: clients[i].clone(),
                        peer_url: peers[i].clone(),
                        initial_cluster: &ic,
                        token: &token,
                        tls,
                        log_dir: &run_dir,
                    })
                })
                .collect();
            let mut cluster = EtcdCluster {
                members,
                tls: tls.cloned(),
                dir: None,
                base: run_dir,
            };
            match cluster.wait_healthy(Duration::from_secs(30)) {
                Ok(()) => {
                    cluster.dir = Some(dir);
                    return cluster;
                }
                Err(e) => {
                    last_err = e;
                    eprintln!("etcd cluster attempt {attempt} failed: {last_err}");
                    cluster.stop();
                }
            }
        }
        panic!("etcd cluster did not start: {last_err}");
    }

    /// Start one member on an existing (restored) data dir, listening on `peer_url` and a free
    /// client port. Logs go next to the data dir.
    pub fn start_on_data_dir(name: &str, data_dir: &Path, peer_url: &str) -> EtcdCluster {
        let log_dir = data_dir.parent().expect("data dir has a parent").join(format!("{name}-logs"));
        std::fs::create_dir_all(&log_dir).expect("create log dir");
        let client_url = format!("http://127.0.0.1:{}", crate::free_port());
        let ic = format!("{name}={peer_url}");
        let member = spawn_member(&Spec {
            name,
            data_dir,
            client_url,
            peer_url: peer_url.to_string(),
            initial_cluster: &ic,
            token: "unused-for-existing-data-dir",
            tls: None,
            log_dir: &log_dir,
        });
        let mut cluster = EtcdCluster {
            members: vec![member],
            tls: None,
            dir: None,
            base: log_dir,
        };
        if let Err(e) = cluster.wait_healthy(Duration::from_secs(30)) {
            cluster.stop();
            panic!("etcd on restored data dir {} did not start: {e}", data_dir.display());
        }
        cluster
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let mut healthy = 0;
            for m in self.members.iter_mut() {
                if let Some(st) = m.proc.exited() {
                    return Err(format!(
                        "member {} exited ({st}):\n{}\n{}",
                        m.name,
                        crate::process::tail(&m.log, 15),
                        m.proc.log_tail(15)
                    ));
                }
                let ok = match &self.tls {
                    None => http_healthy(&m.client_url),
                    Some(c) => tls_healthy(&m.client_url, c),
                };
                if ok {
                    healthy += 1;
                }
            }
            if healthy == self.members.len() {
                eprintln!(
                    "etcd: {} member(s) healthy after {:.2}s ({})",
                    healthy,
                    started.elapsed().as_secs_f64(),
                    self.endpoints().join(",")
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}:\n{}", m.name, crate::process::tail(&m.log, 10)))
                    .collect();
                return Err(format!("not healthy after {timeout:?}\n{}", tails.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Endpoints joined with commas, as `--endpoints` takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// Stop every member, one at a time (SIGTERM to all at once makes the leader wait seconds
    /// for a leadership transfer to a peer that is also stopping).
    pub fn stop(&mut self) {
        for m in self.members.iter_mut().rev() {
            m.stop();
        }
    }

    /// A client for all members (with the client certificate under TLS).
    pub async fn client(&self) -> Client {
        let mut opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        if let Some(c) = &self.tls {
            let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&c.ca)))
                    .identity(Identity::from_pem(read(&c.client_cert), read(&c.client_key))),
            );
        }
        Client::connect(self.endpoints(), Some(opts))
            .await
            .unwrap_or_else(|e| panic!("connect to etcd {:?}: {e}", self.endpoints()))
    }

    /// Put every pair (one request each).
    pub async fn put_all(&self, kvs: &[(String, Vec<u8>)]) {
        let mut c = self.client().await;
        for (k, v) in kvs {
            c.put(k.as_str(), v.clone(), None).await.unwrap_or_else(|e| panic!("put {k}: {e}"));
        }
    }

    /// The whole v3 keyspace, read a few keys at a time (one response must stay under the
    /// client's 4 MiB message limit, and test values go up to 256 KiB).
    pub async fn get_all(&self) -> BTreeMap<String, Vec<u8>> {
        let mut c = self.client().await;
        let mut out = BTreeMap::new();
        let mut from = Vec::new();
        loop {
            let r = c
                .get(from.clone(), Some(GetOptions::new().with_from_key().with_limit(8)))
                .await
                .expect("get all keys");
            for kv in r.kvs() {
                out.insert(String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec());
            }
            match r.kvs().last() {
                // The next page starts right after the last key.
                Some(last) if r.more() => from = [last.key(), b"\0"].concat(),
                _ => return out,
            }
        }
    }

    /// The current revision.
    pub async fn revision(&self) -> i64 {
        let mut c = self.client().await;
        let r = c.get("/", None).await.expect("get for revision");
        r.header().expect("response header").revision()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
