//! Repacking (docs/FORMAT.md section 15): the used chunks of a partly unused pack are copied into
//! new packs, each with its index segment, before the old pack becomes pending. Reading a pack's
//! content needs a restorer's identity: the writer key cannot unwrap pack keys (section 2).

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::{self, Id, PackType};
use crate::pack::{PackHeader, open_blob};
use crate::repo::Vault;

use super::mark;

/// What repacking did.
#[derive(Clone, Debug, Default)]
pub struct Repacked {
    /// The packs whose used chunks now have a copy elsewhere.
    pub packs: Vec<Id>,
    /// Chunks and bytes (raw) copied.
    pub chunks: u64,
    pub bytes: u64,
    /// Bytes of the new packs.
    pub stored_bytes: u64,
    pub new_packs: u64,
}

/// Copy the used chunks (as [`mark::mark_used`] marked them) of `packs` into new packs. A pack that
/// cannot be read is skipped with a warning (it stays, not pending).
/// The prune lock's lease is renewed between packs.
pub async fn repack(
    vault: &Vault,
    catalog: &mut Catalog,
    packs: &[(Id, PackType)],
    guard: &mut Option<&mut super::lock::PruneLockGuard>,
) -> Result<Repacked> {
    let identities = vault.identities("repacking (reading pack content)")?;
    let mut done = Repacked::default();
    let ids: Vec<Id> = packs.iter().map(|(id, _)| *id).collect();
    let mut used = mark::used_blobs_of(catalog, &ids)?;
    let work: Vec<(Id, PackType, Vec<format::BlobEntry>)> =
        packs.iter().map(|(id, t)| (*id, *t, used.remove(id).unwrap_or_default())).collect();
    let (sink, packer) = super::super::packing::start(vault, Default::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(PackType, Id, Vec<u8>)>>(1);
    // The sink's sends block while the packer is busy: it lives on a thread of its own.
    let feeder = std::thread::spawn(move || {
        let mut sink = sink;
        let mut mismatched = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            for (t, id, data) in batch {
                if sink.add(t, &data) != id {
                    mismatched += 1;
                }
            }
            if sink.stopped() {
                break;
            }
        }
        mismatched
    });
    let reader = async {
        let tx = tx;
        let mut copied = Vec::new();
        for (id, t, blobs) in &work {
            super::keep(guard, vault).await?;
            let name = format::pack_name(id);
            let bytes = match vault.store.get(&name).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("repack: cannot read {name}: {e}; left as it is");
                    continue;
                }
            };
            let opened = super::super::blocking(|| -> Result<Vec<(PackType, Id, Vec<u8>)>> {
                if Id::of_stored(&bytes) != *id {
                    return Err(Error::integrity(format!("pack {name} does not match its name's hash")));
                }
                let header = PackHeader::parse(&bytes, &name)?;
                let key = header.open_key(&bytes, identities, &name)?;
                let mut out = Vec::with_capacity(blobs.len());
                for b in blobs {
                    let start = b.offset as usize;
                    let end = start + b.length as usize;
                    let blob = bytes
                        .get(start..end)
                        .ok_or_else(|| Error::integrity(format!("pack {name} is shorter than its index says")))?;
                    out.push((*t, b.id, open_blob(&key, &vault.writer, b, blob, &name)?));
                }
                Ok(out)
            });
            match opened {
                Ok(batch) => {
                    let raw: u64 = batch.iter().map(|(_, _, d)| d.len() as u64).sum();
                    let n = batch.len() as u64;
                    if tx.send(batch).await.is_err() {
                        break;
                    }
                    copied.push((*id, n, raw));
                }
                Err(e) => tracing::warn!("repack: {e}; pack left as it is"),
            }
        }
        Ok::<_, Error>(copied)
    };
    let (copied, uploaded) = futures::join!(reader, packer.upload_all(vault, catalog));
    let mismatched = feeder.join().map_err(|_| Error::io("the repack feeder thread panicked"))?;
    let (stored, new_packs) = uploaded?;
    let copied = copied?;
    if mismatched > 0 {
        return Err(Error::integrity(format!(
            "repack: {mismatched} chunk(s) read back with another ID than the index gives; the packs they came from are left as they are"
        ))
        .hint("run `vaultctl verify --read-data` to find the damaged pack"));
    }
    for (id, n, raw) in copied {
        done.packs.push(id);
        done.chunks += n;
        done.bytes += raw;
    }
    done.stored_bytes = stored;
    done.new_packs = new_packs;
    Ok(done)
}
