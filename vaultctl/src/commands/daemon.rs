//! `vaultctl status`, `vaultctl jobs`, `vaultctl run JOB [--wait]`: talk to a running vaultd over
//! its HTTP API. The address and token come from flags or from the daemon's config file.

use std::path::PathBuf;
use std::time::Duration;

use vault::{Error, ErrorKind, Result};

use crate::output;

/// Where the daemon is.
#[derive(clap::Args, Clone)]
pub struct DaemonArgs {
    /// The daemon's config file, to read [http] listen and token_file from.
    #[arg(long, env = "VAULTD_CONFIG", default_value = "/etc/vault/vaultd.toml")]
    daemon_config: PathBuf,
    /// The daemon's base URL (overrides the config), e.g. http://127.0.0.1:8765, or its unix
    /// socket, e.g. unix:/run/vaultd/api.sock.
    #[arg(long, env = "VAULTD_URL")]
    daemon_url: Option<String>,
    /// File holding the bearer token (overrides the config).
    #[arg(long, env = "VAULTD_TOKEN_FILE")]
    daemon_token_file: Option<PathBuf>,
}

struct Client {
    /// The URL requests go to (`http://localhost` over a unix socket).
    base: String,
    /// Where the daemon is, for messages: its URL or `unix:PATH`.
    shown: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DaemonArgs {
    fn client(&self) -> Result<Client> {
        let cfg: Option<toml::Table> = std::fs::read_to_string(&self.daemon_config).ok().and_then(|t| t.parse().ok());
        let http_section = cfg.as_ref().and_then(|c| c.get("http")).and_then(|h| h.as_table());
        let listen = http_section
            .and_then(|h| h.get("listen"))
            .and_then(|v| v.as_str())
            .unwrap_or("127.0.0.1:8765");
        let target = self.daemon_url.clone().unwrap_or_else(|| listen.to_string());
        let token_file = self.daemon_token_file.clone().or_else(|| {
            http_section
                .and_then(|h| h.get("token_file"))
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
        });
        let token = match token_file {
            Some(f) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| Error::key(format!("cannot read the daemon's token file {}", f.display())).with_source(e))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        // A unix socket (`unix:/run/vaultd/api.sock`): every request goes to it, so the URL's host
        // is only a placeholder.
        let (base, shown) = match target.strip_prefix("unix:") {
            Some(path) => {
                if !path.starts_with('/') {
                    return Err(Error::usage(format!(
                        "the daemon's address {target:?} is not a unix socket path like unix:/run/vaultd/api.sock"
                    )));
                }
                builder = builder.unix_socket(PathBuf::from(path));
                ("http://localhost".to_string(), target.clone())
            }
            None => {
                let url = if target.contains("://") {
                    target.trim_end_matches('/').to_string()
                } else {
                    format!("http://{target}")
                };
                (url.clone(), url)
            }
        };
        let http = builder
            .build()
            .map_err(|e| Error::io("cannot build an HTTP client").with_source(e))?;
        Ok(Client { base, shown, token, http })
    }
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<(u16, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            let hint = if self.shown.starts_with("unix:") {
                "is the daemon running? `systemctl status vaultd`; its socket is private (mode 0600): run this as the daemon's user; or pass --daemon-url / set VAULTD_URL"
            } else {
                "is the daemon running? `systemctl status vaultd`; or pass --daemon-url / set VAULTD_URL"
            };
            Error::new(ErrorKind::Io, format!("vaultd is not answering at {}", self.shown))
                .with_source(e)
                .hint(hint)
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match status {
            401 | 403 => Err(
                Error::key(format!("vaultd at {} refused the request ({status}): {}", self.shown, body.trim()))
                    .hint("pass the daemon's token with --daemon-token-file (or token_file in its config)"),
            ),
            _ => Ok((status, body)),
        }
    }

    async fn json(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.call(reqwest::Method::GET, path).await?;
        match status {
            200 => {}
            404 => return Err(Error::not_found(format!("vaultd: {}", body.trim())).hint("list the jobs with `vaultctl jobs`")),
            _ => return Err(Error::io(format!("vaultd answered {status} to GET {path}: {}", body.trim()))),
        }
        serde_json::from_str(&body).map_err(|e| Error::io(format!("vaultd sent malformed JSON for GET {path}")).with_source(e))
    }
}

fn ts(v: &serde_json::Value) -> String {
    v.as_f64()
        .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "never".into())
}

