//! What is known about the packs themselves rather than the index: which packs the store lists,
//! and whether a downloaded pack is whole. Verify, repair and every capture record what they find
//! in the catalog's bad packs, so deduplication stops trusting a lost pack (the next capture
//! stores its chunks again) and reads prefer another copy (docs/FORMAT.md section 11).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalog::{Catalog, PackFault};
use crate::error::{ErrorKind, Result};
use crate::format::{self, BlobEntry, Id, PackTrailer};
use crate::pack::read_trailer;
use crate::repo::Vault;

/// A pack that is missing or damaged, and why (the reason names the pack).
pub type Fault = (PackFault, String);

/// Every pack the store lists under `data/`, with its size. One LIST request per 1000 packs
/// (about 16 GB of vault at the default pack size) on S3.
pub async fn list_packs(vault: &Vault) -> Result<HashMap<Id, u64>> {
    Ok(vault
        .store
        .list(format::DATA_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| Some((format::id_from_name(&o.name)?, o.size)))
        .collect())
}

/// What a listing of `data/` says about the indexed packs.
#[derive(Debug, Default)]
pub struct ListingFaults {
    /// Indexed packs the store does not list, or lists with another size than the index.
    pub all: BTreeMap<Id, Fault>,
    /// Those of `all` the catalog did not know about before.
    pub new: Vec<Id>,
    /// Packs the catalog knew as missing that the store lists again with their indexed size.
    pub back: Vec<Id>,
}

/// What a listing of `data/` says about the indexed packs `(id, size)`: those not listed are
/// missing, those listed with another size damaged.
pub fn listing_faults(indexed: &[(Id, String, u64)], listed: &HashMap<Id, u64>) -> BTreeMap<Id, Fault> {
    let mut out = BTreeMap::new();
    for (id, _, want) in indexed {
        let name = format::pack_name(id);
        match listed.get(id) {
            None => {
                out.insert(*id, (PackFault::Missing, format!("pack {name} is missing from the store")));
            }
            Some(have) if have != want => {
                out.insert(
                    *id,
                    (PackFault::Damaged, format!("pack {name} has {have} bytes, the index says {want}")),
                );
            }
            Some(_) => {}
        }
    }
    out
}

/// Compare a listing of `data/` with the index and record the result in the catalog
/// ([`listing_faults`]); a pack known missing that is listed again with its indexed size is no
/// longer marked.
pub fn record_listing(catalog: &Catalog, listed: &HashMap<Id, u64>) -> Result<ListingFaults> {
    let known = catalog.bad_packs()?;
    let indexed = catalog.packs()?;
    let mut out = ListingFaults {
        all: listing_faults(&indexed, listed),
        ..Default::default()
    };
    for (id, _, _) in &indexed {
        let was = known.get(id).map(|b| b.fault);
        match out.all.get(id) {
            Some((fault, why)) if was != Some(*fault) => {
                catalog.mark_bad_pack(id, *fault, why)?;
                out.new.push(*id);
            }
            None if was == Some(PackFault::Missing) => {
                catalog.clear_bad_pack(id)?;
                out.back.push(*id);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The result of downloading one pack.
pub enum PackCheck {
    /// Its bytes hash to its name and its trailer opens with the writer key.
    Whole {
        size: u64,
        trailer: PackTrailer,
    },
    Bad(Fault),
}

/// Download pack `id` and check it against its name and its own trailer (writer key only).
/// Store failures other than "not found" are errors.
pub async fn read_pack(vault: &Vault, id: &Id) -> Result<PackCheck> {
    let name = format::pack_name(id);
    let bytes = match vault.store.get(&name).await {
        Ok(b) => b,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Ok(PackCheck::Bad((
                PackFault::Missing,
                format!("pack {name} is missing from the store"),
            )));
        }
        Err(e) => return Err(e),
    };
    let size = bytes.len() as u64;
    let checked = super::blocking(|| {
        if Id::of_stored(&bytes) != *id {
            return Err(format!("pack {name} does not match its name's hash: the stored object is damaged"));
        }
        read_trailer(&bytes, &vault.writer, &name).map_err(|e| e.what)
    });
    Ok(match checked {
        Ok(trailer) => PackCheck::Whole { size, trailer },
        Err(why) => PackCheck::Bad((PackFault::Damaged, why)),
    })
}

/// Whether a whole pack's trailer lists exactly the blobs the index places in it.
pub fn trailer_matches_index(trailer: &PackTrailer, indexed: &[BlobEntry]) -> bool {
    let key = |b: &BlobEntry| (b.id, b.offset, b.length, b.raw_length);
    let t: HashSet<_> = trailer.blobs.iter().map(key).collect();
    let i: HashSet<_> = indexed.iter().map(key).collect();
    t == i
}

/// Download and check an indexed pack: whole (`None`) or its fault, also recorded in the catalog
/// (a whole pack's earlier mark is cleared). Takes `&mut` so that the future stays `Send`.
pub async fn check_indexed_pack(vault: &Vault, catalog: &mut Catalog, id: &Id) -> Result<Option<Fault>> {
    let fault = match read_pack(vault, id).await? {
        PackCheck::Whole { trailer, .. } => {
            if trailer_matches_index(&trailer, &catalog.chunks_of_pack(id)?) {
                catalog.clear_bad_pack(id)?;
                return Ok(None);
            }
            (
                PackFault::Damaged,
                format!("pack {}: its trailer disagrees with the index", format::pack_name(id)),
            )
        }
        PackCheck::Bad(f) => f,
    };
    catalog.mark_bad_pack(id, fault.0, &fault.1)?;
    Ok(Some(fault))
}
