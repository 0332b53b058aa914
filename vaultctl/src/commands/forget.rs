//! `vaultctl forget --dry-run [--json] [--keep-* ...] [--job J] [--group G] [--timezone TZ]`:
//! what a retention policy keeps and removes, per group, with every reason. Reads metadata only
//! (writer key or identity), and the holds stored in the vault (`vaultctl hold`). Applying the plan (tombstones) is not built yet.
//! Without keep flags, each job's newest policy recorded in the vault by vaultd applies to its
//! groups (`policies/`, docs/FORMAT.md section 8c).

use chrono::SecondsFormat;
use vault::ops::retention::{self, Decision, RetentionPlan, RetentionPolicy, Scope, Span, holds, policy_records};
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Show the plan and change nothing (required for now: applying retention is not built yet).
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Only the groups of this job.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// Only this group: `host:NAME/JOB`, `cluster:ID/JOB`, or a host name or cluster ID.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

/// The policy as flags (the same fields as `RetentionPolicy` in vaultd's config).
#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots of each group.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// ... of each of the N newest days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// ... of each of the N newest ISO weeks.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// ... of each of the N newest months.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// ... of each of the N newest years.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this (30d, 2y6m, 12h; counted back from now).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour younger than this.
    #[arg(long, value_name = "DURATION")]
    keep_within_hourly: Option<Span>,
    /// ... of each day younger than this.
    #[arg(long, value_name = "DURATION")]
    keep_within_daily: Option<Span>,
    /// ... of each week younger than this.
    #[arg(long, value_name = "DURATION")]
    keep_within_weekly: Option<Span>,
    /// ... of each month younger than this.
    #[arg(long, value_name = "DURATION")]
    keep_within_monthly: Option<Span>,
    /// ... of each year younger than this.
    #[arg(long, value_name = "DURATION")]
    keep_within_yearly: Option<Span>,
    /// Keep snapshots with this tag: KEY, KEY=VALUE, or several joined with commas (all must
    /// match). Repeat for alternatives.
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// The IANA time zone days, weeks, months and years are cut in (default UTC).
    #[arg(long, value_name = "ZONE")]
    timezone: Option<String>,
    /// A snapshot dated further ahead than this is set aside (default 5min).
    #[arg(long, value_name = "DURATION")]
    future_tolerance: Option<Span>,
    /// Removing more than this percentage of a group needs --confirm (default 50).
    #[arg(long, value_name = "PERCENT")]
    max_remove_percent: Option<u8>,
}

impl PolicyArgs {
    fn policy(self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tags,
            timezone: self.timezone,
            future_tolerance: self.future_tolerance,
            max_remove_percent: self.max_remove_percent,
        }
    }
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    if !a.dry_run {
        return Err(Error::usage(
            "forget without --dry-run would apply the retention plan, and applying retention (tombstones) is not built yet",
        )
        .hint("run `vaultctl forget --dry-run` with the same flags to see what the policy keeps and removes, and why"));
    }
    let policy = a.policy.policy();
    let recorded = !policy.keeps_something();
    // Refuse a policy that keeps nothing, or a bad zone, before opening the vault.
    if !recorded {
        policy.check()?;
    }
    let scope = Scope {
        job: a.job,
        group: a.group,
    };
    let vault = c.vault().await?;
    let catalog = c.catalog(&vault).await?;
    let snapshots = catalog.snapshots()?;
    let now = chrono::Utc::now();
    let events = holds::read_events(&vault).await?;
    for e in events.iter().filter(|e| e.unreadable.is_some()) {
        eprintln!(
            "vaultctl: warning: DAMAGED hold event {} counted as a hold of {} (see `vaultctl holds --all`)",
            e.name,
            e.event.snapshot.short()
        );
    }
    let plan_holds = holds::plan_holds(&events, now);
    if !recorded {
        let plan = retention::plan_retention(&snapshots, &policy, now, &plan_holds)?.restrict(&scope)?;
        if c.json {
            output::json(&plan);
        } else {
            print_plan(&plan);
        }
        return Ok(0);
    }
    let plans = recorded_plans(&vault, &snapshots, &scope, now, &plan_holds).await?;
    if plans.iter().all(|p| p.plan.is_none()) {
        return Err(Error::usage(
            "no keep flags given and no job in scope has a retention policy recorded in the vault: the retention policy keeps nothing",
        )
        .hint("give at least one rule: --keep-last N, --keep-daily N (hourly, weekly, monthly, yearly), --keep-within 30d, --keep-within-daily 90d or --keep-tag T; or set [job.retention] in vaultd's config (vaultd records it)"));
    }
    if c.json {
        output::json(&serde_json::json!({ "policies": "recorded", "plans": plans }));
    } else {
        println!("no keep flags given: each job's newest retention policy recorded in the vault applies (vaultd records them)");
        for p in &plans {
            println!();
            println!("== job {}", p.job);
            match &p.plan {
                Some(plan) => print_plan(plan),
                None => println!("{}", p.note),
            }
        }
        if plans.is_empty() {
            println!("no snapshot group in scope");
        }
    }
    Ok(0)
}

