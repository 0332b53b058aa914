//! `vaultd run`: one task per job that sleeps until the job's next cron slot (plus jitter) and runs
//! the capture through the library with the job's timeout; GET /healthz and GET /metrics.
//!
//! A job's runs are sequential by construction (its task awaits each run before computing the next
//! slot from the current time), so two runs of one job never overlap; slots that pass during a long
//! run are skipped. Captures of different jobs take turns on the one catalog.
//!
//! At SIGTERM no new run starts; running captures get `shutdown_grace_secs` to finish, then are
//! abandoned (nothing of them is committed: the manifest is a capture's last write).
//!
//! At start-up a job whose last snapshot from this host is older than a slot that has passed (the
//! daemon was down, or the last runs failed) runs once at once; then it follows its schedule.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use rand::Rng;
use vault::catalog::{self, Catalog};
use vault::ops::backup::{BackupOptions, backup_etcd_v3};
use vault::ops::files::{FilesOptions, backup_files};
use vault::repo::{KeySource, Vault};
use vault::store::Store;
use vault::{Error, Result};

use crate::check;
use crate::config::{DaemonConfig, JobConfig, JobKind};

/// What /metrics reports about one job.
#[derive(Clone, Debug, Default)]
pub struct JobStats {
    pub last_attempt: Option<f64>,
    pub last_success: Option<f64>,
    pub last_duration: Option<f64>,
    pub running: bool,
    /// outcome ("success", "failure", "timeout") -> count
    pub outcomes: BTreeMap<&'static str, u64>,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    /// Attempts tried again after a transient error.
    pub retries: u64,
}

pub struct Daemon {
    cfg: DaemonConfig,
    vault: Vault,
    catalog: tokio::sync::Mutex<Catalog>,
    stats: Mutex<BTreeMap<String, JobStats>>,
    token: Option<String>,
    profile_dirs: Vec<PathBuf>,
    /// The running job loops by job name.
    loops: Mutex<BTreeMap<String, JobLoop>>,
    /// One lock per job name, held for the whole of a run: even a loop replaced by a reload and
    /// a new one never run the same job at once.
    run_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
    let keys = KeySource {
        writer_key: Some(g.writer_key.clone()),
        identity: None,
    };
    let vault = Vault::open(store, &keys).await?;
    let path = g.catalog.clone().unwrap_or_else(|| catalog::default_path(&vault.config.vault_id));
    let mut cat = Catalog::open(&path, &vault.config.vault_id)?;
    cat.sync(&vault).await?;
    let token = match &g.http.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::usage(format!("cannot read token file {}", p.display())).with_source(e))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let stats = cfg.jobs.iter().map(|j| (j.name.clone(), JobStats::default())).collect();
    Ok(Arc::new(Daemon {
        cfg,
        vault,
        catalog: tokio::sync::Mutex::new(cat),
        stats: Mutex::new(stats),
        token,
        profile_dirs,
        loops: Mutex::new(BTreeMap::new()),
        run_locks: Mutex::new(BTreeMap::new()),
    }))
}

fn now_secs() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(d: Arc<Daemon>, config_path: PathBuf) -> Result<()> {
    let addr: SocketAddr = d
        .cfg
        .global
        .http
        .listen
        .parse()
        .map_err(|_| Error::usage(format!("http.listen {:?} is not an address", d.cfg.global.http.listen)))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {addr}")).with_source(e))?;
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
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{name}", get(job))
        .route("/v1/jobs/{name}/run", axum::routing::post(run_job))
        .route("/v1/snapshots", get(snapshots))
        .with_state(d.clone());
    tracing::info!("vaultd listening on {addr} with {} job(s)", d.cfg.jobs.len());
    // Config checked, vault and catalog open, listener bound: ready.
    crate::notify::notify("READY=1");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot handle SIGTERM").with_source(e))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("vaultd stopping");
        crate::notify::notify("STOPPING=1");
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("the HTTP server failed").with_source(e));
    reloader.abort();
    let grace = Duration::from_secs(d.cfg.global.shutdown_grace_secs);
    for job in stop(&d, grace).await {
        tracing::warn!(
            "job {job}: its running capture was abandoned after the shutdown grace period of {}s; nothing of it was committed",
            grace.as_secs()
        );
    }
    served
}

/// Start a loop for every job of the config.
pub fn start_jobs(d: &Arc<Daemon>) {
    let mut loops = d.loops.lock().expect("loops lock");
    for job in &d.cfg.jobs {
        loops.insert(job.name.clone(), start_loop(d, job.clone()));
    }
}

