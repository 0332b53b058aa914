//! `vaultctl etcd restore --revision REV | --at TIME [--up-to-last-whole] ...`: the newest etcd-v3
//! snapshot before the target with its delta segments replayed up to it.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use vault::ops::deltas::replay::{ReplayOptions, StopAt};
use vault::ops::deltas::restore::{PointInTimeReport, Replayed, plan, restore_to_point};
use vault::ops::deltas::target::{Plan, Target, TargetQuery};
use vault::{Error, Result};

use super::etcd::RestoreArgs;
use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct PointArgs {
    /// Restore the cluster as it was at this revision (replaying delta segments).
    #[arg(long, conflicts_with = "at")]
    pub revision: Option<i64>,
    /// Restore the cluster as it was at this time (RFC 3339): up to the last change received at
    /// or before it.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// When a segment needed for the target is missing or damaged, restore up to the last whole
    /// point before it instead of refusing.
    #[arg(long)]
    pub up_to_last_whole: bool,
    /// Only chains of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only chains of this etcd cluster (hex id as `snapshots --json` shows).
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The etcd binary to replay with (default: etcd on PATH, then /usr/bin/etcd).
    #[arg(long)]
    pub etcd_binary: Option<PathBuf>,
    /// Print the plan and restore nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.to_utc())
        .map_err(|_| Error::usage(format!("{flag} {text:?} is not a time")).hint("give an RFC 3339 time, e.g. 2026-11-30T14:02:37Z"))
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub async fn run(c: &Common, a: RestoreArgs) -> Result<i32> {
    let p = &a.point;
    let target = match (p.revision, &p.at) {
        (Some(r), _) => Target::Revision(r),
        (None, Some(t)) => Target::Time(parse_time("--at", t)?),
        (None, None) => return Err(Error::usage("etcd restore needs a snapshot ID, --revision or --at")),
    };
    let q = TargetQuery {
        job: p.job.clone(),
        cluster_id: p.cluster_id.clone(),
        up_to_last_whole: p.up_to_last_whole,
    };
    let (vault, catalog) = c.restorer("etcd restore").await?;
    if p.dry_run {
        let plan = plan(&vault, &catalog, target, &q).await?;
        if c.json {
            output::json(&plan);
        } else {
            print_plan(&plan);
        }
        return Ok(0);
    }
    let pb = output::progress(c.json, None, "fetch base snapshot");
    let opts = a.options(output::progress_fn(&pb));
    let replay = ReplayOptions {
        etcd_binary: p.etcd_binary.clone(),
        tool: opts.tool.clone(),
    };
    // An interrupt drops the restore: its temporary etcd is stopped and its staging removed.
    let report = tokio::select! {
        r = restore_to_point(&vault, &catalog, target, &q, &opts, &replay) => r,
        signal = interrupted() => Err(Error::io(format!(
            "interrupted by {signal}: the temporary etcd was stopped and the staging directory removed; the data dir was not touched"
        ))),
    };
    output::finish(pb);
    let report = report?;
    if c.json {
        output::json(&report);
    } else {
        print_report(&report, &opts.name);
    }
    Ok(0)
}

pub fn print_plan(plan: &Plan) {
    let b = &plan.base;
    println!(
        "base: snapshot {} of job {} (cluster {}), revision {}, taken {}",
        b.id.short(),
        b.job,
        b.cluster_id,
        b.revision,
        ts(&b.time)
    );
    match (plan.segments.first(), plan.segments.last()) {
        (Some(f), Some(l)) => println!(
            "deltas: {} segment(s), seq {}..={} (revisions {}..={}), up to {} events, {} bytes to fetch",
            plan.segments.len(),
            f.seq,
            l.seq,
            f.first_revision,
            l.last_revision,
            plan.events,
            plan.bytes
        ),
        _ => println!("deltas: none needed"),
    }
    match plan.stop {
        StopAt::Revision(r) => println!("target: revision {r}"),
        StopAt::ReceivedBy(ms) => println!(
            "target: the last change received at or before {}",
            DateTime::from_timestamp_millis(ms).map(|t| ts(&t)).unwrap_or_default()
        ),
    }
    if plan.cut_to_last_whole {
        println!(
            "cut to the last whole point (revision {}, {}) because {}",
            plan.last_whole_revision,
            ts(&plan.last_whole_time),
            plan.problem.as_deref().unwrap_or("the chain is broken")
        );
    }
    for w in &plan.warnings {
        eprintln!("vaultctl: warning: {w}");
    }
}

fn print_report(report: &PointInTimeReport, name: &str) {
    let r = &report.replayed;
    print_replayed(r);
    let restore = &report.restore;
    if let Some(old) = &restore.moved_aside {
        println!("existing data dir {} moved aside to {}", restore.data_dir.display(), old.display());
    }
    println!(
        "restored into {} with {}{}",
        restore.data_dir.display(),
        restore.tool,
        restore.owner.as_ref().map(|o| format!(", owned by {o}")).unwrap_or_default()
    );
    println!("next: start etcd with --name {name} --data-dir {}", restore.data_dir.display());
}

/// The plan followed and what the replay reached.
pub fn print_replayed(r: &Replayed) {
    print_plan(&r.plan);
    for b in &r.bases_past_target {
        println!("skipped: {b}");
    }
    if let Some(why) = &r.stopped_early {
        println!("stopped at the last whole segment: {why}");
    }
    println!(
        "reached revision {} (its change received {}): base at revision {} + {} revision(s), {} event(s) replayed",
        r.revision,
        ts(&r.time),
        r.base_revision,
        r.groups_applied,
        r.events_applied
    );
}

/// SIGINT or SIGTERM (never, when the handlers cannot be installed).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
