//! `vaultctl hold ID --reason TEXT [--until TIME]`: keep a snapshot whatever the retention policy
//! says, by storing a hold event in the vault (docs/FORMAT.md section 8a). Writer key or identity.

use vault::Result;
use vault::format::HoldAction;
use vault::ops::retention::holds::{self, HoldRequest};

use crate::commands::holds::print_event;
use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The snapshot: its ID, a unique prefix of at least 6 hex digits, or `latest`.
    id: String,
    /// Why it is held (a change or ticket reference): shown by `holds` and as forget's reason.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// The hold ends by itself at this time: RFC 3339 (2027-01-31T00:00:00Z) or a duration from
    /// now (30d, 2w, 6m). Without it the hold lasts until `vaultctl release`.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let now = chrono::Utc::now();
    let until = a.until.as_deref().map(|u| holds::parse_until(u, now)).transpose()?;
    let vault = c.vault().await?;
    let catalog = c.catalog(&vault).await?;
    let req = HoldRequest {
        snapshot: a.id,
        action: HoldAction::Hold,
        reason: a.reason,
        until,
        host: vault::ops::backup::hostname(),
    };
    let event = holds::record(&vault, &catalog, &req, now).await?;
    if c.json {
        output::json(&event);
    } else {
        print_event(&event);
    }
    Ok(0)
}
