//! The client config file (`--config FILE`): one options struct that the CLI flags, the config
//! file and the library share. Flags and `VAULT_*` variables override the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::etcd_v3::EtcdOptions;
use crate::store::S3Options;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Vault URL: /path, file:///path or s3://bucket/prefix.
    pub repo: Option<String>,
    pub writer_key: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    /// The vault's fingerprint, as `vaultctl init` printed it (docs/FORMAT.md section 2a).
    pub fingerprint: Option<String>,
    /// Where the client remembers the vaults it has opened.
    pub known_vaults: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Options,
    pub etcd: Option<EtcdOptions>,
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read config file {}", path.display())).with_source(e))?;
        toml::from_str(&text).map_err(|e| Error::usage(format!("config file {} is invalid: {}", path.display(), e.to_string().trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/vaultctl.toml");
        let c = ClientConfig::load(&p).unwrap();
        assert_eq!(c.repo.as_deref(), Some("s3://backups/cluster-a"));
        assert_eq!(c.etcd.unwrap().endpoints.len(), 3);
    }

    #[test]
    fn a_malformed_config_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "repo = \"/x\"\nbogus = 1\n").unwrap();
        let e = ClientConfig::load(&p).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Usage);
        assert!(e.to_string().contains("bad.toml") && e.to_string().contains("bogus"), "{e}");
    }
}
