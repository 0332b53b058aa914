//! Shared by the host-file commands: profiles and the restart plan after an in-place restore.

use std::path::PathBuf;

use vault::catalog::SnapshotEntry;
use vault::host::restart::RestartPlan;
use vault::source::profile::{Profile, SYSTEM_PROFILE_DIR};
use vault::{Error, Result};

/// Directories searched for operator-defined profiles (before the built-in ones).
pub fn profile_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(SYSTEM_PROFILE_DIR)]
}

/// What to restart after restoring `restored` in place, from the snapshot's profile's table.
pub fn restart_plan(snap: &SnapshotEntry, restored: &[String]) -> Result<Option<RestartPlan>> {
    let Some(name) = snap.manifest.files.as_ref().and_then(|f| f.profile.clone()) else {
        return Ok(None);
    };
    let profile = Profile::load(&name, &profile_dirs())?;
    let paths: Vec<PathBuf> = restored.iter().map(PathBuf::from).collect();
    let plan = profile.restarts_for(&paths);
    Ok((!plan.is_empty()).then_some(plan))
}

/// Run the plan through this host's `systemctl` (the host layer, `vault::host`); fails naming every
/// action that failed.
pub fn execute_restart(plan: &RestartPlan) -> Result<()> {
    let outcomes = plan.execute(false);
    let mut failed = Vec::new();
    for o in &outcomes {
        println!("{o}");
        if !o.is_ok() {
            failed.push(o.to_string());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::io(format!(
            "{} restart action(s) failed: {}",
            failed.len(),
            failed.join("; ")
        )))
    }
}
