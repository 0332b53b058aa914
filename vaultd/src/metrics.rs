//! The Prometheus text of GET /metrics (every name starts with `vault_`).

use std::collections::BTreeMap;

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
}
