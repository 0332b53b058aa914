//! The HTTP API (axum): /healthz, /readyz, /metrics, /v1/jobs, /v1/jobs/{name},
//! POST /v1/jobs/{name}/run, /v1/runs, /v1/runs/{id}, /v1/snapshots, /v1/audit. Everything but /healthz needs the bearer token (and
//! /metrics unless `http.metrics_public`); without a token file the API answers 403.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;

use crate::check;
use crate::config::{JobConfig, Scope};
use crate::metrics::render_metrics;
use crate::run::Daemon;
use crate::runs::{KEPT_RUNS, Trigger};
use crate::schedule::run_once;

/// The API's routes over the daemon's state.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{name}", get(job))
        .route("/v1/jobs/{name}/run", post(run_job))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{id}", get(run))
        .route("/v1/snapshots", get(snapshots))
        .route("/v1/audit", get(audit))
        .with_state(d)
}

impl Daemon {
    /// Whether the request carries the bearer token (compared in constant time).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let live = self.live.read().expect("live settings lock");
        let Some(token) = live.token.as_ref().filter(|t| !t.is_empty()) else {
            return false;
        };
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
        if self.live.read().expect("live settings lock").token.is_none() {
            let closed = "the API is closed: set http.token_file in the vaultd config\n";
            return Some((StatusCode::FORBIDDEN, closed).into_response());
        }
        if self.authorized(headers) {
            return None;
        }
        tracing::warn!("{what}: missing or wrong bearer token");
        Some((StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response())
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
            "last_snapshot": s.last_snapshot,
            "scope": match job.scope() {
                Some(Scope::Cluster) => "cluster",
                Some(Scope::Host) => "host",
                None => "?",
            },
            "runs": s.outcomes,
            "retries": s.retries,
            "consecutive_failures": s.consecutive_failures,
            "last_run": self.runs.recent(Some(&job.name), 1).into_iter().next(),
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
    if !d.live.read().expect("live settings lock").metrics_public
        && let Some(r) = d.check_auth("GET /metrics", &headers)
    {
        return r;
    }
    let stats = d.stats.lock().expect("stats lock").clone();
    let vault = d.vault_stats.lock().expect("vault stats lock").clone();
    let mut text = render_metrics(&stats, vault.as_ref());
    if let Some(r) = crate::audit::cached(&d).await {
        text += &crate::audit::render_metrics(&r);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// GET /readyz: the vault answers.
async fn readyz(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /readyz", &headers) {
        return r;
    }
    if let Err(e) = d.vault.store.get(vault::format::CONFIG_NAME).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("the vault does not answer: {e}\n")).into_response();
    }
    let catalog = match tokio::time::timeout(Duration::from_secs(2), d.catalog.lock()).await {
        Ok(cat) => cat.ping(),
        Err(_) => Err(vault::Error::io("the catalog is busy")),
    };
    match catalog {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the catalog is not usable: {e}\n")).into_response(),
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
    // Do not make the caller wait long for a busy catalog.
    let Ok(cat) = tokio::time::timeout(Duration::from_secs(2), d.catalog.lock()).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the catalog is busy; retry in a moment\n").into_response();
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
                        "slot": s.manifest.slot,
                        "verification": s.verification,
                    })
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("catalog: {e}\n")).into_response(),
    }
}

/// GET /v1/audit[?since=RFC3339&job=NAME]: the retention audit, as `vaultctl audit --json`.
async fn audit(
    State(d): State<Arc<Daemon>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = d.check_auth("GET /v1/audit", &headers) {
        return r;
    }
    let since = match q.get("since").map(|s| chrono::DateTime::parse_from_rfc3339(s)) {
        None => None,
        Some(Ok(t)) => Some(t.to_utc()),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "since must be an RFC 3339 time\n").into_response(),
    };
    match crate::audit::report(&d, since, q.get("job").cloned()).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) if e.kind == vault::ErrorKind::Usage => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("audit: {e}\n")).into_response(),
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
    // Taking the job's run lock here (not in the task) makes two quick requests one run and a 409.
    let Ok(held) = d.run_lock(&name).try_lock_owned() else {
        return (StatusCode::CONFLICT, format!("job {name:?} is running\n")).into_response();
    };
    let id = d.runs.begin(&name, Trigger::Api, None);
    tracing::info!("job {name}: run {id} requested through the API");
    let d2 = d.clone();
    let run_id = id.clone();
    let task = tokio::spawn(async move { run_once(&d2, &job, &run_id, Some(held)).await });
    let mut detached = d.detached.lock().expect("detached lock");
    detached.retain(|h| !h.is_finished());
    detached.push(task.abort_handle());
    drop(detached);
    let location = format!("/v1/runs/{id}");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.clone())],
        axum::Json(serde_json::json!({"job": name, "run": id, "url": location})),
    )
        .into_response()
}

/// GET /v1/runs/{id}: one run, while it goes and after (the last few hundred are kept).
async fn run(State(d): State<Arc<Daemon>>, axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /v1/runs/{id}", &headers) {
        return r;
    }
    match d.runs.get(&id) {
        Some(r) => axum::Json(r).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no run {id:?} (run IDs are per daemon process; only the last {KEPT_RUNS} are kept)\n"),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    job: Option<String>,
    limit: Option<usize>,
}

/// GET /v1/runs[?job=NAME&limit=N]: recent runs, newest first.
async fn runs(State(d): State<Arc<Daemon>>, axum::extract::Query(q): axum::extract::Query<RunsQuery>, headers: HeaderMap) -> Response {
    if let Some(r) = d.check_auth("GET /v1/runs", &headers) {
        return r;
    }
    axum::Json(d.runs.recent(q.job.as_deref(), q.limit.unwrap_or(50))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
