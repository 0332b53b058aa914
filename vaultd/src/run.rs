//! `vaultd run`: the daemon's state ([`Daemon`]), start-up, SIGHUP reload and shutdown. The job
//! loops are in [`crate::schedule`], the HTTP API in [`crate::api`], the metrics text in
//! [`crate::metrics`].
//!
//! At SIGTERM no new run starts; running captures get `shutdown_grace_secs` to finish, then are
//! abandoned (the manifest is a capture's last write: nothing of them is committed unless that
//! write was under way).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vault::catalog::{self, Catalog};
use vault::repo::Vault;
use vault::store::Store;
use vault::{Error, Result};

use crate::check;
use crate::config::{DaemonConfig, Global, JobConfig, Scope};
use crate::metrics::{JobStats, VaultStats};
use crate::runs::{RunRecord, RunState, Runs};
use crate::schedule::job_loop;
use crate::webhook::{self, Webhook};

pub struct Daemon {
    pub(crate) cfg: DaemonConfig,
    pub(crate) vault: Vault,
    /// The daemon's connection to its catalog, for short reads (the API, metrics, catch-up).
    /// Each capture opens a connection of its own, so that jobs run side by side.
    pub(crate) catalog: tokio::sync::Mutex<Catalog>,
    pub(crate) catalog_path: PathBuf,
    pub(crate) stats: Mutex<BTreeMap<String, JobStats>>,
    pub(crate) profile_dirs: Vec<PathBuf>,
    /// The name recorded in snapshots and slot claims.
    pub(crate) host: String,
    /// The daemon's ID, kept across restarts next to its catalog (in slot claims).
    pub(crate) daemon_id: String,
    /// The lease of the slot claims this daemon takes.
    pub(crate) claim_lease: chrono::Duration,
    pub(crate) runs: Runs,
    /// The settings a SIGHUP reload changes in place.
    pub(crate) live: RwLock<Live>,
    /// Vault-wide figures for /metrics, refreshed after each run.
    pub(crate) vault_stats: Mutex<Option<VaultStats>>,
    /// Tasks that may still be running a capture outside the job loops: loops a reload replaced
    /// and runs requested through the API. Aborted at the end of the shutdown grace.
    pub(crate) detached: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The running job loops by job name.
    loops: Mutex<BTreeMap<String, JobLoop>>,
    /// One lock per job name, held for the whole of a run: even a loop replaced by a reload and
    /// a new one never run the same job at once.
    pub(crate) run_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last audit, reused by /metrics for a minute.
    pub(crate) audit_cache: crate::audit::AuditCache,
}

/// Settings outside `[[job]]` that a reload applies at once: the API token (re-read, so a
/// rotated token file takes effect on SIGHUP), `http.metrics_public` and the webhook.
pub(crate) struct Live {
    pub(crate) token: Option<String>,
    pub(crate) metrics_public: bool,
    pub(crate) webhook: Option<Webhook>,
}

impl Live {
    fn load(g: &Global) -> Result<Live> {
        let token = match &g.http.token_file {
            Some(p) => {
                let t = crate::config::read_token(p, "token file")?;
                if t.is_empty() {
                    // An empty token would let requests without one through.
                    return Err(Error::usage(format!("token file {} is empty", p.display())).hint("write the token (one line) into it"));
                }
                Some(t)
            }
            None => None,
        };
        Ok(Live {
            token,
            metrics_public: g.http.metrics_public,
            webhook: g.webhook.as_ref().map(Webhook::new).transpose()?,
        })
    }
}

/// Refuse cluster-wide jobs on a vault whose store cannot do conditional create (two daemons could
/// both believe they won a slot).
fn claims_unsupported(vault: &Vault, jobs: &[JobConfig]) -> Option<Error> {
    let j = jobs.iter().find(|j| j.scope() == Some(Scope::Cluster))?;
    (!vault.config.store.conditional_create).then(|| {
        Error::usage(format!(
            "job {} has scope \"cluster\", but the vault's store ({}) did not honour conditional create at init: daemons sharing it cannot claim slots safely",
            j.name,
            vault.store.describe()
        ))
        .hint("set scope = \"host\" on the job, or keep the vault on a store with conditional writes")
    })
}

