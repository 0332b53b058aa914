//! vaultd: the unattended daemon (issue 4): `check-config` and `run` (scheduler, HTTP API, metrics,
//! SIGHUP reload, systemd readiness). Logic that another front end would need lives in the `vault`
//! library.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use vault::source::profile::SYSTEM_PROFILE_DIR;
use vaultd::{check, config, run};

/// jemalloc, configured in `.cargo/config.toml`, instead of glibc's malloc: a long-running daemon's
/// memory then follows what it uses. glibc raises its mmap threshold after the first freed 16 MiB
/// pack and from then keeps freed buffers in per-thread arenas: capturing etcd deltas, vaultd grew
/// from 34 to 77 MiB in 10 minutes (docs/BENCHMARKS.md, issue 10).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Run the jobs on their schedules and serve the HTTP API until SIGTERM; SIGHUP reloads the jobs.
    Run {
        /// The config file.
        #[arg(long, env = "VAULTD_CONFIG", default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the shell completion script for bash, zsh or fish (the packages install them).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (used to build the packages).
    #[command(hide = true)]
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "vaultd", &mut script);
            if let Err(e) = std::io::Write::write_all(&mut std::io::stdout(), &script)
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("vaultd: cannot write the completion script to stdout: {e}");
                std::process::exit(1);
            }
            return;
        }
        Command::Man { out } => {
            if let Err(e) = std::fs::create_dir_all(out).and_then(|()| clap_mangen::generate_to(Cli::command(), out)) {
                eprintln!("vaultd: cannot write man pages into {}: {e}", out.display());
                std::process::exit(1);
            }
            return;
        }
        Command::CheckConfig { .. } | Command::Run { .. } => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VAULT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            Command::Run { config } => run_daemon(&config).await,
            Command::Completions { .. } | Command::Man { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    std::process::exit(code);
}

async fn run_daemon(path: &std::path::Path) -> i32 {
    let profile_dirs = vec![PathBuf::from(SYSTEM_PROFILE_DIR)];
    let cfg = match check::load_checked(path, &profile_dirs) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("vaultd: not starting: {} has {} problem(s)", path.display(), problems.len());
            return 2;
        }
    };
    let result = match run::open(cfg, profile_dirs).await {
        Ok(d) => run::run(d, path.to_path_buf()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vaultd: {e}");
            e.kind.exit_code()
        }
    }
}