/// SIGHUP: re-read the config. A config with any problem is refused and the running one kept.
/// Otherwise jobs that changed or went away stop after their current run, and new or changed jobs
/// start; settings outside `[[job]]` take effect at the next restart.
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
    // Compared through Debug: the option structs have no PartialEq. Nothing here is logged.
    if format!("{:?}", cfg.global) != format!("{:?}", d.cfg.global) {
        tracing::warn!("config reload: settings outside [[job]] changed; they take effect when vaultd restarts");
    }
    let mut loops = d.loops.lock().expect("loops lock");
    let mut stopped = Vec::new();
    loops.retain(|name, l| {
        let same = cfg.jobs.iter().any(|j| format!("{j:?}") == format!("{:?}", l.job));
        if !same {
            l.stop.send_replace(true);
            stopped.push(name.clone());
        }
        same
    });
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
    tracing::info!(
        "config reloaded from {}: {} job(s); stopped {stopped:?}, started {started:?}",
        path.display(),
        cfg.jobs.len()
    );
}

/// Take no new runs, and give running captures up to `grace` to finish. Returns the jobs whose
/// running capture was abandoned.
pub async fn stop(d: &Daemon, grace: Duration) -> Vec<String> {
    let loops = std::mem::take(&mut *d.loops.lock().expect("loops lock"));
    for l in loops.values() {
        l.stop.send_replace(true);
    }
    let jobs: Vec<_> = loops.into_values().map(|l| l.handle).collect();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && jobs.iter().any(|h| !h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let abandoned = d
        .stats
        .lock()
        .expect("stats lock")
        .iter()
        .filter(|(_, s)| s.running)
        .map(|(n, _)| n.clone())
        .collect();
    for h in jobs {
        h.abort();
    }
    abandoned
}

async fn job_loop(d: Arc<Daemon>, job: JobConfig, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let schedule = match check::schedule(&job.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("job {}: {e}; it will not run", job.name);
            return;
        }
    };
    match missed_run(&d, &job, &schedule, Utc::now()).await {
        Ok(Some(last)) => {
            tracing::info!(
                "job {}: a scheduled run was missed since its last snapshot at {}; running now",
                job.name,
                last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            run_once(&d, &job).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("job {}: cannot tell whether a run was missed: {e}", job.name),
    }
    loop {
        let Some(next) = schedule.after(&Utc::now()).next() else {
            tracing::warn!("job {}: schedule {:?} has no further slot; it stops", job.name, job.schedule);
            return;
        };
        let jitter = if job.jitter_secs > 0 {
            rand::thread_rng().gen_range(0..=job.jitter_secs * 1000)
        } else {
            0
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if *stopping.borrow() {
            return;
        }
        run_once(&d, &job).await;
    }
}

/// Whether a slot of `schedule` passed between `last` (the job's last snapshot) and `now`.
pub fn overdue(schedule: &cron::Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    schedule.after(&last).next().is_some_and(|slot| slot <= now)
}

/// The time of the job's last snapshot from this host, when a slot has passed since it. A job that
/// has never taken a snapshot here waits for its first slot.
pub async fn missed_run(d: &Daemon, job: &JobConfig, schedule: &cron::Schedule, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    let host = vault::ops::backup::hostname();
    let cat = d.catalog.lock().await;
    let last = cat
        .snapshots()?
        .into_iter()
        .filter(|s| s.manifest.job == job.name && s.manifest.host == host)
        .map(|s| s.manifest.time)
        .max();
    Ok(last.filter(|&t| overdue(schedule, t, now)))
}

/// One run of a job, with its timeout; the outcome goes to the stats and the log.
pub async fn run_once(d: &Daemon, job: &JobConfig) {
    let lock = d.run_locks.lock().expect("run locks").entry(job.name.clone()).or_default().clone();
    let _running = lock.lock().await;
    let started = Instant::now();
    tracing::info!("job {}: run started", job.name);
    d.update(&job.name, |s| {
        s.last_attempt = Some(now_secs());
        s.running = true;
    });
    let result = tokio::time::timeout(Duration::from_secs(job.timeout_secs), capture_with_retries(d, job)).await;
    let seconds = started.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(Ok(c)) => {
            tracing::info!(
                "job {}: snapshot {} ({} bytes read, {} new, {} stored) in {seconds:.1}s",
                job.name,
                c.id,
                c.bytes,
                c.new_bytes,
                c.stored_bytes
            );
            d.update(&job.name, |s| {
                s.last_success = Some(now_secs());
                s.bytes_read += c.bytes;
                s.bytes_new += c.new_bytes;
                s.bytes_stored += c.stored_bytes;
            });
            "success"
        }
        Ok(Err(e)) => {
            tracing::error!("job {}: failed after {seconds:.1}s: {e}", job.name);
            "failure"
        }
        Err(_) => {
            tracing::error!(
                "job {}: aborted after its timeout of {}s (nothing was committed)",
                job.name,
                job.timeout_secs
            );
            "timeout"
        }
    };
    d.update(&job.name, |s| {
        s.running = false;
        s.last_duration = Some(seconds);
        *s.outcomes.entry(outcome).or_default() += 1;
    });
}

/// Whether an error may go away by itself (a store or etcd hiccup), as opposed to one that needs
/// the operator (configuration, keys, integrity).
fn transient(e: &Error) -> bool {
    matches!(e.kind, vault::ErrorKind::Store | vault::ErrorKind::Source | vault::ErrorKind::Io)
}

/// Capture, trying again after transient errors with a doubling backoff (all within the job's
/// timeout, which wraps this).
async fn capture_with_retries(d: &Daemon, job: &JobConfig) -> Result<Captured> {
    let mut backoff = Duration::from_secs(job.retry_backoff_secs);
    let mut attempt = 0;
    loop {
        match capture(d, job).await {
            Err(e) if transient(&e) && attempt < job.retries => {
                attempt += 1;
                tracing::warn!(
                    "job {}: attempt {attempt} of {} failed: {e}; trying again in {}s",
                    job.name,
                    job.retries + 1,
                    backoff.as_secs()
                );
                d.update(&job.name, |s| s.retries += 1);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            other => return other,
        }
    }
}

struct Captured {
    id: String,
    bytes: u64,
    new_bytes: u64,
    stored_bytes: u64,
}

async fn capture(d: &Daemon, job: &JobConfig) -> Result<Captured> {
    let mut cat = d.catalog.lock().await;
    // Other hosts may have written to the vault since the last run.
    cat.sync(&d.vault).await?;
    let opts = BackupOptions {
        job: job.name.clone(),
        host: None,
        tags: job.tags.clone(),
        progress: None,
    };
    match job.kind() {
        Some(JobKind::EtcdV3) => {
            let etcd = job.etcd.clone().unwrap_or_default();
            let r = backup_etcd_v3(&d.vault, &mut cat, &etcd, &opts).await?;
            Ok(Captured {
                id: r.id,
                bytes: r.bytes,
                new_bytes: r.new_bytes,
                stored_bytes: r.stored_bytes,
            })
        }
        Some(JobKind::Files) => {
            let sel = job.selection();
            let resolved = sel.resolve(&d.profile_dirs)?;
            for m in &resolved.missing {
                tracing::info!("job {}: not present on this host: {m}", job.name);
            }
            let packages = if resolved.profile.as_ref().is_none_or(|p| p.packages) {
                tokio::task::spawn_blocking(vault::source::packages::capture)
                    .await
                    .map_err(|_| Error::io("the package list capture panicked"))??
                    .map(|l| serde_json::to_value(l).expect("serialize package list"))
            } else {
                None
            };
            let files = FilesOptions {
                root: sel.root.clone(),
                paths: resolved.paths,
                excluded: resolved.excluded,
                profile: resolved.profile.as_ref().map(|p| p.name.clone()),
                packages,
            };
            let r = backup_files(&d.vault, &mut cat, files, &opts).await?;
            if r.incomplete {
                for s in &r.skipped {
                    tracing::warn!("job {}: skipped {}: {}", job.name, s.path, s.reason);
                }
                tracing::warn!("job {}: snapshot {} is INCOMPLETE", job.name, r.id);
            }
            Ok(Captured {
                id: r.id,
                bytes: r.bytes,
                new_bytes: r.new_bytes,
                stored_bytes: r.stored_bytes,
            })
        }
        None => Err(Error::usage(format!("job {}: unknown kind {:?}", job.name, job.kind))),
    }
}

impl Daemon {
    fn update(&self, job: &str, f: impl FnOnce(&mut JobStats)) {
        let mut stats = self.stats.lock().expect("stats lock");
        f(stats.entry(job.to_string()).or_default());
    }

    /// Whether the request carries the bearer token (compared in constant time).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    /// Everything but /healthz (and /metrics when public) needs the token; without a token file
    /// the API is closed. The log line never holds the token. `None` when the request may go on, else the refusal to send.
    fn check_auth(&self, what: &str, headers: &HeaderMap) -> Option<Response> {
        if self.token.is_none() {
            let closed = "the API is closed: set http.token_file in the vaultd config\n";
            return Some((StatusCode::FORBIDDEN, closed).into_response());
        }
        if self.authorized(headers) {
            return None;
        }
        tracing::warn!("{what}: missing or wrong bearer token");
        Some((StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response())
    }

    /// The jobs as currently configured (after any reload).
    fn current_jobs(&self) -> Vec<JobConfig> {
        self.loops.lock().expect("loops lock").values().map(|l| l.job.clone()).collect()
    }

    fn job_json(&self, job: &JobConfig) -> serde_json::Value {
        let s = self.stats.lock().expect("stats lock").get(&job.name).cloned().unwrap_or_default();
        let next = check::schedule(&job.schedule)
            .ok()
            .and_then(|sc| sc.upcoming(Utc).next())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        serde_json::json!({
            "name": job.name,
            "kind": job.kind,
            "schedule": job.schedule,
            "next_slot": next,
            "running": s.running,
            "last_attempt": s.last_attempt,
            "last_success": s.last_success,
            "last_duration_seconds": s.last_duration,
            "runs": s.outcomes,
            "retries": s.retries,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if !d.cfg.global.http.metrics_public
        && let Some(r) = d.check_auth("GET /metrics", &headers)
    {
        return r;
    }
    let stats = d.stats.lock().expect("stats lock").clone();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&stats)).into_response()
}

/// GET /readyz: the vault answers.
async fn readyz(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /readyz", &headers) {
        return r;
    }
    match d.vault.store.get(vault::format::CONFIG_NAME).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the vault does not answer: {e}\n")).into_response(),
    }
}

/// GET /v1/jobs
async fn jobs(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /v1/jobs", &headers) {
        return r;
    }
    let list: Vec<_> = d.current_jobs().iter().map(|j| d.job_json(j)).collect();
    axum::Json(list).into_response()
}

/// GET /v1/jobs/{name}
async fn job(State(d): State<Arc<Daemon>>, axum::extract::Path(name): axum::extract::Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /v1/jobs/{name}", &headers) {
        return r;
    }
    match d.current_jobs().into_iter().find(|j| j.name == name) {
        Some(j) => axum::Json(d.job_json(&j)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no job {name:?}\n")).into_response(),
    }
}

/// GET /v1/snapshots: the vault's snapshots as the daemon's catalog knows them (oldest first).
async fn snapshots(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /v1/snapshots", &headers) {
        return r;
    }
    // A capture holds the catalog while it runs; do not make the caller wait for it.
    let Ok(cat) = tokio::time::timeout(Duration::from_secs(2), d.catalog.lock()).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "a capture is using the catalog; retry in a moment\n",
        )
            .into_response();
    };
    match cat.snapshots() {
        Ok(list) => {
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id.hex(),
                        "time": s.manifest.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        "kind": s.manifest.kind.as_str(),
                        "host": s.manifest.host,
                        "job": s.manifest.job,
                        "source": s.manifest.source(),
                        "size": s.manifest.stats.bytes,
                        "stored_bytes": s.manifest.stats.stored_bytes,
                        "tags": s.manifest.tags,
                        "verification": s.verification,
                    })
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("catalog: {e}\n")).into_response(),
    }
}

