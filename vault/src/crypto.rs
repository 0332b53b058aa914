//! Keys, key derivation, and the three sealing primitives of the format (docs/FORMAT.md sections 2, 5, 8, 9):
//! age wrapping to recipients, per-pack blob AEAD, and writer-readable metadata AEAD.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{Id, MAX_METADATA_SIZE, META_MAGIC, MetaKind};

const CTX_CHUNK_ID: &str = "vault 2026-11 chunk id";
const CTX_GEAR: &str = "vault 2026-11 chunker gear";
const CTX_META: &str = "vault 2026-11 metadata aead";
const CTX_CONFIG_MAC: &str = "vault 2026-11 config mac";
const CTX_KEY_CHECK: &str = "vault 2026-11 writer key check";
const CTX_JOB_TAG: &str = "vault 2026-11 job tag";
const WRITER_KEY_PREFIX: &str = "VAULT-WRITER-KEY-1-";

/// Fill a fresh array with OS randomness.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The writer key `W` and everything derived from it. Debug output never shows the secret. The
/// secrets live on the heap (a move copies only the pointer) and are wiped when dropped.
#[derive(Clone)]
pub struct WriterKey {
    pub vault_id: [u8; 16],
    keys: Box<WriterSecrets>,
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct WriterSecrets {
    secret: [u8; 32],
    chunk_id_key: [u8; 32],
    meta_key: [u8; 32],
}

impl fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterKey(vault {}, secret redacted)", hex::encode(self.vault_id))
    }
}

impl WriterKey {
    pub fn new(vault_id: [u8; 16], mut secret: [u8; 32]) -> Self {
        let key = WriterKey {
            vault_id,
            keys: Box::new(WriterSecrets {
                secret,
                chunk_id_key: blake3::derive_key(CTX_CHUNK_ID, &secret),
                meta_key: blake3::derive_key(CTX_META, &secret),
            }),
        };
        secret.zeroize();
        key
    }

    /// A key derived from `W` for one purpose, wiped when dropped.
    fn derived(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(context, &self.keys.secret))
    }

    pub fn generate(vault_id: [u8; 16]) -> Self {
        Self::new(vault_id, random_bytes())
    }

    /// Keyed BLAKE3 chunk ID.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.keys.chunk_id_key, plaintext).as_bytes())
    }

    /// The chunker's secret gear table.
    pub fn gear_table(&self) -> [u64; 256] {
        let key = self.derived(CTX_GEAR);
        let mut xof = blake3::Hasher::new_keyed(&key).finalize_xof();
        let mut bytes = [0u8; 256 * 8];
        xof.fill(&mut bytes);
        let mut table = [0u64; 256];
        for (i, t) in table.iter_mut().enumerate() {
            *t = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        table
    }

    pub fn config_mac(&self, canonical: &[u8]) -> String {
        let key = self.derived(CTX_CONFIG_MAC);
        blake3::keyed_hash(&key, canonical).to_hex().to_string()
    }

    pub fn key_check(&self) -> String {
        hex::encode(&self.derived(CTX_KEY_CHECK)[..16])
    }

    /// A job's name as it appears in object names (claims): keyed, so the store does not learn
    /// job names.
    pub fn job_tag(&self, job: &str) -> String {
        let key = self.derived(CTX_JOB_TAG);
        hex::encode(&blake3::keyed_hash(&key, job.as_bytes()).as_bytes()[..16])
    }

    /// The writer key file's text (section 9), wiped when dropped.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# vault writer key for vault {}: keep secret, mode 0600\n{WRITER_KEY_PREFIX}{}-{}\n",
            hex::encode(self.vault_id),
            hex::encode(self.vault_id),
            hex::encode(self.keys.secret)
        ))
    }

    pub fn parse_file_text(text: &str, origin: &str) -> Result<Self> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| Error::key(format!("writer key {origin} is empty")))?;
        let bad = || {
            Error::key(format!(
                "writer key {origin} is malformed (expected one line {WRITER_KEY_PREFIX}<vault id>-<secret>)"
            ))
            .hint("use the file written by `vaultctl init --writer-key-out`, or recover it with `vaultctl key recover-writer --identity F`")
        };
        let rest = line.strip_prefix(WRITER_KEY_PREFIX).ok_or_else(bad)?;
        let (vid, sec) = rest.split_once('-').ok_or_else(bad)?;
        let mut vault_id = [0u8; 16];
        let mut secret = [0u8; 32];
        hex::decode_to_slice(vid, &mut vault_id).map_err(|_| bad())?;
        hex::decode_to_slice(sec, &mut secret).map_err(|_| bad())?;
        Ok(WriterKey::new(vault_id, secret))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).context(ErrorKind::Key, || format!("cannot read writer key file {}", path.display()))?;
        Self::parse_file_text(&text, &path.display().to_string())
    }

    /// Seal a metadata object (section 8).
    pub fn seal_meta(&self, kind: MetaKind, json: &[u8]) -> Vec<u8> {
        self.seal_compressed_meta(kind, &zstd::bulk::compress(json, 3).expect("zstd compress into memory"))
    }

    fn seal_compressed_meta(&self, kind: MetaKind, compressed: &[u8]) -> Vec<u8> {
        let nonce: [u8; 24] = random_bytes();
        let aad = self.meta_aad(kind);
        let ct = XChaCha20Poly1305::new((&self.keys.meta_key).into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: compressed,
                    aad: &aad,
                },
            )
            .expect("aead encrypt");
        let mut out = Vec::with_capacity(33 + ct.len());
        out.extend_from_slice(META_MAGIC);
        out.push(kind as u8);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Open a metadata object; `what` names it in errors.
    pub fn open_meta(&self, kind: MetaKind, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
        if bytes.len() < 33 + 16 || &bytes[..8] != META_MAGIC {
            return Err(Error::integrity(format!(
                "{what} is not a vault metadata object (bad magic or truncated)"
            )));
        }
        if bytes[8] != kind as u8 {
            return Err(Error::integrity(format!(
                "{what} has metadata kind {} where {} was expected",
                bytes[8], kind as u8
            )));
        }
        let aad = self.meta_aad(kind);
        let plain = XChaCha20Poly1305::new((&self.keys.meta_key).into())
            .decrypt(
                bytes[9..33].into(),
                Payload {
                    msg: &bytes[33..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::integrity(format!(
                    "{what} failed authentication: it was corrupted, or it belongs to another vault or writer key"
                ))
            })?;
        let decoder = zstd::stream::read::Decoder::new(&plain[..]).context(ErrorKind::Integrity, || format!("{what}: bad zstd payload"))?;
        let mut json = Vec::new();
        decoder
            .take(MAX_METADATA_SIZE + 1)
            .read_to_end(&mut json)
            .context(ErrorKind::Integrity, || format!("{what}: bad zstd payload"))?;
        if json.len() as u64 > MAX_METADATA_SIZE {
            return Err(Error::integrity(format!(
                "{what} decompresses to more than {MAX_METADATA_SIZE} bytes: it is damaged or forged"
            )));
        }
        Ok(json)
    }

    fn meta_aad(&self, kind: MetaKind) -> [u8; 17] {
        let mut aad = [0u8; 17];
        aad[..16].copy_from_slice(&self.vault_id);
        aad[16] = kind as u8;
        aad
    }
}

