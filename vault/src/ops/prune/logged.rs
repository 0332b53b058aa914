//! Prune as the front ends run it: the forgotten set comes from the deletion log (its
//! tombstones), less the snapshots held since they were forgotten (a hold wins over retention,
//! also after forget), and the manifests prune deleted are appended to the log as one `prune`
//! record.

use chrono::Utc;
use serde::Serialize;

use super::{PruneOptions, PruneReport, prune};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::format::LogAction;
use crate::ops::retention::holds;
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
    /// Forgotten snapshots kept because a hold was placed on them after they were forgotten.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::format::Id>,
}

/// Run prune over the snapshots the deletion log has forgotten (`opts.forgotten` is replaced),
/// then record the manifests it deleted. `command` names the caller in the record.
pub async fn prune_forgotten(vault: &Vault, catalog: &mut Catalog, opts: &PruneOptions, command: &str) -> Result<LoggedPrune> {
    let deletion_log = log::read(vault).await?;
    let now = Utc::now();
    let holds = holds::plan_holds(&holds::read_events(vault).await?, now);
    let mut opts = opts.clone();
    opts.forgotten = deletion_log.forgotten();
    let held: Vec<_> = opts
        .forgotten
        .iter()
        .filter(|id| holds.iter().any(|h| h.id == **id && h.active(now)))
        .copied()
        .collect();
    for id in &held {
        opts.forgotten.remove(id);
    }
    let report = prune(vault, catalog, &opts).await?;
    if opts.dry_run || report.snapshots_removed.is_empty() {
        return Ok(LoggedPrune {
            report,
            log_record: None,
            held,
        });
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
        held,
    })
}
