//! `vaultctl key recover-writer --identity F --out FILE`

use std::path::PathBuf;

use vault::Result;

use crate::context::Common;
use crate::output;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Recover the writer key from the vault with an identity (for a rebuilt backup host).
    RecoverWriter {
        /// Where to write the writer key (created 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    let Command::RecoverWriter { out } = cmd;
    let mut keys = c.keys()?;
    keys.writer_key = None;
    if keys.identity.is_none() {
        return Err(vault::Error::key("recovering the writer key needs --identity"));
    }
    let vault = vault::repo::Vault::open(c.store()?, &keys).await?;
    super::write_secret_file(&out, &vault.writer.to_file_text())?;
    if c.json {
        output::json(&serde_json::json!({ "vault_id": vault.config.vault_id, "writer_key": out }));
    } else {
        println!(
            "writer key of vault {} written to {} (mode 0600)",
            vault.config.vault_id,
            out.display()
        );
    }
    Ok(0)
}