/// The settings that only a restart applies, by name, when they differ between two configs.
fn restart_only_changes(old: &Global, new: &Global) -> Vec<&'static str> {
    // Compared through Debug: the option structs have no PartialEq. Nothing here is logged.
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    [
        ("repo", differs(&old.repo, &new.repo)),
        ("writer_key", differs(&old.writer_key, &new.writer_key)),
        ("catalog", differs(&old.catalog, &new.catalog)),
        ("host", differs(&old.host, &new.host)),
        // Debug redacts the secret: compare it apart.
        (
            "s3",
            differs(&old.s3, &new.s3) || old.s3.secret_access_key != new.s3.secret_access_key,
        ),
        ("http.listen", differs(&old.http.listen, &new.http.listen)),
        ("shutdown_grace_secs", differs(&old.shutdown_grace_secs, &new.shutdown_grace_secs)),
        ("claim_lease_secs", differs(&old.claim_lease_secs, &new.claim_lease_secs)),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect()
}

/// A job's scheduling task and what stops it.
struct JobLoop {
    job: JobConfig,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

fn start_loop(d: &Arc<Daemon>, job: JobConfig) -> JobLoop {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(job_loop(d.clone(), job.clone(), stopping));
    JobLoop { job, stop, handle }
}

/// Open the vault and catalog of a checked config.
pub async fn open(cfg: DaemonConfig, profile_dirs: Vec<PathBuf>) -> Result<Arc<Daemon>> {
    let g = &cfg.global;
    let store = Store::open(&g.repo, &g.s3)?;
    let keys = g.key_source();
    let vault = Vault::open(store, &keys).await?;
    if let Some(notice) = &vault.trust.notice {
        tracing::warn!("{notice}");
    }
    let path = g.catalog.clone().unwrap_or_else(|| catalog::default_path(&vault.config.vault_id));
    let mut cat = Catalog::open(&path, &vault.config.vault_id)?;
    for u in cat.sync(&vault).await?.unreadable {
        tracing::error!("DAMAGED object in the vault, left out of the catalog: {u}");
    }
    match vault.store.remove_stale_temporaries().await {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(
                "removed {} temporary file(s) left in the vault by writers killed mid-write",
                removed.len()
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let live = RwLock::new(Live::load(g)?);
    if let Some(e) = claims_unsupported(&vault, &cfg.jobs) {
        return Err(e);
    }
    let host = g.host.clone().unwrap_or_else(vault::ops::backup::hostname);
    let instance = hex::encode(vault::crypto::random_bytes::<4>());
    let daemon_id = crate::daemon_id::load_or_create(&crate::daemon_id::path_for(&path))?;
    let claim_lease = chrono::Duration::seconds(g.claim_lease_secs.clamp(1, 86_400 * 365) as i64);
    let stats = cfg.jobs.iter().map(|j| (j.name.clone(), JobStats::default())).collect();
    let vault_stats = Mutex::new(VaultStats::from_catalog(&cat).ok());
    Ok(Arc::new(Daemon {
        vault_stats,
        host,
        runs: Runs::new(&instance),
        daemon_id,
        claim_lease,
        live,
        cfg,
        vault,
        catalog: tokio::sync::Mutex::new(cat),
        catalog_path: path,
        stats: Mutex::new(stats),
        profile_dirs,
        loops: Mutex::new(BTreeMap::new()),
        detached: Mutex::new(Vec::new()),
        audit_cache: Default::default(),
        run_locks: Mutex::new(BTreeMap::new()),
    }))
}

pub(crate) fn now_secs() -> f64 {
    crate::metrics::unix_seconds(Utc::now())
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(d: Arc<Daemon>, config_path: PathBuf) -> Result<()> {
    // Checked by check::static_problems before the daemon gets here; parsed again for its value.
    let endpoint = crate::listen::Endpoint::parse(&d.cfg.global.http.listen).map_err(|e| Error::usage(format!("http.listen: {e}")))?;
    let listener = crate::listen::bind(&endpoint).await?;
    start_jobs(&d);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::io("cannot handle SIGHUP").with_source(e))?;
    let reloader = {
        let d = d.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                reload(&d, &config_path);
            }
        })
    };
    let app = crate::api::router(d.clone());
    tracing::info!("vaultd listening on {endpoint} with {} job(s)", d.cfg.jobs.len());
    // Config checked, vault and catalog open, listener bound: ready.
    crate::notify::notify("READY=1");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot handle SIGTERM").with_source(e))?;
    // The API keeps answering while running captures finish; it stops after them.
    let (close_api, api_closed) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::listen::serve(listener, app, async move {
        let _ = api_closed.await;
    }));
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        ended = &mut server => {
            reloader.abort();
            stop(&d, Duration::ZERO).await;
            return match ended {
                Ok(Err(e)) => Err(Error::io("the HTTP server failed").with_source(e)),
                _ => Err(Error::io("the HTTP server stopped unexpectedly")),
            };
        }
    }
    tracing::info!("vaultd stopping: no new runs");
    crate::notify::notify("STOPPING=1");
    reloader.abort();
    let grace = Duration::from_secs(d.cfg.global.shutdown_grace_secs);
    for job in stop(&d, grace).await {
        tracing::warn!(
            "job {job}: its running capture was abandoned after the shutdown grace period of {}s; it committed no snapshot unless its last write was under way",
            grace.as_secs()
        );
    }
    let _ = close_api.send(());
    // A unix socket file is removed when the server stops. Connections that do not close within a
    // few seconds are dropped.
    match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
        Ok(Ok(served)) => served.map_err(|e| Error::io("the HTTP server failed").with_source(e)),
        Ok(Err(_)) => Err(Error::io("the HTTP server task failed")),
        Err(_) => {
            server.abort();
            let _ = server.await;
            Ok(())
        }
    }
}

