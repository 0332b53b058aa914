//! `vaultctl audit [--since TIME] [--job J] [--json|--csv|--html FILE]`: per job and group, the
//! slots the recorded schedule expected and what became of each, what the recorded retention
//! policy promised against what the vault holds, when each snapshot was last verified, and
//! controls with a status each. Exits 3 when a control is non-compliant (to gate a monitoring
//! check), 0 otherwise. Reads metadata only (writer key or identity).

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use vault::ops::audit::{self, AuditOptions, AuditReport, ControlStatus, Thresholds, render};
use vault::ops::retention::Span;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

/// The exit code when a control is non-compliant.
pub const NON_COMPLIANT_EXIT: i32 = 3;

#[derive(clap::Args)]
pub struct Args {
    /// Start of the window: an RFC 3339 time or a duration back from now (default 30d); never
    /// before a job's first policy record.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only this job.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// Write slots and controls as CSV rows to stdout.
    #[arg(long, conflicts_with = "html")]
    csv: bool,
    /// Write one self-contained HTML page to FILE (a calendar of slots, the controls, the
    /// deletion log section).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// minimum-frequency: each job's schedule expects a snapshot at least this often.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    max_interval: Span,
    /// minimum-retention: each job's retention policy keeps snapshots at least this long.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    min_retention: Span,
    /// recovery-point-age: each group's newest snapshot is at most this old (default: twice
    /// the job's expected interval; not judged for jobs with no recorded schedule).
    #[arg(long, value_name = "DURATION")]
    max_age: Option<Span>,
    /// verification: each group has a snapshot verified whole within this.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    verified_within: Span,
    /// schedule-adherence: missed slots allowed per group in the window.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_missed: usize,
    /// A snapshot later than this after its slot is late (default: 10min, at most half the
    /// schedule's interval).
    #[arg(long, value_name = "DURATION")]
    late_after: Option<Span>,
}

/// `--since`: an RFC 3339 time, or a span counted back from `now` (months as 30 days).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.to_utc());
    }
    let span: Span = text.parse().map_err(|_| {
        Error::usage(format!("--since {text:?} is neither a time nor a duration"))
            .hint("give an RFC 3339 time (2026-11-01T00:00:00Z) or a duration back from now (30d, 2w, 12h)")
    })?;
    Ok(now - span.approx())
}

fn delta(s: Span) -> TimeDelta {
    s.approx()
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let now = Utc::now();
    let opts = AuditOptions {
        since: a.since.as_deref().map(|s| parse_since(s, now)).transpose()?,
        job: a.job,
        thresholds: Thresholds {
            max_interval: delta(a.max_interval),
            min_retention: delta(a.min_retention),
            max_age: a.max_age.map(delta),
            verified_within: delta(a.verified_within),
            max_missed: a.max_missed,
            late_after: a.late_after.map(delta),
        },
        now,
    };
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let report = audit::run(&vault, &mut catalog, &opts).await?;
    for w in &report.warnings {
        eprintln!("vaultctl: warning: {w}");
    }
    if let Some(path) = &a.html {
        std::fs::write(path, render::html(&report))
            .map_err(|e| Error::io(format!("cannot write the audit page {}", path.display())).with_source(e))?;
    }
    if a.csv {
        print!("{}", render::csv(&report));
    } else if c.json {
        output::json(&report);
    } else {
        print_summary(&report);
        if let Some(path) = &a.html {
            println!("wrote {}", path.display());
        }
    }
    Ok(if report.compliant { 0 } else { NON_COMPLIANT_EXIT })
}

fn print_summary(r: &AuditReport) {
    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    println!("retention audit at {} for the window from {}", t(r.generated), t(r.since));
    for j in &r.jobs {
        println!();
        println!(
            "job {} ({}, scope {}): schedule {:?}{}",
            j.job,
            j.kind,
            j.scope,
            j.schedule,
            j.expected_interval_secs
                .map(|s| format!(", a snapshot every {s}s at most"))
                .unwrap_or_default()
        );
        for p in &j.policies {
            println!(
                "  policy from {} (recorded by {}): {:?}; retention {}",
                t(p.since),
                p.host,
                p.schedule,
                p.retention
            );
        }
        for g in &j.groups {
            let c = &g.counts;
            println!(
                "  group {}: {} slot(s): {} taken, {} late, {} covered, {} missed; newest {}",
                g.group,
                c.expected,
                c.taken,
                c.late,
                c.covered,
                c.missed,
                g.newest.map_or_else(|| "none".to_string(), t)
            );
            for s in g.slots.iter().filter(|s| s.status == audit::SlotStatus::Missed).take(10) {
                println!("    missed {}", t(s.slot));
            }
            for rc in &g.retention {
                println!(
                    "    retention {}: {} of {} promised held ({}){}",
                    rc.rule,
                    rc.held,
                    rc.promised,
                    rc.status.as_str(),
                    if rc.shortfall.is_empty() {
                        String::new()
                    } else {
                        format!("; none held for {}", rc.shortfall.join(", "))
                    }
                );
            }
        }
    }
    println!();
    println!("controls:");
    for c in &r.controls {
        let mark = match c.status {
            ControlStatus::Compliant => "ok  ",
            ControlStatus::NonCompliant => "FAIL",
            ControlStatus::InsufficientData => "n/a ",
        };
        println!("  {mark} {:<19} {:<32} {}", c.control, c.resource, c.detail);
    }
    println!();
    println!("deletion log: {}", r.deletion_log.note);
    for f in &r.deletion_log.findings {
        println!("  FOUND {}: {}", f.kind, f.detail);
    }
    println!(
        "{}",
        if r.compliant {
            "all controls compliant"
        } else {
            "NON-COMPLIANT: at least one control failed"
        }
    );
}
