//! The Prometheus text of GET /metrics (every name starts with `vault_`).

use std::collections::BTreeMap;

/// What /metrics reports about one job.
#[derive(Clone, Debug, Default)]
pub struct JobStats {
    pub last_attempt: Option<f64>,
    pub last_success: Option<f64>,
    pub last_duration: Option<f64>,
    /// The job's newest snapshot in the vault (any host for a cluster-wide job).
    pub last_snapshot: Option<f64>,
    pub running: bool,
    /// run state ("success", "failure", ...) -> count
    pub outcomes: BTreeMap<&'static str, u64>,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    /// Bytes (read, new, stored) of the last successful run.
    pub last_bytes: Option<(u64, u64, u64)>,
    /// Attempts tried again after a transient error.
    pub retries: u64,
    /// Failed or timed-out runs since the last success.
    pub consecutive_failures: u32,
    /// Slots of a cluster-wide job taken over from a claimant whose lease ran out.
    pub takeovers: u64,
    /// Slots of a cluster-wide job this daemon found passed with no snapshot (and closed).
    pub missed_slots: u64,
    /// Slots claimed by another daemon under this daemon's host name.
    pub duplicate_host_claims: u64,
    /// Snapshots the job's retention policy forgot after its runs.
    pub retention_forgotten: u64,
    /// Groups the last retention left alone because they need `--confirm`.
    pub retention_groups_need_confirm: u64,
    /// Times applying the retention policy failed.
    pub retention_failures: u64,
    /// The job's delta watcher (continuous capture), when the job has it.
    pub deltas: Option<DeltaStats>,
}

/// What /metrics reports about a job's delta watcher on this daemon.
#[derive(Clone, Debug, Default)]
pub struct DeltaStats {
    /// "holding", "standby" or "waiting" (holding with no base to extend).
    pub state: &'static str,
    /// The newest time everything etcd had was committed (Unix time): the recovery point.
    pub covered_until: Option<f64>,
    /// When the newest committed change was received (Unix time).
    pub newest_event: Option<f64>,
    /// Revisions etcd's head was ahead of the watch when last reported.
    pub lag_revisions: i64,
    pub segments: u64,
    /// Encoded and stored bytes of the last segment.
    pub last_segment_bytes: Option<(u64, u64)>,
    pub stream_bytes: u64,
    pub stored_bytes: u64,
    /// Chain ends by reason (superseded, compacted, cluster-changed) and lost races.
    pub chain_breaks: BTreeMap<String, u64>,
}

/// What /metrics reports about the vault as a whole: the catalog's summary and when it was taken.
#[derive(Clone, Debug)]
pub struct VaultStats {
    pub taken: chrono::DateTime<chrono::Utc>,
    pub summary: vault::catalog::CatalogSummary,
}

impl VaultStats {
    pub fn from_catalog(cat: &vault::catalog::Catalog) -> vault::Result<VaultStats> {
        Ok(VaultStats {
            taken: chrono::Utc::now(),
            summary: cat.summary()?,
        })
    }
}

