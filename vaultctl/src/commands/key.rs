//! `vaultctl key recover-writer --identity F --out FILE`, `vaultctl key fingerprint`

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
    /// Print the vault's fingerprint and whether this host had it pinned (docs/FORMAT.md 2a).
    Fingerprint,
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    match cmd {
        Command::RecoverWriter { out } => recover_writer(c, out).await,
        Command::Fingerprint => fingerprint(c).await,
    }
}

async fn fingerprint(c: &Common) -> Result<i32> {
    let vault = c.vault().await?;
    let pinned = vault.trust.state == vault::trust::TrustState::Pinned;
    if c.json {
        output::json(&serde_json::json!({
            "vault_id": vault.config.vault_id,
            "fingerprint": vault.fingerprint().to_string(),
            "pinned": pinned,
            "recipients": vault.config.recipients,
        }));
    } else {
        println!("vault {} at {}", vault.config.vault_id, vault.store.describe());
        println!("fingerprint: {}", vault.fingerprint());
        println!(
            "{}",
            if pinned {
                "pinned on this host (given by the operator, or opened with the writer key file)"
            } else {
                "NOT pinned on this host (first use): compare it with the fingerprint `vaultctl init` printed"
            }
        );
    }
    Ok(0)
}

async fn recover_writer(c: &Common, out: PathBuf) -> Result<i32> {
    let mut keys = c.keys()?;
    keys.writer_key = None;
    if keys.identity.is_none() {
        return Err(vault::Error::key("recovering the writer key needs --identity"));
    }
    let vault = crate::context::open_vault(c.store()?, &keys).await?;
    vault.check_may_write("recovering the writer key")?;
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