/// A pack's content key: random, single-use, wrapped to the recipients and then forgotten. On the
/// heap (moves copy the pointer only) and wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PackKey(Box<[u8; 32]>);

impl PackKey {
    pub fn generate() -> Self {
        let mut key = PackKey(Box::new([0u8; 32]));
        rand::rngs::OsRng.fill_bytes(&mut key.0[..]);
        key
    }
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 32 {
            return Err(Error::integrity("unwrapped pack key has the wrong length"));
        }
        let mut key = PackKey(Box::new([0u8; 32]));
        key.0.copy_from_slice(b);
        Ok(key)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn nonce(seq: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&seq.to_le_bytes());
        n
    }

    fn aad(vault_id: &[u8; 16], chunk: &Id) -> [u8; 48] {
        let mut aad = [0u8; 48];
        aad[..16].copy_from_slice(vault_id);
        aad[16..].copy_from_slice(&chunk.0);
        aad
    }

    pub fn seal_blob(&self, vault_id: &[u8; 16], seq: u32, chunk: &Id, plaintext: &[u8]) -> Vec<u8> {
        ChaCha20Poly1305::new((&*self.0).into())
            .encrypt(
                (&Self::nonce(seq)).into(),
                Payload {
                    msg: plaintext,
                    aad: &Self::aad(vault_id, chunk),
                },
            )
            .expect("aead encrypt")
    }

    /// `None` when the blob fails authentication.
    pub fn open_blob(&self, vault_id: &[u8; 16], seq: u32, chunk: &Id, ct: &[u8]) -> Option<Vec<u8>> {
        ChaCha20Poly1305::new((&*self.0).into())
            .decrypt(
                (&Self::nonce(seq)).into(),
                Payload {
                    msg: ct,
                    aad: &Self::aad(vault_id, chunk),
                },
            )
            .ok()
    }
}

/// Parsed age recipients of a vault.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    pub fn parse(list: &[String]) -> Result<Self> {
        if list.is_empty() {
            return Err(Error::usage("a vault needs at least one age recipient").hint("create one with `vaultctl keygen --out FILE`"));
        }
        let mut out = Vec::new();
        for r in list {
            let rec = age::x25519::Recipient::from_str(r.trim())
                .map_err(|e| Error::usage(format!("recipient {r:?} is not an age X25519 recipient (age1...): {e}")))?;
            out.push(rec);
        }
        Ok(Recipients(out))
    }

    /// age-encrypt (binary format) to every recipient.
    pub fn wrap(&self, plaintext: &[u8]) -> Vec<u8> {
        let encryptor = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient)).expect("at least one recipient");
        let mut out = Vec::with_capacity(plaintext.len() + 256);
        let mut w = encryptor.wrap_output(&mut out).expect("age writer into memory");
        w.write_all(plaintext).expect("age write into memory");
        w.finish().expect("age finish into memory");
        out
    }
}

