//! `vaultctl forget [--dry-run] [--confirm] [--json] [--keep-* ...] [--job J] [--group G]
//! [--timezone TZ]`: what a retention policy keeps and removes, per group, with every reason;
//! without `--dry-run` the removed snapshots are forgotten: one record in the deletion log (their
//! tombstones), undone by `vaultctl undelete` until `vaultctl prune` deletes their data. Metadata
//! only (writer key or identity), with the holds stored in the vault (`vaultctl hold`).
//! Without keep flags, each job's newest policy recorded in the vault by vaultd (`policies/`,
//! docs/FORMAT.md section 8c) applies to that job's groups, and the output says so.

use chrono::SecondsFormat;
use vault::catalog::Catalog;
use vault::ops::retention::forget::{self as forgetting, Actor, ForgetReport};
use vault::ops::retention::{Decision, Group, RetentionPlan, RetentionPolicy, Scope, Span, policy_records};
use vault::repo::Vault;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Show the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply a plan that removes more than --max-remove-percent of a group.
    #[arg(long)]
    confirm: bool,
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
    let policy = a.policy.policy();
    let scope = Scope {
        job: a.job,
        group: a.group,
    };
    if !policy.keeps_something() {
        return run_recorded(c, a.dry_run, a.confirm, &scope).await;
    }
    // Refuse a bad policy (a bad zone, ...) before opening the vault.
    policy.check()?;
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let report = plan_and_apply(&vault, &mut catalog, &policy, &scope, a.dry_run, a.confirm, chrono::Utc::now()).await?;
    if c.json {
        output::json(&report);
    } else {
        print_report(&report);
    }
    Ok(0)
}

/// Plan `policy` over `scope` (warning about damaged hold events) and, unless a dry run, apply it.
async fn plan_and_apply(
    vault: &Vault,
    catalog: &mut Catalog,
    policy: &RetentionPolicy,
    scope: &Scope,
    dry_run: bool,
    confirm: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ForgetReport> {
    let mut report = forgetting::plan(vault, catalog, policy, scope, now).await?;
    for d in &report.damaged_holds {
        eprintln!("vaultctl: warning: DAMAGED hold event {d} (see `vaultctl holds --all`)");
    }
    if !dry_run {
        let actor = Actor {
            host: vault::ops::backup::hostname(),
            command: "vaultctl forget".into(),
        };
        forgetting::apply(vault, catalog, &mut report, confirm, &actor, now).await?;
    }
    Ok(report)
}

/// One group's forget under its recorded policy.
#[derive(serde::Serialize)]
struct RecordedForget {
    job: String,
    group: String,
    /// The record the policy comes from (`policies/...`).
    policy_record: String,
    #[serde(flatten)]
    report: ForgetReport,
}

/// `forget` without keep flags: each group under the newest policy recorded for its job (for a
/// host's group, the newest that host recorded; another host's when it recorded none).
async fn run_recorded(c: &Common, dry_run: bool, confirm: bool, scope: &Scope) -> Result<i32> {
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let now = chrono::Utc::now();
    let (records, unreadable) = policy_records::read_all(&vault).await?;
    for u in &unreadable {
        eprintln!("vaultctl: warning: unreadable policy record {u}");
    }
    let mut groups: Vec<Group> = catalog
        .snapshots_without_streams()?
        .iter()
        .map(|s| Group::of(&s.manifest))
        .collect();
    scope.check(groups.iter())?;
    groups.sort();
    groups.dedup();
    let mut done = Vec::new();
    let mut without = std::collections::BTreeSet::new();
    for group in groups.iter().filter(|g| scope.covers(g)) {
        let record = policy_records::in_force(&records, &group.job, group.host(), now);
        let Some((record, policy)) = record.and_then(|r| r.record.retention.clone().map(|p| (r, p))) else {
            without.insert(group.job.clone());
            continue;
        };
        let group_scope = Scope {
            job: Some(group.job.clone()),
            group: Some(group.to_string()),
        };
        let report = plan_and_apply(&vault, &mut catalog, &policy, &group_scope, dry_run, confirm, now).await?;
        done.push(RecordedForget {
            job: group.job.clone(),
            group: group.to_string(),
            policy_record: record.name.clone(),
            report,
        });
    }
    if done.is_empty() {
        return Err(Error::usage(
            "no keep flags given and no group in scope has a retention policy recorded in the vault: the retention policy keeps nothing",
        )
        .hint("give at least one rule: --keep-last N, --keep-daily N (hourly, weekly, monthly, yearly), --keep-within 30d, --keep-within-daily 90d or --keep-tag T; or set [job.retention] in vaultd's config (vaultd records it in the vault)"));
    }
    let without: Vec<String> = without.into_iter().collect();
    if c.json {
        output::json(&serde_json::json!({ "policies": "recorded", "groups": done, "jobs_without_policy": without }));
    } else {
        println!("no keep flags given: each group's newest retention policy recorded in the vault applies (vaultd records them)");
        for d in &done {
            println!();
            println!("== group {} (recorded policy {})", d.group, d.policy_record);
            print_report(&d.report);
        }
        if !without.is_empty() {
            println!();
            println!(
                "jobs with groups but no recorded retention (every snapshot kept): {}",
                without.join(", ")
            );
        }
    }
    Ok(0)
}

fn print_report(report: &ForgetReport) {
    print_plan(&report.plan, report.applied);
    if report.already_forgotten > 0 {
        println!(
            "note: {} snapshot(s) forgotten earlier are not counted (`vaultctl deletion-log` lists them)",
            report.already_forgotten
        );
    }
    match (&report.record, report.applied) {
        (Some(r), _) => println!(
            "forgot {} snapshot(s): deletion-log record {} ({}); `vaultctl undelete ID --reason TEXT` brings one back until `vaultctl prune` deletes its data",
            report.plan.removed().count(),
            r.seq,
            r.name
        ),
        (None, true) => println!("nothing to forget"),
        (None, false) => {}
    }
}

fn print_plan(plan: &RetentionPlan, applied: bool) {
    println!(
        "retention plan{} at {}: {}",
        if applied { "" } else { " (dry run, nothing changed)" },
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
    if plan.needs_confirm && !applied {
        println!(
            "note: a group marked NEEDS --confirm would lose more than {}% of its snapshots; applying this plan needs --confirm",
            plan.policy.max_remove_percent()
        );
    }
}
