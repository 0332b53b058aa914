//! The optional `[webhook]`: a JSON POST when a run fails (failure, timeout), when a job
//! succeeds again after failing ("recovery"), when a cluster-wide slot passed with no snapshot
//! ("missed", sent by one daemon) and when another daemon claims slots under this one's host name
//! ("duplicate-host"), and when a delta chain broke at etcd's compaction ("deltas-compacted", with
//! the full snapshot taken for it). Delivery is in the background with a few attempts;
//! it never delays or fails a run. The URL may hold a secret (chat webhooks put one in the path),
//! so logs name only its host.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runs::RunRecord;

pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Delivery attempts per event.
pub const ATTEMPTS: u32 = 3;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http:// or https:// URL to POST events to.
    pub url: String,
    /// File holding a bearer token to send (mode 0600).
    pub token_file: Option<PathBuf>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A run failed or timed out.
    Failure,
    /// The first success after one or more failed runs.
    Recovery,
    /// A slot of a cluster-wide job passed with no snapshot (its claimant died, or its lease
    /// outlived the slot); one daemon sends it.
    Missed,
    /// Another daemon (another daemon ID) claimed a slot under this daemon's host name.
    DuplicateHost,
    /// The delta watch fell behind etcd's compaction: changes were lost before they were
    /// captured, the chain ended, and a full snapshot was taken at once (the run in the body).
    DeltasCompacted,
}

/// The JSON body of one event.
#[derive(Clone, Debug, Serialize)]
pub struct Body {
    pub event: Event,
    pub job: String,
    pub host: String,
    /// The vault's ID (hex).
    pub vault: String,
    /// Failed runs in a row (for a recovery: how many preceded it).
    pub consecutive_failures: u32,
    /// Unix time of the job's last success on this daemon, if any.
    pub last_success: Option<f64>,
    pub run: RunRecord,
}

/// A configured webhook, ready to send.
#[derive(Clone)]
pub struct Webhook {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The host part of a URL, for logs.
pub fn url_host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "<invalid url>".into())
}

impl Webhook {
    pub fn new(cfg: &WebhookConfig) -> vault::Result<Webhook> {
        let token = cfg
            .token_file
            .as_ref()
            .map(|p| crate::config::read_token(p, "webhook token file"))
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .build()
            .map_err(|e| vault::Error::io("cannot build the webhook's HTTP client").with_source(e))?;
        Ok(Webhook {
            url: cfg.url.clone(),
            token,
            http,
        })
    }

    /// POST the event, trying up to [`ATTEMPTS`] times; returns whether it was delivered (a 2xx).
    pub async fn deliver(&self, body: &Body) -> bool {
        let target = url_host(&self.url);
        for attempt in 1..=ATTEMPTS {
            let mut req = self.http.post(&self.url).json(body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!("webhook: {:?} event of job {} delivered to {target}", body.event, body.job);
                    return true;
                }
                Ok(r) => format!("it answered {}", r.status()),
                // Without the URL: reqwest's error text includes it.
                Err(e) => format!("{}", e.without_url()),
            };
            tracing::warn!(
                "webhook: attempt {attempt} of {ATTEMPTS} to deliver the {:?} event of job {} to {target} failed: {why}",
                body.event,
                body.job
            );
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
        false
    }

    /// Deliver in the background.
    pub fn send(&self, body: Body) {
        let hook = self.clone();
        tokio::spawn(async move { hook.deliver(&body).await });
    }
}
