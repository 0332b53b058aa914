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
    /// Capture host files (a profile's paths and/or --path) with the installed-package list.
    Files(FilesArgs),
    /// Capture the etcd v2 keyspace (directories, keys, TTLs) through the v2 API.
    EtcdV2(super::etcd_v2::BackupArgs),
    /// Capture this host's etcd member data dir (v2 WAL and snap, v3 database) from a running member.
    EtcdDatadir(super::etcd_datadir::BackupArgs),
}

#[derive(clap::Args)]
pub struct FilesArgs {
    /// A profile: master, node, etcd (built in), a name in /etc/vault/profiles, or a .toml path.
    #[arg(long)]
    profile: Option<String>,
    /// A path to capture (absolute; globs allowed); repeatable, adds to the profile's.
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Leave out paths matching this glob; repeatable.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Read the host's files under this directory (a mounted disk, a test tree).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Do not capture the installed-package list.
    #[arg(long)]
    no_packages: bool,
    /// Tag the snapshot, e.g. --tag change=CHG-1234; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Job name recorded in the snapshot.
    #[arg(long, default_value = "manual")]
    job: String,
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
    match kind {
        Kind::Etcd(a) => run_etcd(c, a).await,
        Kind::Files(a) => run_files(c, a).await,
        Kind::EtcdV2(a) => super::etcd_v2::backup(c, a).await,
        Kind::EtcdDatadir(a) => super::etcd_datadir::backup(c, a).await,
    }
}

async fn run_files(c: &Common, a: FilesArgs) -> Result<i32> {
    let selection = vault::source::selection::FilesSelection {
        profile: a.profile.clone(),
        paths: a.paths.clone(),
        exclude: a.excludes.clone(),
        root: a.root.clone(),
    };
    let resolved = selection.resolve(&super::files::profile_dirs())?;
    let missing = resolved.missing;
    let packages = match (a.no_packages, resolved.profile.as_ref().is_none_or(|p| p.packages)) {
        (false, true) => vault::source::packages::capture()?.map(|l| serde_json::to_value(l).expect("serialize package list")),
        _ => None,
    };
    let tags = parse_tags(&a.tags)?;
    let vault = c.vault().await?;
    let mut catalog = c.catalog(&vault).await?;
    let opts = vault::ops::files::FilesOptions {
        root: a.root.clone(),
        paths: resolved.paths,
        excluded: resolved.excluded,
        profile: resolved.profile.as_ref().map(|p| p.name.clone()),
        packages,
    };
    let pb = output::progress(c.json, None, "files");
    let bopts = BackupOptions {
        job: a.job,
        host: None,
        tags,
        slot: None,
        progress: output::progress_fn(&pb),
    };
    let report = vault::ops::files::backup_files(&vault, &mut catalog, opts, &bopts).await;
    output::finish(pb);
    let report = report?;
    if c.json {
        let mut v = serde_json::to_value(&report).expect("serialize report");
        v["missing_patterns"] = serde_json::json!(missing);
        output::json(&v);
    } else {
        println!("{}", report.id);
        eprintln!(
            "{} files, {} dirs, {} symlinks: {} read, {} new, {} stored in {:.1}s",
            report.files,
            report.dirs,
            report.symlinks,
            output::bytes(report.bytes),
            output::bytes(report.new_bytes),
            output::bytes(report.stored_bytes),
            report.seconds
        );
        for m in &missing {
            eprintln!("not present on this host: {m}");
        }
        for p in &report.changed_while_read {
            eprintln!("warning: {p} kept changing while it was read (three times): stored as last read, possibly torn");
        }
        for s in &report.skipped {
            eprintln!("skipped {}: {}", s.path, s.reason);
        }
        if report.incomplete {
            eprintln!("warning: the snapshot is INCOMPLETE: some entries could not be read (listed above)");
        }
    }
    Ok(if report.incomplete { 7 } else { 0 })
}

async fn run_etcd(c: &Common, a: EtcdArgs) -> Result<i32> {
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
        slot: None,
        progress,
    };
    let report = backup_etcd_v3(&vault, &mut catalog, &etcd, &opts).await;
    output::finish(pb);
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