/// Unix time with milliseconds, as the metrics give times.
pub(crate) fn unix_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A sample value as Prometheus writes it (`+Inf`, not Rust's `inf`).
fn num(v: f64) -> String {
    match v {
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v if v.is_nan() => "NaN".into(),
        v => v.to_string(),
    }
}

/// A label value as the text format needs it: job names in the vault come from any writer
/// (`vaultctl backup --job` takes anything), and one bad line would break every scrape.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A ratio, or `None` when the divisor is zero.
fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Prometheus text format.
pub fn render_metrics(stats: &BTreeMap<String, JobStats>, vault: Option<&VaultStats>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: &dyn Fn(&JobStats) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (job, s) in stats {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {}", label(job), num(v));
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
        "When the job's last successful run on this daemon ended (Unix time).",
        "gauge",
        &|s| s.last_success,
    );
    gauge(
        "vault_job_last_snapshot_timestamp_seconds",
        "The job's newest snapshot in the vault, from any daemon for a cluster-wide job (Unix time); alert on this one.",
        "gauge",
        &|s| s.last_snapshot,
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
        "vault_job_consecutive_failures",
        "Failed or timed-out runs since the job's last success.",
        "gauge",
        &|s| Some(f64::from(s.consecutive_failures)),
    );
    gauge(
        "vault_job_slot_takeovers_total",
        "Slots of the cluster-wide job this daemon took over from a claimant whose lease ran out.",
        "counter",
        &|s| Some(s.takeovers as f64),
    );
    gauge(
        "vault_job_missed_slots_total",
        "Slots of the cluster-wide job this daemon found passed with no snapshot (it sent the \"missed\" webhook).",
        "counter",
        &|s| Some(s.missed_slots as f64),
    );
    gauge(
        "vault_job_duplicate_host_claims_total",
        "Slots claimed by another daemon under this daemon's host name (two daemons run as one host: fix their `host`).",
        "counter",
        &|s| Some(s.duplicate_host_claims as f64),
    );
    gauge(
        "vault_job_retention_forgotten_total",
        "Snapshots the job's retention policy forgot after its runs (prune deletes their data).",
        "counter",
        &|s| Some(s.retention_forgotten as f64),
    );
    gauge(
        "vault_job_retention_groups_need_confirm",
        "Groups the job's last retention left alone: the policy would remove more than its share (vaultctl forget --confirm).",
        "gauge",
        &|s| Some(s.retention_groups_need_confirm as f64),
    );
    gauge(
        "vault_job_retention_failures_total",
        "Times applying the job's retention policy after a run failed (see the log).",
        "counter",
        &|s| Some(s.retention_failures as f64),
    );
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
        "vault_job_last_dedup_ratio",
        "Bytes read / bytes new in the job's last successful run (higher: more was already in the vault; +Inf when nothing was new).",
        "gauge",
        &|s| s.last_bytes.map(|(r, n, _)| ratio(r, n).unwrap_or(f64::INFINITY)),
    );
    gauge(
        "vault_job_last_compression_ratio",
        "Bytes new / bytes stored in the job's last successful run (absent when nothing was new).",
        "gauge",
        &|s| s.last_bytes.and_then(|(_, n, st)| ratio(n, st)),
    );
    gauge(
        "vault_job_retries_total",
        "Attempts tried again after a transient error.",
        "counter",
        &|s| Some(s.retries as f64),
    );
    let now = unix_seconds(chrono::Utc::now());
    fn d<'a>(f: &'a dyn Fn(&DeltaStats) -> Option<f64>) -> impl Fn(&JobStats) -> Option<f64> + 'a {
        move |s| s.deltas.as_ref().and_then(f)
    }
    gauge(
        "vault_etcd_deltas_recovery_point_seconds",
        "Seconds since the newest time every change etcd had was committed as delta segments (the recovery point; alert on it).",
        "gauge",
        &d(&|x| x.covered_until.map(|t| (now - t).max(0.0))),
    );
    gauge(
        "vault_etcd_deltas_newest_event_age_seconds",
        "Seconds since the newest committed change was received (grows on an idle cluster; see the recovery point).",
        "gauge",
        &d(&|x| x.newest_event.map(|t| (now - t).max(0.0))),
    );
    gauge(
        "vault_etcd_deltas_lag_revisions",
        "Revisions etcd's head was ahead of the delta watch when last reported.",
        "gauge",
        &d(&|x| (x.state == "holding").then_some(x.lag_revisions as f64)),
    );
    gauge(
        "vault_etcd_deltas_segments_total",
        "Delta segments this daemon committed.",
        "counter",
        &d(&|x| Some(x.segments as f64)),
    );
    let _ = writeln!(
        out,
        "# HELP vault_etcd_deltas_segment_bytes Bytes of the last delta segment: its encoded changes (stream) and what was stored for them (stored).\n# TYPE vault_etcd_deltas_segment_bytes gauge"
    );
    for (job, s) in stats {
        if let Some((stream, stored)) = s.deltas.as_ref().and_then(|x| x.last_segment_bytes) {
            let _ = writeln!(
                out,
                "vault_etcd_deltas_segment_bytes{{job=\"{}\",kind=\"stream\"}} {stream}",
                label(job)
            );
            let _ = writeln!(
                out,
                "vault_etcd_deltas_segment_bytes{{job=\"{}\",kind=\"stored\"}} {stored}",
                label(job)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_etcd_deltas_bytes_total Bytes of all delta segments this daemon committed: encoded (stream) and stored.\n# TYPE vault_etcd_deltas_bytes_total counter"
    );
    for (job, s) in stats {
        if let Some(x) = &s.deltas {
            let _ = writeln!(
                out,
                "vault_etcd_deltas_bytes_total{{job=\"{}\",kind=\"stream\"}} {}",
                label(job),
                x.stream_bytes
            );
            let _ = writeln!(
                out,
                "vault_etcd_deltas_bytes_total{{job=\"{}\",kind=\"stored\"}} {}",
                label(job),
                x.stored_bytes
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_etcd_deltas_chain_breaks_total Delta chains this daemon ended, by reason (compacted: changes were lost before they were captured).\n# TYPE vault_etcd_deltas_chain_breaks_total counter"
    );
    for (job, s) in stats {
        if let Some(x) = &s.deltas {
            for reason in ["compacted", "superseded", "cluster-changed", "lost-race"] {
                let n = x.chain_breaks.get(reason).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "vault_etcd_deltas_chain_breaks_total{{job=\"{}\",reason=\"{reason}\"}} {n}",
                    label(job)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_etcd_deltas_watcher 1 for the delta watcher's state on this daemon (holding: it watches; standby: another daemon does; waiting: it holds the lock but has no snapshot to extend).\n# TYPE vault_etcd_deltas_watcher gauge"
    );
    for (job, s) in stats {
        if let Some(x) = &s.deltas {
            for state in ["holding", "standby", "waiting"] {
                let v = u8::from(x.state == state);
                let _ = writeln!(out, "vault_etcd_deltas_watcher{{job=\"{}\",state=\"{state}\"}} {v}", label(job));
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP vault_job_runs_total Finished runs by outcome (skipped: a cluster-wide slot another daemon claimed).\n# TYPE vault_job_runs_total counter"
    );
    for (job, s) in stats {
        for state in crate::runs::RunState::FINISHED {
            let outcome = state.as_str();
            let n = s.outcomes.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "vault_job_runs_total{{job=\"{}\",outcome=\"{outcome}\"}} {n}", label(job));
        }
    }
    if let Some(v) = vault {
        let s = &v.summary;
        let mut one = |name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", num(value));
        };
        one(
            "vault_repository_size_bytes",
            "Bytes of all packs in the vault (data and trees).",
            s.pack_bytes as f64,
        );
        one("vault_repository_packs", "Packs in the vault.", s.packs as f64);
        one(
            "vault_repository_logical_bytes",
            "Sum of the source sizes of all snapshots in the vault.",
            s.logical_bytes as f64,
        );
        if let Some(r) = ratio(s.logical_bytes, s.pack_bytes) {
            one(
                "vault_repository_space_ratio",
                "Logical bytes of all snapshots / bytes stored (deduplication and compression together).",
                r,
            );
        }
        one(
            "vault_repository_stats_timestamp_seconds",
            "When the vault figures were last taken from the catalog (Unix time).",
            unix_seconds(v.taken),
        );
        if let Some((t, ok)) = s.last_verification {
            one(
                "vault_verification_last_timestamp_seconds",
                "The newest verification recorded in the catalog (Unix time).",
                unix_seconds(t),
            );
            one(
                "vault_verification_last_ok",
                "1 if the newest verification found no damage.",
                if ok { 1.0 } else { 0.0 },
            );
        }
        let _ = writeln!(
            out,
            "# HELP vault_snapshots Snapshots in the vault by job.\n# TYPE vault_snapshots gauge"
        );
        for (job, n) in &s.snapshots {
            let _ = writeln!(out, "vault_snapshots{{job=\"{}\"}} {n}", label(job));
        }
        let _ = writeln!(
            out,
            "# HELP vault_snapshots_by_verification Snapshots by their last verification (ok, damaged, unverified).\n# TYPE vault_snapshots_by_verification gauge"
        );
        for (state, n) in [("damaged", s.damaged), ("ok", s.verified_ok), ("unverified", s.unverified)] {
            let _ = writeln!(out, "vault_snapshots_by_verification{{state=\"{state}\"}} {n}");
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
        let text = render_metrics(&stats, None);
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
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("vault_")), "{text}");
        assert!(!text.contains("vault_etcd_deltas_watcher{"), "no job has deltas: {text}");
    }

    #[test]
    fn delta_metrics_give_the_recovery_point_and_the_watcher_state() {
        let now = unix_seconds(chrono::Utc::now());
        let mut stats = BTreeMap::new();
        let mut deltas = DeltaStats {
            state: "holding",
            covered_until: Some(now - 5.0),
            newest_event: Some(now - 60.0),
            lag_revisions: 3,
            segments: 4,
            last_segment_bytes: Some((1000, 400)),
            ..Default::default()
        };
        deltas.chain_breaks.insert("compacted".into(), 1);
        stats.insert(
            "etcd".to_string(),
            JobStats {
                deltas: Some(deltas),
                ..Default::default()
            },
        );
        let text = render_metrics(&stats, None);
        let value = |prefix: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let rpo = value("vault_etcd_deltas_recovery_point_seconds{job=\"etcd\"}");
        assert!((4.0..30.0).contains(&rpo), "{rpo}");
        assert!(value("vault_etcd_deltas_newest_event_age_seconds{job=\"etcd\"}") >= 59.0);
        assert_eq!(value("vault_etcd_deltas_lag_revisions{job=\"etcd\"}"), 3.0);
        assert_eq!(value("vault_etcd_deltas_segment_bytes{job=\"etcd\",kind=\"stored\"}"), 400.0);
        assert_eq!(
            value("vault_etcd_deltas_chain_breaks_total{job=\"etcd\",reason=\"compacted\"}"),
            1.0
        );
        assert_eq!(value("vault_etcd_deltas_watcher{job=\"etcd\",state=\"holding\"}"), 1.0);
        assert_eq!(value("vault_etcd_deltas_watcher{job=\"etcd\",state=\"standby\"}"), 0.0);
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("vault_")), "{text}");
    }
}
