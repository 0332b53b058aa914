//! `vaultctl repair`: bring the index and the catalog in line with the packs that exist (like
//! restic's `repair index`), and say what that means for the snapshots.
//!
//! [`plan`] reads only: it lists `data/`, compares it with the index (and with `read_data`
//! downloads every pack and checks it against its name and trailer), reads the trailers of packs
//! no index lists, and works out which snapshots lost chunks, which of those a later capture
//! stored again (healed) and which cannot be made whole. [`apply`] then records the bad packs in
//! the catalog (deduplication stops trusting them, reads prefer other copies) and writes an index
//! segment for each pack no index listed. Needs the writer key only; never deletes an object.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::catalog::{Catalog, PackFault, SnapshotEntry};
use crate::error::Result;
use crate::format::{self, Id, IndexPack, IndexSegment};
use crate::ops::pack_health::{self, Fault, PackCheck};
use crate::repo::Vault;

#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// Download every indexed pack and check it (finds flipped bytes; costs a full read).
    pub read_data: bool,
}

/// A pack that is missing or damaged.
#[derive(Clone, Debug, Serialize)]
pub struct BadPackReport {
    pub pack: String,
    pub fault: PackFault,
    pub detail: String,
    /// Chunks the index places in it.
    pub chunks: usize,
    /// Of those, chunks no other pack holds whole.
    pub lost_chunks: usize,
    /// The catalog already records it so.
    pub known: bool,
}

/// A pack the store holds that no readable index segment lists.
#[derive(Clone, Debug, Serialize)]
pub struct UnindexedPack {
    pub pack: String,
    pub size: u64,
    pub chunks: usize,
    #[serde(skip)]
    entry: IndexPack,
}

/// A snapshot that uses a chunk of a bad pack.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotRepair {
    pub id: String,
    pub time: String,
    pub kind: String,
    /// Every chunk has a copy in a good pack: it verifies and restores.
    pub whole: bool,
    /// Chunks whose every copy is in a bad pack.
    pub lost_chunks: usize,
    /// Chunks of a bad pack that a later capture stored again.
    pub healed_chunks: usize,
    /// The captures that stored them again (snapshot IDs; `null`: a capture that left no snapshot).
    pub healed_by: Vec<Option<String>>,
    /// The bad packs holding its lost chunks.
    pub lost_in: Vec<String>,
}

/// A capture that stored again chunks of bad packs.
#[derive(Clone, Debug, Serialize)]
pub struct Heal {
    /// The snapshot it committed; `None` for a capture that left no snapshot (interrupted).
    pub by: Option<String>,
    pub time: Option<String>,
    /// The pack it stored them in.
    pub pack: String,
    pub chunks: usize,
}

/// What repair found and will do.
#[derive(Clone, Debug, Serialize)]
pub struct RepairPlan {
    pub packs_listed: usize,
    pub packs_indexed: usize,
    /// Indexed packs the store lacks or holds damaged: recorded in the catalog.
    pub bad_packs: Vec<BadPackReport>,
    /// Packs recorded as bad before that are whole now: the record is dropped.
    pub cleared_packs: Vec<String>,
    /// Whole packs no readable index segment lists: an index segment is written for each.
    pub unindexed_packs: Vec<UnindexedPack>,
    /// Packs no index lists that cannot be read (left in the store, not indexed).
    pub unreadable_packs: Vec<BadPackReport>,
    /// Snapshots using chunks of bad packs, oldest first.
    pub snapshots: Vec<SnapshotRepair>,
    /// Which later captures stored again which chunks.
    pub heals: Vec<Heal>,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Whether it was applied (false for `--dry-run`).
    pub applied: bool,
}

impl RepairPlan {
    /// Snapshots that cannot be made whole from what the vault holds.
    pub fn broken(&self) -> Vec<&SnapshotRepair> {
        self.snapshots.iter().filter(|s| !s.whole).collect()
    }

    /// Whether applying it changes anything.
    pub fn changes_anything(&self) -> bool {
        self.bad_packs.iter().any(|b| !b.known) || !self.cleared_packs.is_empty() || !self.unindexed_packs.is_empty()
    }
}

