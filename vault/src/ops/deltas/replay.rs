//! Replay delta segments onto a base snapshot (docs/FORMAT.md section 8e): the base is restored
//! into a private data dir, a temporary `etcd` is started on loopback ports, every revision group
//! after the base's own revision is applied as one transaction, and a snapshot of the result is
//! saved. Because the chain is dense and each transaction makes exactly one revision, the replayed
//! etcd lands on the original revision numbers; that is asserted after every group.
//!
//! The temporary etcd holds every Secret of the cluster, so it listens on 127.0.0.1 only, with
//! TLS and client certificates made for this replay ([`tls`]): another local user cannot read it.
//!
//! Leases are granted with their original ids and granted TTLs and kept alive during the replay,
//! so that a short TTL cannot expire keys (a write that would shift every later revision).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseGrantOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;

use crate::delta_stream::{Event, EventGroup, LeaseGrant, Record};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::host::command::find_on_path;
use crate::ops::etcd_restore::restore_tool;
use crate::source::etcd_v3::{TrailerCheck, grpc_cause};

/// The member name of the temporary etcd.
const NAME: &str = "vault-replay";

/// Where to stop replaying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAt {
    /// After the group of this revision.
    Revision(i64),
    /// After the last group received at or before this time (unix ms).
    ReceivedBy(i64),
}

impl StopAt {
    /// Whether `g` is past the target (must not be applied).
    pub fn is_past(&self, g: &EventGroup) -> bool {
        match *self {
            StopAt::Revision(r) => g.revision > r,
            StopAt::ReceivedBy(ms) => g.received_ms > ms,
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayProgress {
    /// The revision the base snapshot holds (S; at least the revision recorded at capture).
    pub base_revision: i64,
    /// The revision reached: the last group applied (the base's when none was).
    pub revision: i64,
    /// When the last applied group was received (unix ms), if any was.
    pub received_ms: Option<i64>,
    pub groups_applied: u64,
    pub events_applied: u64,
    /// Groups the base already held.
    pub groups_skipped: u64,
    pub leases_granted: u64,
    /// Whether a group past the target was seen (so the target is inside what was read).
    pub reached_past: bool,
}

/// How to run the temporary etcd.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The `etcd` binary (default: `etcd` on PATH, then /usr/bin/etcd).
    pub etcd_binary: Option<PathBuf>,
    /// etcdutl/etcdctl for `snapshot restore` (default as for `etcd restore`).
    pub tool: Option<PathBuf>,
}

/// The `etcd` binary to run.
pub fn etcd_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    find_on_path("etcd")
        .or_else(|| Path::new("/usr/bin/etcd").exists().then(|| PathBuf::from("/usr/bin/etcd")))
        .ok_or_else(|| {
            Error::usage("a point-in-time restore needs the etcd binary to replay the changes, and none is on PATH")
                .hint("install etcd of the cluster's version or pass --etcd-binary PATH")
        })
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; a race with another process is caught by
/// etcd failing to start, which is retried).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context(ErrorKind::Io, || "cannot find a free loopback port".to_string())?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("cannot find a free loopback port").with_source(e))?
        .port())
}

/// A temporary single-member etcd on loopback, with a private data dir under `work`. It is killed
/// (the process this started, by its handle) and its data dir removed when dropped.
pub struct TempEtcd {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    tls: tls::ReplayTls,
    pub endpoint: String,
    pub client: Client,
    keepalive: Option<KeepAlive>,
}

