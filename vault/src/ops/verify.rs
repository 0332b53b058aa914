//! Verification in three levels (each includes the ones before):
//! * `structure` (writer key): every chunk of every selected snapshot is in the index and every
//!   pack it lives in exists in the store with the indexed size;
//! * `stored-objects` (`--read-data[=PERCENT]`): packs are downloaded (all, or a random sample),
//!   their bytes hash to their names, and their trailers match the index: storage bit rot is found;
//! * `content` (identity): every chunk is decrypted and checked against its keyed ID, and each
//!   stream's sha256 (and an etcd snapshot's own sha256 trailer) is recomputed.
//!
//! A chunk is whole if at least one of its copies lies in a pack that is neither missing nor
//! damaged (a capture stores again what the vault lost, so a chunk may have two copies). What
//! verify finds about packs is recorded in the catalog's bad packs: deduplication stops trusting
//! them and reads prefer another copy (`ops::pack_health`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{ErrorKind, Result};
use crate::format::{BlobEntry, Id, PayloadKind};
use crate::ops::pack_health;
use crate::ops::read::{locate, read_located};
use crate::repo::Vault;
use crate::source::etcd_v3::TrailerCheck;

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Download packs; `Some(100.0)` reads all, less samples that percentage of packs.
    pub read_data_percent: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotVerdict {
    pub id: String,
    pub kind: String,
    pub time: String,
    pub ok: bool,
    pub level: String,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub level: String,
    pub snapshots: Vec<SnapshotVerdict>,
    /// Damaged index segments and manifests (from the catalog's last sync): a damaged manifest is
    /// a snapshot that cannot be listed; a damaged segment leaves its pack's chunks unindexed.
    pub damaged_objects: Vec<String>,
    /// Packs the selected snapshots use that are known missing or damaged (now or by an earlier
    /// read). A snapshot whose chunks all have another good copy still verifies.
    pub bad_packs: Vec<String>,
    pub packs_checked: usize,
    pub bytes_read: u64,
    /// Temporary files of writers killed mid-write, removed from a local store by this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_temporaries: Vec<String>,
}

impl VerifyReport {
    pub fn failed(&self) -> Vec<&SnapshotVerdict> {
        self.snapshots.iter().filter(|s| !s.ok).collect()
    }
}

