//! On-disk formats as serde types and byte layouts: the single place that defines what a vault holds.
//! The normative description is `docs/FORMAT.md`; section numbers below refer to it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Format version written by this code and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Feature flags this build implements (section 4). Empty in version 1.
pub const KNOWN_FEATURES: &[&str] = &[];

pub const CONFIG_NAME: &str = "config";
pub const WRITER_KEY_NAME: &str = "keys/writer.age";
pub const DATA_PREFIX: &str = "data/";
pub const INDEX_PREFIX: &str = "index/";
pub const SNAPSHOT_PREFIX: &str = "snapshots/";
pub const CLAIM_PREFIX: &str = "claims/";
pub const KEY_HISTORY_PREFIX: &str = "keys/history/";
pub const HOLD_PREFIX: &str = "holds/";
pub const POLICY_PREFIX: &str = "policies/";
pub const VERIFY_RECORD_PREFIX: &str = "verifications/";
/// Generations of the prune lock (section 15): `locks/prune/<generation, 20 digits>`.
pub const PRUNE_LOCK_PREFIX: &str = "locks/prune/";
/// Pending sets of prune's first pass (section 15): `prune/pending/<UTC time>-<8 random hex digits>`.
pub const PRUNE_PENDING_PREFIX: &str = "prune/pending/";
pub const LOG_PREFIX: &str = "log/";
/// Delta chains (section 8e): `deltas/<job tag>/<base snapshot id>/<seq, 12 digits>` links and
/// `deltas/<job tag>/<base snapshot id>/end`.
pub const DELTAS_PREFIX: &str = "deltas/";
/// Generations of a job's delta watcher lock (section 8e): `locks/deltas/<job tag>/<generation>`.
pub const DELTA_LOCK_PREFIX: &str = "locks/deltas/";

pub const PACK_MAGIC: &[u8; 8] = b"VLTPACK1";
pub const PACK_END_MAGIC: &[u8; 8] = b"VLTPEND1";
pub const META_MAGIC: &[u8; 8] = b"VLTMETA1";

/// The largest chunk any vault may have (the chunker's `max_size` is at most this). A blob whose
/// index entry claims more is refused before anything is allocated for it.
pub const MAX_CHUNK_SIZE: u32 = 8 << 20;
/// The largest decompressed metadata object (index segment, manifest, trailer, claim) a reader
/// accepts, so a hostile object cannot make it allocate without bound.
pub const MAX_METADATA_SIZE: u64 = 256 << 20;

/// A 32-byte identifier (chunk ID, object hash) shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
    pub fn parse(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
    /// Unkeyed BLAKE3 of stored bytes: the name of every stored object (section 3).
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}
impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a 64-hex-digit id: {s:?}")))
    }
}

/// Object names (section 3).
pub fn pack_name(id: &Id) -> String {
    let h = id.hex();
    format!("{DATA_PREFIX}{}/{h}", &h[..2])
}
pub fn index_name(id: &Id) -> String {
    format!("{INDEX_PREFIX}{id}")
}
pub fn snapshot_name(id: &Id) -> String {
    format!("{SNAPSHOT_PREFIX}{id}")
}

/// The hash part of an object name (`data/ab/abcd..` -> `abcd..`), if it is one.
pub fn id_from_name(name: &str) -> Option<Id> {
    Id::parse(name.rsplit('/').next()?)
}

/// The vault config (section 4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VaultConfig {
    pub format: u32,
    pub features: Features,
    pub vault_id: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub chunker: ChunkerParams,
    pub pack: PackParams,
    pub compression: CompressionParams,
    pub recipients: Vec<String>,
    pub store: StoreCapabilities,
    pub writer_key_check: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Features {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

/// The only chunker algorithm of format 1; a typed marker so a config naming another one fails to parse.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc2020-keyed-gear")]
    FastCdc2020KeyedGear,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackParams {
    pub target_size: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompressionParams {
    pub algorithm: CompressionAlgorithm,
    /// The level used while the packer keeps up with the source.
    pub level: i32,
    /// The level used while the packer lags behind the source (adaptive, like `zstd --adapt`):
    /// a capture then takes about as long as reading its source.
    pub min_level: i32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    Zstd,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreCapabilities {
    pub conditional_create: bool,
}

/// Pack types (section 5): content and content-metadata packs are kept apart.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PackType {
    Data,
    Tree,
}

impl PackType {
    pub fn to_byte(self) -> u8 {
        match self {
            PackType::Data => 0,
            PackType::Tree => 1,
        }
    }
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(PackType::Data),
            1 => Some(PackType::Tree),
            _ => None,
        }
    }
}

