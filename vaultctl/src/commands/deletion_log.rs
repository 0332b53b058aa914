//! `vaultctl deletion-log [--json]`: every record of the deletion log (forget, undelete, prune:
//! which snapshots, when, by what, from which host, why) and the log's checks: records removed or
//! rewritten, and snapshots deleted outside policy. Exits 3 when a check finds something.

use chrono::SecondsFormat;
use serde::Serialize;
use vault::Result;
use vault::ops::retention::log::{self, DeletionLog, Finding};

use crate::context::Common;
use crate::output;

/// Exit code when the log's checks find tampering or a deletion outside policy.
pub const EXIT_FINDINGS: i32 = 3;

#[derive(clap::Args)]
pub struct Args {}

#[derive(Serialize)]
struct Report {
    log: DeletionLog,
    findings: Vec<Finding>,
}

pub async fn run(c: &Common, _a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let catalog = c.catalog(&vault).await?;
    let log = log::read(&vault).await?;
    let findings = log.check(&catalog.snapshots_without_streams()?, &catalog.vanished()?);
    let code = if findings.is_empty() { 0 } else { EXIT_FINDINGS };
    let report = Report { log, findings };
    if c.json {
        output::json(&report);
    } else {
        print(&report);
    }
    Ok(code)
}

fn print(r: &Report) {
    if r.log.records.is_empty() {
        println!("the deletion log is empty: nothing was ever forgotten or pruned");
    }
    for s in &r.log.records {
        let Some(rec) = &s.record else {
            println!("#{:<4} UNREADABLE {}: {}", s.seq, s.name, s.unreadable.as_deref().unwrap_or(""));
            continue;
        };
        println!(
            "#{:<4} {}  {:<8}  {} snapshot(s)  by {} on {}",
            rec.seq,
            rec.time.to_rfc3339_opts(SecondsFormat::Secs, true),
            format!("{:?}", rec.action).to_lowercase(),
            rec.entries.len(),
            rec.command,
            rec.host
        );
        for e in &rec.entries {
            println!(
                "      {}  {}  {}  {}",
                e.snapshot.short(),
                e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                e.group,
                e.reasons.join("; ")
            );
        }
    }
    if r.findings.is_empty() {
        println!("checks: the chain is whole and every snapshot gone from the vault has a record");
    } else {
        for f in &r.findings {
            println!("FOUND {}: {}", f.kind, f.detail);
        }
    }
}
