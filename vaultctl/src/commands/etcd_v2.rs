//! `vaultctl backup etcd-v2 ...` and `vaultctl etcd v2 restore ID ...`: the etcd v2 keyspace.

use std::path::PathBuf;

use vault::Result;
use vault::ops::backup::BackupOptions;
use vault::ops::etcd_v2::{Action, V2RestoreOptions, backup_etcd_v2, restore_etcd_v2};
use vault::source::etcd_v3::EtcdOptions;

use crate::context::Common;
use crate::output;

/// How to reach etcd (flags override the config file's `[etcd]`).
#[derive(clap::Args)]
pub struct Access {
    /// Client URLs, comma separated; the first whose v2 API answers is used.
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
}

impl Access {
    pub fn options(self, c: &Common) -> Result<EtcdOptions> {
        let file = c.file_config()?.etcd.unwrap_or_default();
        Ok(EtcdOptions {
            endpoints: if self.endpoints.is_empty() {
                file.endpoints
            } else {
                self.endpoints
            },
            cacert: self.cacert.or(file.cacert),
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
            connect_timeout_secs: file.connect_timeout_secs,
        })
    }
}

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    access: Access,
    /// A hidden key or directory (a name starting with `_`) to capture too: the v2 API never
    /// lists them, so each must be named; repeatable.
    #[arg(long = "hidden")]
    hidden: Vec<String>,
    /// Tag the snapshot, e.g. --tag change=CHG-1234; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Job name recorded in the snapshot.
    #[arg(long, default_value = "manual")]
    job: String,
}

pub async fn backup(c: &Common, a: BackupArgs) -> Result<i32> {
    let etcd = a.access.options(c)?;
    let tags = super::backup::parse_tags(&a.tags)?;
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let opts = BackupOptions {
        job: a.job,
        tags,
        ..Default::default()
    };
    let report = backup_etcd_v2(&vault, &mut catalog, &etcd, &a.hidden, &opts).await?;
    let snap = catalog.resolve(&report.id)?;
    let info = snap.manifest.etcd_v2.clone().unwrap_or_default();
    if c.json {
        let mut v = serde_json::to_value(&report).expect("serialize report");
        v["etcd_v2"] = serde_json::to_value(&info).expect("serialize info");
        output::json(&v);
    } else {
        println!("{}", report.id);
        eprintln!(
            "etcd v2 keyspace from {} at etcd index {}: {} dirs, {} keys ({} with TTL), {} read, {} stored",
            info.endpoint,
            info.etcd_index,
            info.dirs,
            info.keys,
            info.with_ttl,
            output::bytes(report.bytes),
            output::bytes(report.stored_bytes)
        );
        for h in &info.hidden_missing {
            eprintln!("hidden key {h} does not exist: not captured");
        }
    }
    Ok(0)
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Re-create a v2 keyspace snapshot's directories and keys in a running cluster.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Snapshot ID, unique prefix, or `latest`.
    id: String,
    #[command(flatten)]
    access: Access,
    /// Restore only this key or directory and what is under it (e.g. /coreos.com/network).
    #[arg(long)]
    prefix: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Set keys that exist with another value to the captured value (nothing is ever deleted).
    #[arg(long)]
    overwrite: bool,
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Present => "present",
        Action::LeftAlone => "left alone",
        Action::Overwrite => "overwrite",
        Action::Expired => "expired",
    }
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let Command::Restore(a) = cmd;
    let etcd = a.access.options(c)?;
    let (vault, catalog) = c.restorer("etcd v2 restore").await?;
    let snap = catalog.resolve_kind(&a.id, &vault::format::PayloadKind::EtcdV2)?;
    let opts = V2RestoreOptions {
        prefix: a.prefix,
        overwrite: a.overwrite,
        dry_run: a.dry_run,
    };
    let report = restore_etcd_v2(&vault, &catalog, &snap, &etcd, &opts).await?;
    if c.json {
        output::json(&report);
    } else {
        println!(
            "{} of v2 keyspace snapshot {} (read at {}, etcd index {}) under {} into {}:",
            if report.dry_run { "plan for a restore" } else { "restore" },
            &report.snapshot[..12],
            report.read_at.to_rfc3339(),
            report.etcd_index,
            report.prefix,
            report.endpoint
        );
        for (i, s) in report.steps.iter().enumerate() {
            let ttl = s.ttl.map(|t| format!(" ttl {t}s")).unwrap_or_default();
            let kind = if s.dir { "dir" } else { "key" };
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.detail)
            };
            let err = s.error.as_ref().map(|e| format!(" FAILED: {e}")).unwrap_or_default();
            println!("{:>4}. {:<10} {kind} {}{ttl}{detail}{err}", i + 1, action_word(s.action), s.key);
        }
        println!(
            "{}{} created, {} overwritten, {} already present, {} left alone, {} expired, {} failed",
            if report.dry_run { "would be: " } else { "" },
            report.created,
            report.overwritten,
            report.present,
            report.left_alone,
            report.expired,
            report.failed
        );
        if report.dry_run {
            println!("nothing was changed (--dry-run)");
        }
    }
    Ok(if report.failed > 0 { 1 } else { 0 })
}