/// Compression byte that starts every blob's plaintext (section 5).
pub const BLOB_RAW: u8 = 0;
pub const BLOB_ZSTD: u8 = 1;

/// Where one blob sits inside a pack.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// Pack trailer (section 5), sealed as metadata kind `PackTrailer`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackTrailer {
    #[serde(rename = "type")]
    pub pack_type: PackType,
    pub blobs: Vec<BlobEntry>,
}

/// One pack in an index segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexPack {
    pub id: Id,
    #[serde(rename = "type")]
    pub pack_type: PackType,
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

/// An index segment (section 6).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexSegment {
    pub packs: Vec<IndexPack>,
}

/// Payload kinds (section 6). New kinds are added here; readers list but refuse to restore unknown ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadKind {
    EtcdV3,
    /// Host files: a `tree` stream (a [`FileTree`], in tree packs) and a `content` stream.
    Files,
    /// The etcd v2 keyspace: one `v2-keyspace.json` stream (a [`V2Keyspace`]).
    EtcdV2,
    /// A member data directory as `etcdctl backup` lays it out: one stream per file, named by
    /// its path under the data dir (`member/snap/db`, `member/wal/*.wal`, `member/snap/*.snap`).
    EtcdDatadir,
    /// A delta segment (section 8e): one `events` stream ([`crate::delta_stream`]) holding the
    /// changes after its base etcd-v3 snapshot over a range of revisions.
    EtcdV3Delta,
    Other(String),
}

impl PayloadKind {
    pub fn as_str(&self) -> &str {
        match self {
            PayloadKind::EtcdV3 => "etcd-v3",
            PayloadKind::Files => "files",
            PayloadKind::EtcdV2 => "etcd-v2",
            PayloadKind::EtcdDatadir => "etcd-datadir",
            PayloadKind::EtcdV3Delta => "etcd-v3-delta",
            PayloadKind::Other(s) => s,
        }
    }
}
impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl Serialize for PayloadKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for PayloadKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "etcd-v3" => PayloadKind::EtcdV3,
            "files" => PayloadKind::Files,
            "etcd-v2" => PayloadKind::EtcdV2,
            "etcd-datadir" => PayloadKind::EtcdDatadir,
            "etcd-v3-delta" => PayloadKind::EtcdV3Delta,
            _ => PayloadKind::Other(s),
        })
    }
}

/// One captured byte stream of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stream {
    pub name: String,
    pub size: u64,
    /// SHA-256 of the whole stream, hex.
    pub sha256: String,
    pub chunks: Vec<Id>,
}

/// What a capture cost.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CaptureStats {
    /// Bytes read from the source.
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Plaintext bytes of chunks that were not in the vault yet.
    pub new_bytes: u64,
    /// Bytes added to the store (compressed, encrypted, with pack overhead).
    pub stored_bytes: u64,
    pub packs: u64,
    pub seconds: f64,
}

/// Facts recorded about an etcd v3 capture.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EtcdV3Info {
    pub endpoint: String,
    pub cluster_id: String,
    pub member_id: String,
    pub member_name: String,
    pub members: Vec<EtcdMember>,
    pub revision: i64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub db_size: i64,
    pub version: String,
    pub leader: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EtcdMember {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    #[serde(default)]
    pub is_learner: bool,
}

