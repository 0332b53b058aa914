//! `vaultctl man --out DIR` (hidden): writes the man pages, generated from the clap definitions:
//! `vaultctl.1` and one `vaultctl-SUBCOMMAND.1` per subcommand. Used by `scripts/release.sh`.

use std::path::PathBuf;

use vault::Error;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to write the pages into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: clap::Command, a: Args) -> vault::Result<i32> {
    let cannot = |e: std::io::Error| {
        Error::io(format!("cannot write man pages into {}", a.out.display()))
            .with_source(e)
            .hint("choose a writable directory with --out")
    };
    std::fs::create_dir_all(&a.out).map_err(cannot)?;
    clap_mangen::generate_to(cmd, &a.out).map_err(cannot)?;
    Ok(0)
}