/// One job's plan under its recorded policy (`None` when it has none, `note` saying so).
#[derive(serde::Serialize)]
struct JobPlan {
    job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<RetentionPlan>,
    #[serde(skip_serializing_if = "String::is_empty")]
    note: String,
}

async fn recorded_plans(
    vault: &vault::repo::Vault,
    snapshots: &[vault::catalog::SnapshotEntry],
    scope: &Scope,
    now: chrono::DateTime<chrono::Utc>,
    plan_holds: &[retention::Hold],
) -> Result<Vec<JobPlan>> {
    let (records, unreadable) = policy_records::read_all(vault).await?;
    for u in &unreadable {
        eprintln!("vaultctl: warning: unreadable policy record {u}");
    }
    scope.check(
        snapshots
            .iter()
            .map(|s| retention::Group::of(&s.manifest))
            .collect::<Vec<_>>()
            .iter(),
    )?;
    let mut jobs: Vec<&str> = snapshots.iter().map(|s| s.manifest.job.as_str()).collect();
    jobs.sort();
    jobs.dedup();
    let mut out = Vec::new();
    for job in jobs {
        let covered = snapshots
            .iter()
            .any(|s| s.manifest.job == job && scope.covers(&retention::Group::of(&s.manifest)));
        if !covered {
            continue;
        }
        let newest = policy_records::in_force(&records, job, None, now);
        let Some(policy) = newest.and_then(|r| r.record.retention.clone()) else {
            out.push(JobPlan {
                job: job.to_string(),
                plan: None,
                note: match newest {
                    None => "no policy recorded for this job: every snapshot is kept (give --keep-* flags to plan anyway)".into(),
                    Some(_) => "the recorded policy has no retention: every snapshot is kept".into(),
                },
            });
            continue;
        };
        let job_scope = Scope {
            job: Some(job.to_string()),
            group: scope.group.clone(),
        };
        // Planned over every snapshot (so that holds are matched), then cut to this job's groups.
        let mut plan = retention::plan_retention(snapshots, &policy, now, plan_holds)?;
        plan.groups.retain(|g| job_scope.covers(&g.group));
        plan.needs_confirm = plan.groups.iter().any(|g| g.needs_confirm);
        out.push(JobPlan {
            job: job.to_string(),
            plan: Some(plan),
            note: String::new(),
        });
    }
    Ok(out)
}

fn print_plan(plan: &RetentionPlan) {
    println!(
        "retention plan (dry run, nothing changed) at {}: {}",
        plan.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        plan.policy.describe()
    );
    for g in &plan.groups {
        println!();
        println!("group {}", g.group);
        println!("  {:<8}  {:<20}  {:<16}  {:<6}  reasons", "id", "time", "host", "action");
        for s in &g.snapshots {
            let action = match (s.decision, s.future) {
                (Decision::Keep, true) => "aside",
                (Decision::Keep, false) => "keep",
                (Decision::Remove, _) => "remove",
            };
            println!(
                "  {:<8}  {:<20}  {:<16}  {:<6}  {}",
                s.id.short(),
                s.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                s.host,
                action,
                s.reasons_text()
            );
        }
    }
    println!();
    println!("summary:");
    for g in &plan.groups {
        let newest = g
            .newest
            .map_or_else(|| "none".to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
        let aside = if g.set_aside > 0 {
            format!(", {} dated in the future set aside", g.set_aside)
        } else {
            String::new()
        };
        let confirm = if g.needs_confirm { "  NEEDS --confirm" } else { "" };
        println!(
            "  {}: keep {}, remove {} of {}{aside}; newest {newest}{confirm}",
            g.group,
            g.keep,
            g.remove,
            g.snapshots.len()
        );
    }
    for n in &plan.notes {
        println!("note: {n}");
    }
    if plan.needs_confirm {
        println!(
            "note: a group marked NEEDS --confirm would lose more than {}% of its snapshots; applying this plan will ask for --confirm",
            plan.policy.max_remove_percent()
        );
    }
}