impl TempEtcd {
    /// Start a temporary etcd in `work` (a private directory this may fill), from `base` (an etcd
    /// v3 snapshot file, restored with etcdutl/etcdctl) or empty.
    pub async fn start(base: Option<&Path>, work: &Path, opts: &ReplayOptions) -> Result<TempEtcd> {
        let etcd = etcd_binary(opts.etcd_binary.as_deref())?;
        let mut last = None;
        for attempt in 0..3 {
            match Self::try_start(&etcd, base, work, opts, attempt).await {
                Ok(t) => return Ok(t),
                Err(e) if e.kind == ErrorKind::Source => last = Some(e), // a port taken meanwhile: retry
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("tried"))
    }

    async fn try_start(etcd: &Path, base: Option<&Path>, work: &Path, opts: &ReplayOptions, attempt: u32) -> Result<TempEtcd> {
        let data_dir = work.join(format!("replay-etcd-{attempt}"));
        let log = work.join(format!("replay-etcd-{attempt}.log"));
        let _ = fs::remove_dir_all(&data_dir);
        let client_url = format!("https://127.0.0.1:{}", free_port()?);
        let peer_url = format!("https://127.0.0.1:{}", free_port()?);
        let tls = tls::ReplayTls::make(work)?;
        let initial_cluster = format!("{NAME}={peer_url}");
        if let Some(base) = base {
            let (tool, tool_name) = restore_tool(opts.tool.as_deref())?;
            let out = Command::new(&tool)
                .env("ETCDCTL_API", "3")
                .arg("snapshot")
                .arg("restore")
                .arg(base)
                .args(["--name", NAME, "--initial-cluster", &initial_cluster])
                .args([
                    "--initial-cluster-token",
                    "vault-replay",
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .arg("--data-dir")
                .arg(&data_dir)
                .output()
                .map_err(|e| Error::io(format!("cannot run {}", tool.display())).with_source(e))?;
            if !out.status.success() {
                return Err(Error::integrity(format!(
                    "{tool_name} snapshot restore of the base snapshot failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let log_file = fs::File::create(&log).context(ErrorKind::Io, || format!("cannot create {}", log.display()))?;
        let child = Command::new(etcd)
            .args(["--name", NAME])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster, "--initial-cluster-token", "vault-replay"])
            .args(["--max-txn-ops", "1000000", "--max-request-bytes", "67108864"])
            .args(["--quota-backend-bytes", "8589934592", "--auto-compaction-retention", "0"])
            .args(["--snapshot-count", "10000000"])
            .args(tls.etcd_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Error::io(format!("cannot run {}", etcd.display())).with_source(e))?;
        // (connects lazily: etcd need not answer yet)
        let client = match Client::connect([client_url.as_str()], Some(tls.connect_options())).await {
            Ok(c) => c,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::source_err("cannot make an etcd client").with_source(e));
            }
        };
        let mut t = TempEtcd {
            child: Some(child),
            data_dir,
            log,
            tls,
            endpoint: client_url.clone(),
            client,
            keepalive: None,
        };
        t.wait_healthy(Duration::from_secs(30)).await?;
        t.keepalive = Some(KeepAlive::start(t.client.clone()));
        Ok(t)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(Error::source_err(format!(
                    "the temporary etcd for the replay exited ({st}): {}",
                    self.log_tail()
                )));
            }
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), self.client.status()).await
                && s.leader() != 0
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::source_err(format!(
                    "the temporary etcd for the replay did not become healthy within {}s: {}",
                    timeout.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The current revision (etcd's header).
    pub async fn revision(&mut self) -> Result<i64> {
        let s = self
            .client
            .status()
            .await
            .map_err(|e| Error::source_err(format!("the temporary etcd does not answer: {}", grpc_cause(&e))))?;
        Ok(s.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// The ids of the leases it holds.
    pub async fn lease_ids(&mut self) -> Result<Vec<i64>> {
        let r = self
            .client
            .leases()
            .await
            .map_err(|e| Error::source_err(format!("cannot list the temporary etcd's leases: {}", grpc_cause(&e))))?;
        Ok(r.leases().iter().map(|l| l.id()).collect())
    }

    /// Save its snapshot to `dest` (0600), checking etcd's sha256 trailer. Returns the file's sha256.
    pub async fn save_snapshot(&mut self, dest: &Path) -> Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut stream = self
            .client
            .snapshot()
            .await
            .map_err(|e| Error::source_err(format!("the temporary etcd refused its snapshot: {}", grpc_cause(&e))))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dest)
            .context(ErrorKind::Io, || format!("cannot create {}", dest.display()))?;
        let mut check = TrailerCheck::default();
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    check.update(m.blob());
                    f.write_all(m.blob())
                        .context(ErrorKind::Io, || format!("cannot write {}", dest.display()))?;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::source_err(format!(
                        "the temporary etcd's snapshot broke off: {}",
                        grpc_cause(&e)
                    )));
                }
            }
        }
        f.sync_all().context(ErrorKind::Io, || format!("cannot fsync {}", dest.display()))?;
        let r = check.finish();
        if !r.trailer_ok {
            return Err(Error::integrity("the replayed snapshot fails its own sha256 trailer check"));
        }
        Ok(r.file_sha256)
    }

    /// Stop it (the process this started) and remove its data dir.
    pub fn stop(&mut self) {
        self.keepalive.take(); // aborts the keep-alive task
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.data_dir);
        let _ = fs::remove_file(&self.log);
        self.tls.remove();
    }
}

