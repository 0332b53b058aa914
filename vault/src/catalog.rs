//! The SQLite catalog: a rebuildable cache of index segments and snapshot manifests, plus the
//! history of verification results (docs/FORMAT.md section 11).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{self, BlobEntry, Id, IndexSegment, SnapshotManifest};
use crate::repo::Vault;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS index_segments(id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS packs(id TEXT PRIMARY KEY, type TEXT NOT NULL, size INTEGER NOT NULL, segment TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(id BLOB NOT NULL, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, raw_length INTEGER NOT NULL, segment TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_id ON chunks(id);
CREATE INDEX IF NOT EXISTS chunks_by_segment ON chunks(segment);
CREATE TABLE IF NOT EXISTS snapshots(id TEXT PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL,
    host TEXT NOT NULL, job TEXT NOT NULL, manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verifications(snapshot TEXT NOT NULL, time TEXT NOT NULL, level TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS verifications_by_snapshot ON verifications(snapshot, time);
CREATE TABLE IF NOT EXISTS verify_records(name TEXT PRIMARY KEY, snapshot TEXT NOT NULL, time TEXT NOT NULL,
    level TEXT NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL, host TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS verify_records_by_snapshot ON verify_records(snapshot, level, time);
CREATE TABLE IF NOT EXISTS bad_packs(id TEXT PRIMARY KEY, fault TEXT NOT NULL, time TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_records(seq INTEGER PRIMARY KEY, size INTEGER NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vanished(id TEXT PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL, host TEXT NOT NULL,
    job TEXT NOT NULL, seen_gone TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_cache(root TEXT NOT NULL, path BLOB NOT NULL, stamp TEXT NOT NULL,
    blake3 TEXT NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY(root, path));
";

/// What a capture remembers about a file it read, so the next capture on this host can skip
/// reading it when its stat stamp is unchanged (like restic's parent-snapshot check). Local to the
/// writer host: it holds names and chunk IDs the writer saw anyway, never content.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedFile {
    /// size, mtime, ctime and inode, e.g. `1675:1764100000.123:1764100000.123:98765`.
    pub stamp: String,
    pub blake3: String,
    pub chunks: Vec<Id>,
}

/// The last verification of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub time: String,
    /// `structure`, `stored-objects` or `content`.
    pub level: String,
    pub ok: bool,
    pub detail: String,
}

/// When a snapshot was last verified, structurally and with data read ([`Catalog::verification_coverage`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Coverage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structure: Option<VerifiedAt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<VerifiedAt>,
}

/// One verification: when, whether it found the snapshot whole, and from which host (empty for
/// this host's catalog history).
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedAt {
    pub time: chrono::DateTime<chrono::Utc>,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// What is wrong with a pack ([`Catalog::bad_packs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackFault {
    /// Indexed, but the store does not list it.
    Missing,
    /// Stored, but its bytes do not hash to its name, its size or trailer disagree with the index.
    Damaged,
}

impl PackFault {
    pub fn as_str(self) -> &'static str {
        match self {
            PackFault::Missing => "missing",
            PackFault::Damaged => "damaged",
        }
    }

    fn parse(s: &str) -> PackFault {
        if s == "missing" { PackFault::Missing } else { PackFault::Damaged }
    }
}

/// A pack that verify, repair or a capture found missing or damaged: its chunks no longer count
/// as present (the next capture stores them again) and reads prefer another copy.
#[derive(Clone, Debug, Serialize)]
pub struct BadPack {
    pub fault: PackFault,
    /// When it was found (RFC 3339).
    pub time: String,
    pub detail: String,
}

/// A snapshot the catalog knew and a later sync found gone from the vault (kept, like verification
/// results, through `catalog rebuild`): the deletion log's check asks whether a record removed it.
#[derive(Clone, Debug, Serialize)]
pub struct VanishedSnapshot {
    pub id: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub host: String,
    pub job: String,
    /// The sync that found it gone.
    pub seen_gone: chrono::DateTime<chrono::Utc>,
}

/// A snapshot as the catalog knows it.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    pub id: Id,
    pub manifest: SnapshotManifest,
    pub verification: Option<Verification>,
}

pub struct Catalog {
    conn: Connection,
    path: PathBuf,
    /// Index segments and manifests the last sync found damaged (name: problem); see [`Catalog::sync`].
    unreadable: Vec<String>,
}

/// The whole vault in numbers ([`Catalog::summary`]).
#[derive(Clone, Debug, Default)]
pub struct CatalogSummary {
    pub packs: u64,
    pub pack_bytes: u64,
    /// Snapshots by job.
    pub snapshots: std::collections::BTreeMap<String, u64>,
    /// Sum of the snapshots' source sizes.
    pub logical_bytes: u64,
    /// Snapshots by their last verification.
    pub verified_ok: u64,
    pub damaged: u64,
    pub unverified: u64,
    /// The newest verification of a snapshot still in the vault, and whether it found it whole.
    pub last_verification: Option<(chrono::DateTime<chrono::Utc>, bool)>,
}

/// What a sync read.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    pub new_segments: usize,
    pub new_snapshots: usize,
    /// Damaged index segments and manifests (name: problem), left out of the catalog.
    pub unreadable: Vec<String>,
}

/// Where the catalog lives when `--catalog` is not given.
pub fn default_path(vault_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("vault").join(format!("{vault_id}.sqlite"))
}

/// Run `f` again while SQLite answers "database is locked" at once (as it does where waiting could
/// deadlock), for up to 30 s.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn db_err(path: &Path) -> impl FnOnce() -> String + '_ {
    move || format!("catalog {} failed", path.display())
}

impl Catalog {
    /// Open (creating if needed) the catalog for this vault.
    pub fn open(path: &Path, vault_id: &str) -> Result<Catalog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).context(ErrorKind::Io, || format!("cannot create catalog directory {}", dir.display()))?;
        }
        let mut conn = Connection::open(path).context(ErrorKind::Io, || format!("cannot open catalog {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .context(ErrorKind::Io, db_err(path))?;
        // Several connections may open a new catalog at once (a daemon's jobs). Switching to WAL
        // and reading the schema before writing it can fail at once with "database is locked"
        // (SQLite does not wait there: it would deadlock), so those steps are retried; the schema
        // and the vault ID are written in one transaction that takes the write lock first.
        let existing = retry_busy(|| {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            let existing: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key='vault_id'", [], |r| r.get(0))
                .optional()?;
            if existing.is_none() {
                tx.execute("INSERT INTO meta(key, value) VALUES('vault_id', ?1)", [vault_id])?;
            }
            tx.commit()?;
            Ok(existing)
        })
        .context(ErrorKind::Io, db_err(path))?;
        if let Some(v) = existing
            && v != vault_id
        {
            return Err(
                Error::usage(format!("catalog {} belongs to vault {v}, not {vault_id}", path.display()))
                    .hint("pass another --catalog, or remove this file (it is only a cache)"),
            );
        }
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
            unreadable: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for queries over the whole catalog that other modules run in SQLite
    /// (prune's mark phase) rather than in memory.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Drop everything derived from the vault (verification history, the packs found missing
    /// or damaged and the snapshots seen vanishing are kept: they are what reading the vault
    /// found, not what its index says).
    pub fn clear(&mut self) -> Result<()> {
        self.conn
            .execute_batch(
                "DELETE FROM index_segments; DELETE FROM packs; DELETE FROM chunks; DELETE FROM snapshots; DELETE FROM log_records;",
            )
            .context(ErrorKind::Io, db_err(&self.path))
    }

    /// Bring the catalog up to date with the vault: read only index segments and manifests it
    /// has not seen, and forget those that are gone.
    ///
    /// A damaged index segment or manifest (wrong hash, fails to open or parse) does not stop the
    /// sync: it is left out, reported in the result and kept in [`Catalog::unreadable`] (verify
    /// reports it), and read again at the next sync. Anything else (the store does not answer)
    /// fails the sync.
    pub async fn sync(&mut self, vault: &Vault) -> Result<SyncReport> {
        let mut unreadable = Vec::new();
        let known_segments = self.ids("SELECT id FROM index_segments")?;
        let listed_segments: HashSet<Id> = vault.list_ids(format::INDEX_PREFIX).await?.into_iter().collect();
        let new_segments: Vec<Id> = listed_segments.difference(&known_segments).copied().collect();
        let read: Vec<(Id, Result<IndexSegment>)> = futures::stream::iter(new_segments)
            .map(|id| async move { (id, vault.read_index(&id).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        let segments = keep_readable(read, format::index_name, &mut unreadable)?;

        let known_snaps = self.ids("SELECT id FROM snapshots")?;
        let listed_snaps: HashSet<Id> = vault.list_ids(format::SNAPSHOT_PREFIX).await?.into_iter().collect();
        let new_snaps: Vec<Id> = listed_snaps.difference(&known_snaps).copied().collect();
        let read: Vec<(Id, Result<SnapshotManifest>)> = futures::stream::iter(new_snaps)
            .map(|id| async move { (id, vault.read_snapshot(&id).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        let manifests = keep_readable(read, format::snapshot_name, &mut unreadable)?;
        unreadable.sort();
        self.unreadable = unreadable.clone();

        let path = self.path.clone();
        // Immediate: take the write lock first (waiting up to the busy timeout), so that several
        // connections to one catalog (concurrent daemon jobs) can sync without failing.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context(ErrorKind::Io, db_err(&path))?;
        for gone in known_segments.difference(&listed_segments) {
            let g = gone.hex();
            tx.execute("DELETE FROM chunks WHERE segment=?1", [&g])
                .context(ErrorKind::Io, db_err(&path))?;
            tx.execute("DELETE FROM packs WHERE segment=?1", [&g])
                .context(ErrorKind::Io, db_err(&path))?;
            tx.execute("DELETE FROM index_segments WHERE id=?1", [&g])
                .context(ErrorKind::Io, db_err(&path))?;
        }
        let seen_gone = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for gone in known_snaps.difference(&listed_snaps) {
            tx.execute(
                "INSERT OR IGNORE INTO vanished(id, time, kind, host, job, seen_gone)
                 SELECT id, time, kind, host, job, ?2 FROM snapshots WHERE id=?1",
                params![gone.hex(), seen_gone],
            )
            .context(ErrorKind::Io, db_err(&path))?;
            tx.execute("DELETE FROM snapshots WHERE id=?1", [gone.hex()])
                .context(ErrorKind::Io, db_err(&path))?;
        }
        for (id, seg) in &segments {
            insert_segment(&tx, id, seg).context(ErrorKind::Io, db_err(&path))?;
        }
        for (id, m) in &manifests {
            insert_snapshot(&tx, id, m).context(ErrorKind::Io, db_err(&path))?;
        }
        tx.commit().context(ErrorKind::Io, db_err(&path))?;
        Ok(SyncReport {
            new_segments: segments.len(),
            new_snapshots: manifests.len(),
            unreadable,
        })
    }

    /// Index segments and manifests the last sync found damaged (`name: problem`).
    pub fn unreadable(&self) -> &[String] {
        &self.unreadable
    }

    /// Record an index segment this process just wrote (saves re-reading it).
    pub fn add_segment(&mut self, id: &Id, seg: &IndexSegment) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context(ErrorKind::Io, db_err(&self.path))?;
        insert_segment(&tx, id, seg).context(ErrorKind::Io, db_err(&self.path))?;
        tx.commit().context(ErrorKind::Io, db_err(&self.path))
    }

    pub fn add_snapshot(&mut self, id: &Id, m: &SnapshotManifest) -> Result<()> {
        insert_snapshot(&self.conn, id, m).context(ErrorKind::Io, db_err(&self.path))
    }

    fn ids(&self, sql: &str) -> Result<HashSet<Id>> {
        let mut stmt = self.conn.prepare(sql).context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = HashSet::new();
        for r in rows {
            if let Some(id) = Id::parse(&r.context(ErrorKind::Io, db_err(&self.path))?) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Every chunk ID the vault holds in at least one pack not known to be missing or damaged
    /// (for deduplication: a chunk whose every copy is lost is stored again).
    pub fn known_chunks(&self) -> Result<HashSet<Id>> {
        self.known_chunks_except(&HashSet::new())
    }

    /// Like [`Catalog::known_chunks`], also leaving out the packs in `excluded` (a capture leaves
    /// out the packs waiting to be pruned: their chunks are stored again).
    pub fn known_chunks_except(&self, excluded: &HashSet<Id>) -> Result<HashSet<Id>> {
        let db = || db_err(&self.path)();
        self.conn
            .execute_batch("CREATE TEMP TABLE IF NOT EXISTS excluded_packs(id TEXT PRIMARY KEY); DELETE FROM temp.excluded_packs;")
            .context(ErrorKind::Io, db)?;
        {
            let mut ins = self
                .conn
                .prepare("INSERT OR IGNORE INTO temp.excluded_packs(id) VALUES(?1)")
                .context(ErrorKind::Io, db)?;
            for p in excluded {
                ins.execute([p.hex()]).context(ErrorKind::Io, db)?;
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT id FROM chunks WHERE pack NOT IN (SELECT id FROM bad_packs)
                 AND pack NOT IN (SELECT id FROM temp.excluded_packs)",
            )
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = HashSet::new();
        for r in rows {
            let v = r.context(ErrorKind::Io, db_err(&self.path))?;
            if let Ok(a) = <[u8; 32]>::try_from(v.as_slice()) {
                out.insert(Id(a));
            }
        }
        Ok(out)
    }

    /// Chunk IDs stored in `pack` according to the index.
    pub fn chunks_of_pack(&self, pack: &Id) -> Result<Vec<BlobEntry>> {
        let rows = self.chunk_rows(
            "SELECT id, pack, offset, length, raw_length FROM chunks WHERE pack=?1 ORDER BY offset",
            &pack.hex(),
        )?;
        Ok(rows.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Rows of the chunk index as (pack, entry), selected by `sql` (columns id, pack, offset,
    /// length, raw_length) with one parameter. Rows with a malformed ID are left out.
    fn chunk_rows(&self, sql: &str, param: &dyn rusqlite::ToSql) -> Result<Vec<(Id, BlobEntry)>> {
        let mut stmt = self.conn.prepare_cached(sql).context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([param], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, pack, offset, length, raw_length) = r.context(ErrorKind::Io, db_err(&self.path))?;
            if let (Ok(id), Some(pack)) = (<[u8; 32]>::try_from(id.as_slice()), Id::parse(&pack)) {
                let entry = BlobEntry {
                    id: Id(id),
                    offset,
                    length,
                    raw_length,
                };
                out.push((pack, entry));
            }
        }
        Ok(out)
    }

    /// Record that `pack` is missing or damaged (replacing what was known about it).
    pub fn mark_bad_pack(&self, pack: &Id, fault: PackFault, detail: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO bad_packs(id, fault, time, detail) VALUES(?1, ?2, ?3, ?4)",
                params![
                    pack.hex(),
                    fault.as_str(),
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    detail
                ],
            )
            .map(|_| ())
            .context(ErrorKind::Io, db_err(&self.path))
    }

    /// Forget that `pack` was bad (it was found whole again). Returns whether it was marked.
    pub fn clear_bad_pack(&self, pack: &Id) -> Result<bool> {
        self.conn
            .execute("DELETE FROM bad_packs WHERE id=?1", [pack.hex()])
            .map(|n| n > 0)
            .context(ErrorKind::Io, db_err(&self.path))
    }

    /// Packs found missing or damaged, by ID.
    pub fn bad_packs(&self) -> Result<std::collections::BTreeMap<Id, BadPack>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, fault, time, detail FROM bad_packs")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let (id, fault, time, detail) = r.context(ErrorKind::Io, db_err(&self.path))?;
            if let Some(id) = Id::parse(&id) {
                out.insert(
                    id,
                    BadPack {
                        fault: PackFault::parse(&fault),
                        time,
                        detail,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Every location of a chunk (normally one; more after an interrupted capture was repeated, or
    /// after a capture stored again a chunk whose pack was lost), those in packs not known to be
    /// missing or damaged first.
    pub fn chunk_locations(&self, id: &Id) -> Result<Vec<(Id, BlobEntry)>> {
        self.chunk_rows(
            "SELECT id, pack, offset, length, raw_length FROM chunks WHERE id=?1
             ORDER BY pack IN (SELECT id FROM bad_packs), rowid",
            &&id.0[..],
        )
    }

    /// All packs the index knows: (id, type, size).
    pub fn packs(&self) -> Result<Vec<(Id, String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, type, size FROM packs ORDER BY id")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, t, s) = r.context(ErrorKind::Io, db_err(&self.path))?;
            if let Some(id) = Id::parse(&id) {
                out.push((id, t, s));
            }
        }
        Ok(out)
    }

    /// Snapshots, oldest first, with their last verification.
    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        self.snapshots_with("s.manifest")
    }

    /// As [`Catalog::snapshots`], with every manifest's `streams` left empty: for readers of the
    /// facts only (the audit), who need not parse thousands of chunk IDs per snapshot.
    pub fn snapshots_without_streams(&self) -> Result<Vec<SnapshotEntry>> {
        self.snapshots_with("json_set(s.manifest, '$.streams', json('[]'))")
    }

    fn snapshots_with(&self, manifest: &str) -> Result<Vec<SnapshotEntry>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT s.id, {manifest}, v.time, v.level, v.ok, v.detail FROM snapshots s
                 LEFT JOIN verifications v ON v.rowid = (SELECT rowid FROM verifications WHERE snapshot = s.id ORDER BY time DESC, rowid DESC LIMIT 1)
                 ORDER BY s.time, s.id"
            ))
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<bool>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, manifest, time, level, ok, detail) = r.context(ErrorKind::Io, db_err(&self.path))?;
            let id = Id::parse(&id).ok_or_else(|| Error::integrity("catalog holds a malformed snapshot id"))?;
            let manifest: SnapshotManifest =
                serde_json::from_str(&manifest).map_err(|e| Error::integrity("catalog holds an unreadable manifest").with_source(e))?;
            let verification = match (time, level, ok, detail) {
                (Some(time), Some(level), Some(ok), Some(detail)) => Some(Verification { time, level, ok, detail }),
                _ => None,
            };
            out.push(SnapshotEntry {
                id,
                manifest,
                verification,
            });
        }
        Ok(out)
    }

    /// The deletion-log records this catalog has read (seq -> stored size, hash of the stored
    /// bytes, record JSON): records are immutable, so a listing that shows the same size needs no
    /// new read (`deletion-log` and the audit read every record anyway, to check them).
    pub fn cached_log_records(&self) -> Result<HashMap<u64, (u64, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, size, hash, record FROM log_records")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        rows.collect::<rusqlite::Result<_>>().context(ErrorKind::Io, db_err(&self.path))
    }

    /// Remember deletion-log records read from the vault: (seq, stored size, hash, record JSON).
    pub fn cache_log_records(&mut self, records: &[(u64, u64, String, String)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context(ErrorKind::Io, db_err(&self.path))?;
        for (seq, size, hash, json) in records {
            tx.execute(
                "INSERT OR REPLACE INTO log_records(seq, size, hash, record) VALUES(?1, ?2, ?3, ?4)",
                params![*seq as i64, *size as i64, hash, json],
            )
            .context(ErrorKind::Io, db_err(&self.path))?;
        }
        tx.commit().context(ErrorKind::Io, db_err(&self.path))
    }

    /// The snapshots syncs found gone from the vault, oldest first.
    pub fn vanished(&self) -> Result<Vec<VanishedSnapshot>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, time, kind, host, job, seen_gone FROM vanished ORDER BY seen_gone, id")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let time = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.to_utc())
                .map_err(|e| Error::integrity("catalog holds a malformed time").with_source(e))
        };
        let mut out = Vec::new();
        for r in rows {
            let (id, t, kind, host, job, gone) = r.context(ErrorKind::Io, db_err(&self.path))?;
            out.push(VanishedSnapshot {
                id: Id::parse(&id).ok_or_else(|| Error::integrity("catalog holds a malformed snapshot id"))?,
                time: time(&t)?,
                kind,
                host,
                job,
                seen_gone: time(&gone)?,
            });
        }
        Ok(out)
    }

    /// The newest `limit` snapshots of `job` (from `host` only, when given), newest first, their
    /// manifests without the chunk lists (`streams` empty). Delta segments are not snapshots of a
    /// group (section 8e) and are left out.
    pub fn recent_snapshots(&self, job: &str, host: Option<&str>, limit: u32) -> Result<Vec<SnapshotEntry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, json_set(manifest, '$.streams', json('[]')) FROM snapshots
                 WHERE job=?1 AND (?2 IS NULL OR host=?2) AND kind != 'etcd-v3-delta' ORDER BY time DESC, id DESC LIMIT ?3",
            )
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map(params![job, host, limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, manifest) = r.context(ErrorKind::Io, db_err(&self.path))?;
            out.push(SnapshotEntry {
                id: Id::parse(&id).ok_or_else(|| Error::integrity("catalog holds a malformed snapshot id"))?,
                manifest: serde_json::from_str(&manifest)
                    .map_err(|e| Error::integrity("catalog holds an unreadable manifest").with_source(e))?,
                verification: None,
            });
        }
        Ok(out)
    }

    /// Whether the catalog answers a query (for readiness checks).
    pub fn ping(&self) -> Result<()> {
        self.conn
            .query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .context(ErrorKind::Io, db_err(&self.path))
    }

    /// The time of the newest snapshot of `job` (from `host` only, when given), without reading
    /// manifests. Delta segments are left out: they do not stand for a scheduled capture.
    pub fn latest_time(&self, job: &str, host: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT MAX(time) FROM snapshots WHERE job=?1 AND (?2 IS NULL OR host=?2) AND kind != 'etcd-v3-delta'",
                params![job, host],
                |r| r.get(0),
            )
            .context(ErrorKind::Io, db_err(&self.path))?;
        Ok(t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)))
    }

    /// A snapshot of `job` (from `host` only, when given) taken for schedule `slot`: (id, host).
    /// Reads only the manifests of that job since the slot.
    pub fn snapshot_for_slot(&self, job: &str, host: Option<&str>, slot: chrono::DateTime<chrono::Utc>) -> Result<Option<(Id, String)>> {
        let since = slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut stmt = self
            .conn
            .prepare("SELECT id, host, manifest FROM snapshots WHERE job=?1 AND (?2 IS NULL OR host=?2) AND time >= ?3")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map(params![job, host, since], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        for r in rows {
            let (id, host, manifest) = r.context(ErrorKind::Io, db_err(&self.path))?;
            let m: SnapshotManifest =
                serde_json::from_str(&manifest).map_err(|e| Error::integrity("catalog holds an unreadable manifest").with_source(e))?;
            if m.slot == Some(slot)
                && let Some(id) = Id::parse(&id)
            {
                return Ok(Some((id, host)));
            }
        }
        Ok(None)
    }

    /// Counts and sizes of the whole vault as the catalog knows it (for metrics), in a few queries.
    pub fn summary(&self) -> Result<CatalogSummary> {
        let db = || db_err(&self.path);
        let mut s = CatalogSummary::default();
        (s.packs, s.pack_bytes) = self
            .conn
            .query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM packs", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .context(ErrorKind::Io, db())?;
        let mut stmt = self
            .conn
            .prepare("SELECT job, COUNT(*), COALESCE(SUM(json_extract(manifest, '$.stats.bytes')), 0) FROM snapshots GROUP BY job")
            .context(ErrorKind::Io, db())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })
            .context(ErrorKind::Io, db())?;
        for r in rows {
            let (job, n, bytes) = r.context(ErrorKind::Io, db())?;
            s.snapshots.insert(job, n);
            s.logical_bytes += bytes;
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT v.ok, COUNT(*) FROM snapshots s
                 LEFT JOIN verifications v ON v.rowid = (SELECT rowid FROM verifications WHERE snapshot = s.id ORDER BY time DESC, rowid DESC LIMIT 1)
                 GROUP BY v.ok",
            )
            .context(ErrorKind::Io, db())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Option<bool>>(0)?, r.get::<_, i64>(1)? as u64)))
            .context(ErrorKind::Io, db())?;
        for r in rows {
            let (ok, n) = r.context(ErrorKind::Io, db())?;
            match ok {
                None => s.unverified += n,
                Some(true) => s.verified_ok += n,
                Some(false) => s.damaged += n,
            }
        }
        s.last_verification = self
            .conn
            .query_row(
                "SELECT v.time, v.ok FROM verifications v JOIN snapshots s ON s.id = v.snapshot ORDER BY v.time DESC, v.rowid DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .optional()
            .context(ErrorKind::Io, db())?
            .and_then(|(t, ok)| Some((chrono::DateTime::parse_from_rfc3339(&t).ok()?.with_timezone(&chrono::Utc), ok)));
        Ok(s)
    }

    /// Resolve a snapshot ID or unique prefix (at least 6 hex digits), or `latest`.
    pub fn resolve(&self, prefix: &str) -> Result<SnapshotEntry> {
        let all = self.snapshots()?;
        if prefix == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| Error::not_found("the vault holds no snapshots"));
        }
        if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::usage(format!(
                "{prefix:?} is not a snapshot ID (give at least 6 hex digits, or `latest`)"
            )));
        }
        let p = prefix.to_ascii_lowercase();
        let mut matches: Vec<_> = all.into_iter().filter(|s| s.id.hex().starts_with(&p)).collect();
        match matches.len() {
            0 => Err(Error::not_found(format!("no snapshot {prefix} in this vault")).hint("list them with `vaultctl snapshots`")),
            1 => Ok(matches.pop().expect("one")),
            n => Err(Error::usage(format!("snapshot prefix {prefix} is ambiguous ({n} snapshots match)")).hint("give more digits")),
        }
    }

    /// Like [`Catalog::resolve`], but `latest` means the latest snapshot of `kind` (the latest of
    /// all may be of another kind: `etcd restore latest` after a files capture).
    pub fn resolve_kind(&self, prefix: &str, kind: &format::PayloadKind) -> Result<SnapshotEntry> {
        if prefix != "latest" {
            return self.resolve(prefix);
        }
        self.snapshots()?
            .into_iter()
            .rev()
            .find(|s| &s.manifest.kind == kind)
            .ok_or_else(|| Error::not_found(format!("the vault holds no {kind} snapshots")))
    }

    /// The file cache of one capture root.
    pub fn file_cache(&self, root: &str) -> Result<HashMap<Vec<u8>, CachedFile>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, stamp, blake3, chunks FROM file_cache WHERE root=?1")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([root], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        let mut out = HashMap::new();
        for r in rows {
            let (path, stamp, blake3, chunks) = r.context(ErrorKind::Io, db_err(&self.path))?;
            let chunks = chunks.chunks_exact(32).map(|c| Id(c.try_into().expect("32 bytes"))).collect();
            out.insert(path, CachedFile { stamp, blake3, chunks });
        }
        Ok(out)
    }

    /// Update the file cache of a root after a committed capture: drop paths not seen again and
    /// write the files that were read (new or changed). Unchanged rows are not rewritten.
    pub fn update_file_cache(&mut self, root: &str, gone: &[Vec<u8>], read: &[(Vec<u8>, CachedFile)]) -> Result<()> {
        if gone.is_empty() && read.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().context(ErrorKind::Io, db_err(&path))?;
        {
            let mut del = tx
                .prepare("DELETE FROM file_cache WHERE root=?1 AND path=?2")
                .context(ErrorKind::Io, db_err(&path))?;
            for p in gone {
                del.execute(params![root, p]).context(ErrorKind::Io, db_err(&path))?;
            }
            let mut put = tx
                .prepare("INSERT OR REPLACE INTO file_cache(root, path, stamp, blake3, chunks) VALUES(?1, ?2, ?3, ?4, ?5)")
                .context(ErrorKind::Io, db_err(&path))?;
            for (p, f) in read {
                let chunks: Vec<u8> = f.chunks.iter().flat_map(|c| c.0).collect();
                put.execute(params![root, p, f.stamp, f.blake3, chunks])
                    .context(ErrorKind::Io, db_err(&path))?;
            }
        }
        tx.commit().context(ErrorKind::Io, db_err(&path))
    }

    /// The names of the verification records (docs/FORMAT.md section 8d) the catalog holds.
    pub fn verify_record_names(&self) -> Result<HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM verify_records")
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .context(ErrorKind::Io, db_err(&self.path))?;
        rows.collect::<rusqlite::Result<_>>().context(ErrorKind::Io, db_err(&self.path))
    }

    /// Cache verification records read from the vault (by object name).
    pub fn add_verify_records(&mut self, records: &[(String, format::VerifyRecord)]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().context(ErrorKind::Io, db_err(&path))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO verify_records(name, snapshot, time, level, ok, detail, host) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .context(ErrorKind::Io, db_err(&path))?;
            for (name, r) in records {
                put.execute(params![
                    name,
                    r.snapshot.hex(),
                    r.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    r.level,
                    r.ok,
                    r.detail,
                    r.host
                ])
                .context(ErrorKind::Io, db_err(&path))?;
            }
        }
        tx.commit().context(ErrorKind::Io, db_err(&path))
    }

    /// For every snapshot verified at all: its last structural and last data verification, from
    /// the records of every host and this host's own history, in two queries.
    pub fn verification_coverage(&self) -> Result<HashMap<Id, Coverage>> {
        let mut out: HashMap<Id, Coverage> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT snapshot, CASE WHEN level = 'structure' THEN 'structure' ELSE 'data' END, time, ok, host FROM verify_records
                 UNION ALL
                 SELECT snapshot, CASE WHEN level = 'structure' THEN 'structure' ELSE 'data' END, time, ok, '' FROM verifications",
            )
            .context(ErrorKind::Io, db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .context(ErrorKind::Io, db_err(&self.path))?;
        for r in rows {
            let (id, level, time, ok, host) = r.context(ErrorKind::Io, db_err(&self.path))?;
            let (Some(id), Ok(time)) = (Id::parse(&id), chrono::DateTime::parse_from_rfc3339(&time)) else {
                continue;
            };
            let at = VerifiedAt {
                time: time.to_utc(),
                ok,
                host,
            };
            let c = out.entry(id).or_default();
            let slot = if level == "structure" { &mut c.structure } else { &mut c.data };
            // The newest wins; at equal times the record from the vault (it names its host).
            if slot
                .as_ref()
                .is_none_or(|s| (at.time, !at.host.is_empty()) > (s.time, !s.host.is_empty()))
            {
                *slot = Some(at);
            }
        }
        Ok(out)
    }

    pub fn record_verification(&self, snapshot: &Id, level: &str, ok: bool, detail: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO verifications(snapshot, time, level, ok, detail) VALUES(?1, ?2, ?3, ?4, ?5)",
                params![
                    snapshot.hex(),
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    level,
                    ok,
                    detail
                ],
            )
            .map(|_| ())
            .context(ErrorKind::Io, db_err(&self.path))
    }
}

