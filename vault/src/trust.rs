//! The trust anchor (docs/FORMAT.md section 2a): a vault's fingerprint, and the known-vaults file
//! in which a client remembers it.
//!
//! Everything in the store can be rewritten by anyone who can write to the store, and age does not
//! authenticate who wrapped `keys/writer.age`. So a client that holds only an identity cannot tell
//! the real writer key from one a store writer made up, unless it knows, from outside the store,
//! which vault it expects: its ID, its recipients and its writer-key check. The fingerprint is a
//! hash of exactly those; `init` prints it, operators pass it on a bare host (`--fingerprint`), and
//! every client remembers it per vault the first time it opens one (like SSH's known hosts).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::format::VaultConfig;

const CTX_FINGERPRINT: &str = "vault 2026-11 vault fingerprint";

/// What the fingerprint covers: the facts of a vault that decide who can read it and which writer
/// key is its own. Kept in the known-vaults file so a mismatch can say what changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultFacts {
    pub vault_id: String,
    /// Sorted, trimmed.
    pub recipients: Vec<String>,
    pub writer_key_check: String,
}

impl VaultFacts {
    pub fn of(config: &VaultConfig) -> Self {
        let mut recipients: Vec<String> = config.recipients.iter().map(|r| r.trim().to_string()).collect();
        recipients.sort();
        recipients.dedup();
        VaultFacts {
            vault_id: config.vault_id.clone(),
            recipients,
            writer_key_check: config.writer_key_check.clone(),
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = blake3::Hasher::new_derive_key(CTX_FINGERPRINT);
        h.update(b"vault_id\0");
        h.update(self.vault_id.as_bytes());
        h.update(b"\0writer_key_check\0");
        h.update(self.writer_key_check.as_bytes());
        for r in &self.recipients {
            h.update(b"\0recipient\0");
            h.update(r.as_bytes());
        }
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Fingerprint(fp)
    }

    /// What differs between the facts a client remembered (`self`) and the vault's now.
    pub fn changes_to(&self, now: &VaultFacts) -> Vec<String> {
        let mut out = Vec::new();
        if self.vault_id != now.vault_id {
            out.push(format!("vault ID {} is now {}", self.vault_id, now.vault_id));
        }
        if self.writer_key_check != now.writer_key_check {
            out.push("the writer key changed (writer-key check differs)".to_string());
        }
        let added: Vec<_> = now.recipients.iter().filter(|r| !self.recipients.contains(r)).collect();
        let removed: Vec<_> = self.recipients.iter().filter(|r| !now.recipients.contains(r)).collect();
        if !added.is_empty() {
            out.push(format!("recipients added: {}", join(&added)));
        }
        if !removed.is_empty() {
            out.push(format!("recipients removed: {}", join(&removed)));
        }
        out
    }
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// A vault fingerprint: 128 bits of a keyless BLAKE3 derivation over [`VaultFacts`], shown as four
/// groups of eight hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// Parse a fingerprint as printed by `init`; dashes, colons, spaces and case are ignored.
    pub fn parse(text: &str) -> Result<Fingerprint> {
        let digits: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ':' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let mut fp = [0u8; 16];
        hex::decode_to_slice(&digits, &mut fp).map_err(|_| {
            Error::usage(format!(
                "{text:?} is not a vault fingerprint (32 hex digits, as `vaultctl init` prints it)"
            ))
            .hint("copy the fingerprint `vaultctl init` printed, or ask the operator who keeps it")
        })?;
        Ok(Fingerprint(fp))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(f, "{}-{}-{}-{}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Where a client's trust in a vault comes from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrustOptions {
    /// The fingerprint the operator expects (`--fingerprint`, `VAULT_FINGERPRINT`, config
    /// `fingerprint`). It must match; it also replaces a remembered one that differs.
    pub fingerprint: Option<String>,
    /// The known-vaults file. `None` remembers nothing (library callers and tests).
    pub known_vaults: Option<PathBuf>,
}

/// How the vault just opened came to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustState {
    /// Its fingerprint matches one given by the operator or remembered from an earlier use.
    Pinned,
    /// Nothing was known about it: trusted on first use (and remembered, when a file is given).
    FirstUse,
}

/// The outcome of checking a vault against what the client knows.
#[derive(Clone, Debug)]
pub struct Trust {
    pub state: TrustState,
    pub fingerprint: Fingerprint,
    /// A line for the operator (first use, a replaced entry), when there is one.
    pub notice: Option<String>,
}

/// The default known-vaults file: `$XDG_CONFIG_HOME/vault/known_vaults.json`, else
/// `~/.config/vault/known_vaults.json`.
pub fn default_known_vaults() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("vault").join("known_vaults.json")
}

/// Why a client trusts a remembered vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustBasis {
    /// The operator gave its fingerprint.
    Fingerprint,
    /// A writer key file (handed out by the operator at init) opened it: the config MAC proves a
    /// holder of that key wrote the config.
    WriterKey,
    /// Nothing vouched for it: remembered on first use, so a later change is refused, but not
    /// enough to write with a writer key taken from the store.
    FirstUse,
}

