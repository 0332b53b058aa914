//! Prune as the front ends run it: the forgotten set comes from the deletion log (its
//! tombstones), and the manifests prune deleted are appended to the log as one `prune` record.

use chrono::Utc;
use serde::Serialize;

use super::{PruneOptions, PruneReport, prune};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::format::LogAction;
use crate::ops::retention::log::{self, NewRecord};
use crate::repo::Vault;

/// A prune run and the deletion-log record that says what it deleted.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedPrune {
    #[serde(flatten)]
    pub report: PruneReport,
    /// Sequence number of the `prune` record appended (none when no manifest was deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_record: Option<u64>,
}

/// Run prune over the snapshots the deletion log has forgotten (`opts.forgotten` is replaced),
/// then record the manifests it deleted. `command` names the caller in the record.
pub async fn prune_forgotten(vault: &Vault, catalog: &mut Catalog, opts: &PruneOptions, command: &str) -> Result<LoggedPrune> {
    let deletion_log = log::read(vault).await?;
    let mut opts = opts.clone();
    opts.forgotten = deletion_log.forgotten();
    let report = prune(vault, catalog, &opts).await?;
    if opts.dry_run || report.snapshots_removed.is_empty() {
        return Ok(LoggedPrune { report, log_record: None });
    }
    let last = deletion_log.last_entries();
    let entries = report
        .snapshots_removed
        .iter()
        .filter_map(|id| {
            let (_, e) = last.get(id)?;
            let mut e = (*e).clone();
            e.reasons = vec!["pruned: manifest deleted, data no kept snapshot uses deleted".into()];
            Some(e)
        })
        .collect();
    let record = log::append(
        vault,
        NewRecord {
            action: LogAction::Prune,
            entries,
            host: opts.host.clone(),
            command: command.to_string(),
        },
        Utc::now(),
    )
    .await?;
    Ok(LoggedPrune {
        report,
        log_record: Some(record.seq),
    })
}
