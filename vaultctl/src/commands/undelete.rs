//! `vaultctl undelete ID... --reason TEXT`: bring forgotten snapshots back (an `undelete` record
//! in the deletion log), until `vaultctl prune` deletes their data. Writer key or identity.

use vault::Result;
use vault::ops::retention::forget::{self, Actor};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Forgotten snapshots: IDs or unique prefixes of at least 6 hex digits.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Why they come back (kept in the deletion log).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let actor = Actor {
        host: vault::ops::backup::hostname(),
        command: "vaultctl undelete".into(),
    };
    let record = forget::undelete(&vault, &mut catalog, &a.ids, &a.reason, &actor, chrono::Utc::now()).await?;
    if c.json {
        output::json(&record);
    } else {
        let entries = record.record.as_ref().map_or(0, |r| r.entries.len());
        println!(
            "brought back {entries} snapshot(s): deletion-log record {} ({})",
            record.seq, record.name
        );
    }
    Ok(0)
}
