//! vaultctl: the operator's CLI. Each subcommand lives in `commands/<name>.rs`; shared option
//! handling in `context.rs`. Logic that another front end would need lives in the `vault` library.

mod commands;
mod context;
mod output;

use clap::{CommandFactory, Parser, Subcommand};

use context::Common;

#[derive(Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Backup vault for etcd-backed clusters: back up, list, verify, restore"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new age identity (restorer key) and print its recipient.
    Keygen(commands::keygen::Args),
    /// Create a new vault and its writer key.
    Init(commands::init::Args),
    /// Capture something into the vault.
    #[command(subcommand)]
    Backup(commands::backup::Kind),
    /// List snapshots.
    Snapshots(commands::snapshots::Args),
    /// Check snapshots: structure, stored objects, and (with an identity) content.
    Verify(commands::verify::Args),
    /// Apply a retention policy: forget what it removes (tombstones in the deletion log), with every reason.
    Forget(commands::forget::Args),
    /// Retention audit: schedule adherence, retention compliance, verification coverage and
    /// controls (exit 3 when a control fails).
    Audit(commands::audit::Args),
    /// Bring forgotten snapshots back, until prune deletes their data.
    Undelete(commands::undelete::Args),
    /// Delete the data of forgotten snapshots that no kept snapshot uses (two passes a grace period apart).
    Prune(commands::prune::Args),
    /// The deletion log (every forget, undelete and prune) and its tamper checks.
    DeletionLog(commands::deletion_log::Args),
    /// Keep a snapshot whatever the retention policy says (a hold stored in the vault).
    Hold(commands::hold::Args),
    /// End a snapshot's hold.
    Release(commands::release::Args),
    /// The active holds (--all: every hold and release event).
    Holds(commands::holds::Args),
    /// Restore a snapshot to a file.
    Restore(commands::restore::Args),
    /// Bring the index in line with the packs that exist; say which snapshots are whole again.
    Repair(commands::repair::Args),
    /// etcd recovery flows.
    #[command(subcommand)]
    Etcd(commands::etcd::Command),
    /// The local catalog (a cache of the vault's index and snapshots).
    #[command(subcommand)]
    Catalog(commands::catalog::Command),
    /// Differences between a files snapshot and the live files, or another snapshot.
    Diff(commands::diff::Args),
    /// Installed-package lists captured with host files.
    #[command(subcommand)]
    Packages(commands::packages::Command),
    /// Is vaultd alive and ready, and how are its jobs.
    Status(commands::daemon::DaemonArgs),
    /// The daemon's jobs: schedules, last attempt and success, next slot.
    Jobs(commands::daemon::DaemonArgs),
    /// Ask vaultd to run a job now.
    Run {
        /// Job name.
        job: String,
        /// Wait until the run ends; exit non-zero if it failed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        daemon: commands::daemon::DaemonArgs,
    },
    /// Key management.
    #[command(subcommand)]
    Key(commands::key::Command),
    /// Print the shell completion script for bash, zsh or fish (the packages install them).
    Completions(commands::completions::Args),
    /// Write the man pages into a directory (used to build the packages).
    #[command(hide = true)]
    Man(commands::man::Args),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VAULT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.common.json;
    let result = runtime.block_on(async move {
        let c = cli.common;
        match cli.command {
            Command::Keygen(a) => commands::keygen::run(&c, a).await,
            Command::Init(a) => commands::init::run(&c, a).await,
            Command::Backup(k) => commands::backup::run(&c, k).await,
            Command::Snapshots(a) => commands::snapshots::run(&c, a).await,
            Command::Verify(a) => commands::verify::run(&c, a).await,
            Command::Forget(a) => commands::forget::run(&c, a).await,
            Command::Audit(a) => commands::audit::run(&c, a).await,
            Command::Undelete(a) => commands::undelete::run(&c, a).await,
            Command::Prune(a) => commands::prune::run(&c, a).await,
            Command::DeletionLog(a) => commands::deletion_log::run(&c, a).await,
            Command::Hold(a) => commands::hold::run(&c, a).await,
            Command::Release(a) => commands::release::run(&c, a).await,
            Command::Holds(a) => commands::holds::run(&c, a).await,
            Command::Restore(a) => commands::restore::run(&c, a).await,
            Command::Repair(a) => commands::repair::run(&c, a).await,
            Command::Etcd(cmd) => commands::etcd::run(&c, cmd).await,
            Command::Catalog(cmd) => commands::catalog::run(&c, cmd).await,
            Command::Key(cmd) => commands::key::run(&c, cmd).await,
            Command::Diff(a) => commands::diff::run(&c, a).await,
            Command::Status(d) => commands::daemon::status(c.json, &d).await,
            Command::Jobs(d) => commands::daemon::jobs(c.json, &d).await,
            Command::Run { job, wait, daemon } => commands::daemon::run(c.json, &daemon, &job, wait).await,
            Command::Packages(cmd) => commands::packages::run(&c, cmd).await,
            Command::Completions(a) => commands::completions::run(Cli::command(), a),
            Command::Man(a) => commands::man::run(Cli::command(), a),
        }
    });
    // Do not wait for lingering background tasks (e.g. a broken etcd stream).
    runtime.shutdown_background();
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            output::error(json, &e);
            std::process::exit(e.kind.exit_code());
        }
    }
}
