//! `vaultctl catalog rebuild`

use vault::Result;
use vault::catalog::{Catalog, default_path};

use crate::context::Common;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Rebuild the catalog from the vault alone.
    Rebuild,
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let Command::Rebuild = cmd;
    let vault = c.vault().await?;
    let path = c
        .catalog
        .clone()
        .or(c.file_config()?.catalog)
        .unwrap_or_else(|| default_path(&vault.config.vault_id));
    let mut catalog = Catalog::open(&path, &vault.config.vault_id)?;
    catalog.clear()?;
    let r = catalog.sync(&vault).await?;
    let (segments, snapshots) = (r.new_segments, r.new_snapshots);
    let packs = catalog.packs()?.len();
    if c.json {
        output::json(
            &serde_json::json!({ "catalog": path, "index_segments": segments, "snapshots": snapshots, "packs": packs, "damaged": r.unreadable }),
        );
    } else {
        println!(
            "rebuilt catalog {}: {snapshots} snapshot(s), {segments} index segment(s), {packs} pack(s)",
            path.display()
        );
    }
    if r.unreadable.is_empty() {
        return Ok(0);
    }
    for u in &r.unreadable {
        eprintln!("vaultctl: DAMAGED, left out of the catalog: {u}");
    }
    Ok(vault::ErrorKind::Integrity.exit_code())
}
