//! `vaultctl etcd history KEY | --prefix P [--since T] [--until T] [--json]`

use chrono::{SecondsFormat, Utc};
use vault::ops::deltas::history::{HistoryQuery, KeyMatch, history};
use vault::{Error, Result};

use super::audit::parse_since;
use crate::context::Common;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// The key whose changes to list.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    key: Option<String>,
    /// List the changes to every key under this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// From this time (RFC 3339) or this long ago (e.g. 2h); default 24h.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Up to this time (RFC 3339; default now).
    #[arg(long)]
    until: Option<String>,
    /// Only chains of this job.
    #[arg(long)]
    job: Option<String>,
    /// Only chains of this etcd cluster.
    #[arg(long)]
    cluster_id: Option<String>,
}

pub async fn run(c: &Common, a: HistoryArgs) -> Result<i32> {
    let now = Utc::now();
    let keys = match (a.key, a.prefix) {
        (Some(k), _) => KeyMatch::Exact(k.into_bytes()),
        (None, Some(p)) => KeyMatch::Prefix(p.into_bytes()),
        (None, None) => return Err(Error::usage("etcd history needs a KEY or --prefix")),
    };
    let q = HistoryQuery {
        keys,
        since: parse_since(&a.since, now)?,
        until: match &a.until {
            Some(t) => super::etcd_point_in_time::parse_time("--until", t)?,
            None => now,
        },
        job: a.job,
        cluster_id: a.cluster_id,
    };
    let (vault, catalog) = c.restorer("etcd history").await?;
    let h = history(&vault, &catalog, &q).await?;
    if c.json {
        crate::output::json(&h);
    } else {
        println!(
            "{:<24} {:>10} {:<6} {:>8} {:>7} {:>16}  KEY",
            "TIME", "REVISION", "OP", "SIZE", "VERSION", "LEASE"
        );
        for ch in &h.changes {
            println!(
                "{:<24} {:>10} {:<6} {:>8} {:>7} {:>16}  {}{}",
                ch.time.to_rfc3339_opts(SecondsFormat::Millis, true),
                ch.revision,
                ch.op,
                ch.value_size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                ch.version.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                ch.lease.as_deref().unwrap_or("-"),
                ch.key,
                if ch.catch_up { "  (catch-up: received late)" } else { "" }
            );
        }
        println!("{} change(s) in {} segment(s)", h.changes.len(), h.segments);
    }
    for p in &h.problems {
        eprintln!("vaultctl: warning: {p}");
    }
    Ok(if h.problems.is_empty() { 0 } else { 3 })
}
