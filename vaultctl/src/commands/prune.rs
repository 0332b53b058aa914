//! `vaultctl prune [--grace DURATION] [--dry-run] [--json] [--repack-unused PERCENT|--no-repack]
//! [--lease DURATION] [--max-clock-skew DURATION]`: delete the data of snapshots the deletion log
//! has forgotten that no kept snapshot uses, in two passes a grace period apart
//! (docs/FORMAT.md section 15, docs/OPERATIONS.md "Prune").

use std::io::IsTerminal;
use std::sync::Arc;

use vault::ops::prune::PruneOptions;
use vault::ops::prune::logged::{LoggedPrune, prune_forgotten};
use vault::ops::retention::Span;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Time between the pass that marks packs pending and the one that deletes them: longer than
    /// any capture runs. 0 deletes at once (safe only while nothing else writes to the vault).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_span)]
    grace: Span,
    /// Show what each pass would do; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Repack partly unused packs, the emptiest first, until at most PERCENT of what the vault
    /// holds after the prune is unused (as restic's --max-unused; needs --identity; 0: repack
    /// every partly unused pack).
    #[arg(long, value_name = "PERCENT", default_value_t = vault::ops::prune::DEFAULT_MAX_UNUSED_PERCENT,
          value_parser = clap::value_parser!(u8).range(0..=99))]
    max_unused: u8,
    /// Never repack; delete only wholly unused packs.
    #[arg(long)]
    no_repack: bool,
    /// Lease of the prune lock (renewed while prune runs).
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = parse_span)]
    lease: Span,
    /// Refuse to run when the host and store clocks differ by more than this.
    #[arg(long, value_name = "DURATION", default_value = "5min", value_parser = parse_span)]
    max_clock_skew: Span,
}

/// A duration as retention writes them (`24h`, `30min`, `2d`), or `0`.
fn parse_span(s: &str) -> std::result::Result<Span, String> {
    if s.trim() == "0" {
        return Ok(Span::default());
    }
    s.parse::<Span>().map_err(|e| e.to_string())
}

fn seconds(s: &Span, what: &str) -> Result<chrono::Duration> {
    if s.years > 0 || s.months > 0 {
        return Err(Error::usage(format!("{what} {s} uses years or months")).hint("give it in days, hours, minutes or seconds"));
    }
    Ok(s.approx())
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let grace = seconds(&a.grace, "--grace")?;
    let lease = seconds(&a.lease, "--lease")?;
    if lease < chrono::Duration::seconds(10) {
        return Err(Error::usage("--lease must be at least 10s"));
    }
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let progress: Option<vault::ops::prune::StepFn> = (!c.json && std::io::stderr().is_terminal())
        .then(|| Arc::new(|step: &str| eprintln!("prune: {step}")) as vault::ops::prune::StepFn);
    if grace.is_zero() && !a.dry_run {
        eprintln!(
            "vaultctl: warning: --grace 0 deletes at once: this is safe only while nothing else writes to the vault (no capture on any host, no vaultd running)"
        );
    }
    let opts = PruneOptions {
        grace,
        dry_run: a.dry_run,
        lease,
        max_skew: seconds(&a.max_clock_skew, "--max-clock-skew")?,
        max_unused_percent: (!a.no_repack).then_some(a.max_unused),
        progress,
        ..Default::default()
    };
    let done = prune_forgotten(&vault, &mut catalog, &opts, "vaultctl prune").await?;
    if c.json {
        output::json(&done);
    } else {
        print(&done);
    }
    Ok(0)
}

fn print(d: &LoggedPrune) {
    let r = &d.report;
    let dry = if r.dry_run { "would " } else { "" };
    if let Some(b) = r.lock.as_ref().and_then(|l| l.broke.as_ref()) {
        println!("lock      broke a stale prune lock: {b}");
    }
    if let Some(c) = &r.clock {
        println!("clock     host and store agree within {:.1} s", c.skew_ms.abs() as f64 / 1000.0);
    }
    for s in &r.pending_processed {
        println!("pass 2    {s}: grace period over");
    }
    for id in &r.snapshots_removed {
        println!("{}delete snapshot {id}", if r.dry_run { "would " } else { "" });
    }
    for p in &r.orphans_needed {
        println!("keep      pack {p}: in no index segment, but the only copy of chunks kept snapshots use (run `vaultctl repair`)");
    }
    for p in &r.packs_needed_again {
        println!("keep      pack {p}: pending, but a kept snapshot needs it again");
    }
    println!(
        "{}: {} snapshot(s), {} pack(s), {} index segment(s) {}deleted, {} {}freed",
        if r.dry_run { "dry run" } else { "pruned" },
        r.snapshots_removed.len(),
        r.packs_deleted,
        r.segments_deleted,
        if r.dry_run { "to be " } else { "" },
        output::bytes(r.bytes_freed),
        dry
    );
    if !r.dry_run || r.packs_to_repack == 0 {
        println!(
            "kept      {} used by kept snapshots, {} unused in partly used packs",
            output::bytes(r.used_bytes_kept),
            output::bytes(r.unused_bytes_kept)
        );
    }
    if r.packs_rewritten > 0 {
        println!(
            "repacked  {} partly unused pack(s) into {} new pack(s); the old ones are pending",
            r.packs_rewritten, r.repack_new_packs
        );
    } else if r.packs_to_repack > 0 && r.repack_skipped.is_none() {
        println!("repack    {} partly unused pack(s) {dry}be repacked", r.packs_to_repack);
    }
    if let Some(note) = &r.repack_skipped {
        println!("note      {note}");
    }
    if let Some(p) = &r.pending_recorded {
        println!(
            "pass 1    {} pack(s) ({}) and {} forgotten snapshot(s) pending: {} (deleted by a prune after the grace period, {} s)",
            p.packs,
            output::bytes(p.bytes),
            p.forgotten,
            p.name,
            r.grace_secs
        );
    }
    for w in &r.pending_waiting {
        println!(
            "waiting   {}: {} pack(s), due {}",
            w.name,
            w.packs,
            w.due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    for u in &r.pending_unreadable {
        println!("UNREADABLE pending set {u}: ignored, nothing it names is deleted");
    }
    for id in &d.held {
        println!("keep      snapshot {id}: forgotten, but held since (`vaultctl holds`); pruned once released");
    }
    if let Some(seq) = d.log_record {
        println!("logged    deletion-log record {seq} (prune)");
    }
}
