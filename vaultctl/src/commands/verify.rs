//! `vaultctl verify [ID...|--all] [--read-data[=PERCENT]] [--identity FILE]`

use vault::ops::verify::{VerifyOptions, verify};
use vault::ops::verify_records;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot IDs (or unique prefixes); default with --all: every snapshot.
    ids: Vec<String>,
    /// Verify every snapshot.
    #[arg(long)]
    all: bool,
    /// Download and hash packs: all, or a percentage sampled at random (e.g. --read-data=10).
    #[arg(long, num_args = 0..=1, default_missing_value = "100", value_name = "PERCENT")]
    read_data: Option<String>,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let read_data_percent = match &a.read_data {
        None => None,
        Some(p) => {
            let v: f64 = p
                .trim_end_matches('%')
                .parse()
                .map_err(|_| Error::usage(format!("--read-data={p}: not a percentage")))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(Error::usage(format!("--read-data={p}: must be in (0, 100]")));
            }
            Some(v)
        }
    };
    let named = !a.ids.is_empty();
    if a.all == named {
        return Err(Error::usage("name snapshots to verify, or pass --all (not both)"));
    }
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let selected = if a.all {
        catalog.snapshots()?
    } else {
        a.ids.iter().map(|i| catalog.resolve(i)).collect::<Result<Vec<_>>>()?
    };
    let report = verify(&vault, &mut catalog, &selected, &VerifyOptions { read_data_percent }).await?;
    // Recorded in the vault too, so that an audit from any host sees it; a failure to write is a
    // warning (the catalog has the result).
    let host = vault::ops::backup::hostname();
    for w in verify_records::record_report(&vault, &report, &host, chrono::Utc::now()).await {
        eprintln!("vaultctl: warning: {w}");
    }
    if c.json {
        output::json(&report);
    } else {
        for s in &report.snapshots {
            if s.ok {
                println!("ok      {}  {}  {}", &s.id[..8], s.time, s.kind);
            } else {
                println!("FAILED  {}  {}  {}", &s.id[..8], s.time, s.kind);
                for p in &s.problems {
                    println!("        - {p}");
                }
            }
        }
        for o in &report.damaged_objects {
            println!("DAMAGED {o}");
        }
        for p in &report.bad_packs {
            println!("BAD PACK {p} (see `vaultctl repair --dry-run`)");
        }
        if !report.removed_temporaries.is_empty() {
            println!(
                "removed {} temporary file(s) left by writers killed mid-write",
                report.removed_temporaries.len()
            );
        }
        println!(
            "{} snapshot(s) checked at level {}: {} failed; {} pack(s), {} read",
            report.snapshots.len(),
            report.level,
            report.failed().len(),
            report.packs_checked,
            output::bytes(report.bytes_read)
        );
    }
    if report.ok {
        Ok(0)
    } else {
        let ids: Vec<&str> = report.failed().iter().map(|s| &s.id[..8]).collect();
        if !ids.is_empty() {
            eprintln!("vaultctl: verification FAILED for snapshot(s): {}", ids.join(", "));
        }
        if !report.damaged_objects.is_empty() {
            eprintln!(
                "vaultctl: verification FAILED: {} damaged index segment(s) or manifest(s) in the vault",
                report.damaged_objects.len()
            );
        }
        Ok(vault::ErrorKind::Integrity.exit_code())
    }
}
