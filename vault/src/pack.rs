//! Packs: many encrypted blobs in one object (docs/FORMAT.md section 5).

use bytes::Bytes;

use crate::crypto::{Identities, PackKey, Recipients, WriterKey};
use crate::error::{Error, Result};
use crate::format::{
    BLOB_RAW, BLOB_ZSTD, BlobEntry, Id, IndexPack, MAX_CHUNK_SIZE, MetaKind, PACK_END_MAGIC, PACK_MAGIC, PackTrailer, PackType,
};

/// Builds one pack in memory. The pack key lives only inside this value.
pub struct PackWriter {
    vault_id: [u8; 16],
    pack_type: PackType,
    key: PackKey,
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
    compressor: zstd::bulk::Compressor<'static>,
}

impl PackWriter {
    pub fn new(recipients: &Recipients, vault_id: [u8; 16], pack_type: PackType, level: i32, capacity: usize) -> Self {
        let key = PackKey::generate();
        let wrapped = recipients.wrap(key.as_bytes());
        let mut buf = Vec::with_capacity(capacity + capacity / 16);
        buf.extend_from_slice(PACK_MAGIC);
        buf.push(pack_type.to_byte());
        buf.extend_from_slice(&(wrapped.len() as u32).to_le_bytes());
        buf.extend_from_slice(&wrapped);
        PackWriter {
            vault_id,
            pack_type,
            key,
            buf,
            blobs: Vec::new(),
            compressor: zstd::bulk::Compressor::new(level).expect("zstd level accepted"),
        }
    }