/// A snapshot manifest (section 6): the commit point of a capture.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotManifest {
    pub time: chrono::DateTime<chrono::Utc>,
    pub kind: PayloadKind,
    pub host: String,
    pub job: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub streams: Vec<Stream>,
    pub stats: CaptureStats,
    /// The schedule slot a daemon took this snapshot for (absent for manual captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_v3: Option<EtcdV3Info>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_v2: Option<EtcdV2Info>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_datadir: Option<EtcdDatadirInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_v3_delta: Option<EtcdV3DeltaInfo>,
    /// The deletion log's head when this snapshot was committed (section 8b): a log record removed
    /// or rewritten afterwards no longer matches it. Absent when the log was empty, and in
    /// manifests of older writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_head: Option<LogHead>,
    /// The newest snapshot of the same retention group the writer knew of when it committed this
    /// one (section 8b): if that snapshot later disappears with no deletion-log record for it, it
    /// was deleted outside policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Id>,
}

impl SnapshotManifest {
    /// Every chunk this snapshot references, in stream order (may repeat).
    pub fn chunk_refs(&self) -> impl Iterator<Item = &Id> {
        self.streams.iter().flat_map(|s| s.chunks.iter())
    }
    /// A short human description of the source.
    pub fn source(&self) -> String {
        match (&self.etcd_v3, &self.files) {
            (Some(e), _) => format!("{} ({})", e.member_name, e.endpoint),
            (None, Some(f)) => match &f.profile {
                Some(p) => format!("profile {p}"),
                None => f.root.clone(),
            },
            (None, None) => match (&self.etcd_v2, &self.etcd_datadir) {
                (Some(v), _) => format!("v2 keyspace ({})", v.endpoint),
                (None, Some(d)) => format!("{} data dir {}", d.member_name, d.data_dir),
                (None, None) => String::new(),
            },
        }
    }
}

/// Facts recorded about an `etcd-v2` capture (the keyspace read through the v2 HTTP API).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EtcdV2Info {
    pub endpoint: String,
    /// `X-Etcd-Cluster-Id` of the answer.
    pub cluster_id: String,
    /// `X-Etcd-Index`: the v2 store index the keyspace was read at.
    pub etcd_index: u64,
    /// When the keyspace was read (remaining TTLs are computed from the recorded expirations).
    pub read_at: chrono::DateTime<chrono::Utc>,
    pub version: String,
    pub dirs: u64,
    pub keys: u64,
    /// Nodes that carry a TTL.
    pub with_ttl: u64,
    /// Hidden nodes (a name starting with `_`; the v2 API never lists them) captured because
    /// they were named; named ones that did not exist are in `hidden_missing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_missing: Vec<String>,
}

/// The stream of an `etcd-v2` snapshot: every node, parents before children.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct V2Keyspace {
    pub etcd_index: u64,
    pub read_at: chrono::DateTime<chrono::Utc>,
    pub nodes: Vec<V2Node>,
}

/// One v2 directory or key as read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct V2Node {
    pub key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// TTL in seconds as etcd reported it when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// When the node expires (RFC 3339), as etcd reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<chrono::DateTime<chrono::Utc>>,
}

/// Facts recorded about an `etcd-datadir` capture: what a later restore of the member needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EtcdDatadirInfo {
    /// The data dir as the host names it (`ETCD_DATA_DIR`), and the etcd.conf it came from.
    pub data_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<String>,
    pub member_name: String,
    pub member_id: String,
    pub cluster_id: String,
    /// The cluster's members when captured (the backup itself has membership stripped).
    pub members: Vec<EtcdMember>,
    /// The etcd server version of the member.
    pub version: String,
    /// The endpoint the v3 database was read from (the API snapshot) and its revision.
    pub endpoint: String,
    pub revision: i64,
    /// What made the v2 part (`etcdctl backup --with-v3` and its version).
    pub tool: String,
    /// Index of the newest v2 snap file in the member's data dir when copied (0: none).
    pub snap_index: u64,
    /// The consistent index given to `member/snap/db`: the commit index of the backup's WAL.
    #[serde(default)]
    pub consistent_index: u64,
    /// sha256 of `member/snap/db` as laid down.
    pub db_sha256: String,
    /// Every file of the backup, relative to the data dir (also the stream names).
    pub layout: Vec<String>,
}

