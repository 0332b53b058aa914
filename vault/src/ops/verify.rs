//! Verification in three levels (each includes the ones before):
//! * `structure` (writer key): every chunk of every selected snapshot is in the index and every
//!   pack it lives in exists in the store with the indexed size;
//! * `stored-objects` (`--read-data[=PERCENT]`): packs are downloaded (all, or a random sample),
//!   their bytes hash to their names, and their trailers match the index: storage bit rot is found;
//! * `content` (identity): every chunk is decrypted and checked against its keyed ID, and each
//!   stream's sha256 (and an etcd snapshot's own sha256 trailer) is recomputed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{ErrorKind, Result};
use crate::format::{self, Id, PayloadKind};
use crate::ops::read::{locate, read_located};
use crate::pack::read_trailer;
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
    pub packs_checked: usize,
    pub bytes_read: u64,
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

    // Structure: locate every chunk; collect which packs each snapshot needs.
    let listed: HashMap<String, u64> = vault
        .store
        .list(format::DATA_PREFIX)
        .await?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let indexed: HashMap<Id, u64> = catalog.packs()?.into_iter().map(|(id, _, size)| (id, size)).collect();
    let mut users: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    // One catalog query per chunk: thousands of snapshots make this long.
    super::blocking(|| {
        for s in snapshots {
            for stream in &s.manifest.streams {
                match locate(catalog, stream) {
                    Ok(locs) => {
                        for (p, _) in locs {
                            users.entry(p).or_default().insert(s.id);
                        }
                    }
                    Err(e) => problems.get_mut(&s.id).expect("selected").push(e.what),
                }
            }
        }
    });
    let mut damaged: BTreeMap<Id, String> = BTreeMap::new();
    for p in users.keys() {
        let name = format::pack_name(p);
        match (listed.get(&name), indexed.get(p)) {
            (None, _) => {
                damaged.insert(*p, format!("pack {name} is missing from the store"));
            }
            (Some(have), Some(want)) if have != want => {
                damaged.insert(*p, format!("pack {name} has {have} bytes, the index says {want}"));
            }
            _ => {}
        }
    }

    // Stored objects: download and hash packs.
    let mut packs_checked = 0;
    let mut bytes_read = 0u64;
    if let Some(pct) = opts.read_data_percent.filter(|_| level != "content") {
        let mut candidates: Vec<Id> = users.keys().filter(|p| !damaged.contains_key(p)).copied().collect();
        if pct < 100.0 {
            candidates.shuffle(&mut rand::thread_rng());
            let n = ((candidates.len() as f64) * pct / 100.0).ceil().max(1.0) as usize;
            candidates.truncate(n.min(candidates.len()));
        }
        for p in candidates {
            let name = format::pack_name(&p);
            let bytes = match vault.store.get(&name).await {
                Ok(b) => b,
                Err(e) if e.kind == ErrorKind::NotFound => {
                    damaged.insert(p, format!("pack {name} is missing from the store"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            packs_checked += 1;
            bytes_read += bytes.len() as u64;
            if Id::of_stored(&bytes) != p {
                damaged.insert(
                    p,
                    format!("pack {name} does not match its name's hash: the stored object is damaged"),
                );
                continue;
            }
            match read_trailer(&bytes, &vault.writer, &p.short()) {
                Ok(t) => {
                    for e in &t.blobs {
                        let found = catalog.chunk_locations(&e.id)?.iter().any(|(pp, be)| *pp == p && be == e);
                        if !found {
                            damaged.insert(
                                p,
                                format!("pack {name}: trailer entry for chunk {} disagrees with the index", e.id.short()),
                            );
                            break;
                        }
                    }
                }
                Err(e) => {
                    damaged.insert(p, e.what);
                }
            }
        }
    }
    for (p, why) in &damaged {
        for s in users.get(p).into_iter().flatten() {
            problems.get_mut(s).expect("selected").push(why.clone());
        }
    }

    // Content: decrypt everything and recompute stream hashes.
    if level == "content" {
        packs_checked = users.len();
        for s in snapshots {
            if !problems[&s.id].is_empty() {
                continue;
            }
            for stream in &s.manifest.streams {
                let etcd = s.manifest.kind == PayloadKind::EtcdV3;
                let r = read_located(vault, locate(catalog, stream)?, move |rx| {
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
                .await;
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
    Ok(VerifyReport {
        ok: verdicts.iter().all(|v| v.ok) && damaged_objects.is_empty(),
        level: level.into(),
        snapshots: verdicts,
        damaged_objects,
        packs_checked,
        bytes_read,
    })
}
