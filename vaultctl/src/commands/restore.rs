//! `vaultctl restore ID --to FILE` (etcd snapshots) and
//! `vaultctl restore ID (--to DIR | --in-place) [PATH...] [--restart]` (host files).

use std::path::PathBuf;

use vault::format::PayloadKind;
use vault::ops::files::{RestoreTarget, restore_files};
use vault::ops::restore::restore_to_file;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot ID, unique prefix, or `latest`.
    id: String,
    /// Only these paths of a files snapshot (directories include their contents).
    paths: Vec<PathBuf>,
    /// Target: a file for etcd snapshots, a directory for files snapshots. An existing file is
    /// moved aside to NAME.old (or a timestamped name), never overwritten.
    #[arg(long, conflicts_with = "in_place")]
    to: Option<PathBuf>,
    /// Files snapshots: put files back at their original paths (existing ones kept as .old).
    #[arg(long)]
    in_place: bool,
    /// With --in-place: the host's root directory (default /).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// With --in-place: restart what the restored files need (from the profile's restart table).
    #[arg(long, requires = "in_place")]
    restart: bool,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let (vault, catalog) = c.restorer("restore").await?;
    let snap = if a.id == "latest" && a.in_place {
        // In place, `latest` must be this host's own files: in a shared vault the newest files
        // snapshot may be another master's.
        let host = vault::ops::backup::hostname();
        catalog
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.manifest.kind == PayloadKind::Files && s.manifest.host == host)
            .ok_or_else(|| {
                Error::not_found(format!("the vault holds no files snapshot of this host ({host})"))
                    .hint("name the snapshot to restore: `vaultctl snapshots` lists them with their host")
            })?
    } else {
        catalog.resolve(&a.id)?
    };
    match snap.manifest.kind {
        PayloadKind::EtcdV3 => {
            let to = a.to.ok_or_else(|| Error::usage("restoring an etcd snapshot needs --to FILE"))?;
            if a.in_place || !a.paths.is_empty() {
                return Err(Error::usage(
                    "an etcd snapshot is one file: use --to FILE, without paths or --in-place",
                ));
            }
            let pb = output::progress(c.json, Some(snap.manifest.stats.bytes), "restore");
            let report = restore_to_file(&vault, &catalog, &snap, &to, output::progress_fn(&pb)).await;
            output::finish(pb);
            let report = report?;
            if c.json {
                output::json(&report);
            } else {
                if let Some(old) = &report.moved_aside {
                    println!("existing {} moved aside to {}", to.display(), old.display());
                }
                println!(
                    "restored snapshot {} to {} ({}, sha256 {})",
                    &report.snapshot[..8],
                    report.path.display(),
                    output::bytes(report.bytes),
                    report.sha256
                );
            }
        }
        PayloadKind::Files => {
            let target = match (&a.to, a.in_place) {
                (Some(d), false) => RestoreTarget::Dir(d.clone()),
                (None, true) => RestoreTarget::InPlace { root: a.root.clone() },
                _ => return Err(Error::usage("restoring files needs --to DIR or --in-place")),
            };
            let report = restore_files(&vault, &catalog, &snap, &target, &a.paths).await?;
            let restart = if a.in_place {
                super::files::restart_plan(&snap, &report.restored)?
            } else {
                None
            };
            if c.json {
                output::json(&serde_json::json!({ "restore": report, "restart": restart }));
            } else {
                for (p, old) in &report.moved_aside {
                    println!("kept existing {p} as {old}");
                }
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "restored {} path(s) from snapshot {} into {}",
                    report.restored.len(),
                    &report.snapshot[..8],
                    report.target
                );
                if let Some(plan) = &restart {
                    print!("{plan}");
                }
            }
            if let (true, Some(plan)) = (a.restart, &restart) {
                super::files::execute_restart(plan)?;
            }
        }
        PayloadKind::EtcdV2 => {
            return Err(Error::usage(format!("snapshot {} is an etcd v2 keyspace", snap.id.short()))
                .hint("restore it into a running cluster with `vaultctl etcd v2 restore ID --endpoints ... [--dry-run]`"));
        }
        PayloadKind::EtcdDatadir => {
            return Err(Error::usage(format!("snapshot {} is an etcd member data dir", snap.id.short()))
                .hint("lay it down with `vaultctl etcd datadir restore ID --data-dir DIR`"));
        }
        PayloadKind::EtcdV3Delta => {
            return Err(Error::usage(format!("snapshot {} is an etcd delta segment", snap.id.short())).hint(
                "restore etcd to a point in time with `vaultctl etcd restore --revision REV` or `--at TIME`, which replays the segments onto their base",
            ));
        }
        PayloadKind::Other(ref k) => {
            return Err(Error::usage(format!(
                "snapshot {} has kind {k}, which this vaultctl cannot restore",
                snap.id.short()
            )));
        }
    }
    Ok(0)
}
