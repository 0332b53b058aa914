//! `vaultctl packages diff ID`: packages missing or different on this host compared with a
//! files snapshot, and the command that fixes it.

use vault::ops::files::load_tree;
use vault::source::packages::{self, PackageList};
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Compare the snapshot's package list with this host's.
    Diff {
        /// Snapshot ID, unique prefix, or `latest`.
        id: String,
    },
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let Command::Diff { id } = cmd;
    let (vault, catalog) = c.restorer("packages diff").await?;
    let snap = catalog.resolve_kind(&id, &vault::format::PayloadKind::Files)?;
    let tree = load_tree(&vault, &catalog, &snap).await?;
    let backup: PackageList = serde_json::from_value(
        tree.packages
            .ok_or_else(|| Error::not_found(format!("snapshot {} holds no package list", snap.id.short())))?,
    )
    .map_err(|e| Error::integrity("the snapshot's package list does not parse").with_source(e))?;
    let now = packages::capture()?.ok_or_else(|| Error::usage("this host has neither rpm nor dpkg"))?;
    let diff = packages::diff(&backup, &now)?;
    if c.json {
        output::json(&serde_json::json!({ "diff": diff, "fix": diff.fix_command() }));
    } else {
        print!("{diff}");
        match diff.fix_command() {
            Some(fix) => println!("to fix: {fix}"),
            None => println!("no packages are missing or different"),
        }
    }
    Ok(0)
}
