//! `vaultctl snapshots [--deltas] [--json]`: every snapshot in the vault, with its verification
//! and, for snapshots `forget` removed that prune has not deleted yet, `forgotten`. Delta segments
//! are summed up on their base etcd-v3 snapshot (how many, up to which revision and time) unless
//! `--deltas` lists them one by one.

use std::collections::HashMap;

use serde::Serialize;
use vault::Result;
use vault::format::{Id, PayloadKind};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// List every delta segment too (by default each etcd-v3 snapshot says how far its chain of
    /// delta segments reaches).
    #[arg(long)]
    deltas: bool,
}

/// How far the delta segments after an etcd-v3 snapshot reach.
#[derive(Serialize)]
struct ChainSummary {
    segments: u64,
    last_revision: i64,
    last_event_time: String,
}

#[derive(Serialize)]
struct Row {
    id: String,
    time: String,
    kind: String,
    host: String,
    job: String,
    source: String,
    size: u64,
    stored_bytes: u64,
    tags: std::collections::BTreeMap<String, String>,
    /// The schedule slot a daemon took it for.
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    verification: Option<vault::catalog::Verification>,
    /// Forgotten by retention (a tombstone in the deletion log): prune deletes it, `vaultctl
    /// undelete` brings it back until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    forgotten: bool,
    /// For an etcd-v3 snapshot: its delta segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    deltas: Option<ChainSummary>,
    /// For a delta segment: its base snapshot and place in the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let forgotten = vault::ops::retention::log::read_cached(&vault, &mut catalog).await?.forgotten();
    let snapshots = catalog.snapshots()?;
    let mut chains: HashMap<Id, ChainSummary> = HashMap::new();
    for d in snapshots.iter().filter_map(|s| s.manifest.etcd_v3_delta.as_ref()) {
        let c = chains.entry(d.base).or_insert(ChainSummary {
            segments: 0,
            last_revision: 0,
            last_event_time: String::new(),
        });
        c.segments += 1;
        if d.last_revision > c.last_revision {
            c.last_revision = d.last_revision;
            c.last_event_time = d.last_event_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
    }
    let rows: Vec<Row> = snapshots
        .into_iter()
        .filter(|s| a.deltas || s.manifest.kind != PayloadKind::EtcdV3Delta)
        .map(|s| Row {
            id: s.id.hex(),
            time: s.manifest.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            kind: s.manifest.kind.to_string(),
            host: s.manifest.host.clone(),
            job: s.manifest.job.clone(),
            source: s.manifest.source(),
            size: s.manifest.stats.bytes,
            stored_bytes: s.manifest.stats.stored_bytes,
            tags: s.manifest.tags.clone(),
            slot: s.manifest.slot.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            revision: s.manifest.etcd_v3.as_ref().map(|e| e.revision),
            sha256: s.manifest.streams.first().map(|st| st.sha256.clone()),
            verification: s.verification,
            forgotten: forgotten.contains(&s.id),
            deltas: chains.remove(&s.id),
            base: s.manifest.etcd_v3_delta.as_ref().map(|d| d.base.hex()),
            seq: s.manifest.etcd_v3_delta.as_ref().map(|d| d.seq),
        })
        .collect();
    if c.json {
        output::json(&rows);
        return Ok(0);
    }
    println!(
        "{:<8}  {:<20}  {:<8}  {:<16}  {:<24}  {:>10}  {:<12}  tags",
        "id", "time", "kind", "host", "source", "size", "verified"
    );
    for r in &rows {
        let verified = match &r.verification {
            None => "never".to_string(),
            Some(v) if v.ok => format!("ok ({})", v.level),
            Some(v) => format!("FAILED ({})", v.level),
        };
        let mut tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if r.forgotten {
            tags.insert(0, "FORGOTTEN".into());
        }
        if let Some(d) = &r.deltas {
            tags.insert(
                0,
                format!(
                    "+{} delta segment(s) to revision {} at {}",
                    d.segments, d.last_revision, d.last_event_time
                ),
            );
        }
        println!(
            "{:<8}  {:<20}  {:<8}  {:<16}  {:<24}  {:>10}  {:<12}  {}",
            &r.id[..8],
            r.time,
            r.kind,
            r.host,
            r.source,
            output::bytes(r.size),
            verified,
            tags.join(",")
        );
    }
    println!("{} snapshot(s)", rows.len());
    Ok(0)
}