impl Drop for TempEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Keeps leases alive while the replay runs (a lease that expired in the temporary etcd would
/// delete keys and make a revision of its own).
struct KeepAlive {
    add: tokio::sync::mpsc::UnboundedSender<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    fn start(mut client: Client) -> KeepAlive {
        let (add, mut rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
        let task = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    id = rx.recv() => match id {
                        Some(id) => {
                            if let Ok(k) = client.lease_keep_alive(id).await {
                                kept.push(k);
                            }
                        }
                        None => return,
                    },
                    _ = tick.tick() => {
                        for (keeper, stream) in kept.iter_mut() {
                            if keeper.keep_alive().await.is_ok() {
                                let _ = stream.message().await;
                            }
                        }
                    }
                }
            }
        });
        KeepAlive { add, task }
    }

    fn keep(&self, id: i64) {
        let _ = self.add.send(id);
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Applies records to a [`TempEtcd`] in order, up to a target.
pub struct Replayer {
    pub etcd: TempEtcd,
    stop: StopAt,
    leases: HashSet<i64>,
    /// Leases granted from lease records (some may hold no key at the end).
    granted: BTreeSet<i64>,
    /// A sample of keys last put by the replay: (revision, create_revision, version) as the
    /// source recorded them, checked against the temporary etcd at the end.
    sample: HashMap<Vec<u8>, (i64, i64, i64)>,
    pub progress: ReplayProgress,
}

/// How many keys [`Replayer`] checks at the end.
const SAMPLE: usize = 256;

impl Replayer {
    /// Take over a started etcd: read its revision (S) and keep its leases alive.
    pub async fn new(mut etcd: TempEtcd, stop: StopAt) -> Result<Replayer> {
        let base_revision = etcd.revision().await?;
        let leases: HashSet<i64> = etcd.lease_ids().await?.into_iter().collect();
        if let Some(k) = &etcd.keepalive {
            for id in &leases {
                k.keep(*id);
            }
        }
        Ok(Replayer {
            etcd,
            stop,
            leases,
            granted: BTreeSet::new(),
            sample: HashMap::new(),
            progress: ReplayProgress {
                base_revision,
                revision: base_revision,
                ..Default::default()
            },
        })
    }

    /// Whether the target is reached (a group past it was seen).
    pub fn done(&self) -> bool {
        self.progress.reached_past
    }

    /// Apply one record. `what` names its segment for errors. A group the base already holds is
    /// skipped; one past the target ends the replay (later records are ignored). A skipped group
    /// that is itself past the target means the base is too new: an error that
    /// [`is_base_past_target`] recognises, so the caller can try an older base.
    pub async fn apply(&mut self, record: &Record, what: &str) -> Result<()> {
        if self.progress.reached_past {
            return Ok(());
        }
        match record {
            Record::Lease(l) => self.grant(l, what).await,
            Record::Group(g) => {
                if g.revision <= self.progress.base_revision {
                    if self.stop.is_past(g) {
                        return Err(base_past_target(self.progress.base_revision));
                    }
                    self.progress.groups_skipped += 1;
                    return Ok(());
                }
                if self.stop.is_past(g) {
                    self.progress.reached_past = true;
                    return Ok(());
                }
                if g.revision != self.progress.revision + 1 {
                    return Err(Error::integrity(format!(
                        "{what}: revision {} follows revision {}: the replay would skip revisions",
                        g.revision, self.progress.revision
                    )));
                }
                self.group(g, what).await
            }
        }
    }

    async fn grant(&mut self, l: &LeaseGrant, what: &str) -> Result<()> {
        if self.leases.contains(&l.id) {
            return Ok(());
        }
        self.etcd
            .client
            .lease_grant(l.granted_ttl_secs.max(1), Some(LeaseGrantOptions::new().with_id(l.id)))
            .await
            .map_err(|e| {
                Error::source_err(format!(
                    "{what}: cannot grant lease {:x} in the temporary etcd: {}",
                    l.id,
                    grpc_cause(&e)
                ))
            })?;
        if let Some(k) = &self.etcd.keepalive {
            k.keep(l.id);
        }
        self.leases.insert(l.id);
        self.granted.insert(l.id);
        self.progress.leases_granted += 1;
        Ok(())
    }

    async fn group(&mut self, g: &EventGroup, what: &str) -> Result<()> {
        let mut ops = Vec::with_capacity(g.events.len());
        for e in &g.events {
            ops.push(match e {
                Event::Put { key, value, lease, .. } => {
                    if *lease != 0 && !self.leases.contains(lease) {
                        return Err(Error::integrity(format!(
                            "{what}: revision {} puts a key with lease {lease:x}, which neither the base nor the segments grant",
                            g.revision
                        )));
                    }
                    let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                    TxnOp::put(key.clone(), value.clone(), opts)
                }
                Event::Delete { key } => TxnOp::delete(key.clone(), None),
            });
        }
        let resp = self
            .etcd
            .client
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| Error::source_err(format!("{what}: replaying revision {} failed: {}", g.revision, grpc_cause(&e))))?;
        let got = resp.header().map(|h| h.revision()).unwrap_or_default();
        if got != g.revision {
            return Err(Error::integrity(format!(
                "{what}: replaying revision {} made revision {got} in the temporary etcd: the segments do not continue the base",
                g.revision
            ))
            .hint("the revisions of a replay must follow the original ones; this chain cannot be replayed onto this base"));
        }
        for e in &g.events {
            match e {
                // version 0: not recorded (a real put has version 1 or more)
                Event::Put {
                    key,
                    create_revision,
                    version,
                    ..
                } if *version > 0 => {
                    if self.sample.len() < SAMPLE || self.sample.contains_key(key) {
                        self.sample.insert(key.clone(), (g.revision, *create_revision, *version));
                    }
                }
                Event::Put { key, .. } | Event::Delete { key } => {
                    self.sample.remove(key);
                }
            }
        }
        self.progress.revision = g.revision;
        self.progress.received_ms = Some(g.received_ms);
        self.progress.groups_applied += 1;
        self.progress.events_applied += g.events.len() as u64;
        Ok(())
    }

    /// Revoke leases granted during the replay that no key uses any more (revoking a key-less
    /// lease makes no revision; checked), save the snapshot to `dest`, stop the temporary etcd.
    pub async fn finish(mut self, dest: &Path) -> Result<(ReplayProgress, String)> {
        self.check_sample().await?;
        let in_use = self.leases_in_use().await?;
        for id in self.granted.iter().filter(|id| !in_use.contains(id)) {
            let _ = self.etcd.client.lease_revoke(*id).await;
        }
        let rev = self.etcd.revision().await?;
        if rev != self.progress.revision {
            return Err(Error::integrity(format!(
                "the temporary etcd is at revision {rev} after the replay, where {} was reached",
                self.progress.revision
            )));
        }
        let sha = self.etcd.save_snapshot(dest).await?;
        self.etcd.stop();
        Ok((self.progress, sha))
    }
}

