//! `vaultctl restore ID --to FILE --identity F`

use std::path::PathBuf;

use vault::Result;
use vault::ops::restore::restore_to_file;

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot ID, unique prefix, or `latest`.
    id: String,
    /// Target file; an existing file is moved aside to FILE.old, never overwritten.
    #[arg(long)]
    to: PathBuf,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    vault.identities("restore")?;
    let catalog = c.catalog(&vault).await?;
    let snap = catalog.resolve(&a.id)?;
    let pb = output::progress(c.json, Some(snap.manifest.stats.bytes), "restore");
    let report = restore_to_file(&vault, &catalog, &snap, &a.to, output::progress_fn(&pb)).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let report = report?;
    if c.json {
        output::json(&report);
    } else {
        if let Some(old) = &report.moved_aside {
            println!("existing {} moved aside to {}", a.to.display(), old.display());
        }
        println!(
            "restored snapshot {} to {} ({}, sha256 {})",
            &report.snapshot[..8],
            report.path.display(),
            output::bytes(report.bytes),
            report.sha256
        );
    }
    Ok(0)
}