/// A file-system path as raw bytes: JSON string when UTF-8, `{"b64": ...}` otherwise.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    pub fn from_path(p: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        PathBytes(p.as_os_str().as_bytes().to_vec())
    }
    pub fn to_path_buf(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&self.0))
    }
    /// For messages: lossy UTF-8.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PathRepr {
    Utf8(String),
    Raw { b64: String },
}

impl Serialize for PathBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        match std::str::from_utf8(&self.0) {
            Ok(t) => PathRepr::Utf8(t.to_string()).serialize(s),
            Err(_) => PathRepr::Raw {
                b64: base64::engine::general_purpose::STANDARD.encode(&self.0),
            }
            .serialize(s),
        }
    }
}
impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        Ok(match PathRepr::deserialize(d)? {
            PathRepr::Utf8(t) => PathBytes(t.into_bytes()),
            PathRepr::Raw { b64 } => PathBytes(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(serde::de::Error::custom)?,
            ),
        })
    }
}

/// What a tree entry is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A further name of a file captured earlier in the tree (`target` names it).
    Hardlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// One captured file-system entry, with everything needed to put it back as it was.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Absolute path on the captured host.
    pub path: PathBytes,
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    /// Content chunks (files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    /// BLAKE3 of the content (files only), to compare with live files without the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Symlink target, or the first path of a hard-linked file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBytes>,
    /// Extended attributes (including `security.selinux`), values base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// An entry that was not captured, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SkippedEntry {
    pub path: PathBytes,
    pub reason: String,
}

/// The tree stream of a `files` snapshot. Content, so it lives in tree packs (identity to read).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FileTree {
    pub entries: Vec<FileEntry>,
    #[serde(default)]
    pub skipped: Vec<SkippedEntry>,
    /// Files that kept changing while they were read (three reads): stored as last read, which may
    /// mix old and new content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_while_read: Vec<PathBytes>,
    /// Installed packages when captured (`rpm -qa` / `dpkg-query`), as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<serde_json::Value>,
}

/// Writer-readable facts about a `files` snapshot (in the manifest).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilesInfo {
    /// Directory the capture read from (`/` unless `--root`).
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub skipped: u64,
    /// True when something could not be read: the snapshot is usable but not whole.
    pub incomplete: bool,
}

/// Metadata object kinds (section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    Index = 1,
    Snapshot = 2,
    PackTrailer = 3,
    SlotClaim = 4,
    KeyHistory = 5,
    HoldEvent = 6,
    /// A record of the deletion log (`log/<seq>`, section 8b).
    LogRecord = 7,
    /// A job's schedule and retention policy as recorded by vaultd (`policies/...`).
    PolicyRecord = 8,
    /// The result of one verification of a snapshot (`verifications/...`).
    VerifyRecord = 9,
    /// The prune lock (`locks/prune`).
    PruneLock = 10,
    /// A prune pass's set of pending (unused) packs (`prune/pending/...`).
    PrunePending = 11,
    /// A delta chain's link (`deltas/<tag>/<base>/<seq>`, section 8e).
    DeltaLink = 12,
    /// A delta watcher lock generation (`locks/deltas/<tag>/<generation>`, section 8e).
    DeltaLock = 13,
    /// The end of a delta chain (`deltas/<tag>/<base>/end`, section 8e).
    DeltaChainEnd = 14,
}

/// One generation of the claim on a schedule slot of a cluster-wide job (section 3a): whoever
/// creates a generation's object first holds the slot until `expires`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SlotClaim {
    pub job: String,
    pub slot: chrono::DateTime<chrono::Utc>,
    /// Which generation of the slot's claim this is (0 for the first; it is also in the name).
    #[serde(default)]
    pub generation: u32,
    pub host: String,
    /// The claiming daemon's ID: random, kept by the daemon across restarts (not the host name).
    pub daemon: String,
    pub claimed_at: chrono::DateTime<chrono::Utc>,
    /// End of the lease: after it, with no snapshot for the slot, another daemon may take the
    /// slot over by creating the next generation. Absent in claims of older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// The slot passed with no snapshot; this generation only records that (its creator sent the
    /// alert) and closes the slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missed: bool,
}

