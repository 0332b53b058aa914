//! Options every command shares, and opening the store, vault and catalog from them.

use std::path::PathBuf;

use clap::Args;
use vault::catalog::{self, Catalog};
use vault::config::ClientConfig;
use vault::repo::{KeySource, Vault};
use vault::store::Store;
use vault::trust::TrustOptions;
use vault::{Error, Result};

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Vault URL: /path, file:///path or s3://bucket/prefix.
    #[arg(long, global = true, env = "VAULT_REPO")]
    pub repo: Option<String>,
    /// Writer key file (backup hosts).
    #[arg(long, global = true, env = "VAULT_WRITER_KEY")]
    pub writer_key: Option<PathBuf>,
    /// age identity file (operators restoring).
    #[arg(long, global = true, env = "VAULT_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// The vault's fingerprint as `vaultctl init` printed it; needed on a host that has not opened
    /// this vault before to write with an identity or recover the writer key.
    #[arg(long, global = true, env = "VAULT_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Where this host remembers the vaults it opened; default ~/.config/vault/known_vaults.json.
    #[arg(long, global = true, env = "VAULT_KNOWN_VAULTS")]
    pub known_vaults: Option<PathBuf>,
    /// Catalog (SQLite cache) path; default ~/.cache/vault/<vault id>.sqlite.
    #[arg(long, global = true, env = "VAULT_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Config file (TOML) with repo, keys, catalog, [s3] and [etcd] settings.
    #[arg(long, global = true, env = "VAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Common {
    pub fn file_config(&self) -> Result<ClientConfig> {
        match &self.config {
            Some(p) => ClientConfig::load(p),
            None => Ok(ClientConfig::default()),
        }
    }

    pub fn store(&self) -> Result<Store> {
        let cfg = self.file_config()?;
        let url = self
            .repo
            .clone()
            .or(cfg.repo.clone())
            .ok_or_else(|| Error::usage("no vault given").hint("pass --repo URL or set VAULT_REPO"))?;
        Store::open(&url, &cfg.s3)
    }

    pub fn keys(&self) -> Result<KeySource> {
        let cfg = self.file_config()?;
        Ok(KeySource {
            writer_key: self.writer_key.clone().or(cfg.writer_key),
            identity: self.identity.clone().or(cfg.identity),
            trust: TrustOptions {
                fingerprint: self.fingerprint.clone().or(cfg.fingerprint),
                known_vaults: Some(
                    self.known_vaults
                        .clone()
                        .or(cfg.known_vaults)
                        .unwrap_or_else(vault::trust::default_known_vaults),
                ),
            },
        })
    }

    pub async fn vault(&self) -> Result<Vault> {
        open_vault(self.store()?, &self.keys()?).await
    }

    /// The vault and its up-to-date catalog for a command that reads stored content (`what`):
    /// refused at once, before any work, when no identity was given.
    pub async fn restorer(&self, what: &str) -> Result<(Vault, Catalog)> {
        let vault = self.vault().await?;
        vault.identities(what)?;
        let catalog = self.catalog(&vault).await?;
        Ok((vault, catalog))
    }

    /// Open the catalog and bring it up to date with the vault.
    pub async fn catalog(&self, vault: &Vault) -> Result<Catalog> {
        let cfg = self.file_config()?;
        let path = self
            .catalog
            .clone()
            .or(cfg.catalog)
            .unwrap_or_else(|| catalog::default_path(&vault.config.vault_id));
        let mut c = Catalog::open(&path, &vault.config.vault_id)?;
        for u in c.sync(vault).await?.unreadable {
            eprintln!("vaultctl: warning: DAMAGED, left out of the catalog: {u} (see `vaultctl verify --all`)");
        }
        Ok(c)
    }
}

/// Open a vault and tell the operator when it was trusted on first use.
pub async fn open_vault(store: Store, keys: &KeySource) -> Result<Vault> {
    let vault = Vault::open(store, keys).await?;
    if let Some(notice) = &vault.trust.notice {
        eprintln!("vaultctl: {notice}");
    }
    Ok(vault)
}
