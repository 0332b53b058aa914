//! vaultd: the unattended daemon (issue 4). This first slice has the config file and
//! `check-config`; `run` (scheduler, HTTP API, metrics) is to come. Logic that another front end
//! would need lives in the `vault` library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vault::source::profile::SYSTEM_PROFILE_DIR;
use vaultd::{check, config};

#[derive(Parser)]
#[command(name = "vaultd", version, about = "The vault daemon: scheduled etcd and host-file captures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and report every problem with its key and line; exit 2 if there is any.
    CheckConfig {
        /// The config file.
        #[arg(long, env = "VAULTD_CONFIG", default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
        /// Skip the checks that open the vault (reachability, writer key).
        #[arg(long)]
        offline: bool,
    },
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
    let code = runtime.block_on(async move {
        match cli.command {
            Command::CheckConfig { config, offline } => {
                let problems = check::check_config(&config, &[PathBuf::from(SYSTEM_PROFILE_DIR)], !offline).await;
                for p in &problems {
                    eprintln!("{p}");
                }
                if problems.is_empty() {
                    println!("{}: OK", config.display());
                    0
                } else {
                    eprintln!("{}: {} problem(s)", config.display(), problems.len());
                    2
                }
            }
        }
    });
    std::process::exit(code);
}