/// The object of generation `generation` of a slot's claim: `claims/<job tag>/<slot as Unix
/// seconds>` for the first, `.<generation>` appended for the next ones.
pub fn claim_name(job_tag: &str, slot: &chrono::DateTime<chrono::Utc>, generation: u32) -> String {
    match generation {
        0 => format!("{CLAIM_PREFIX}{job_tag}/{}", slot.timestamp()),
        n => format!("{CLAIM_PREFIX}{job_tag}/{}.{n}", slot.timestamp()),
    }
}

/// What a hold event does (section 8a).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HoldAction {
    Hold,
    Release,
}

/// One hold or release of a snapshot (section 8a), stored once under [`hold_event_name`] and never
/// rewritten: a snapshot's hold state is its latest event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HoldEvent {
    pub snapshot: Id,
    pub action: HoldAction,
    pub reason: String,
    /// A hold ends by itself at this time (for good when absent); always absent on a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub host: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// The object of a hold event: `holds/<snapshot id hex>/<UTC time, 20261125T220000.412Z>-<8 random
/// hex digits>`, so the events of one snapshot list together and in time order.
pub fn hold_event_name(snapshot: &Id, time: &chrono::DateTime<chrono::Utc>, random: u32) -> String {
    format!("{HOLD_PREFIX}{snapshot}/{}-{random:08x}", time.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// The snapshot a hold event's object name is about, if the name is one.
pub fn hold_event_snapshot(name: &str) -> Option<Id> {
    let rest = name.strip_prefix(HOLD_PREFIX)?;
    let (id, event) = rest.split_once('/')?;
    if event.is_empty() || event.contains('/') {
        return None;
    }
    Id::parse(id)
}

/// The object of a job's policy record (section 8c; the record itself is
/// `ops::retention::policy_records::PolicyRecord`, as it holds a `RetentionPolicy`):
/// <UTC time, 20261125T220000.412Z>-<8 random hex digits>`.
pub fn policy_record_name(job_tag: &str, time: &chrono::DateTime<chrono::Utc>, random: u32) -> String {
    format!("{POLICY_PREFIX}{job_tag}/{}-{random:08x}", time.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// One verification of a snapshot (section 8d), stored once under [`verify_record_name`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VerifyRecord {
    pub snapshot: Id,
    /// `structure` (manifests and index) or `data` (stored objects read back).
    pub level: String,
    pub ok: bool,
    /// The exact check (`structure`, `stored-objects`, `content`) and the problems found, short.
    pub detail: String,
    pub host: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// `verifications/<snapshot id hex>/<UTC time>-<8 random hex digits>`.
pub fn verify_record_name(snapshot: &Id, time: &chrono::DateTime<chrono::Utc>, random: u32) -> String {
    format!(
        "{VERIFY_RECORD_PREFIX}{snapshot}/{}-{random:08x}",
        time.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// The head of the deletion log (section 8b): its newest record's sequence number and the
/// BLAKE3 (unkeyed, hex) of that record's stored bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogHead {
    pub seq: u64,
    pub hash: String,
}

/// What a deletion-log record does to the snapshots it lists.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogAction {
    /// The snapshots are forgotten (tombstoned): retention no longer counts them and prune may
    /// delete their data. Their manifests stay until then.
    Forget,
    /// Forgotten snapshots brought back (`vaultctl undelete`), before prune deleted them.
    Undelete,
    /// Prune deleted the forgotten snapshots' manifests (their data follows).
    Prune,
}

/// One snapshot in a deletion-log record, with what a reader needs once its manifest is gone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub snapshot: Id,
    /// The snapshot's own time (from its manifest).
    pub time: chrono::DateTime<chrono::Utc>,
    pub kind: PayloadKind,
    pub job: String,
    /// The retention group (`cluster:ID/JOB`, `host:NAME/JOB`).
    pub group: String,
    /// Why: the retention plan's reasons for a forget, the operator's reason for an undelete.
    pub reasons: Vec<String>,
}

/// One record of the deletion log, stored once as `log/<seq>` (section 8b). Records form a hash
/// chain: `prev` is the hash of record `seq - 1`'s stored bytes (absent for record 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    /// What wrote it: `vaultctl forget`, `vaultd job etcd`, `vaultctl prune`, ...
    pub command: String,
    pub action: LogAction,
    pub entries: Vec<LogEntry>,
}

/// The object of deletion-log record `seq`: `log/` and 12 decimal digits, so names sort by number.
pub fn log_record_name(seq: u64) -> String {
    format!("{LOG_PREFIX}{seq:012}")
}

/// The sequence number in a deletion-log record's name, if the name is one.
pub fn log_record_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(LOG_PREFIX)?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_names_sort_by_number() {
        assert_eq!(log_record_name(7), "log/000000000007");
        assert!(log_record_name(9) < log_record_name(10));
        assert_eq!(log_record_seq(&log_record_name(42)), Some(42));
        assert_eq!(log_record_seq("log/000000000000"), None);
        assert_eq!(log_record_seq("log/42"), None);
        assert_eq!(log_record_seq("log/00000000004x"), None);
        assert_eq!(log_record_seq("holds/000000000001"), None);
    }

    #[test]
    fn hold_event_names_sort_by_time_and_name_their_snapshot() {
        let id = Id::of_stored(b"snap");
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let a = hold_event_name(&id, &t("2026-11-25T22:00:00.412Z"), 0xdead);
        assert_eq!(a, format!("holds/{id}/20261125T220000.412Z-0000dead"));
        let b = hold_event_name(&id, &t("2026-11-25T22:00:01Z"), 1);
        assert!(a < b, "{a} sorts before {b}");
        assert_eq!(hold_event_snapshot(&a), Some(id));
        assert_eq!(hold_event_snapshot(&format!("holds/{id}")), None);
        assert_eq!(hold_event_snapshot(&format!("holds/{id}/x/y")), None);
        assert_eq!(hold_event_snapshot("holds/abc/x"), None);
        assert_eq!(hold_event_snapshot(&format!("snapshots/{id}")), None);
    }

    #[test]
    fn id_round_trips_and_names() {
        let id = Id::of_stored(b"hello");
        assert_eq!(Id::parse(&id.hex()), Some(id));
        let n = pack_name(&id);
        assert!(n.starts_with(&format!("data/{}/", &id.hex()[..2])));
        assert_eq!(id_from_name(&n), Some(id));
        assert_eq!(Id::parse("zz"), None);
    }

    #[test]
    fn paths_round_trip_including_non_utf8() {
        for raw in [b"/etc/origin/node/system:node:master-0.crt".to_vec(), b"/etc/caf\xe9".to_vec()] {
            let p = PathBytes(raw.clone());
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<PathBytes>(&json).unwrap(), p, "{json}");
        }
        assert_eq!(serde_json::to_string(&PathBytes(b"/etc/x".to_vec())).unwrap(), "\"/etc/x\"");
    }

    #[test]
    fn unknown_payload_kind_survives() {
        let k: PayloadKind = serde_json::from_str("\"etcd-v3-kv\"").unwrap();
        assert_eq!(k, PayloadKind::Other("etcd-v3-kv".into()));
        assert_eq!(serde_json::to_string(&PayloadKind::EtcdV3).unwrap(), "\"etcd-v3\"");
    }
}