/// age identities of a restorer. Never printed.
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).context(ErrorKind::Key, || format!("cannot read identity file {}", path.display()))?;
        let mut ids = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                Error::key(format!(
                    "identity file {} has a line that is not an age identity (AGE-SECRET-KEY-1...)",
                    path.display()
                ))
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(Error::key(format!("identity file {} holds no age identity", path.display())));
        }
        Ok(Identities(ids))
    }

    /// Decrypt an age-wrapped object; `what` names it in errors.
    /// Decrypt an age file (a pack key, the writer key): the plaintext is wiped when dropped.
    pub fn unwrap(&self, bytes: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>> {
        let dec = age::Decryptor::new(bytes).context(ErrorKind::Integrity, || format!("{what} is not a valid age file"))?;
        let mut r = dec.decrypt(self.0.iter().map(|i| i as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::key(format!(
                "the identity does not open {what}: it is not one of this vault's recipients"
            ))
            .hint("use an identity whose recipient was given to `vaultctl init --recipient`"),
            other => Error::integrity(format!("{what} could not be decrypted")).with_source(other),
        })?;
        // Room for a writer key file without growing (a reallocation would leave a copy behind).
        let mut out = Zeroizing::new(Vec::with_capacity(4096));
        r.read_to_end(&mut out)
            .context(ErrorKind::Integrity, || format!("{what} is corrupt (age payload)"))?;
        Ok(out)
    }
}

/// A new age X25519 identity: (identity file text, recipient string).
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        id.to_string().expose_secret()
    );
    (text, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_that_decompresses_beyond_the_limit_is_refused() {
        let k = WriterKey::generate(random_bytes());
        // A zstd bomb: many copies of one small frame of 64 MiB of zeros.
        let frame = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let bomb: Vec<u8> = std::iter::repeat_n(&frame[..], (MAX_METADATA_SIZE / (64 << 20)) as usize + 1)
            .flatten()
            .copied()
            .collect();
        assert!(bomb.len() < 1 << 20);
        let sealed = k.seal_compressed_meta(MetaKind::Index, &bomb);
        let err = k.open_meta(MetaKind::Index, &sealed, "index/x").unwrap_err();
        assert!(err.to_string().contains("decompresses to more than"), "{err}");
        let ok = k.seal_meta(MetaKind::Index, b"{}");
        assert_eq!(k.open_meta(MetaKind::Index, &ok, "index/y").unwrap(), b"{}");
    }

    #[test]
    fn writer_key_file_round_trip() {
        let k = WriterKey::generate(random_bytes());
        let k2 = WriterKey::parse_file_text(&k.to_file_text(), "test").unwrap();
        assert_eq!(k.key_check(), k2.key_check());
        assert!(!format!("{k:?}").contains(&hex::encode(k.keys.secret)));
        assert!(WriterKey::parse_file_text("VAULT-WRITER-KEY-1-zz", "t").is_err());
    }

    #[test]
    fn meta_seal_binds_kind_and_vault() {
        let k = WriterKey::generate(random_bytes());
        let sealed = k.seal_meta(MetaKind::Index, b"{\"a\":1}");
        assert_eq!(k.open_meta(MetaKind::Index, &sealed, "x").unwrap(), b"{\"a\":1}");
        assert!(k.open_meta(MetaKind::Snapshot, &sealed, "x").is_err());
        let other = WriterKey::generate(random_bytes());
        assert!(other.open_meta(MetaKind::Index, &sealed, "x").is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(k.open_meta(MetaKind::Index, &flipped, "x").unwrap_err().kind, ErrorKind::Integrity);
    }

    #[test]
    fn age_wrap_needs_a_matching_identity() {
        let (text, rec) = generate_identity();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, text).unwrap();
        let ids = Identities::load(&p).unwrap();
        let wrapped = Recipients::parse(&[rec]).unwrap().wrap(b"secret");
        assert_eq!(ids.unwrap(&wrapped, "x").unwrap().as_slice(), b"secret");
        let (_, other) = generate_identity();
        let wrapped2 = Recipients::parse(&[other]).unwrap().wrap(b"secret");
        assert_eq!(ids.unwrap(&wrapped2, "x").unwrap_err().kind, ErrorKind::Key);
    }

    #[test]
    fn blob_seal_binds_chunk_id() {
        let pk = PackKey::generate();
        let vid = random_bytes();
        let a = Id([1; 32]);
        let ct = pk.seal_blob(&vid, 7, &a, b"data");
        assert_eq!(pk.open_blob(&vid, 7, &a, &ct).unwrap(), b"data");
        assert!(pk.open_blob(&vid, 7, &Id([2; 32]), &ct).is_none());
        assert!(pk.open_blob(&vid, 8, &a, &ct).is_none());
    }
}