pub async fn verify(vault: &Vault, catalog: &mut Catalog, snapshots: &[SnapshotEntry], opts: &VerifyOptions) -> Result<VerifyReport> {
    let level = if vault.has_identity() {
        "content"
    } else if opts.read_data_percent.is_some() {
        "stored-objects"
    } else {
        "structure"
    };
    let mut problems: BTreeMap<Id, Vec<String>> = snapshots.iter().map(|s| (s.id, Vec::new())).collect();

    // Structure: every location of every chunk (a chunk stored again after its pack was lost has
    // two); which packs each snapshot needs; what the store's listing says of them.
    let listed = pack_health::list_packs(vault).await?;
    let listing = pack_health::record_listing(catalog, &listed)?;
    let mut locations: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut users: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    // One catalog query per distinct chunk: thousands of snapshots make this long.
    super::blocking(|| -> Result<()> {
        for s in snapshots {
            for stream in &s.manifest.streams {
                let mut unindexed: Vec<Id> = Vec::new();
                for c in &stream.chunks {
                    if !locations.contains_key(c) {
                        let packs = catalog.chunk_locations(c)?.into_iter().map(|(p, _)| p).collect();
                        locations.insert(*c, packs);
                    }
                    let packs = &locations[c];
                    if packs.is_empty() && !unindexed.contains(c) {
                        unindexed.push(*c);
                    }
                    for p in packs {
                        users.entry(*p).or_default().insert(s.id);
                    }
                }
                if let Some(first) = unindexed.first() {
                    let more = match unindexed.len() {
                        1 => String::new(),
                        n => format!(" ({n} chunks in all)"),
                    };
                    problems.get_mut(&s.id).expect("selected").push(format!(
                        "chunk {} of stream {} is not in the vault's index{more}",
                        first.short(),
                        stream.name
                    ));
                }
            }
        }
        Ok(())
    })?;
    // Packs known bad: from this listing, or from an earlier read that found them damaged.
    let known_bad = catalog.bad_packs()?;
    let mut damaged: BTreeMap<Id, String> = BTreeMap::new();
    for p in users.keys() {
        if let Some((_, why)) = listing.all.get(p) {
            damaged.insert(*p, why.clone());
        } else if let Some(b) = known_bad.get(p) {
            damaged.insert(*p, format!("{} (found {})", b.detail, b.time));
        }
    }

    // Stored objects: download and hash packs (also those marked damaged before: a pack that is
    // whole now is cleared).
    let mut packs_checked = 0;
    let mut bytes_read = 0u64;
    let mut checked: HashSet<Id> = HashSet::new();
    if let Some(pct) = opts.read_data_percent.filter(|_| level != "content") {
        let mut candidates: Vec<Id> = users.keys().filter(|p| !listing.all.contains_key(p)).copied().collect();
        if pct < 100.0 {
            candidates.shuffle(&mut rand::thread_rng());
            let n = ((candidates.len() as f64) * pct / 100.0).ceil().max(1.0) as usize;
            candidates.truncate(n.min(candidates.len()));
        }
        for p in candidates {
            checked.insert(p);
            match pack_health::check_indexed_pack(vault, catalog, &p).await? {
                None => {
                    damaged.remove(&p);
                }
                Some((_, why)) => {
                    damaged.insert(p, why);
                }
            }
            packs_checked += 1;
            bytes_read += listed.get(&p).copied().unwrap_or(0);
        }
    }
    for (s, why) in lost_chunks(snapshots, &locations, &damaged) {
        problems.get_mut(&s).expect("selected").push(why);
    }

    // Content: decrypt everything and recompute stream hashes. A pack that fails here is checked
    // and marked, and the stream read again from other copies if every chunk has one.
    if level == "content" {
        packs_checked = users.len();
        for s in snapshots {
            if !problems[&s.id].is_empty() {
                continue;
            }
            for stream in &s.manifest.streams {
                let etcd = s.manifest.kind == PayloadKind::EtcdV3;
                let mut r = read_and_hash(vault, locate(catalog, stream)?, etcd).await;
                if matches!(&r, Err(e) if e.kind == ErrorKind::Integrity || e.kind == ErrorKind::NotFound) {
                    let mut found_bad = false;
                    for (p, _) in locate(catalog, stream)? {
                        if checked.insert(p) && pack_health::check_indexed_pack(vault, catalog, &p).await?.is_some() {
                            found_bad = true;
                        }
                    }
                    if found_bad {
                        r = read_and_hash(vault, locate(catalog, stream)?, etcd).await;
                    }
                }
                let list = problems.get_mut(&s.id).expect("selected");
                match r {
                    Ok((n, sha, trailer_ok)) => {
                        bytes_read += stream.size;
                        if n != stream.size {
                            list.push(format!("stream {} has {n} bytes, the manifest says {}", stream.name, stream.size));
                        } else if !stream.sha256.is_empty() && sha != stream.sha256 {
                            list.push(format!("stream {} does not hash to the sha256 recorded at capture", stream.name));
                        } else if !trailer_ok {
                            list.push(format!("stream {} fails the etcd snapshot's own sha256 trailer check", stream.name));
                        }
                    }
                    Err(e) if e.kind == ErrorKind::Integrity || e.kind == ErrorKind::NotFound => list.push(e.what),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Delta chains: D1 on the links of each selected base, D2 on each segment's events.
    crate::ops::deltas::verify::check(vault, catalog, snapshots, level == "content", &mut problems).await?;
    let bad_packs = catalog
        .bad_packs()?
        .into_iter()
        .filter(|(p, _)| users.contains_key(p))
        .map(|(_, b)| b.detail)
        .collect();

    let mut verdicts = Vec::new();
    for s in snapshots {
        let p = problems.remove(&s.id).unwrap_or_default();
        let ok = p.is_empty();
        catalog.record_verification(&s.id, level, ok, &p.join("; "))?;
        verdicts.push(SnapshotVerdict {
            id: s.id.hex(),
            kind: s.manifest.kind.to_string(),
            time: s.manifest.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ok,
            level: level.to_string(),
            problems: p,
        });
    }
    let damaged_objects = catalog.unreadable().to_vec();
    // Housekeeping that needs a listing anyway: what killed writers left behind.
    let removed_temporaries = vault.store.remove_stale_temporaries().await?;
    Ok(VerifyReport {
        ok: verdicts.iter().all(|v| v.ok) && damaged_objects.is_empty(),
        level: level.into(),
        snapshots: verdicts,
        damaged_objects,
        bad_packs,
        packs_checked,
        bytes_read,
        removed_temporaries,
    })
}

/// For each snapshot, the packs whose loss leaves some of its chunks without any good copy:
/// (snapshot, problem naming the pack and how many chunks it takes).
fn lost_chunks(snapshots: &[SnapshotEntry], locations: &HashMap<Id, Vec<Id>>, damaged: &BTreeMap<Id, String>) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for s in snapshots {
        let mut lost: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
        for c in s.manifest.streams.iter().flat_map(|st| &st.chunks) {
            let packs = &locations[c];
            if !packs.is_empty() && packs.iter().all(|p| damaged.contains_key(p)) {
                lost.entry(packs[0]).or_default().insert(*c);
            }
        }
        for (p, chunks) in lost {
            out.push((
                s.id,
                format!("{}: {} chunk(s) of this snapshot have no other copy", damaged[&p], chunks.len()),
            ));
        }
    }
    out
}

/// Read located chunks and return (bytes, sha256 or the etcd file sha256, etcd trailer ok).
async fn read_and_hash(vault: &Vault, locations: Vec<(Id, BlobEntry)>, etcd: bool) -> Result<(u64, String, bool)> {
    read_located(vault, locations, move |rx| {
        let mut h = sha2::Sha256::new();
        let mut t = etcd.then(TrailerCheck::default);
        let mut n = 0u64;
        for c in rx {
            n += c.len() as u64;
            match t.as_mut() {
                Some(t) => t.update(&c),
                None => h.update(&c),
            }
        }
        Ok(match t {
            Some(t) => {
                let r = t.finish();
                (n, r.file_sha256, r.trailer_ok)
            }
            None => (n, hex::encode(h.finalize()), true),
        })
    })
    .await
}