/// One generation of the prune lock (section 15), sealed as [`MetaKind::PruneLock`] under
/// [`prune_lock_name`] with `create`: whoever creates a generation holds the lock until `expires`,
/// unless it is a release.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PruneLock {
    pub generation: u64,
    /// Random per run (16 hex digits): a lock is a run's own only by this.
    pub owner: String,
    pub host: String,
    pub created: chrono::DateTime<chrono::Utc>,
    /// End of the lease (written with the store's clock as the holder judges it). Absent on a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// The holder let go of the lock (the lock is free).
    #[serde(default)]
    pub released: bool,
}

pub fn prune_lock_name(generation: u64) -> String {
    format!("{PRUNE_LOCK_PREFIX}{generation:020}")
}

/// Packs a prune pass found unused (section 15), sealed as [`MetaKind::PrunePending`] under
/// [`prune_pending_name`]: captures do not deduplicate against them, and a prune after the grace
/// period deletes those still unused.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrunePending {
    /// When the pass that recorded the set looked (host clock, checked against the store's).
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    /// The lock owner of the run that recorded it.
    pub owner: String,
    pub packs: Vec<Id>,
    /// Forgotten snapshots the pass counted as unused: their manifests go in the second pass if
    /// they are still forgotten then.
    pub forgotten: Vec<Id>,
}