    /// Compress (when it helps), encrypt and append one chunk. Returns the stored length.
    pub fn add(&mut self, id: Id, raw: &[u8]) -> u32 {
        let compressed = self.compressor.compress(raw).expect("zstd compress into memory");
        let mut plain = Vec::with_capacity(1 + compressed.len().min(raw.len()));
        if compressed.len() < raw.len() {
            plain.push(BLOB_ZSTD);
            plain.extend_from_slice(&compressed);
        } else {
            plain.push(BLOB_RAW);
            plain.extend_from_slice(raw);
        }
        let offset = self.buf.len() as u32;
        let ct = self.key.seal_blob(&self.vault_id, offset, &id, &plain);
        self.buf.extend_from_slice(&ct);
        let length = ct.len() as u32;
        self.blobs.push(BlobEntry {
            id,
            offset,
            length,
            raw_length: raw.len() as u32,
        });
        length
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Change the zstd level for the chunks added from now on (readers need not know it).
    pub fn set_level(&mut self, level: i32) {
        self.compressor.set_compression_level(level).expect("zstd level accepted");
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Close the pack: append the sealed trailer and footer. Returns its name hash, bytes and index entry.
    pub fn finish(mut self, writer: &WriterKey) -> (Bytes, IndexPack) {
        let trailer = PackTrailer {
            pack_type: self.pack_type,
            blobs: self.blobs.clone(),
        };
        let sealed = writer.seal_meta(MetaKind::PackTrailer, &serde_json::to_vec(&trailer).expect("serialize trailer"));
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(PACK_END_MAGIC);
        let id = Id::of_stored(&self.buf);
        let entry = IndexPack {
            id,
            pack_type: self.pack_type,
            size: self.buf.len() as u64,
            blobs: self.blobs,
        };
        (Bytes::from(self.buf), entry)
    }
}

/// The header of a stored pack: its type and where the wrapped key sits.
pub struct PackHeader {
    pub pack_type: PackType,
    pub header_len: usize,
    wrapped_key: std::ops::Range<usize>,
}

impl PackHeader {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let bad = |why: &str| Error::integrity(format!("pack {what} is malformed: {why}"));
        if bytes.len() < 13 || &bytes[..8] != PACK_MAGIC {
            return Err(bad("bad magic"));
        }
        let pack_type = PackType::from_byte(bytes[8]).ok_or_else(|| bad("unknown pack type"))?;
        let h = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
        if bytes.len() < 13 + h {
            return Err(bad("truncated header"));
        }
        Ok(PackHeader {
            pack_type,
            header_len: 13 + h,
            wrapped_key: 13..13 + h,
        })
    }

    /// Unwrap the pack key with a restorer's identities.
    pub fn open_key(&self, bytes: &[u8], ids: &Identities, what: &str) -> Result<PackKey> {
        let key = ids.unwrap(&bytes[self.wrapped_key.clone()], &format!("the key of pack {what}"))?;
        PackKey::from_bytes(&key)
    }
}

/// Read and authenticate a pack's trailer with the writer key (no content key needed).
pub fn read_trailer(bytes: &[u8], writer: &WriterKey, what: &str) -> Result<PackTrailer> {
    let n = bytes.len();
    if n < 12 || &bytes[n - 8..] != PACK_END_MAGIC {
        return Err(Error::integrity(format!("pack {what} is truncated or malformed: no end marker")));
    }
    let t = u32::from_le_bytes(bytes[n - 12..n - 8].try_into().expect("4 bytes")) as usize;
    if t + 12 > n {
        return Err(Error::integrity(format!(
            "pack {what} is malformed: trailer length {t} exceeds the pack"
        )));
    }
    let json = writer.open_meta(
        MetaKind::PackTrailer,
        &bytes[n - 12 - t..n - 12],
        &format!("trailer of pack {what}"),
    )?;
    serde_json::from_slice(&json).map_err(|e| Error::integrity(format!("trailer of pack {what} does not parse")).with_source(e))
}

/// Decrypt, decompress and authenticate one blob. `blob` is exactly the stored bytes of the entry.
pub fn open_blob(key: &PackKey, writer: &WriterKey, entry: &BlobEntry, blob: &[u8], what: &str) -> Result<Vec<u8>> {
    if entry.raw_length > MAX_CHUNK_SIZE {
        return Err(Error::integrity(format!(
            "chunk {} in pack {what} claims {} bytes, more than any chunk can have ({MAX_CHUNK_SIZE}): its index entry is damaged or forged",
            entry.id.short(),
            entry.raw_length
        )));
    }
    let plain = key.open_blob(&writer.vault_id, entry.offset, &entry.id, blob).ok_or_else(|| {
        Error::integrity(format!(
            "chunk {} in pack {what} failed authentication (corrupted)",
            entry.id.short()
        ))
    })?;
    let raw = match plain.first() {
        Some(&BLOB_RAW) => plain[1..].to_vec(),
        Some(&BLOB_ZSTD) => zstd::bulk::decompress(&plain[1..], entry.raw_length as usize)
            .map_err(|e| Error::integrity(format!("chunk {} in pack {what} does not decompress", entry.id.short())).with_source(e))?,
        _ => {
            return Err(Error::integrity(format!(
                "chunk {} in pack {what} has an unknown compression byte",
                entry.id.short()
            )));
        }
    };
    if raw.len() != entry.raw_length as usize || writer.chunk_id(&raw) != entry.id {
        return Err(Error::integrity(format!(
            "chunk {} in pack {what} does not match its ID",
            entry.id.short()
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_identity, random_bytes};

    #[test]
    fn pack_round_trip_and_role_split() {
        let (idtext, rec) = generate_identity();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("id"), idtext).unwrap();
        let ids = Identities::load(&dir.path().join("id")).unwrap();
        let recipients = Recipients::parse(&[rec]).unwrap();
        let vid = random_bytes();
        let wk = WriterKey::generate(vid);
        let mut pw = PackWriter::new(&recipients, vid, PackType::Data, 3, 1 << 20);
        let a = vec![b'a'; 10000];
        let b: Vec<u8> = (0..5000u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes().to_vec())
            .collect();
        pw.add(wk.chunk_id(&a), &a);
        pw.add(wk.chunk_id(&b), &b);
        let (bytes, entry) = pw.finish(&wk);
        assert_eq!(entry.id, Id::of_stored(&bytes));
        assert!(entry.blobs[0].length < 1000, "compressible chunk is compressed");
        assert!(entry.blobs[1].length as usize > b.len(), "random chunk stored raw");
        // the writer reads the trailer...
        let trailer = read_trailer(&bytes, &wk, "p").unwrap();
        assert_eq!(trailer.blobs, entry.blobs);
        // ...and only an identity opens content
        let hdr = PackHeader::parse(&bytes, "p").unwrap();
        let key = hdr.open_key(&bytes, &ids, "p").unwrap();
        for (e, want) in entry.blobs.iter().zip([&a, &b]) {
            let blob = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&open_blob(&key, &wk, e, blob, "p").unwrap(), want);
        }
        let e = &entry.blobs[0];
        let mut blob = bytes[e.offset as usize..(e.offset + e.length) as usize].to_vec();
        blob[3] ^= 0x40;
        assert!(open_blob(&key, &wk, e, &blob, "p").is_err());
        // An index entry that claims a huge chunk is refused before anything is allocated.
        let mut huge = entry.blobs[0];
        huge.raw_length = u32::MAX;
        let blob = &bytes[huge.offset as usize..(huge.offset + huge.length) as usize];
        let err = open_blob(&key, &wk, &huge, blob, "p").unwrap_err();
        assert!(err.to_string().contains("more than any chunk can have"), "{err}");
    }
}