/// One remembered vault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KnownVault {
    /// The store as `Store::describe` names it.
    pub location: String,
    pub fingerprint: String,
    pub basis: TrustBasis,
    #[serde(flatten)]
    pub facts: VaultFacts,
    pub first_seen: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KnownVaultsFile {
    vaults: Vec<KnownVault>,
}

fn load_known(path: &Path) -> Result<KnownVaultsFile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!("the known-vaults file {} does not parse", path.display()))
                .with_source(e)
                .hint("fix or move the file aside; every vault will then be trusted on first use again")
        }),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(KnownVaultsFile::default()),
        Err(e) => Err(Error::io(format!("cannot read the known-vaults file {}", path.display())).with_source(e)),
    }
}

fn save_known(path: &Path, known: &KnownVaultsFile) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| Error::io(format!("cannot write the known-vaults file {}", path.display())).with_source(e);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        hex::encode(crate::crypto::random_bytes::<6>())
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(known).expect("serialize known vaults"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Check a vault's config against what the client expects and knows, and remember it. Call it
/// only with a config that passed its key checks. `holds_writer_key`: the client opened the vault
/// with a writer key file, not one unwrapped from the store.
pub fn check(location: &str, config: &VaultConfig, opts: &TrustOptions, holds_writer_key: bool) -> Result<Trust> {
    let facts = VaultFacts::of(config);
    let fingerprint = facts.fingerprint();
    let expected = opts.fingerprint.as_deref().map(Fingerprint::parse).transpose()?;
    if let Some(exp) = expected
        && exp != fingerprint
    {
        return Err(Error::key(format!(
            "the vault at {location} has fingerprint {fingerprint}, not the expected {exp}: its recipients or writer key are not the ones you were given"
        ))
        .hint("do not use this vault: someone who can write to the store may have replaced its config or keys/writer.age; check the fingerprint with the operator who ran `vaultctl init` or the last `vaultctl key set-recipients`"));
    }
    let vouch = if expected.is_some() {
        Some(TrustBasis::Fingerprint)
    } else if holds_writer_key {
        Some(TrustBasis::WriterKey)
    } else {
        None
    };
    let state_of = |basis: Option<TrustBasis>| match basis {
        Some(TrustBasis::Fingerprint | TrustBasis::WriterKey) => TrustState::Pinned,
        _ => TrustState::FirstUse,
    };
    let Some(path) = &opts.known_vaults else {
        return Ok(Trust {
            state: state_of(vouch),
            fingerprint,
            notice: None,
        });
    };
    let mut known = load_known(path)?;
    let same_vault = |k: &KnownVault| k.location == location || k.facts.vault_id == facts.vault_id;
    let mut notice = None;
    if let Some(old) = known
        .vaults
        .iter()
        .find(|k| same_vault(k) && k.fingerprint != fingerprint.to_string())
    {
        if expected.is_none() {
            let what = old.facts.changes_to(&facts);
            let remembered_where = if old.location == location {
                "here".to_string()
            } else {
                format!("at {}", old.location)
            };
            return Err(Error::key(format!(
                "the vault at {location} does not match the one remembered {remembered_where} in {} (fingerprint {} since {}, now {fingerprint}): {}",
                path.display(),
                old.fingerprint,
                old.first_seen.format("%Y-%m-%d"),
                if what.is_empty() { "its facts changed".to_string() } else { what.join("; ") }
            ))
            .hint("if the operator changed the vault on purpose (`vaultctl key set-recipients`, a new vault at this URL), pass the new fingerprint with --fingerprint (VAULT_FINGERPRINT) once; otherwise someone who can write to the store replaced its config or writer key: do not use it"));
        }
        // The operator vouched for the new fingerprint: forget what was remembered.
        notice = Some(format!(
            "vault at {location}: the remembered fingerprint {} was replaced by {fingerprint} (given with --fingerprint) in {}",
            old.fingerprint,
            path.display()
        ));
        known.vaults.retain(|k| !same_vault(k));
    }
    // What vouched for this vault before, at this or another location (the same fingerprint).
    let remembered = known
        .vaults
        .iter()
        .filter(|k| same_vault(k))
        .map(|k| k.basis)
        .find(|b| *b != TrustBasis::FirstUse);
    let basis = vouch.or(remembered).unwrap_or(TrustBasis::FirstUse);
    let here = known.vaults.iter().position(|k| k.location == location);
    let first_ever = !known.vaults.iter().any(same_vault);
    let changed = match here {
        Some(i) if known.vaults[i].basis == basis || basis == TrustBasis::FirstUse => false,
        Some(i) => {
            known.vaults[i].basis = basis;
            true
        }
        None => {
            known.vaults.push(KnownVault {
                location: location.to_string(),
                fingerprint: fingerprint.to_string(),
                basis,
                facts,
                first_seen: chrono::Utc::now(),
            });
            true
        }
    };
    // Not remembering is no reason to stop a backup or a restore: what this open trusts was decided
    // above; only a later change would go unnoticed, so say so.
    let saved = if changed || notice.is_some() {
        save_known(path, &known).map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    if first_ever && basis == TrustBasis::FirstUse {
        notice = Some(format!(
            "first use of the vault at {location} on this host: its fingerprint {fingerprint} is now remembered in {}; compare it with the one `vaultctl init` printed",
            path.display()
        ));
    }
    if let Err(e) = saved {
        notice = Some(format!(
            "{e}: the vault at {location} (fingerprint {fingerprint}) is not remembered, so a later change of its recipients or writer key would not be noticed here; set known_vaults / --known-vaults to a writable file"
        ));
    }
    Ok(Trust {
        state: state_of(Some(basis)),
        fingerprint,
        notice,
    })
}

/// Refuse to remember nothing when the caller needs proof: used for writes made with a writer key
/// unwrapped by an identity, and for `key recover-writer`.
pub fn require_pinned(trust: &Trust, location: &str, what: &str) -> Result<()> {
    if trust.state == TrustState::Pinned {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Key,
        format!(
            "{what} with an identity needs the vault's fingerprint: the vault at {location} (fingerprint {}) was not known on this host",
            trust.fingerprint
        ),
    )
    .hint("pass --fingerprint FP (VAULT_FINGERPRINT) with the fingerprint `vaultctl init` printed; a writer key taken from the store unchecked could be one a store writer made up"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(recipients: &[&str], check: &str) -> VaultConfig {
        let json = serde_json::json!({
            "format": 1, "features": {"read": [], "write": []}, "vault_id": "00112233445566778899aabbccddeeff",
            "created": "2026-11-29T00:00:00Z",
            "chunker": {"algorithm": "fastcdc2020-keyed-gear", "min_size": 64, "avg_size": 128, "max_size": 256},
            "pack": {"target_size": 1048576}, "compression": {"algorithm": "zstd", "level": 3, "min_level": 3},
            "recipients": recipients, "store": {"conditional_create": true}, "writer_key_check": check,
        });
        serde_json::from_value(json).expect("config")
    }

    fn opts(dir: &Path, fp: Option<String>) -> TrustOptions {
        TrustOptions {
            fingerprint: fp,
            known_vaults: Some(dir.join("known.json")),
        }
    }

    #[test]
    fn fingerprint_covers_id_recipients_and_key_check_but_not_their_order() {
        let a = VaultFacts::of(&config(&["age1a", "age1b"], "c1")).fingerprint();
        assert_eq!(a, VaultFacts::of(&config(&["age1b", "age1a"], "c1")).fingerprint());
        assert_ne!(a, VaultFacts::of(&config(&["age1a", "age1b", "age1x"], "c1")).fingerprint());
        assert_ne!(a, VaultFacts::of(&config(&["age1a", "age1b"], "c2")).fingerprint());
        let mut other = config(&["age1a", "age1b"], "c1");
        other.vault_id = "ff".repeat(16);
        assert_ne!(a, VaultFacts::of(&other).fingerprint());
        assert_eq!(Fingerprint::parse(&a.to_string()).unwrap(), a);
        assert_eq!(Fingerprint::parse(&a.to_string().to_uppercase().replace('-', "")).unwrap(), a);
        assert!(Fingerprint::parse("zz").is_err());
    }

    #[test]
    fn first_use_is_remembered_and_a_change_is_refused_saying_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let c1 = config(&["age1a"], "c1");
        let t = check("directory /v", &c1, &opts(dir.path(), None), false).unwrap();
        assert_eq!(t.state, TrustState::FirstUse);
        assert!(t.notice.as_deref().unwrap_or("").contains("first use"));
        assert!(require_pinned(&t, "directory /v", "recovering the writer key").is_err());
        // Remembered, but a first use vouches for nothing: still not enough to write.
        let t = check("directory /v", &c1, &opts(dir.path(), None), false).unwrap();
        assert_eq!(t.state, TrustState::FirstUse);
        assert!(t.notice.is_none());
        // A host holding the writer key file vouches for the vault.
        let t = check("directory /v", &c1, &opts(dir.path(), None), true).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        let t = check("directory /v", &c1, &opts(dir.path(), None), false).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        // A store writer adds a recipient and a writer key of its own.
        let forged = config(&["age1a", "age1evil"], "c9");
        let e = check("directory /v", &forged, &opts(dir.path(), None), false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("recipients added: age1evil") && msg.contains("writer key changed"),
            "{msg}"
        );
        // The same vault ID at another location is the same vault: also refused.
        let e = check("directory /copy", &forged, &opts(dir.path(), None), false).unwrap_err();
        assert!(e.to_string().contains("at directory /v"), "{e}");
        // The operator vouches for the change with the new fingerprint.
        let fp = VaultFacts::of(&forged).fingerprint().to_string();
        let t = check("directory /v", &forged, &opts(dir.path(), Some(fp)), false).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        assert!(t.notice.as_deref().unwrap_or("").contains("replaced"));
        let t = check("directory /v", &forged, &opts(dir.path(), None), false).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("known.json")).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_known_vaults_file_that_cannot_be_written_is_a_notice_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let opts = TrustOptions {
            fingerprint: None,
            known_vaults: Some(blocker.join("known.json")),
        };
        let t = check("directory /v", &config(&["age1a"], "c1"), &opts, true).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        assert!(t.notice.as_deref().unwrap_or("").contains("not remembered"), "{t:?}");
    }

    #[test]
    fn a_given_fingerprint_must_match_and_pins_a_new_vault() {
        let dir = tempfile::tempdir().unwrap();
        let c1 = config(&["age1a"], "c1");
        let good = VaultFacts::of(&c1).fingerprint().to_string();
        let bad = VaultFacts::of(&config(&["age1a"], "c2")).fingerprint().to_string();
        let e = check("directory /v", &c1, &opts(dir.path(), Some(bad)), false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Key);
        assert!(!dir.path().join("known.json").exists());
        let t = check("directory /v", &c1, &opts(dir.path(), Some(good)), false).unwrap();
        assert_eq!(t.state, TrustState::Pinned);
        assert!(dir.path().join("known.json").exists());
    }
}