/// Work out what repair would do. Reads the store and the catalog, writes nothing.
pub async fn plan(vault: &Vault, catalog: &mut Catalog, opts: &RepairOptions) -> Result<RepairPlan> {
    let listed = pack_health::list_packs(vault).await?;
    let indexed = catalog.packs()?;
    let indexed_ids: HashSet<Id> = indexed.iter().map(|(id, _, _)| *id).collect();
    let known = catalog.bad_packs()?;
    let mut bad: BTreeMap<Id, Fault> = pack_health::listing_faults(&indexed, &listed);
    let mut cleared = Vec::new();
    let (mut packs_read, mut bytes_read) = (0usize, 0u64);

    for (id, _, _) in &indexed {
        if bad.contains_key(id) {
            continue;
        }
        let was = known.get(id);
        if opts.read_data {
            packs_read += 1;
            bytes_read += listed.get(id).copied().unwrap_or(0);
            match pack_health::read_pack(vault, id).await? {
                PackCheck::Whole { trailer, .. } if pack_health::trailer_matches_index(&trailer, &catalog.chunks_of_pack(id)?) => {
                    if was.is_some() {
                        cleared.push(*id);
                    }
                }
                PackCheck::Whole { .. } => {
                    let why = format!("pack {}: its trailer disagrees with the index", format::pack_name(id));
                    bad.insert(*id, (PackFault::Damaged, why));
                }
                PackCheck::Bad(fault) => {
                    bad.insert(*id, fault);
                }
            }
        } else {
            match was {
                // Listed again with its indexed size.
                Some(b) if b.fault == PackFault::Missing => cleared.push(*id),
                // Found damaged by an earlier read; only another read clears it.
                Some(b) => {
                    bad.insert(*id, (b.fault, format!("{} (found {})", b.detail, b.time)));
                }
                None => {}
            }
        }
    }

    // Packs in the store that no readable index segment lists: index them from their trailers.
    let mut unindexed = Vec::new();
    let mut unreadable = Vec::new();
    let mut orphans: Vec<(&Id, &u64)> = listed.iter().filter(|(id, _)| !indexed_ids.contains(id)).collect();
    orphans.sort();
    for (id, size) in orphans {
        packs_read += 1;
        bytes_read += size;
        match pack_health::read_pack(vault, id).await? {
            PackCheck::Whole { size, trailer } => unindexed.push(UnindexedPack {
                pack: format::pack_name(id),
                size,
                chunks: trailer.blobs.len(),
                entry: IndexPack {
                    id: *id,
                    pack_type: trailer.pack_type,
                    size,
                    blobs: trailer.blobs,
                },
            }),
            PackCheck::Bad((fault, detail)) => unreadable.push(BadPackReport {
                pack: format::pack_name(id),
                fault,
                detail,
                chunks: 0,
                lost_chunks: 0,
                known: false,
            }),
        }
    }

    let snapshots = catalog.snapshots()?;
    let mut outcome = super::blocking(|| assess(catalog, &snapshots, &bad, &unindexed))?;
    for b in &mut outcome.bad_packs {
        let id = format::id_from_name(&b.pack).expect("a pack name");
        b.known = known.get(&id).is_some_and(|k| k.fault == b.fault);
    }
    Ok(RepairPlan {
        packs_listed: listed.len(),
        packs_indexed: indexed.len(),
        bad_packs: outcome.bad_packs,
        cleared_packs: cleared.iter().map(format::pack_name).collect(),
        unindexed_packs: unindexed,
        unreadable_packs: unreadable,
        snapshots: outcome.snapshots,
        heals: outcome.heals,
        packs_read,
        bytes_read,
        applied: false,
    })
}

/// Carry out a plan: record bad packs in the catalog, drop records of packs whole again, and
/// write an index segment for every pack no index listed.
pub async fn apply(vault: &Vault, catalog: &mut Catalog, mut plan: RepairPlan) -> Result<RepairPlan> {
    for b in plan.bad_packs.iter().filter(|b| !b.known) {
        let id = format::id_from_name(&b.pack).expect("a pack name");
        catalog.mark_bad_pack(&id, b.fault, &b.detail)?;
    }
    for p in &plan.cleared_packs {
        catalog.clear_bad_pack(&format::id_from_name(p).expect("a pack name"))?;
    }
    for u in &plan.unindexed_packs {
        let seg = IndexSegment {
            packs: vec![u.entry.clone()],
        };
        let seg_id = vault.write_index(&seg).await?;
        catalog.add_segment(&seg_id, &seg)?;
    }
    plan.applied = true;
    Ok(plan)
}

struct Assessment {
    bad_packs: Vec<BadPackReport>,
    snapshots: Vec<SnapshotRepair>,
    heals: Vec<Heal>,
}

