//! `vaultctl backup etcd-datadir ...` and `vaultctl etcd datadir restore ID --data-dir D`: a
//! member's data directory (v2 WAL and snap with the membership stripped, and the v3 database).

use std::path::PathBuf;

use vault::Result;
use vault::ops::backup::BackupOptions;
use vault::ops::etcd_datadir::{backup_etcd_datadir, lay_down_datadir};
use vault::source::etcd_datadir::DatadirOptions;

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The member's data dir (default: ETCD_DATA_DIR of etcd.conf).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The host's files are under this directory (a host tree, a mounted disk).
    #[arg(long)]
    root: Option<PathBuf>,
    /// etcd.conf to read (default: /etc/etcd/etcd.conf under --root).
    #[arg(long)]
    etcd_conf: Option<PathBuf>,
    /// This member's client URL (default: ETCD_ADVERTISE_CLIENT_URLS of etcd.conf).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA certificate (default with https: ETCD_TRUSTED_CA_FILE).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (default with https: ETCD_PEER_CERT_FILE).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key (default with https: ETCD_PEER_KEY_FILE).
    #[arg(long)]
    key: Option<PathBuf>,
    /// etcdutl or etcdctl to run the backup with (default: etcdutl, else etcdctl, from PATH).
    #[arg(long)]
    etcd_tool: Option<PathBuf>,
    /// Tag the snapshot, e.g. --tag change=CHG-1234; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Job name recorded in the snapshot.
    #[arg(long, default_value = "manual")]
    job: String,
}

pub async fn backup(c: &Common, a: BackupArgs) -> Result<i32> {
    let opts = DatadirOptions {
        data_dir: a.data_dir,
        root: a.root,
        conf: a.etcd_conf,
        etcd: vault::source::etcd_v3::EtcdOptions {
            endpoints: a.endpoints,
            cacert: a.cacert,
            cert: a.cert,
            key: a.key,
            connect_timeout_secs: None,
        },
        tool: a.etcd_tool,
    };
    let tags = super::backup::parse_tags(&a.tags)?;
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let pb = output::progress(c.json, None, "etcd data dir");
    let bopts = BackupOptions {
        job: a.job,
        tags,
        progress: output::progress_fn(&pb),
        ..Default::default()
    };
    let report = backup_etcd_datadir(&vault, &mut catalog, &opts, &bopts).await;
    output::finish(pb);
    let report = report?;
    let snap = catalog.resolve(&report.id)?;
    let info = snap.manifest.etcd_datadir.clone().unwrap_or_default();
    if c.json {
        let mut v = serde_json::to_value(&report).expect("serialize report");
        v["etcd_datadir"] = serde_json::to_value(&info).expect("serialize info");
        output::json(&v);
    } else {
        println!("{}", report.id);
        eprintln!(
            "data dir {} of member {} (cluster {}, revision {}) with {}: {} files, {} read, {} stored in {:.1}s",
            info.data_dir,
            info.member_name,
            info.cluster_id,
            info.revision,
            info.tool,
            info.layout.len(),
            output::bytes(report.bytes),
            output::bytes(report.stored_bytes),
            report.seconds
        );
    }
    Ok(0)
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Lay a data-dir snapshot down as a member data dir (start it with --force-new-cluster).
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Snapshot ID, unique prefix, or `latest`.
    id: String,
    /// The data dir to build; an existing one is moved aside, never deleted.
    #[arg(long)]
    data_dir: PathBuf,
    /// Owner of the new data dir (default: user etcd when it exists and running as root).
    #[arg(long)]
    owner: Option<String>,
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let Command::Restore(a) = cmd;
    let (vault, catalog) = c.restorer("etcd datadir restore").await?;
    let snap = catalog.resolve_kind(&a.id, &vault::format::PayloadKind::EtcdDatadir)?;
    let report = lay_down_datadir(&vault, &catalog, &snap, &a.data_dir, a.owner.as_deref()).await?;
    if c.json {
        output::json(&report);
    } else {
        if let Some(old) = &report.moved_aside {
            println!("existing data dir {} moved aside to {}", report.data_dir.display(), old.display());
        }
        println!(
            "laid down data dir snapshot {} of member {} (cluster {}) at {}: {} files, {}{}",
            &report.snapshot[..12],
            report.member_name,
            report.cluster_id,
            report.data_dir.display(),
            report.files.len(),
            output::bytes(report.bytes),
            report.owner.as_ref().map(|o| format!(", owned by {o}")).unwrap_or_default()
        );
        println!(
            "next: start etcd once with --force-new-cluster --data-dir {}, then without it; fix its peer URL with `etcdctl member update`",
            report.data_dir.display()
        );
    }
    Ok(0)
}
