//! `vaultctl holds [--json] [--all]`: the active holds (each snapshot's latest event, when it is a
//! hold not past its `until`), or with `--all` every hold and release event stored in the vault.
//! Reads the events from the store (writer key or identity).

use chrono::SecondsFormat;
use vault::Result;
use vault::format::HoldAction;
use vault::ops::retention::holds::{self, StoredEvent};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Every hold and release event, oldest first, not only the active holds.
    #[arg(long)]
    all: bool,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let events = holds::read_events(&vault).await?;
    for e in &events {
        if let Some(why) = &e.unreadable {
            eprintln!(
                "vaultctl: warning: DAMAGED hold event {} (counted as a hold of {}): {why}",
                e.name,
                e.event.snapshot.short()
            );
        }
    }
    let shown: Vec<StoredEvent> = if a.all {
        events
    } else {
        let now = chrono::Utc::now();
        holds::states(&events, now)
            .into_iter()
            .filter(|s| s.active)
            .map(|s| s.latest)
            .collect()
    };
    if c.json {
        output::json(&shown);
    } else if shown.is_empty() {
        println!("{}", if a.all { "no hold events" } else { "no active holds" });
    } else {
        for e in &shown {
            print_event(e);
        }
    }
    Ok(0)
}

/// One event on one line: `hold 4be1a2c3 until 2027-01-31T00:00:00Z (CHG-1234) by master-1 at ...`.
pub fn print_event(e: &StoredEvent) {
    let ev = &e.event;
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let what = match ev.action {
        HoldAction::Hold => format!(
            "hold    {} until {}",
            ev.snapshot.short(),
            ev.until.as_ref().map_or("released".into(), time)
        ),
        HoldAction::Release => format!("release {}", ev.snapshot.short()),
    };
    let by = if ev.host.is_empty() {
        String::new()
    } else {
        format!(" by {}", ev.host)
    };
    println!("{what} ({}){by} at {}", ev.reason, time(&ev.time));
}