/// POST /v1/jobs/{name}/run: start a run now (202), unless one is going (409).
async fn run_job(State(d): State<Arc<Daemon>>, axum::extract::Path(name): axum::extract::Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("POST /v1/jobs/{name}/run", &headers) {
        return r;
    }
    let Some(job) = d.current_jobs().into_iter().find(|j| j.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no job {name:?}\n")).into_response();
    };
    if d.stats.lock().expect("stats lock").get(&name).is_some_and(|s| s.running) {
        return (StatusCode::CONFLICT, format!("job {name:?} is running\n")).into_response();
    }
    tracing::info!("job {name}: run requested through the API");
    let d2 = d.clone();
    tokio::spawn(async move { run_once(&d2, &job).await });
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"job": name, "started": true}))).into_response()
}

/// Prometheus text format.
pub fn render_metrics(stats: &BTreeMap<String, JobStats>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: &dyn Fn(&JobStats) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (job, s) in stats {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{job=\"{job}\"}} {v}");
            }
        }
    };
    gauge(
        "vault_job_last_attempt_timestamp_seconds",
        "When the job's last run started (Unix time).",
        "gauge",
        &|s| s.last_attempt,
    );
    gauge(
        "vault_job_last_success_timestamp_seconds",
        "When the job's last successful run ended (Unix time).",
        "gauge",
        &|s| s.last_success,
    );
    gauge(
        "vault_job_last_duration_seconds",
        "How long the job's last run took.",
        "gauge",
        &|s| s.last_duration,
    );
    gauge("vault_job_running", "1 while a run of the job is going.", "gauge", &|s| {
        Some(if s.running { 1.0 } else { 0.0 })
    });
    gauge(
        "vault_job_read_bytes_total",
        "Source bytes read by the job's successful runs.",
        "counter",
        &|s| Some(s.bytes_read as f64),
    );
    gauge(
        "vault_job_new_bytes_total",
        "Bytes not already in the vault, of the job's successful runs.",
        "counter",
        &|s| Some(s.bytes_new as f64),
    );
    gauge(
        "vault_job_stored_bytes_total",
        "Bytes stored (compressed, encrypted) by the job's successful runs.",
        "counter",
        &|s| Some(s.bytes_stored as f64),
    );
    gauge(
        "vault_job_retries_total",
        "Attempts tried again after a transient error.",
        "counter",
        &|s| Some(s.retries as f64),
    );
    let _ = writeln!(
        out,
        "# HELP vault_job_runs_total Finished runs by outcome.\n# TYPE vault_job_runs_total counter"
    );
    for (job, s) in stats {
        for outcome in ["success", "failure", "timeout"] {
            let n = s.outcomes.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "vault_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}} {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text_with_every_job_and_outcome() {
        let mut stats = BTreeMap::new();
        let mut s = JobStats {
            last_attempt: Some(1700000000.5),
            last_success: Some(1700000001.0),
            ..Default::default()
        };
        s.outcomes.insert("success", 2);
        stats.insert("etcd".to_string(), s);
        stats.insert("files".to_string(), JobStats::default());
        let text = render_metrics(&stats);
        assert!(
            text.contains("vault_job_last_attempt_timestamp_seconds{job=\"etcd\"} 1700000000.5\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_job_runs_total{job=\"etcd\",outcome=\"success\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_job_runs_total{job=\"files\",outcome=\"timeout\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("vault_job_last_success_timestamp_seconds{job=\"files\"}"), "{text}");
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("vault_")), "{text}");
    }

    /// A run that outlives its job's timeout is aborted and counted as "timeout"; nothing is committed.
    #[tokio::test]
    async fn a_run_past_its_timeout_is_aborted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        // An "etcd" that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"slow\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\ntimeout_secs = 1\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 60\n",
            d.display(),
            silent.local_addr().unwrap()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let job = cfg.jobs[0].clone();
        let daemon = open(cfg, vec![]).await.unwrap();
        let started = Instant::now();
        run_once(&daemon, &job).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        let stats = daemon.stats.lock().unwrap()["slow"].clone();
        assert_eq!(stats.outcomes.get("timeout"), Some(&1), "{stats:?}");
        assert!(stats.last_attempt.is_some() && stats.last_success.is_none() && !stats.running);
        assert!(daemon.catalog.lock().await.snapshots().unwrap().is_empty());
    }

    #[test]
    fn a_run_is_overdue_when_a_slot_passed_since_the_last_snapshot() {
        let hourly = check::schedule("0 0 * * * *").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(!overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-01T10:59:59Z")));
        assert!(overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-01T11:00:00Z")));
        assert!(overdue(&hourly, t("2026-01-01T10:00:05Z"), t("2026-01-02T09:00:00Z")));
    }

    /// The catch-up at start-up looks at this host's last snapshot of the job in the catalog.
    #[tokio::test]
    async fn missed_runs_are_found_from_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        make_vault(d).await;
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n[[job]]\nname = \"never\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
            d.display()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let (job, never) = (cfg.jobs[0].clone(), cfg.jobs[1].clone());
        let daemon = open(cfg, vec![]).await.unwrap();
        let hourly = check::schedule(&job.schedule).unwrap();
        let now = Utc::now();
        assert_eq!(missed_run(&daemon, &job, &hourly, now).await.unwrap(), None);
        run_once(&daemon, &job).await;
        let stats = daemon.stats.lock().unwrap()["conf"].clone();
        assert_eq!(stats.outcomes.get("success"), Some(&1), "{stats:?}");
        let later = Utc::now();
        assert_eq!(missed_run(&daemon, &job, &hourly, later).await.unwrap(), None);
        let last = missed_run(&daemon, &job, &hourly, later + chrono::Duration::hours(2))
            .await
            .unwrap();
        assert!(last.is_some_and(|t| t >= now && t <= later), "{last:?}");
        // Another job, never run here: nothing to catch up.
        assert_eq!(
            missed_run(&daemon, &never, &hourly, later + chrono::Duration::hours(2))
                .await
                .unwrap(),
            None
        );
    }

    /// A vault in `d/vault` with its writer key at `d/w.key`.
    async fn make_vault(d: &std::path::Path) {
        let store = Store::open(&d.join("vault").display().to_string(), &Default::default()).unwrap();
        store.create_root().unwrap();
        let (_, recipient) = vault::crypto::generate_identity();
        let opts = vault::repo::InitOptions {
            recipients: vec![recipient],
            ..Default::default()
        };
        let (_, writer) = Vault::init(store, &opts).await.unwrap();
        std::fs::write(d.join("w.key"), writer.to_file_text()).unwrap();
    }

    fn running(d: &Daemon, job: &str) -> bool {
        d.stats.lock().unwrap()[job].running
    }

    /// At shutdown a running capture may finish within the grace period; one that does not is
    /// abandoned without a snapshot, and no new run starts.
    #[tokio::test]
    async fn stop_lets_running_captures_finish_within_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"slow\"\nkind = \"etcd-v3\"\nschedule = \"* * * * * *\"\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 60\n",
            d.display(),
            silent.local_addr().unwrap()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        assert_eq!(cfg.global.shutdown_grace_secs, crate::config::DEFAULT_GRACE_SECS);
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        start_jobs(&daemon);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running(&daemon, "slow") {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        let abandoned = stop(&daemon, Duration::from_secs(1)).await;
        assert_eq!(abandoned, vec!["slow".to_string()]);
        assert!(started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(5));
        assert!(daemon.catalog.lock().await.snapshots().unwrap().is_empty());

        // A quick capture finishes; the loop then ends at once instead of waiting for its next slot.
        std::fs::create_dir_all(d.join("host/etc/app")).unwrap();
        std::fs::write(d.join("host/etc/app/a.conf"), "a=1\n").unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c2.sqlite\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"* * * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{0}/host\"\n",
            d.display()
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        start_jobs(&daemon);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running(&daemon, "conf") && daemon.stats.lock().unwrap()["conf"].outcomes.is_empty() {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let abandoned = stop(&daemon, Duration::from_secs(30)).await;
        assert!(abandoned.is_empty());
        assert!(started.elapsed() < Duration::from_secs(10));
        let stats = daemon.stats.lock().unwrap()["conf"].clone();
        assert_eq!(stats.outcomes.get("success"), Some(&1), "{stats:?}");
        assert_eq!(daemon.catalog.lock().await.snapshots().unwrap().len(), 1);
    }

    /// Transient errors (etcd unreachable) are retried; configuration errors are not.
    #[tokio::test]
    async fn transient_failures_are_retried_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_vault(d).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/w.key\"\ncatalog = \"{0}/c.sqlite\"\n[[job]]\nname = \"gone\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\nretries = 2\nretry_backoff_secs = 0\n[job.etcd]\nendpoints = [\"http://{1}\"]\nconnect_timeout_secs = 1\n[[job]]\nname = \"badroot\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\nretry_backoff_secs = 0\npaths = [\"/etc\"]\nroot = \"{0}/no-such-root\"\n",
            d.display(),
            closed
        );
        let cfg = crate::config::parse(&text).config.unwrap();
        assert_eq!(cfg.jobs[1].retries, crate::config::DEFAULT_RETRIES);
        let daemon = open(cfg.clone(), vec![]).await.unwrap();
        run_once(&daemon, &cfg.jobs[0]).await;
        run_once(&daemon, &cfg.jobs[1]).await;
        let stats = daemon.stats.lock().unwrap().clone();
        assert_eq!(
            (stats["gone"].retries, stats["gone"].outcomes.get("failure")),
            (2, Some(&1)),
            "{stats:?}"
        );
        assert_eq!(
            (stats["badroot"].retries, stats["badroot"].outcomes.get("failure")),
            (0, Some(&1)),
            "{stats:?}"
        );
        assert!(render_metrics(&stats).contains("vault_job_retries_total{job=\"gone\"} 2\n"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
