//! A vault opened with its keys: config checks, key roles, and typed access to index segments,
//! snapshot manifests and packs (docs/FORMAT.md sections 2-6).

use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chunker::Chunker;
use crate::crypto::{Identities, Recipients, WriterKey, random_bytes};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{
    self, ChunkerAlgorithm, ChunkerParams, CompressionAlgorithm, CompressionParams, FORMAT_VERSION, Features, Id, IndexSegment,
    KNOWN_FEATURES, MetaKind, PackParams, SnapshotManifest, StoreCapabilities, VaultConfig,
};
use crate::store::{PutMode, Store};
use crate::trust::{self, Trust, TrustOptions};

/// Which keys the caller holds (at least one is needed to open a vault), and where its trust in the
/// vault comes from (docs/FORMAT.md section 2a).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeySource {
    pub writer_key: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    #[serde(default)]
    pub trust: TrustOptions,
}

/// Parameters chosen at `init` and fixed for the vault's life.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub recipients: Vec<String>,
    pub chunker: ChunkerParams,
    pub pack_target_size: u32,
    pub zstd_level: i32,
    pub zstd_min_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            recipients: Vec::new(),
            // Chosen by measurement on etcd snapshots: docs/FORMAT.md section 14.
            chunker: ChunkerParams {
                algorithm: ChunkerAlgorithm::FastCdc2020KeyedGear,
                min_size: 64 * 1024,
                avg_size: 256 * 1024,
                max_size: 1024 * 1024,
            },
            pack_target_size: 16 * 1024 * 1024,
            zstd_level: 5,
            zstd_min_level: 3,
        }
    }
}

/// A change of the vault's recipients, as recorded under `keys/history/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecipientChange {
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub old_recipients: Vec<String>,
    pub new_recipients: Vec<String>,
    /// What changed, in words ("recipients added: age1...").
    pub changes: Vec<String>,
}

/// An open vault.
pub struct Vault {
    pub store: Store,
    pub config: VaultConfig,
    pub writer: WriterKey,
    pub recipients: Recipients,
    identities: Option<Identities>,
    /// How this client came to trust the vault's config and writer key.
    pub trust: Trust,
    /// The writer key was unwrapped from `keys/writer.age` with an identity, not read from a file.
    writer_from_store: bool,
}

/// The config MAC input: the config's JSON with keys sorted and `mac` removed, so unknown fields
/// added by later versions are covered too.
fn canonical_config(raw: &serde_json::Value) -> Vec<u8> {
    let mut v = raw.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("mac");
    }
    serde_json::to_vec(&v).expect("serialize json value")
}

/// One named metadata object as read by [`Vault::read_named_meta`].
pub struct NamedMeta<T> {
    pub name: String,
    pub bytes: Bytes,
    pub value: Result<T>,
}

