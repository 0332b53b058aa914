//! `vaultctl key recover-writer --identity F --out FILE`, `key fingerprint`, `key set-recipients`,
//! `key history`

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
    /// Replace the vault's recipients (operator action, needs --identity and a pinned vault): the
    /// fingerprint changes and every host must be given the new one.
    SetRecipients {
        /// age recipient (age1...) that can restore from now on; repeat for several.
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
        /// Show the change and the new fingerprint; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The recorded changes of the vault's recipients, oldest first.
    History,
}

pub async fn run(c: &Common, cmd: Command) -> Result<i32> {
    match cmd {
        Command::RecoverWriter { out } => recover_writer(c, out).await,
        Command::Fingerprint => fingerprint(c).await,
        Command::SetRecipients { recipients, dry_run } => set_recipients(c, &recipients, dry_run).await,
        Command::History => history(c).await,
    }
}

async fn set_recipients(c: &Common, recipients: &[String], dry_run: bool) -> Result<i32> {
    let vault = c.vault().await?;
    let host = vault::ops::backup::hostname();
    let change = vault.set_recipients(recipients, &host, dry_run).await?;
    if !dry_run {
        // This host vouches for the new fingerprint: remember it.
        let mut trust = c.keys()?.trust;
        trust.fingerprint = Some(change.new_fingerprint.clone());
        let mut config = vault.config.clone();
        config.recipients = change.new_recipients.clone();
        vault::trust::check(&vault.store.describe(), &config, &trust, true)?;
    }
    if c.json {
        output::json(&serde_json::json!({ "dry_run": dry_run, "change": change }));
        return Ok(0);
    }
    println!(
        "{}",
        if dry_run {
            "dry run: nothing written"
        } else {
            "recipients changed"
        }
    );
    for line in &change.changes {
        println!("  {line}");
    }
    println!("old fingerprint: {}", change.old_fingerprint);
    println!("new fingerprint: {}", change.new_fingerprint);
    println!(
        "every host must now be given the new fingerprint (vaultd: fingerprint = \"{}\", vaultctl: --fingerprint); until then they refuse the vault",
        change.new_fingerprint
    );
    println!(
        "packs stored before keep their keys wrapped to the old recipients: a removed recipient can still read what was captured before now; a new one reads only what is captured from now on"
    );
    Ok(0)
}

async fn history(c: &Common) -> Result<i32> {
    let vault = c.vault().await?;
    let changes = vault.recipient_history().await?;
    if c.json {
        output::json(&changes);
        return Ok(0);
    }
    if changes.is_empty() {
        println!("no recorded change of recipients since init (fingerprint {})", vault.fingerprint());
    }
    for ch in &changes {
        println!(
            "{}  on {}: {} -> {}",
            ch.time.format("%Y-%m-%d %H:%M:%SZ"),
            ch.host,
            ch.old_fingerprint,
            ch.new_fingerprint
        );
        for line in &ch.changes {
            println!("    {line}");
        }
    }
    Ok(0)
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
