//! Reading a stored stream back in order: fetch each pack once (checking its name hash), unwrap
//! its key with the restorer's identity, decrypt and check every chunk, and hand the plaintext to
//! a sink in stream order. Fetching, decoding and the sink run concurrently.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::catalog::Catalog;
use crate::crypto::PackKey;
use crate::error::{Error, Result};
use crate::format::{self, BlobEntry, Id, Stream as ManifestStream};
use crate::pack::{PackHeader, open_blob};
use crate::repo::Vault;

struct LoadedPack {
    id: Id,
    bytes: Bytes,
    key: PackKey,
}

/// Where each chunk of a stream is stored, in stream order. Fails naming the first missing chunk.
pub fn locate(catalog: &Catalog, stream: &ManifestStream) -> Result<Vec<(Id, BlobEntry)>> {
    let mut cache: HashMap<Id, (Id, BlobEntry)> = HashMap::new();
    let mut out = Vec::with_capacity(stream.chunks.len());
    for c in &stream.chunks {
        if let Some(loc) = cache.get(c) {
            out.push(*loc);
            continue;
        }
        let loc = *catalog
            .chunk_locations(c)?
            .first()
            .ok_or_else(|| Error::integrity(format!("chunk {} of stream {} is not in the vault's index", c.short(), stream.name)))?;
        cache.insert(*c, loc);
        out.push(loc);
    }
    Ok(out)
}

/// Fetch a pack, check it against its name, and unwrap its key.
async fn load_pack(vault: &Vault, id: Id) -> Result<LoadedPack> {
    let name = format::pack_name(&id);
    let bytes = vault.store.get(&name).await?;
    let ids = vault.identities("reading stored content")?;
    let what = id.short();
    super::blocking(|| {
        if Id::of_stored(&bytes) != id {
            return Err(Error::integrity(format!(
                "pack {name} does not match its name's hash: the stored object is damaged"
            )));
        }
        let hdr = PackHeader::parse(&bytes, &what)?;
        let key = hdr.open_key(&bytes, ids, &what)?;
        Ok(LoadedPack { id, bytes, key })
    })
}

/// Read `stream` in order and pass each chunk's plaintext to `sink`, which runs on its own thread.
/// Returns whatever the sink returns.
pub async fn read_stream<T, F>(vault: &Vault, catalog: &Catalog, stream: &ManifestStream, sink: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(std::sync::mpsc::Receiver<Vec<u8>>) -> Result<T> + Send + 'static,
{
    vault.identities("reading stored content")?;
    // A pack lost since the catalog last looked: read another copy of its chunks if there is one.
    let listed = super::pack_health::list_packs(vault).await?;
    super::pack_health::record_listing(catalog, &listed)?;
    read_located(vault, locate(catalog, stream)?, sink).await
}

/// [`read_stream`] of chunks already located (by [`locate`]): a future that holds no catalog, so
/// it can run on any thread.
pub async fn read_located<T, F>(vault: &Vault, locations: Vec<(Id, BlobEntry)>, sink: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(std::sync::mpsc::Receiver<Vec<u8>>) -> Result<T> + Send + 'static,
{
    vault.identities("reading stored content")?;
    let mut last_use: HashMap<Id, usize> = HashMap::new();
    let mut order: Vec<Id> = Vec::new();
    for (i, (p, _)) in locations.iter().enumerate() {
        if last_use.insert(*p, i).is_none() {
            order.push(*p);
        }
    }

    let (dec_tx, dec_rx) = std::sync::mpsc::sync_channel::<(Arc<LoadedPack>, BlobEntry)>(256);
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    let writer = vault.writer.clone();
    let decoder = std::thread::spawn(move || -> Result<()> {
        for (pack, entry) in dec_rx {
            let start = entry.offset as usize;
            let end = start + entry.length as usize;
            if end > pack.bytes.len() {
                return Err(Error::integrity(format!(
                    "index places chunk {} beyond the end of pack {}",
                    entry.id.short(),
                    pack.id.short()
                )));
            }
            let raw = open_blob(&pack.key, &writer, &entry, &pack.bytes[start..end], &pack.id.short())?;
            if out_tx.send(raw).is_err() {
                break;
            }
        }
        Ok(())
    });
    let sink_thread = std::thread::spawn(move || sink(out_rx));

    let feed = async {
        let mut fetches = futures::stream::iter(order).map(|id| load_pack(vault, id)).buffered(2);
        let mut live: HashMap<Id, Arc<LoadedPack>> = HashMap::new();
        for (i, (pack_id, entry)) in locations.iter().enumerate() {
            if !live.contains_key(pack_id) {
                let p = fetches.next().await.expect("every pack is fetched once, in first-use order")?;
                debug_assert_eq!(p.id, *pack_id);
                live.insert(p.id, Arc::new(p));
            }
            let pack = if last_use[pack_id] == i {
                live.remove(pack_id).expect("live")
            } else {
                live[pack_id].clone()
            };
            if dec_tx.send((pack, *entry)).is_err() {
                break; // decoder failed; its error is reported below
            }
        }
        drop(dec_tx);
        Ok::<_, Error>(())
    };
    let fed = feed.await;
    let decoded = decoder.join().map_err(|_| Error::io("decoder thread panicked"))?;
    let sunk = sink_thread.join().map_err(|_| Error::io("output thread panicked"))?;
    fed?;
    decoded?;
    sunk
}
