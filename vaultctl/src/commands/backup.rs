//! `vaultctl backup etcd ...`

use std::collections::BTreeMap;
use std::path::PathBuf;

use vault::ops::backup::{BackupOptions, backup_etcd_v3};
use vault::source::etcd_v3::EtcdOptions;
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Kind {
    /// Snapshot etcd v3 from one healthy member.
    Etcd(EtcdArgs),
}

#[derive(clap::Args)]
pub struct EtcdArgs {
    /// Client URLs, comma separated; the first healthy member is used.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA certificate (OKD: /etc/etcd/ca.crt).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (OKD: /etc/etcd/peer.crt).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key (OKD: /etc/etcd/peer.key).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Tag the snapshot, e.g. --tag change=CHG-1234; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Job name recorded in the snapshot.
    #[arg(long, default_value = "manual")]
    job: String,
}

pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::usage(format!("tag {t:?} is not KEY=VALUE")))
        })
        .collect()
}

pub async fn run(c: &Common, kind: Kind) -> Result<i32> {
    let Kind::Etcd(a) = kind;
    let file = c.file_config()?.etcd.unwrap_or_default();
    let etcd = EtcdOptions {
        endpoints: if a.endpoints.is_empty() { file.endpoints } else { a.endpoints },
        cacert: a.cacert.or(file.cacert),
        cert: a.cert.or(file.cert),
        key: a.key.or(file.key),
        connect_timeout_secs: file.connect_timeout_secs,
    };
    let tags = parse_tags(&a.tags)?;
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let pb = output::progress(c.json, None, "etcd snapshot");
    let progress = output::progress_fn(&pb);
    let opts = BackupOptions {
        job: a.job,
        host: None,
        tags,
        progress,
    };
    let report = backup_etcd_v3(&vault, &mut catalog, &etcd, &opts).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let report = report?;
    if c.json {
        output::json(&report);
    } else {
        println!("{}", report.id);
        eprintln!(
            "etcd snapshot from {} ({}), revision {}: {} read, {} new, {} stored in {:.1}s",
            report.member.as_deref().unwrap_or("?"),
            report.endpoint.as_deref().unwrap_or("?"),
            report.revision.unwrap_or_default(),
            output::bytes(report.bytes),
            output::bytes(report.new_bytes),
            output::bytes(report.stored_bytes),
            report.seconds
        );
        for s in &report.skipped_endpoints {
            eprintln!("skipped endpoint {s}");
        }
    }
    Ok(0)
}