impl Replayer {
    /// The leases the temporary etcd's keys use, read a page of keys at a time (one response for
    /// a whole cluster's keys would pass the client's message limit).
    async fn leases_in_use(&mut self) -> Result<HashSet<i64>> {
        const PAGE: i64 = 10_000;
        let mut in_use = HashSet::new();
        let mut from = vec![0u8];
        loop {
            let r = self
                .etcd
                .client
                .get(
                    from.clone(),
                    Some(etcd_client::GetOptions::new().with_from_key().with_keys_only().with_limit(PAGE)),
                )
                .await
                .map_err(|e| Error::source_err(format!("cannot read the temporary etcd's keys: {}", grpc_cause(&e))))?;
            in_use.extend(r.kvs().iter().map(|kv| kv.lease()).filter(|l| *l != 0));
            match r.kvs().last() {
                // The next page starts right after the last key.
                Some(last) if r.more() => from = [last.key(), b"\0"].concat(),
                _ => return Ok(in_use),
            }
        }
    }

    /// The sampled keys have the create revision and version the source recorded: the replay
    /// built the same history, not only the same values (a base that is not the chain's would
    /// show here). Key names are content: the error names revisions only.
    async fn check_sample(&mut self) -> Result<()> {
        for (key, (rev, create, version)) in &self.sample {
            let r = self
                .etcd
                .client
                .get(key.clone(), None)
                .await
                .map_err(|e| Error::source_err(format!("cannot read the temporary etcd: {}", grpc_cause(&e))))?;
            let got = r.kvs().first().map(|kv| (kv.create_revision(), kv.version()));
            if got != Some((*create, *version)) {
                let (gc, gv) = got.unwrap_or_default();
                return Err(Error::integrity(format!(
                    "the replay diverged from the source: the key put at revision {rev} has create revision {gc} and version {gv} in the replay, where the source recorded {create} and {version}"
                ))
                .hint("the base snapshot does not hold the history the segments continue; report this with `vaultctl verify` output"));
            }
        }
        Ok(())
    }
}

pub(crate) fn base_past_target(base_revision: i64) -> Error {
    Error::usage(format!(
        "the base snapshot holds revision {base_revision}, which is past the target"
    ))
    .with_source(BasePastTargetError(base_revision))
}

#[derive(Debug)]
struct BasePastTargetError(i64);

impl std::fmt::Display for BasePastTargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "base at revision {} is past the target", self.0)
    }
}

impl std::error::Error for BasePastTargetError {}

/// Whether `e` says the base is past the target (so an older base should be tried).
pub fn is_base_past_target(e: &Error) -> Option<i64> {
    e.source.as_ref().and_then(|s| s.downcast_ref::<BasePastTargetError>()).map(|b| b.0)
}

#[cfg(test)]
mod tests;
mod tls;
