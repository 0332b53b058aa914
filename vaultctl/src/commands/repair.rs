//! `vaultctl repair [--dry-run] [--read-data]`

use vault::Result;
use vault::ops::repair::{RepairOptions, RepairPlan, apply, plan};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Show what repair would do; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Download every pack and check it against its name and trailer (finds damaged packs, not
    /// only missing ones; reads the whole vault).
    #[arg(long)]
    read_data: bool,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let planned = plan(&vault, &mut catalog, &RepairOptions { read_data: a.read_data }).await?;
    let report = if a.dry_run {
        planned
    } else {
        apply(&vault, &mut catalog, planned).await?
    };
    if c.json {
        output::json(&report);
    } else {
        print_plan(&report);
    }
    let broken = report.broken();
    if broken.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = broken.iter().map(|s| &s.id[..8]).collect();
    eprintln!(
        "vaultctl: {} snapshot(s) cannot be made whole: {} (a capture stores again what its source still holds; what only these snapshots held is lost)",
        ids.len(),
        ids.join(", ")
    );
    Ok(vault::ErrorKind::Integrity.exit_code())
}

fn short(id: &Option<String>) -> String {
    id.as_deref()
        .map(|i| i[..8].to_string())
        .unwrap_or_else(|| "a capture that left no snapshot".into())
}

fn print_plan(r: &RepairPlan) {
    println!(
        "{} pack(s) in the store, {} in the index{}",
        r.packs_listed,
        r.packs_indexed,
        if r.packs_read > 0 {
            format!("; {} pack(s), {} read", r.packs_read, output::bytes(r.bytes_read))
        } else {
            String::new()
        }
    );
    for b in &r.bad_packs {
        println!(
            "{:<10}{}: {} chunk(s), {} with no other copy",
            b.fault.as_str().to_uppercase(),
            b.detail,
            b.chunks,
            b.lost_chunks
        );
    }
    for b in &r.unreadable_packs {
        println!("UNREADABLE {} (in no index; left alone)", b.detail);
    }
    for p in &r.cleared_packs {
        println!("whole     {p} is whole again: no longer marked bad");
    }
    for u in &r.unindexed_packs {
        println!(
            "index     {} is in no index: {} chunk(s), {} (a new index segment lists it)",
            u.pack,
            u.chunks,
            output::bytes(u.size)
        );
    }
    for h in &r.heals {
        println!(
            "healed    {} chunk(s) stored again in {} by {}{}",
            h.chunks,
            h.pack,
            short(&h.by),
            h.time.as_deref().map(|t| format!(" ({t})")).unwrap_or_default()
        );
    }
    for s in &r.snapshots {
        let by: Vec<String> = s.healed_by.iter().map(short).collect();
        if s.whole {
            println!(
                "whole     {}  {}  {}: {} chunk(s) of bad packs stored again by {}",
                &s.id[..8],
                s.time,
                s.kind,
                s.healed_chunks,
                by.join(", ")
            );
        } else {
            println!(
                "BROKEN    {}  {}  {}: {} chunk(s) lost in {}{}",
                &s.id[..8],
                s.time,
                s.kind,
                s.lost_chunks,
                s.lost_in.join(", "),
                if s.healed_chunks > 0 {
                    format!("; {} stored again by {}", s.healed_chunks, by.join(", "))
                } else {
                    String::new()
                }
            );
        }
    }
    let whole = r.snapshots.iter().filter(|s| s.whole).count();
    println!(
        "{} snapshot(s) affected: {} whole, {} cannot be made whole",
        r.snapshots.len(),
        whole,
        r.snapshots.len() - whole
    );
    if !r.applied && r.changes_anything() {
        println!("dry run: nothing written; run `vaultctl repair` to apply");
    } else if !r.applied {
        println!("dry run: nothing to change");
    } else if r.changes_anything() {
        println!(
            "repaired: {} bad pack(s) recorded, {} cleared, {} index segment(s) written",
            r.bad_packs.len(),
            r.cleared_packs.len(),
            r.unindexed_packs.len()
        );
    } else {
        println!("nothing to change");
    }
}