/// Which chunks the bad packs take, which have a good copy elsewhere (in the index or in a pack
/// about to be indexed), and what that means for each snapshot.
fn assess(catalog: &Catalog, snapshots: &[SnapshotEntry], bad: &BTreeMap<Id, Fault>, unindexed: &[UnindexedPack]) -> Result<Assessment> {
    // Chunks of bad packs, and the good packs holding another copy of each.
    let mut good_copies: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut in_bad: BTreeMap<Id, Vec<Id>> = BTreeMap::new();
    let mut planned: HashMap<Id, Vec<Id>> = HashMap::new();
    for u in unindexed {
        for b in &u.entry.blobs {
            planned.entry(b.id).or_default().push(u.entry.id);
        }
    }
    for p in bad.keys() {
        let chunks: Vec<Id> = catalog.chunks_of_pack(p)?.into_iter().map(|b| b.id).collect();
        for c in &chunks {
            if !good_copies.contains_key(c) {
                let mut good: Vec<Id> = catalog
                    .chunk_locations(c)?
                    .into_iter()
                    .map(|(p, _)| p)
                    .filter(|p| !bad.contains_key(p))
                    .collect();
                good.extend(planned.get(c).into_iter().flatten());
                good_copies.insert(*c, good);
            }
        }
        in_bad.insert(*p, chunks);
    }
    let bad_packs = bad
        .iter()
        .map(|(p, (fault, detail))| {
            let chunks = &in_bad[p];
            BadPackReport {
                pack: format::pack_name(p),
                fault: *fault,
                detail: detail.clone(),
                chunks: chunks.len(),
                lost_chunks: chunks.iter().filter(|c| good_copies[c].is_empty()).count(),
                known: false,
            }
        })
        .collect();

    // Which capture stored each good copy: see [`Healers`].
    let mut healers = Healers::new(catalog, snapshots, unindexed);
    let mut out = Vec::new();
    let mut heals: BTreeMap<(Option<usize>, Id), BTreeSet<Id>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        let mut lost = 0usize;
        let mut lost_in = BTreeSet::new();
        let mut healed = 0usize;
        let mut healed_by = BTreeSet::new();
        let mut seen = HashSet::new();
        for c in s.manifest.streams.iter().flat_map(|st| &st.chunks) {
            let Some(good) = good_copies.get(c) else { continue };
            if !seen.insert(*c) {
                continue;
            }
            match good.first() {
                None => {
                    lost += 1;
                    if let Some((p, _)) = in_bad.iter().find(|(_, cs)| cs.contains(c)) {
                        lost_in.insert(format::pack_name(p));
                    }
                }
                Some(p) => {
                    let by = healers.of(p, i)?;
                    // A snapshot at or after the capture that stored the copy never lacked it.
                    if by.is_none_or(|t| t > i) {
                        healed += 1;
                        healed_by.insert(by);
                        heals.entry((by, *p)).or_default().insert(*c);
                    }
                }
            }
        }
        if lost == 0 && healed == 0 {
            continue;
        }
        out.push(SnapshotRepair {
            id: s.id.hex(),
            time: time_of(s),
            kind: s.manifest.kind.to_string(),
            whole: lost == 0,
            lost_chunks: lost,
            healed_chunks: healed,
            healed_by: healed_by.into_iter().map(|b| b.map(|t| snapshots[t].id.hex())).collect(),
            lost_in: lost_in.into_iter().collect(),
        });
    }
    let heals = heals
        .into_iter()
        .map(|((by, pack), chunks)| Heal {
            by: by.map(|t| snapshots[t].id.hex()),
            time: by.map(|t| time_of(&snapshots[t])),
            pack: format::pack_name(&pack),
            chunks: chunks.len(),
        })
        .collect();
    Ok(Assessment {
        bad_packs,
        snapshots: out,
        heals,
    })
}

fn time_of(s: &SnapshotEntry) -> String {
    s.manifest.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Which capture stored a pack. The format records no writer per pack, so it is inferred from
/// the manifests: the capture that stored pack P references every chunk of P and counted at
/// least that many chunks as new. Among the snapshots that qualify, the healer of a chunk used
/// by snapshot `i` is the first one after `i` (an earlier one that qualifies stored the same
/// data before, into the pack that was lost). None: no snapshot qualifies (a capture that was
/// interrupted after storing the pack).
struct Healers<'a> {
    catalog: &'a Catalog,
    snapshots: &'a [SnapshotEntry],
    chunk_sets: Vec<Option<HashSet<Id>>>,
    planned: HashMap<Id, Vec<Id>>,
    /// Pack -> indexes of the snapshots that qualify as its writer, oldest first.
    candidates: HashMap<Id, Vec<usize>>,
}

impl<'a> Healers<'a> {
    fn new(catalog: &'a Catalog, snapshots: &'a [SnapshotEntry], unindexed: &[UnindexedPack]) -> Self {
        Healers {
            catalog,
            snapshots,
            chunk_sets: vec![None; snapshots.len()],
            planned: unindexed
                .iter()
                .map(|u| (u.entry.id, u.entry.blobs.iter().map(|b| b.id).collect()))
                .collect(),
            candidates: HashMap::new(),
        }
    }

    /// The capture that stored `pack`, relative to snapshot `i` (an index into the snapshots).
    fn of(&mut self, pack: &Id, i: usize) -> Result<Option<usize>> {
        if !self.candidates.contains_key(pack) {
            let chunks: Vec<Id> = match self.planned.get(pack) {
                Some(c) => c.clone(),
                None => self.catalog.chunks_of_pack(pack)?.into_iter().map(|b| b.id).collect(),
            };
            let mut found = Vec::new();
            for (t, s) in self.snapshots.iter().enumerate() {
                if (s.manifest.stats.new_chunks as usize) < chunks.len() {
                    continue;
                }
                let set =
                    self.chunk_sets[t].get_or_insert_with(|| s.manifest.streams.iter().flat_map(|st| st.chunks.iter().copied()).collect());
                if chunks.iter().all(|c| set.contains(c)) {
                    found.push(t);
                }
            }
            self.candidates.insert(*pack, found);
        }
        let found = &self.candidates[pack];
        Ok(found.iter().copied().find(|t| *t > i).or_else(|| found.last().copied()))
    }
}
