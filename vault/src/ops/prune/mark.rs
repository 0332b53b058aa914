//! The mark phase of prune, in SQLite over the catalog on disk (temporary tables of this
//! connection), so memory stays bounded by the catalog, not by sets of the whole vault.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{Connection, params};

use crate::catalog::Catalog;
use crate::error::{Context, ErrorKind, Result};
use crate::format::Id;

fn db(c: &Catalog) -> impl Fn() -> String + '_ {
    move || format!("catalog {}: prune's mark phase failed", c.path().display())
}

/// How much of an indexed pack the kept snapshots use.
#[derive(Clone, Debug)]
pub struct PackUse {
    pub pack: Id,
    pub pack_type: String,
    /// Sum of the blob lengths the index lists in it.
    pub blob_bytes: u64,
    pub used_blobs: u64,
    pub used_bytes: u64,
}

fn fill_ids(conn: &Connection, table: &str, ids: impl IntoIterator<Item = Id>) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {table}(id TEXT PRIMARY KEY) WITHOUT ROWID; DELETE FROM temp.{table};"
    ))?;
    let mut ins = conn.prepare(&format!("INSERT OR IGNORE INTO temp.{table}(id) VALUES(?1)"))?;
    for id in ids {
        ins.execute([id.hex()])?;
    }
    Ok(())
}

/// Mark: the chunks referenced by every snapshot in the catalog except `dropped`, into the
/// temporary table `prune_used`. Returns how many kept snapshots were read.
pub fn mark_used(catalog: &Catalog, dropped: &BTreeSet<Id>) -> Result<u64> {
    let conn = catalog.conn();
    let run = || -> rusqlite::Result<u64> {
        fill_ids(conn, "prune_dropped", dropped.iter().copied())?;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS prune_used(id BLOB PRIMARY KEY) WITHOUT ROWID; DELETE FROM temp.prune_used;
             INSERT OR IGNORE INTO temp.prune_used(id)
               SELECT unhex(c.value) FROM snapshots s, json_each(s.manifest, '$.streams') st, json_each(st.value, '$.chunks') c
               WHERE s.id NOT IN (SELECT id FROM temp.prune_dropped);",
        )?;
        conn.query_row(
            "SELECT COUNT(*) FROM snapshots WHERE id NOT IN (SELECT id FROM temp.prune_dropped)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
    };
    run().context(ErrorKind::Io, db(catalog))
}

/// Use of every indexed pack by the chunks [`mark_used`] marked, one pass over the chunk index.
/// Calls `each` per pack (streamed, not collected).
pub fn pack_use(catalog: &Catalog, mut each: impl FnMut(PackUse)) -> Result<()> {
    let conn = catalog.conn();
    let mut stmt = conn
        .prepare(
            "SELECT p.id, p.type, u.blob_bytes, u.used_blobs, u.used_bytes FROM packs p JOIN
               (SELECT c.pack AS pack, SUM(c.length) AS blob_bytes, COUNT(pu.id) AS used_blobs,
                       COALESCE(SUM(CASE WHEN pu.id IS NULL THEN 0 ELSE c.length END), 0) AS used_bytes
                FROM chunks c LEFT JOIN temp.prune_used pu ON pu.id = c.id GROUP BY c.pack) u ON u.pack = p.id
             ORDER BY p.id",
        )
        .context(ErrorKind::Io, db(catalog))?;
    let mut rows = stmt.query([]).context(ErrorKind::Io, db(catalog))?;
    while let Some(r) = rows.next().context(ErrorKind::Io, db(catalog))? {
        let id: String = r.get(0).context(ErrorKind::Io, db(catalog))?;
        let Some(pack) = Id::parse(&id) else { continue };
        let get = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
        each(PackUse {
            pack,
            pack_type: r.get(1).context(ErrorKind::Io, db(catalog))?,
            blob_bytes: get(2).context(ErrorKind::Io, db(catalog))?,
            used_blobs: get(3).context(ErrorKind::Io, db(catalog))?,
            used_bytes: get(4).context(ErrorKind::Io, db(catalog))?,
        });
    }
    Ok(())
}