fn print_jobs(jobs: &[serde_json::Value]) {
    println!(
        "{:<20}  {:<8}  {:<7}  {:<16}  {:<20}  {:<20}  {:<20}  {:<20}  state",
        "job", "kind", "scope", "schedule", "last attempt", "last success here", "last snapshot", "next slot"
    );
    for j in jobs {
        let failing = j["consecutive_failures"].as_u64().unwrap_or(0);
        let state = match (j["running"].as_bool() == Some(true), failing) {
            (true, _) => "running".to_string(),
            (false, 0) => "idle".to_string(),
            (false, n) => format!("idle, {n} failure(s) in a row"),
        };
        println!(
            "{:<20}  {:<8}  {:<7}  {:<16}  {:<20}  {:<20}  {:<20}  {:<20}  {state}",
            j["name"].as_str().unwrap_or("?"),
            j["kind"].as_str().unwrap_or("?"),
            j["scope"].as_str().unwrap_or("?"),
            j["schedule"].as_str().unwrap_or("?"),
            ts(&j["last_attempt"]),
            ts(&j["last_success"]),
            ts(&j["last_snapshot"]),
            j["next_slot"].as_str().unwrap_or("-"),
        );
    }
}

/// `vaultctl status`: is the daemon alive and ready, and how are its jobs.
pub async fn status(json: bool, a: &DaemonArgs) -> Result<i32> {
    let c = a.client()?;
    let (alive, _) = c.call(reqwest::Method::GET, "/healthz").await?;
    let (ready, why) = c.call(reqwest::Method::GET, "/readyz").await?;
    let jobs = c.json("/v1/jobs").await?;
    if json {
        output::json(&serde_json::json!({ "url": c.shown, "alive": alive == 200, "ready": ready == 200, "jobs": jobs }));
    } else {
        println!(
            "vaultd at {}: {}, {}",
            c.shown,
            if alive == 200 { "alive" } else { "NOT alive" },
            if ready == 200 {
                "ready".to_string()
            } else {
                format!("NOT ready: {}", why.trim())
            }
        );
        print_jobs(jobs.as_array().map(Vec::as_slice).unwrap_or_default());
    }
    Ok(if ready == 200 { 0 } else { 1 })
}

/// `vaultctl jobs`
pub async fn jobs(json: bool, a: &DaemonArgs) -> Result<i32> {
    let jobs = a.client()?.json("/v1/jobs").await?;
    if json {
        output::json(&jobs);
    } else {
        print_jobs(jobs.as_array().map(Vec::as_slice).unwrap_or_default());
    }
    Ok(0)
}

/// `vaultctl run JOB [--wait]`: start a run; with `--wait`, follow it (GET /v1/runs/{id}) to its
/// end. Exit 0 on success, 1 when it failed, timed out, was skipped or abandoned.
pub async fn run(json: bool, a: &DaemonArgs, job: &str, wait: bool) -> Result<i32> {
    let c = a.client()?;
    let (status, body) = c.call(reqwest::Method::POST, &format!("/v1/jobs/{job}/run")).await?;
    match status {
        202 => {}
        404 => return Err(Error::not_found(format!("vaultd has no job {job:?}")).hint("list them with `vaultctl jobs`")),
        409 => return Err(Error::new(ErrorKind::AlreadyExists, format!("job {job:?} is already running"))),
        _ => return Err(Error::io(format!("vaultd answered {status}: {}", body.trim()))),
    }
    let started: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| Error::io(format!("vaultd sent malformed JSON for POST /v1/jobs/{job}/run")).with_source(e))?;
    let id = started["run"].as_str().unwrap_or_default().to_string();
    if !wait {
        if json {
            output::json(&started);
        } else {
            println!("job {job}: run {id} started");
        }
        return Ok(0);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let run = c.json(&format!("/v1/runs/{id}")).await?;
        let state = run["state"].as_str().unwrap_or("?");
        if state == "running" {
            continue;
        }
        if json {
            output::json(&run);
        } else {
            match state {
                "success" => match run["snapshot"].as_str() {
                    Some(snapshot) => println!(
                        "job {job}: run {id} succeeded: snapshot {snapshot} ({} bytes read, {} new, {} stored)",
                        run["bytes_read"], run["bytes_new"], run["bytes_stored"]
                    ),
                    // A verify job takes no snapshot.
                    None => println!("job {job}: run {id} succeeded ({} bytes read)", run["bytes_read"]),
                },
                _ => println!(
                    "job {job}: run {id} ended {}: {}",
                    state.to_uppercase(),
                    run["error"].as_str().unwrap_or("see the daemon's log")
                ),
            }
        }
        return Ok(if state == "success" { 0 } else { 1 });
    }
}
