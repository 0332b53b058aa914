//! `vaultctl etcd restore ID|--revision REV|--at TIME --identity F --data-dir D --name N --initial-cluster C ...`

use std::path::PathBuf;

use vault::Result;
use vault::ops::etcd_restore::{EtcdRestoreOptions, etcd_restore};

use crate::context::Common;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build a member data dir from a snapshot (etcdutl/etcdctl snapshot restore), or from the
    /// newest snapshot before a point in time with its delta segments replayed up to it.
    Restore(RestoreArgs),
    /// The changes to keys recorded in delta segments: when, which revision, put or delete.
    History(super::etcd_history::HistoryArgs),
    /// The etcd v2 keyspace.
    #[command(subcommand)]
    V2(super::etcd_v2::Command),
    /// Member data dir snapshots.
    #[command(subcommand)]
    Datadir(super::etcd_datadir::Command),
    /// Bring the cluster back on this host from a snapshot, as a new one-member cluster (flow 1).
    Recover(Box<super::etcd_recover::RecoverArgs>),
    /// Join this host's member to the recovered cluster (flow 2).
    Join(Box<super::etcd_recover::JoinArgs>),
    /// Remove a failed member or add a new one, with the config rewrites (flows 3 and 4).
    #[command(subcommand)]
    Member(super::etcd_member::Command),
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Snapshot ID, unique prefix, or `latest` (not with --revision/--at).
    #[arg(required_unless_present_any = ["revision", "at"], conflicts_with_all = ["revision", "at"])]
    id: Option<String>,
    #[command(flatten)]
    pub point: super::etcd_point_in_time::PointArgs,
    /// Member data dir to build; an existing one is moved aside, never deleted.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub initial_cluster: String,
    #[arg(long)]
    pub initial_cluster_token: String,
    #[arg(long)]
    pub initial_advertise_peer_urls: String,
    /// etcdutl or etcdctl to use (default: etcdutl, else etcdctl, from PATH).
    #[arg(long)]
    pub etcd_tool: Option<PathBuf>,
    /// Owner of the new data dir (default: user etcd when it exists and running as root).
    #[arg(long)]
    pub owner: Option<String>,
}

impl RestoreArgs {
    /// The member flags as the library's options, with a progress bar.
    pub fn options(&self, progress: Option<vault::ops::backup::ProgressFn>) -> EtcdRestoreOptions {
        EtcdRestoreOptions {
            data_dir: self.data_dir.clone(),
            name: self.name.clone(),
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_token: self.initial_cluster_token.clone(),
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.clone(),
            tool: self.etcd_tool.clone(),
            owner: self.owner.clone(),
            progress,
        }
    }
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let a = match cmd {
        Command::Restore(a) => a,
        Command::History(a) => return super::etcd_history::run(c, a).await,
        Command::V2(cmd) => return super::etcd_v2::run(c, cmd).await,
        Command::Datadir(cmd) => return super::etcd_datadir::run(c, cmd).await,
        Command::Recover(a) => return super::etcd_recover::recover(c, *a).await,
        Command::Join(a) => return super::etcd_recover::join(c, *a).await,
        Command::Member(cmd) => return super::etcd_member::run_member(c, cmd).await,
    };
    let Some(id) = a.id.clone() else {
        return super::etcd_point_in_time::run(c, a).await;
    };
    let (vault, catalog) = c.restorer("etcd restore").await?;
    let snap = catalog.resolve_kind(&id, &vault::format::PayloadKind::EtcdV3)?;
    let pb = output::progress(c.json, Some(snap.manifest.stats.bytes), "fetch snapshot");
    let opts = a.options(output::progress_fn(&pb));
    let report = etcd_restore(&vault, &catalog, &snap, &opts).await;
    output::finish(pb);
    let report = report?;
    if c.json {
        output::json(&report);
    } else {
        if let Some(old) = &report.moved_aside {
            println!("existing data dir {} moved aside to {}", report.data_dir.display(), old.display());
        }
        println!(
            "restored snapshot {} (revision {}) into {} with {}{}",
            &report.snapshot[..8],
            report.revision.unwrap_or_default(),
            report.data_dir.display(),
            report.tool,
            report.owner.as_ref().map(|o| format!(", owned by {o}")).unwrap_or_default()
        );
        println!(
            "next: start etcd with --name {} --data-dir {}",
            opts.name,
            report.data_dir.display()
        );
    }
    Ok(0)
}
