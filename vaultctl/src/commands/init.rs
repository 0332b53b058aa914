//! `vaultctl init --repo URL --recipient R... --writer-key-out FILE`

use std::path::PathBuf;

use vault::repo::{InitOptions, Vault};
use vault::{Error, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// age recipient (age1...) that can restore; repeat for several.
    #[arg(long = "recipient", required = true)]
    recipients: Vec<String>,
    /// Where to write the writer key (created 0600; never overwritten).
    #[arg(long)]
    writer_key_out: PathBuf,
    /// Pack target size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// zstd level while the packer keeps up with the source.
    #[arg(long, default_value_t = 5)]
    compression_level: i32,
    /// zstd level while the packer lags behind the source (adaptive).
    #[arg(long, default_value_t = 3)]
    compression_min_level: i32,
    /// Average chunk size in KiB (min = avg/4, max = avg*4); fixed for the vault's life.
    #[arg(long, default_value_t = 256)]
    chunk_avg_kib: u32,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    if a.writer_key_out.exists() {
        return Err(Error::new(
            vault::ErrorKind::AlreadyExists,
            format!("{} already exists", a.writer_key_out.display()),
        )
        .hint("the writer key is never overwritten; choose another --writer-key-out"));
    }
    let store = c.store()?;
    let mut opts = InitOptions {
        recipients: a.recipients,
        pack_target_size: a.pack_size_mib << 20,
        zstd_level: a.compression_level,
        zstd_min_level: a.compression_min_level.min(a.compression_level),
        ..Default::default()
    };
    let avg = a.chunk_avg_kib * 1024;
    opts.chunker.avg_size = avg;
    opts.chunker.min_size = avg / 4;
    opts.chunker.max_size = avg * 4;
    let (v, writer) = Vault::init(store, &opts).await?;
    super::write_secret_file(&a.writer_key_out, &writer.to_file_text())?;
    let fingerprint = v.fingerprint().to_string();
    // This host made the vault: remember it as vouched for by its fingerprint.
    let mut trust = c.keys()?.trust;
    trust.fingerprint = Some(fingerprint.clone());
    vault::trust::check(&v.store.describe(), &v.config, &trust, true)?;
    if c.json {
        output::json(&serde_json::json!({
            "vault_id": v.config.vault_id,
            "fingerprint": fingerprint,
            "repo": v.store.describe(),
            "writer_key": a.writer_key_out,
            "recipients": v.config.recipients,
            "conditional_create": v.config.store.conditional_create,
        }));
    } else {
        println!("created vault {} in {}", v.config.vault_id, v.store.describe());
        println!("writer key written to {} (mode 0600)", a.writer_key_out.display());
        println!("vault fingerprint: {fingerprint}");
        println!(
            "  keep it with the operator identity: a host that has not opened this vault before needs it (--fingerprint or VAULT_FINGERPRINT) to recover the writer key or back up with an identity, and should be given it to restore"
        );
        if !v.config.store.conditional_create {
            println!("note: this store does not honour conditional create; concurrent writers are not protected");
        }
    }
    Ok(0)
}
