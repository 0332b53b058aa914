//! The one thing vault reads and writes inside an etcd database (a bbolt file): a fixed-size
//! value of a bucket, such as `meta/consistent_index`, found by walking the B+tree from the newest
//! valid meta page and overwritten in place (same length, so no page changes; bbolt has no
//! checksums on data pages). Used to bring a data-dir capture's database in line with the WAL
//! that `etcdctl backup` renumbered (see [`crate::source::etcd_datadir`]).

use std::path::Path;

use crate::error::{Context, Error, ErrorKind, Result};

const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// (page size, root bucket's root page) of the newest meta page whose magic and checksum hold.
fn meta(b: &[u8]) -> Option<(usize, u64)> {
    let page_size = u32_at(b, PAGE_HEADER + 8)? as usize;
    if !(512..=65536).contains(&page_size) {
        return None;
    }
    let mut best: Option<(u64, u64)> = None;
    for m in [PAGE_HEADER, page_size + PAGE_HEADER] {
        let fields = b.get(m..m + 56)?;
        if u32_at(b, m)? != MAGIC || fnv64a(fields) != u64_at(b, m + 56)? {
            continue;
        }
        let (root, txid) = (u64_at(b, m + 16)?, u64_at(b, m + 48)?);
        if best.is_none_or(|(t, _)| txid > t) {
            best = Some((txid, root));
        }
    }
    best.map(|(_, root)| (page_size, root))
}

/// Where `key`'s value lies in the page at `page` (and below it): (element flags, offset, length).
fn find(b: &[u8], page_size: usize, page: usize, key: &[u8], depth: u32) -> Option<(u32, usize, usize)> {
    if depth > 64 {
        return None;
    }
    let flags = u16_at(b, page + 8)?;
    let count = u16_at(b, page + 10)? as usize;
    let elem = |i: usize| page + PAGE_HEADER + i * ELEMENT;
    if flags & LEAF != 0 {
        for i in 0..count {
            let e = elem(i);
            let (eflags, pos, ksize, vsize) = (
                u32_at(b, e)?,
                u32_at(b, e + 4)? as usize,
                u32_at(b, e + 8)? as usize,
                u32_at(b, e + 12)? as usize,
            );
            if b.get(e + pos..e + pos + ksize)? == key {
                let v = e + pos + ksize;
                b.get(v..v + vsize)?;
                return Some((eflags, v, vsize));
            }
        }
        None
    } else if flags & BRANCH != 0 {
        let mut child = None;
        for i in 0..count {
            let e = elem(i);
            let (pos, ksize, pgid) = (u32_at(b, e)? as usize, u32_at(b, e + 4)? as usize, u64_at(b, e + 8)?);
            if i > 0 && b.get(e + pos..e + pos + ksize)? > key {
                break;
            }
            child = Some(pgid);
        }
        find(b, page_size, (child? as usize).checked_mul(page_size)?, key, depth + 1)
    } else {
        None
    }
}

/// Offset of the 8-byte value `key` of bucket `bucket` (a top-level bucket, inline or not).
fn locate_u64(b: &[u8], bucket: &[u8], key: &[u8]) -> Option<usize> {
    let (page_size, root) = meta(b)?;
    let (flags, v, len) = find(b, page_size, (root as usize).checked_mul(page_size)?, bucket, 0)?;
    if flags & BUCKET_LEAF == 0 || len < 16 {
        return None;
    }
    let bucket_root = u64_at(b, v)?;
    let page = if bucket_root == 0 {
        v + 16
    } else {
        (bucket_root as usize).checked_mul(page_size)?
    };
    let (flags, off, len) = find(b, page_size, page, key, 0)?;
    (flags & BUCKET_LEAF == 0 && len == 8).then_some(off)
}

fn not_found(path: &Path, bucket: &str, key: &str) -> Error {
    Error::source_err(format!(
        "{} holds no 8-byte value {bucket}/{key} where an etcd database has one",
        path.display()
    ))
    .hint("the file is not an etcd database, or of a layout this vault does not know; nothing was stored")
}

/// Read the big-endian u64 `bucket/key` of the bbolt file at `path`.
pub fn read_u64(path: &Path, bucket: &str, key: &str) -> Result<u64> {
    read_u64_if_present(path, bucket, key)?.ok_or_else(|| not_found(path, bucket, key))
}

/// [`read_u64`], or `None` when the file is a bbolt database with the bucket but not the key
/// (etcd 3.4 writes `meta/consistent_index` with its first v3 write).
pub fn read_u64_if_present(path: &Path, bucket: &str, key: &str) -> Result<Option<u64>> {
    let b = std::fs::read(path).context(ErrorKind::Io, || format!("cannot read {}", path.display()))?;
    if let Some(off) = locate_u64(&b, bucket.as_bytes(), key.as_bytes()) {
        return Ok(Some(u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))));
    }
    let bucket_exists = meta(&b).is_some_and(|(ps, root)| {
        (root as usize)
            .checked_mul(ps)
            .and_then(|r| find(&b, ps, r, bucket.as_bytes(), 0))
            .is_some_and(|(flags, _, _)| flags & BUCKET_LEAF != 0)
    });
    if bucket_exists {
        Ok(None)
    } else {
        Err(not_found(path, bucket, key))
    }
}

