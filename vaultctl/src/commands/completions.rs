//! `vaultctl completions SHELL`: the shell completion script, generated from the clap definitions
//! (the packages install the same scripts, made by this command at release time).

use std::io::Write;

use clap_complete::Shell;
use vault::Error;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Print the completion script for `cmd` (the whole CLI) to stdout.
pub fn run(mut cmd: clap::Command, a: Args) -> vault::Result<i32> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, name, &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Error::io("cannot write the completion script to stdout").with_source(e))?;
    Ok(0)
}
