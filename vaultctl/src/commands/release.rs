//! `vaultctl release ID --reason TEXT`: end a snapshot's hold by storing a release event (the hold
//! event stays in the vault; docs/FORMAT.md section 8a). Writer key or identity.

use vault::Result;
use vault::format::HoldAction;
use vault::ops::retention::holds::{self, HoldRequest};

use crate::commands::holds::print_event;
use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The held snapshot: its ID or a unique prefix of at least 6 hex digits.
    id: String,
    /// Why the hold ends (kept in the vault with the release).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let catalog = c.catalog(&vault).await?;
    let req = HoldRequest {
        snapshot: a.id,
        action: HoldAction::Release,
        reason: a.reason,
        until: None,
        host: vault::ops::backup::hostname(),
    };
    let event = holds::record(&vault, &catalog, &req, chrono::Utc::now()).await?;
    if c.json {
        output::json(&event);
    } else {
        print_event(&event);
    }
    Ok(0)
}