/// The objects that read well; damaged ones (integrity errors) go to `unreadable`; any other
/// error is returned.
fn keep_readable<T>(read: Vec<(Id, Result<T>)>, name_of: fn(&Id) -> String, unreadable: &mut Vec<String>) -> Result<Vec<(Id, T)>> {
    let mut out = Vec::with_capacity(read.len());
    for (id, r) in read {
        match r {
            Ok(v) => out.push((id, v)),
            Err(e) if e.kind == ErrorKind::Integrity => unreadable.push(format!("{}: {e}", name_of(&id))),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn insert_segment(conn: &Connection, id: &Id, seg: &IndexSegment) -> rusqlite::Result<()> {
    let sid = id.hex();
    if conn.execute("INSERT OR IGNORE INTO index_segments(id) VALUES(?1)", [&sid])? == 0 {
        // Known already (another connection to this catalog recorded it first).
        return Ok(());
    }
    let mut pack_stmt = conn.prepare_cached("INSERT OR IGNORE INTO packs(id, type, size, segment) VALUES(?1, ?2, ?3, ?4)")?;
    let mut chunk_stmt =
        conn.prepare_cached("INSERT INTO chunks(id, pack, offset, length, raw_length, segment) VALUES(?1, ?2, ?3, ?4, ?5, ?6)")?;
    for p in &seg.packs {
        let pid = p.id.hex();
        let ptype = serde_json::to_value(p.pack_type)
            .expect("pack type")
            .as_str()
            .unwrap_or("data")
            .to_string();
        pack_stmt.execute(params![pid, ptype, p.size as i64, sid])?;
        for b in &p.blobs {
            chunk_stmt.execute(params![&b.id.0[..], pid, b.offset, b.length, b.raw_length, sid])?;
        }
    }
    Ok(())
}

fn insert_snapshot(conn: &Connection, id: &Id, m: &SnapshotManifest) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO snapshots(id, time, kind, host, job, manifest) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id.hex(),
            m.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            m.kind.as_str(),
            m.host,
            m.job,
            serde_json::to_string(m).expect("serialize manifest")
        ],
    )?;
    Ok(())
}