/// Start a loop for every job of the config.
pub fn start_jobs(d: &Arc<Daemon>) {
    let mut loops = d.loops.lock().expect("loops lock");
    for job in &d.cfg.jobs {
        loops.insert(job.name.clone(), start_loop(d, job.clone()));
    }
    retire_removed_jobs(d, &d.cfg.jobs);
}

/// Record the retirement of this host's jobs gone from the config (in the background).
fn retire_removed_jobs(d: &Arc<Daemon>, jobs: &[JobConfig]) {
    let names = jobs.iter().map(|j| j.name.clone()).collect();
    let d = d.clone();
    tokio::spawn(async move { crate::policy_record::retire_removed(&d, names).await });
}

/// SIGHUP: re-read the config. A config with any problem is refused and the running one kept.
/// Otherwise jobs that changed or went away stop after their current run, and new or changed jobs
/// start; the token, `metrics_public` and the webhook change at once; the other settings outside
/// `[[job]]` take effect at the next restart (and the log says which).
pub fn reload(d: &Arc<Daemon>, path: &std::path::Path) {
    let cfg = match check::load_checked(path, &d.profile_dirs) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                tracing::error!("{p}");
            }
            tracing::error!(
                "config reload refused: {} has {} problem(s); the running config is kept",
                path.display(),
                problems.len()
            );
            return;
        }
    };
    if let Some(e) = claims_unsupported(&d.vault, &cfg.jobs) {
        tracing::error!("config reload refused: {e}; the running config is kept");
        return;
    }
    let live = match Live::load(&cfg.global) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("config reload refused: {e}; the running config is kept");
            return;
        }
    };
    *d.live.write().expect("live settings lock") = live;
    let later = restart_only_changes(&d.cfg.global, &cfg.global);
    if !later.is_empty() {
        tracing::warn!(
            "config reload: {} changed; that takes effect when vaultd restarts (token, metrics_public and webhook took effect now)",
            later.join(", ")
        );
    }
    let mut loops = d.loops.lock().expect("loops lock");
    let mut stopped = Vec::new();
    let mut detached = d.detached.lock().expect("detached lock");
    detached.retain(|h| !h.is_finished());
    loops.retain(|name, l| {
        // `index` (the job's place in the file) is not a setting: moving a job keeps its loop.
        let same = cfg
            .jobs
            .iter()
            .any(|j| format!("{:?}", JobConfig { index: 0, ..j.clone() }) == format!("{:?}", JobConfig { index: 0, ..l.job.clone() }));
        if !same {
            l.stop.send_replace(true);
            // It ends after its current run; stop() still waits for it at shutdown.
            detached.push(l.handle.abort_handle());
            stopped.push(name.clone());
        }
        same
    });
    drop(detached);
    let mut started = Vec::new();
    for job in &cfg.jobs {
        if !loops.contains_key(&job.name) {
            loops.insert(job.name.clone(), start_loop(d, job.clone()));
            started.push(job.name.clone());
        }
    }
    d.stats
        .lock()
        .expect("stats lock")
        .retain(|name, s| s.running || cfg.jobs.iter().any(|j| &j.name == name));
    for job in &cfg.jobs {
        d.update(&job.name, |_| {});
    }
    retire_removed_jobs(d, &cfg.jobs);
    tracing::info!(
        "config reloaded from {}: {} job(s); stopped {stopped:?}, started {started:?}",
        path.display(),
        cfg.jobs.len()
    );
}