/// Overwrite the big-endian u64 `bucket/key` of the bbolt file at `path` in place.
pub fn write_u64(path: &Path, bucket: &str, key: &str, value: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let b = std::fs::read(path).context(ErrorKind::Io, || format!("cannot read {}", path.display()))?;
    let off = locate_u64(&b, bucket.as_bytes(), key.as_bytes()).ok_or_else(|| not_found(path, bucket, key))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .context(ErrorKind::Io, || format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(off as u64))
        .and_then(|_| f.write_all(&value.to_be_bytes()))
        .and_then(|_| f.sync_all())
        .context(ErrorKind::Io, || format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bbolt file: two meta pages, a root leaf with an inline bucket `meta` holding
    /// `consistent_index`, and a second bucket on a page of its own.
    fn tiny_db(ci: u64) -> Vec<u8> {
        let ps = 4096;
        let mut b = vec![0u8; ps * 4];
        for (page, txid) in [(0usize, 1u64), (1, 2)] {
            let m = page * ps + PAGE_HEADER;
            b[page * ps + 8..page * ps + 10].copy_from_slice(&4u16.to_le_bytes());
            b[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            b[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
            b[m + 8..m + 12].copy_from_slice(&(ps as u32).to_le_bytes());
            b[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes()); // root at page 2
            b[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv64a(&b[m..m + 56]);
            b[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        }
        // inline bucket value: header (root 0, seq 0) + leaf page with one element
        let mut inline = vec![0u8; 16];
        let mut page = vec![0u8; PAGE_HEADER + ELEMENT];
        page[8..10].copy_from_slice(&LEAF.to_le_bytes());
        page[10..12].copy_from_slice(&1u16.to_le_bytes());
        let key = b"consistent_index";
        page[PAGE_HEADER + 4..PAGE_HEADER + 8].copy_from_slice(&(ELEMENT as u32).to_le_bytes());
        page[PAGE_HEADER + 8..PAGE_HEADER + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
        page[PAGE_HEADER + 12..PAGE_HEADER + 16].copy_from_slice(&8u32.to_le_bytes());
        page.extend_from_slice(key);
        page.extend_from_slice(&ci.to_be_bytes());
        inline.extend(page);
        // root leaf at page 2: "key" (bucket at page 3), "meta" (inline)
        let root = 2 * ps;
        b[root + 8..root + 10].copy_from_slice(&LEAF.to_le_bytes());
        b[root + 10..root + 12].copy_from_slice(&2u16.to_le_bytes());
        let data = root + PAGE_HEADER + 2 * ELEMENT;
        let mut cur = data;
        for (i, (k, v)) in [
            (b"key".to_vec(), {
                let mut v = 3u64.to_le_bytes().to_vec();
                v.extend([0u8; 8]);
                v
            }),
            (b"meta".to_vec(), inline),
        ]
        .into_iter()
        .enumerate()
        {
            let e = root + PAGE_HEADER + i * ELEMENT;
            b[e..e + 4].copy_from_slice(&BUCKET_LEAF.to_le_bytes());
            b[e + 4..e + 8].copy_from_slice(&((cur - e) as u32).to_le_bytes());
            b[e + 8..e + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
            b[e + 12..e + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
            b[cur..cur + k.len()].copy_from_slice(&k);
            cur += k.len();
            b[cur..cur + v.len()].copy_from_slice(&v);
            cur += v.len();
        }
        b[3 * ps + 8..3 * ps + 10].copy_from_slice(&LEAF.to_le_bytes());
        b
    }

    #[test]
    fn consistent_index_is_read_and_overwritten_in_place() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("db");
        std::fs::write(&p, tiny_db(1234)).unwrap();
        assert_eq!(read_u64(&p, "meta", "consistent_index").unwrap(), 1234);
        let before = std::fs::read(&p).unwrap();
        write_u64(&p, "meta", "consistent_index", 99).unwrap();
        assert_eq!(read_u64(&p, "meta", "consistent_index").unwrap(), 99);
        let after = std::fs::read(&p).unwrap();
        assert_eq!(before.len(), after.len());
        assert_eq!(
            before.iter().zip(&after).filter(|(a, b)| a != b).count(),
            2,
            "only the value's bytes change"
        );
        assert!(read_u64(&p, "meta", "nothing").is_err());
        assert_eq!(read_u64_if_present(&p, "meta", "nothing").unwrap(), None);
        assert!(read_u64_if_present(&p, "nobucket", "consistent_index").is_err());
        assert!(read_u64(&p, "key", "consistent_index").is_err());
        std::fs::write(&p, b"not a database").unwrap();
        assert!(read_u64(&p, "meta", "consistent_index").is_err());
    }
}