/// Of the `candidates` (packs about to be deleted), those still needed: they hold a marked chunk
/// that has no location in a pack outside the candidates that is not recorded bad (C1).
pub fn still_needed(catalog: &Catalog, candidates: &HashSet<Id>) -> Result<HashSet<Id>> {
    let conn = catalog.conn();
    let run = || -> rusqlite::Result<HashSet<Id>> {
        fill_ids(conn, "prune_candidates", candidates.iter().copied())?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT c.pack FROM chunks c JOIN temp.prune_used u ON u.id = c.id
             WHERE c.pack IN (SELECT id FROM temp.prune_candidates)
               AND NOT EXISTS (SELECT 1 FROM chunks c2 WHERE c2.id = c.id
                   AND c2.pack NOT IN (SELECT id FROM temp.prune_candidates)
                   AND c2.pack NOT IN (SELECT id FROM bad_packs))",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = HashSet::new();
        for r in rows {
            if let Some(id) = Id::parse(&r?) {
                out.insert(id);
            }
        }
        Ok(out)
    };
    run().context(ErrorKind::Io, db(catalog))
}

/// The index segments that list `packs`, each with every pack it lists (so a segment is deleted
/// only with all of its packs).
pub fn segments_of(catalog: &Catalog, packs: &HashSet<Id>) -> Result<HashMap<Id, BTreeSet<Id>>> {
    let conn = catalog.conn();
    let run = || -> rusqlite::Result<HashMap<Id, BTreeSet<Id>>> {
        fill_ids(conn, "prune_doomed", packs.iter().copied())?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT c.segment, c.pack FROM chunks c
             WHERE c.segment IN (SELECT DISTINCT segment FROM chunks WHERE pack IN (SELECT id FROM temp.prune_doomed))
             UNION SELECT segment, id FROM packs WHERE id IN (SELECT id FROM temp.prune_doomed)",
        )?;
        let rows = stmt.query_map(params![], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out: HashMap<Id, BTreeSet<Id>> = HashMap::new();
        for r in rows {
            let (s, p) = r?;
            if let (Some(s), Some(p)) = (Id::parse(&s), Id::parse(&p)) {
                out.entry(s).or_default().insert(p);
            }
        }
        Ok(out)
    };
    run().context(ErrorKind::Io, db(catalog))
}

/// Which of `ids` are snapshots the catalog holds.
pub fn known_snapshots(catalog: &Catalog, ids: &BTreeSet<Id>) -> Result<BTreeSet<Id>> {
    let conn = catalog.conn();
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM snapshots WHERE id=?1")
        .context(ErrorKind::Io, db(catalog))?;
    let mut out = BTreeSet::new();
    for id in ids {
        if stmt.exists([id.hex()]).context(ErrorKind::Io, db(catalog))? {
            out.insert(*id);
        }
    }
    Ok(out)
}

/// The blobs [`mark_used`] marked in each of `packs`, in pack order: one pass over the chunk index
/// for all of them (the index has no lookup by pack).
pub fn used_blobs_of(catalog: &Catalog, packs: &[Id]) -> Result<HashMap<Id, Vec<crate::format::BlobEntry>>> {
    let conn = catalog.conn();
    let run = || -> rusqlite::Result<HashMap<Id, Vec<crate::format::BlobEntry>>> {
        fill_ids(conn, "prune_sparse", packs.iter().copied())?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT c.pack, c.id, c.offset, c.length, c.raw_length FROM chunks c JOIN temp.prune_used u ON u.id = c.id
             WHERE c.pack IN (SELECT id FROM temp.prune_sparse) ORDER BY c.pack, c.offset",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })?;
        let mut out: HashMap<Id, Vec<crate::format::BlobEntry>> = HashMap::new();
        for r in rows {
            let (pack, id, offset, length, raw_length) = r?;
            if let (Some(pack), Ok(a)) = (Id::parse(&pack), <[u8; 32]>::try_from(id.as_slice())) {
                out.entry(pack).or_default().push(crate::format::BlobEntry {
                    id: Id(a),
                    offset,
                    length,
                    raw_length,
                });
            }
        }
        Ok(out)
    };
    run().context(ErrorKind::Io, db(catalog))
}

/// Whether any of `chunks` (the blobs of a pack no index segment lists, from its trailer) is
/// marked and has no location in an indexed pack that is neither a candidate nor recorded bad:
/// then that pack is the only copy and must stay (`repair` indexes it).
pub fn needed_unindexed(catalog: &Catalog, chunks: &[Id]) -> Result<bool> {
    let conn = catalog.conn();
    let run = || -> rusqlite::Result<bool> {
        let mut stmt = conn.prepare_cached(
            "SELECT 1 FROM temp.prune_used u WHERE u.id = ?1
               AND NOT EXISTS (SELECT 1 FROM chunks c2 WHERE c2.id = u.id
                   AND c2.pack NOT IN (SELECT id FROM temp.prune_candidates)
                   AND c2.pack NOT IN (SELECT id FROM bad_packs))",
        )?;
        for c in chunks {
            if stmt.exists([&c.0[..]])? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    run().context(ErrorKind::Io, db(catalog))
}