impl Vault {
    /// Create a new vault. Refuses to touch a store that already holds one.
    pub async fn init(store: Store, opts: &InitOptions) -> Result<(Vault, WriterKey)> {
        let recipients = Recipients::parse(&opts.recipients)?;
        let c = &opts.chunker;
        if !(c.min_size >= 64 && c.min_size < c.avg_size && c.avg_size < c.max_size && c.max_size <= format::MAX_CHUNK_SIZE) {
            return Err(Error::usage("chunker sizes must satisfy 64 <= min < avg < max <= 8 MiB"));
        }
        if !(1..=19).contains(&opts.zstd_level) || !(1..=opts.zstd_level).contains(&opts.zstd_min_level) {
            return Err(Error::usage("zstd levels must satisfy 1 <= min level <= level <= 19"));
        }
        if !(1 << 20..=256 << 20).contains(&opts.pack_target_size) {
            return Err(Error::usage("pack target size must be between 1 MiB and 256 MiB"));
        }
        store.create_root()?;
        if store.head(format::CONFIG_NAME).await?.is_some() {
            return Err(
                Error::new(ErrorKind::AlreadyExists, format!("a vault already exists at {}", store.describe()))
                    .hint("vaultctl init never touches an existing vault; choose another --repo"),
            );
        }
        let others = store.list("").await?;
        if !others.is_empty() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} is not empty ({} objects, e.g. {})",
                    store.describe(),
                    others.len(),
                    others[0].name
                ),
            )
            .hint("initialise a vault in an empty directory or bucket prefix"));
        }
        let conditional_create = store.probe_conditional_create().await?;
        let vault_id: [u8; 16] = random_bytes();
        let writer = WriterKey::generate(vault_id);
        let mut config = VaultConfig {
            format: FORMAT_VERSION,
            features: Features::default(),
            vault_id: hex::encode(vault_id),
            created: chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).expect("valid time"),
            chunker: opts.chunker,
            pack: PackParams {
                target_size: opts.pack_target_size,
            },
            compression: CompressionParams {
                algorithm: CompressionAlgorithm::Zstd,
                level: opts.zstd_level,
                min_level: opts.zstd_min_level,
            },
            recipients: opts.recipients.iter().map(|r| r.trim().to_string()).collect(),
            store: StoreCapabilities { conditional_create },
            writer_key_check: writer.key_check(),
            mac: String::new(),
        };
        let value = serde_json::to_value(&config).expect("serialize config");
        config.mac = writer.config_mac(&canonical_config(&value));
        // keys first, config last: the config is the commit point of init. Without conditional
        // create, the emptiness check above is all that guards against a concurrent init.
        let create = if conditional_create { PutMode::Create } else { PutMode::Overwrite };
        let wrapped = recipients.wrap(writer.to_file_text().as_bytes());
        store.put(format::WRITER_KEY_NAME, Bytes::from(wrapped), create).await?;
        let json = serde_json::to_vec_pretty(&config).expect("serialize config");
        store.put(format::CONFIG_NAME, Bytes::from(json), create).await.map_err(|e| {
            if e.kind == ErrorKind::AlreadyExists {
                Error::new(
                    ErrorKind::AlreadyExists,
                    format!("another init created a vault at {} at the same time", store.describe()),
                )
            } else {
                e
            }
        })?;
        let trust = trust::Trust {
            state: trust::TrustState::Pinned,
            fingerprint: trust::VaultFacts::of(&config).fingerprint(),
            notice: None,
        };
        Ok((
            Vault {
                store,
                config,
                writer: writer.clone(),
                recipients,
                identities: None,
                trust,
                writer_from_store: false,
            },
            writer,
        ))
    }

    /// Open an existing vault with whatever keys the caller has.
    pub async fn open(store: Store, keys: &KeySource) -> Result<Vault> {
        let raw = match store.get(format::CONFIG_NAME).await {
            Ok(b) => b,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(
                    Error::not_found(format!("no vault at {}: it has no config object", store.describe()))
                        .hint("check --repo / VAULT_REPO, or create a vault with `vaultctl init`"),
                );
            }
            Err(e) => return Err(e),
        };
        let value: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::integrity(format!("the config of {} is not valid JSON", store.describe())).with_source(e))?;
        let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != FORMAT_VERSION as u64 {
            return Err(Error::usage(format!(
                "the vault at {} has format {format}; this vaultctl understands only format {FORMAT_VERSION}",
                store.describe()
            ))
            .hint("use a vaultctl release that supports this format"));
        }
        let config: VaultConfig = serde_json::from_value(value.clone())
            .map_err(|e| Error::integrity(format!("the config of {} does not parse", store.describe())).with_source(e))?;
        let unknown: Vec<_> = config
            .features
            .read
            .iter()
            .chain(&config.features.write)
            .filter(|f| !KNOWN_FEATURES.contains(&f.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::usage(format!(
                "the vault at {} needs features this vaultctl lacks: {unknown:?}",
                store.describe()
            ))
            .hint("upgrade vaultctl/vaultd"));
        }
        let mut vault_id = [0u8; 16];
        hex::decode_to_slice(&config.vault_id, &mut vault_id).map_err(|_| Error::integrity("config vault_id is not 32 hex digits"))?;

        let identities = keys.identity.as_deref().map(Identities::load).transpose()?;
        let writer = match (&keys.writer_key, &identities) {
            (Some(path), _) => WriterKey::load(path)?,
            (None, Some(ids)) => {
                let wrapped = store.get(format::WRITER_KEY_NAME).await?;
                let text = ids.unwrap(&wrapped, "the vault's writer key (keys/writer.age)")?;
                WriterKey::parse_file_text(&String::from_utf8_lossy(&text), "keys/writer.age")?
            }
            (None, None) => {
                return Err(Error::key("no key given: this command needs the writer key or an identity").hint(
                    "pass --writer-key FILE (VAULT_WRITER_KEY) on a backup host, or --identity FILE (VAULT_IDENTITY) as an operator",
                ));
            }
        };
        if writer.vault_id != vault_id {
            return Err(Error::key(format!(
                "the writer key belongs to vault {}, not to vault {} at {}",
                hex::encode(writer.vault_id),
                config.vault_id,
                store.describe()
            )));
        }
        if writer.key_check() != config.writer_key_check {
            return Err(Error::key(format!(
                "the writer key does not match vault {} at {} (key check differs)",
                config.vault_id,
                store.describe()
            ))
            .hint("either this is not the vault's writer key, or someone replaced the vault's config: compare `vaultctl key fingerprint` with the fingerprint `vaultctl init` printed"));
        }
        if writer.config_mac(&canonical_config(&value)) != config.mac {
            return Err(Error::integrity(format!(
                "the config of {} fails its MAC: it was modified outside vault",
                store.describe()
            ))
            .hint("do not use this vault until the config is restored; a modified recipient list would expose new backups"));
        }
        if let (Some(ids), Some(_)) = (&identities, &keys.writer_key) {
            // Check the identity early so a wrong one fails before any long work.
            let wrapped = store.get(format::WRITER_KEY_NAME).await?;
            ids.unwrap(&wrapped, "the vault's writer key (keys/writer.age)")?;
        }
        let recipients = Recipients::parse(&config.recipients)?;
        // Only a config that passed every key check is compared with (and remembered as) the
        // vault this client knows.
        let trust = trust::check(&store.describe(), &config, &keys.trust, keys.writer_key.is_some())?;
        Ok(Vault {
            store,
            config,
            writer,
            recipients,
            identities,
            trust,
            writer_from_store: keys.writer_key.is_none(),
        })
    }

    /// Replace the vault's recipients (docs/FORMAT.md section 2b): an operator action that needs an
    /// identity and a vault this host has pinned. Records the change under `keys/history/` first,
    /// then re-wraps the writer key to the new recipients, then writes the config (the commit
    /// point). `dry_run` computes the change and writes nothing.
    pub async fn set_recipients(&self, new: &[String], host: &str, dry_run: bool) -> Result<RecipientChange> {
        self.identities("changing the vault's recipients")?;
        trust::require_pinned(&self.trust, &self.store.describe(), "changing the vault's recipients")?;
        let recipients = Recipients::parse(new)?;
        let mut config = self.config.clone();
        config.recipients = new.iter().map(|r| r.trim().to_string()).collect();
        config.mac = String::new();
        let value = serde_json::to_value(&config).expect("serialize config");
        config.mac = self.writer.config_mac(&canonical_config(&value));
        let old_facts = trust::VaultFacts::of(&self.config);
        let new_facts = trust::VaultFacts::of(&config);
        let change = RecipientChange {
            time: chrono::Utc::now(),
            host: host.to_string(),
            old_fingerprint: old_facts.fingerprint().to_string(),
            new_fingerprint: new_facts.fingerprint().to_string(),
            changes: old_facts.changes_to(&new_facts),
            old_recipients: old_facts.recipients,
            new_recipients: new_facts.recipients,
        };
        if change.changes.is_empty() {
            return Err(Error::usage("the vault already has exactly these recipients: nothing to change"));
        }
        if dry_run {
            return Ok(change);
        }
        let record = serde_json::to_vec_pretty(&change).expect("serialize recipient change");
        let name = format!(
            "{}{}-{}",
            format::KEY_HISTORY_PREFIX,
            change.time.format("%Y%m%dT%H%M%SZ"),
            &change.new_fingerprint[..8]
        );
        self.store
            .put(
                &name,
                Bytes::from(self.writer.seal_meta(MetaKind::KeyHistory, &record)),
                PutMode::Create,
            )
            .await?;
        let wrapped = recipients.wrap(self.writer.to_file_text().as_bytes());
        self.store
            .put(format::WRITER_KEY_NAME, Bytes::from(wrapped), PutMode::Overwrite)
            .await?;
        let json = serde_json::to_vec_pretty(&config).expect("serialize config");
        self.store.put(format::CONFIG_NAME, Bytes::from(json), PutMode::Overwrite).await?;
        Ok(change)
    }

    /// Every recorded change of the recipients, oldest first. A record that does not open with the
    /// writer key is reported as an error: the history is the audit trail of who can read the vault.
    pub async fn recipient_history(&self) -> Result<Vec<RecipientChange>> {
        let mut names: Vec<String> = self
            .store
            .list(format::KEY_HISTORY_PREFIX)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let bytes = self.store.get(&name).await?;
            let json = self.writer.open_meta(MetaKind::KeyHistory, &bytes, &name)?;
            out.push(serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))?);
        }
        Ok(out)
    }

    /// The vault's fingerprint (docs/FORMAT.md section 2a).
    pub fn fingerprint(&self) -> trust::Fingerprint {
        self.trust.fingerprint
    }

    /// Refuse to write with a writer key taken from the store unless the vault's fingerprint was
    /// known: a store writer can wrap a writer key of its own (with its own recipient added) to the
    /// real recipients, and only the fingerprint tells the two apart. `what` names the write.
    pub fn check_may_write(&self, what: &str) -> Result<()> {
        if !self.writer_from_store {
            return Ok(());
        }
        trust::require_pinned(&self.trust, &self.store.describe(), what)
    }

    pub fn vault_id(&self) -> &[u8; 16] {
        &self.writer.vault_id
    }

    /// The restorer's identities, or a clear error saying this needs one.
    pub fn identities(&self, for_what: &str) -> Result<&Identities> {
        self.identities.as_ref().ok_or_else(|| {
            Error::key(format!(
                "{for_what} needs an identity: the writer key cannot decrypt stored content"
            ))
            .hint("pass --identity FILE (VAULT_IDENTITY) with an age identity that is a recipient of this vault")
        })
    }

    pub fn has_identity(&self) -> bool {
        self.identities.is_some()
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(&self.config.chunker, self.writer.gear_table())
    }

    async fn put_meta(&self, kind: MetaKind, json: Vec<u8>, name_of: fn(&Id) -> String) -> Result<Id> {
        self.check_may_write("writing to the vault")?;
        let sealed = self.writer.seal_meta(kind, &json);
        let id = Id::of_stored(&sealed);
        let mode = if self.config.store.conditional_create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        match self.store.put(&name_of(&id), Bytes::from(sealed), mode).await {
            Ok(()) => Ok(id),
            // Same name means same bytes (I3): someone already stored exactly this.
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(id),
            Err(e) => Err(e),
        }
    }

    async fn get_meta(&self, kind: MetaKind, name: &str) -> Result<Vec<u8>> {
        let bytes = self.store.get(name).await?;
        if Some(Id::of_stored(&bytes)) != format::id_from_name(name) {
            return Err(Error::integrity(format!(
                "{name} does not match its name's hash: the stored object is damaged"
            )));
        }
        self.writer.open_meta(kind, &bytes, name)
    }

    pub async fn write_index(&self, seg: &IndexSegment) -> Result<Id> {
        self.put_meta(
            MetaKind::Index,
            serde_json::to_vec(seg).expect("serialize index"),
            format::index_name,
        )
        .await
    }

    pub async fn read_index(&self, id: &Id) -> Result<IndexSegment> {
        let name = format::index_name(id);
        let json = self.get_meta(MetaKind::Index, &name).await?;
        serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))
    }

    pub async fn write_snapshot(&self, m: &SnapshotManifest) -> Result<Id> {
        self.put_meta(
            MetaKind::Snapshot,
            serde_json::to_vec(m).expect("serialize manifest"),
            format::snapshot_name,
        )
        .await
    }

    pub async fn read_snapshot(&self, id: &Id) -> Result<SnapshotManifest> {
        let name = format::snapshot_name(id);
        let json = self.get_meta(MetaKind::Snapshot, &name).await?;
        serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))
    }

    /// Read sealed metadata objects named otherwise than by their hash (hold events, log, policy
    /// and verification records), 16 at a time, in the order given: each with its stored bytes
    /// and, opened as `kind` and parsed, its value or why it is unreadable. An object gone since
    /// the listing is left out; any other store error fails the read.
    pub async fn read_named_meta<T: serde::de::DeserializeOwned>(&self, kind: MetaKind, names: Vec<String>) -> Result<Vec<NamedMeta<T>>> {
        use futures::StreamExt;
        let fetched: Vec<(String, Result<Bytes>)> = futures::stream::iter(names)
            .map(|name| async move {
                let bytes = self.store.get(&name).await;
                (name, bytes)
            })
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::with_capacity(fetched.len());
        for (name, bytes) in fetched {
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let value = self.writer.open_meta(kind, &bytes, &name).and_then(|json| {
                serde_json::from_slice::<T>(&json).map_err(|e| Error::integrity(format!("{name} does not parse")).with_source(e))
            });
            out.push(NamedMeta { name, bytes, value });
        }
        Ok(out)
    }

    /// IDs of all objects under a prefix (ignores names that are not hashes).
    pub async fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self
            .store
            .list(prefix)
            .await?
            .iter()
            .filter_map(|o| format::id_from_name(&o.name))
            .collect())
    }
}
