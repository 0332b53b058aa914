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
    match std::io::stdout().write_all(&script) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::io("cannot write the completion script to stdout").with_source(e)),
        Ok(()) => Ok(0),
    }
}