/// Take no new runs, and give running captures (of the job loops, of loops a reload replaced, and
/// of API requests) up to `grace` to finish. Returns the jobs whose running capture was abandoned.
pub async fn stop(d: &Daemon, grace: Duration) -> Vec<String> {
    let loops = std::mem::take(&mut *d.loops.lock().expect("loops lock"));
    for l in loops.values() {
        l.stop.send_replace(true);
    }
    let jobs: Vec<_> = loops.into_values().map(|l| l.handle).collect();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && (jobs.iter().any(|h| !h.is_finished()) || d.runs.any_running()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for h in jobs {
        h.abort();
    }
    for h in std::mem::take(&mut *d.detached.lock().expect("detached lock")) {
        h.abort();
    }
    let abandoned: Vec<String> = d.runs.abandon_running().into_iter().map(|r| r.job).collect();
    for job in &abandoned {
        d.update(job, |s| {
            s.running = false;
            *s.outcomes.entry(RunState::Abandoned.as_str()).or_default() += 1;
        });
    }
    abandoned
}

impl Daemon {
    /// The lock held for the whole of a run of `job`.
    pub(crate) fn run_lock(&self, job: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.run_locks
            .lock()
            .expect("run locks")
            .entry(job.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn update(&self, job: &str, f: impl FnOnce(&mut JobStats)) {
        let mut stats = self.stats.lock().expect("stats lock");
        f(stats.entry(job.to_string()).or_default());
    }

    /// The time of the job's last snapshot in the catalog: from any host for a cluster-wide job,
    /// from this host for a per-host one. Also kept in the job's stats for /metrics.
    pub(crate) fn last_snapshot(&self, job: &JobConfig, cat: &Catalog) -> Result<Option<DateTime<Utc>>> {
        let host = (job.scope() != Some(Scope::Cluster)).then_some(self.host.as_str());
        let last = cat.latest_time(&job.name, host)?;
        if let Some(t) = last {
            self.update(&job.name, |s| s.last_snapshot = Some(crate::metrics::unix_seconds(t)));
        }
        Ok(last)
    }

    pub(crate) fn refresh_vault_stats(&self, cat: &Catalog) {
        match VaultStats::from_catalog(cat) {
            Ok(v) => *self.vault_stats.lock().expect("vault stats lock") = Some(v),
            Err(e) => tracing::warn!("cannot take the vault figures from the catalog: {e}"),
        }
    }

    /// Who this daemon is in slot claims.
    pub(crate) fn claimant(&self) -> vault::claim::Claimant<'_> {
        vault::claim::Claimant {
            host: &self.host,
            daemon: &self.daemon_id,
            lease: self.claim_lease,
        }
    }

    /// After a run: count failures in a row, and send the webhook on a failure and on the first
    /// success after failures, and on a slot skipped because another daemon claimed it under this
    /// daemon's host name. Another skipped slot changes nothing.
    pub(crate) fn finished(&self, job: &JobConfig, run: &RunRecord) {
        let (event, failures, last_success) = {
            let mut stats = self.stats.lock().expect("stats lock");
            let s = stats.entry(job.name.clone()).or_default();
            let before = s.consecutive_failures;
            let event = match run.state {
                RunState::Failure | RunState::Timeout => {
                    s.consecutive_failures += 1;
                    Some(webhook::Event::Failure)
                }
                RunState::Success => {
                    s.consecutive_failures = 0;
                    (before > 0).then_some(webhook::Event::Recovery)
                }
                RunState::Skipped if run.claimed_by.as_deref() == Some(self.host.as_str()) => {
                    s.duplicate_host_claims += 1;
                    Some(webhook::Event::DuplicateHost)
                }
                _ => None,
            };
            (event, s.consecutive_failures.max(before), s.last_success)
        };
        if let Some(event) = event {
            self.send_event(event, job, failures, last_success, run);
        }
    }

    /// A cluster-wide slot passed with no snapshot, and this daemon closed it: count it and send
    /// the webhook (`run` is this daemon's last run for the slot).
    pub(crate) fn missed(&self, job: &JobConfig, run: &RunRecord) {
        let (failures, last_success) = {
            let mut stats = self.stats.lock().expect("stats lock");
            let s = stats.entry(job.name.clone()).or_default();
            s.missed_slots += 1;
            (s.consecutive_failures, s.last_success)
        };
        self.send_event(webhook::Event::Missed, job, failures, last_success, run);
    }

    pub(crate) fn send_event(&self, event: webhook::Event, job: &JobConfig, failures: u32, last_success: Option<f64>, run: &RunRecord) {
        let hook = self.live.read().expect("live settings lock").webhook.clone();
        if let Some(hook) = hook {
            hook.send(webhook::Body {
                event,
                job: job.name.clone(),
                host: self.host.clone(),
                vault: self.vault.config.vault_id.clone(),
                consecutive_failures: failures,
                last_success,
                run: run.clone(),
            });
        }
    }

    /// The jobs as currently configured (after any reload).
    pub(crate) fn current_jobs(&self) -> Vec<JobConfig> {
        self.loops.lock().expect("loops lock").values().map(|l| l.job.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIGHUP re-reads the token file (rotation) and applies metrics_public at once; settings that
    /// need a restart are named; a config with a problem changes nothing.
    #[tokio::test]
    async fn reload_applies_the_token_and_names_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::schedule::tests::make_vault(d).await;
        let private = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).unwrap();
            std::fs::set_permissions(d.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        };
        private("w.key", &std::fs::read_to_string(d.join("w.key")).unwrap());
        private("token", "one\n");
        std::fs::create_dir_all(d.join("host/etc")).unwrap();
        let text = |extra: &str| {
            format!(
                "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n{extra}[http]\ntoken_file = \"{0}/token\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc\"]\nroot = \"{0}/host\"\n",
                d.display()
            )
        };
        private("vaultd.toml", &text(""));
        let cfg = crate::config::parse(&text("")).config.unwrap();
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        assert_eq!(daemon.live.read().unwrap().token.as_deref(), Some("one"));
        private("token", "two\n");
        private(
            "vaultd.toml",
            &text("host = \"renamed\"\n").replace("[http]\n", "[http]\nmetrics_public = true\n"),
        );
        reload(&daemon, &d.join("vaultd.toml"));
        {
            let live = daemon.live.read().unwrap();
            assert_eq!((live.token.as_deref(), live.metrics_public), (Some("two"), true));
        }
        let new = crate::config::parse(&text("host = \"renamed\"\n")).config.unwrap();
        assert_eq!(restart_only_changes(&cfg.global, &new.global), ["host"]);
        // A bad config is refused whole.
        private("token", "three\n");
        private(
            "vaultd.toml",
            &text("").replace("schedule = \"0 0 * * * *\"", "schedule = \"never\""),
        );
        reload(&daemon, &d.join("vaultd.toml"));
        assert_eq!(daemon.live.read().unwrap().token.as_deref(), Some("two"));
        stop(&daemon, Duration::from_secs(1)).await;
    }
}