pub fn prune_pending_name(time: &chrono::DateTime<chrono::Utc>, random: u32) -> String {
    format!("{PRUNE_PENDING_PREFIX}{}-{random:08x}", time.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// What a delta segment covers (section 8e), in its manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EtcdV3DeltaInfo {
    /// The etcd-v3 snapshot the chain starts from.
    pub base: Id,
    /// Place in the chain: 0 starts at the base's revision + 1.
    pub seq: u64,
    /// The segment before this one (absent for seq 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<Id>,
    pub cluster_id: String,
    pub member_id: String,
    pub endpoint: String,
    pub first_revision: i64,
    pub last_revision: i64,
    pub groups: u64,
    pub events: u64,
    /// When the watcher received the first and last group (events carry no time of their own).
    pub first_event_time: chrono::DateTime<chrono::Utc>,
    pub last_event_time: chrono::DateTime<chrono::Utc>,
    /// etcd's head was at `last_revision` at this time (a progress notification or the segment's
    /// close), so the cluster is known as of then.
    pub covered_until: chrono::DateTime<chrono::Utc>,
    /// Some group arrived while the watch lagged: its time is when it was received.
    #[serde(default)]
    pub catch_up: bool,
    /// The watcher that wrote it (the owner in its lock).
    pub watcher: String,
}

/// A segment's place in its chain (section 8e), sealed as [`MetaKind::DeltaLink`] under
/// [`delta_link_name`] with `create`: the commit point of chain membership. A segment manifest
/// with no link is an orphan that readers ignore.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeltaLink {
    pub base: Id,
    pub seq: u64,
    pub segment: Id,
    pub first_revision: i64,
    pub last_revision: i64,
    pub last_event_time: chrono::DateTime<chrono::Utc>,
    pub covered_until: chrono::DateTime<chrono::Utc>,
    pub watcher: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Why a chain ends and what follows it (section 8e), sealed as [`MetaKind::DeltaChainEnd`] under
/// [`delta_chain_end_name`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeltaChainEnd {
    pub base: Id,
    /// `superseded` (a newer base's chain took over), `compacted` (the watch fell behind etcd's
    /// compaction), `cluster-changed`.
    pub reason: String,
    /// The last revision the chain covers (its last link's).
    pub last_revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_base: Option<Id>,
    /// With `compacted`: etcd's compaction revision; `last_revision + 1 .. compact_revision` is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<i64>,
    pub watcher: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

pub fn delta_link_name(job_tag: &str, base: &Id, seq: u64) -> String {
    format!("{DELTAS_PREFIX}{job_tag}/{}/{seq:012}", base.hex())
}

pub fn delta_chain_end_name(job_tag: &str, base: &Id) -> String {
    format!("{DELTAS_PREFIX}{job_tag}/{}/end", base.hex())
}

/// One generation of a job's delta watcher lock (same shape and rules as [`PruneLock`]).
pub fn delta_lock_name(job_tag: &str, generation: u64) -> String {
    format!("{DELTA_LOCK_PREFIX}{job_tag}/{generation:020}")
}
