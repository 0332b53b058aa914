//! Reading one delta segment back (identity needed: keys and values are content): its `events`
//! stream fetched, decoded and checked (density, trailer, BLAKE3) and compared with what its
//! manifest says it covers (D2 of docs/FORMAT.md section 8e).

use sha2::Digest;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::delta_stream::{Decoder, Record, Summary};
use crate::error::{Error, Result};
use crate::format::{BlobEntry, DeltaLink, EtcdV3DeltaInfo, Id, PayloadKind};
use crate::ops::read::{locate, read_located};
use crate::repo::Vault;

/// How to name a segment in messages: seq, revision range and id.
pub fn describe(seq: u64, first: i64, last: i64, id: &str) -> String {
    format!("delta segment seq {seq} (revisions {first}..={last}, id {id})")
}

/// [`describe`] of a link.
pub fn describe_link(l: &DeltaLink) -> String {
    describe(l.seq, l.first_revision, l.last_revision, &l.segment.short())
}

/// The delta facts of a segment manifest, or an error naming it.
pub fn info(seg: &SnapshotEntry) -> Result<&EtcdV3DeltaInfo> {
    match (&seg.manifest.kind, &seg.manifest.etcd_v3_delta) {
        (PayloadKind::EtcdV3Delta, Some(i)) => Ok(i),
        _ => Err(Error::integrity(format!(
            "snapshot {} is not a delta segment (kind {})",
            seg.id.short(),
            seg.manifest.kind
        ))),
    }
}

/// Whether the segment's manifest agrees with its link (same base, seq and range); a sentence
/// naming the difference when not.
pub fn check_against_link(seg: &SnapshotEntry, link: &DeltaLink) -> Result<(), String> {
    let what = describe_link(link);
    let Ok(i) = info(seg) else {
        return Err(format!("{what}: its manifest is not a delta segment"));
    };
    if i.base != link.base || i.seq != link.seq || i.first_revision != link.first_revision || i.last_revision != link.last_revision {
        return Err(format!(
            "{what}: its manifest says base {} seq {} revisions {}..={}, which does not match its link",
            i.base.short(),
            i.seq,
            i.first_revision,
            i.last_revision
        ));
    }
    if seg.manifest.streams.len() != 1 || seg.manifest.streams[0].name != "events" {
        return Err(format!("{what}: its manifest does not hold exactly one stream named events"));
    }
    Ok(())
}

/// Where the chunks of a segment's stream are: the first half of [`read`], apart so that a
/// caller holding `&mut Catalog` in a future that must be `Send` need not hold it across awaits.
pub fn locate_segment(catalog: &Catalog, seg: &SnapshotEntry, what: &str) -> Result<Vec<(Id, BlobEntry)>> {
    let stream = seg
        .manifest
        .streams
        .first()
        .ok_or_else(|| Error::integrity(format!("{what} has no stream")))?;
    locate(catalog, stream).map_err(|e| Error::integrity(format!("{what}: {}", e.what)))
}

/// Read, decode and check a whole segment: every record in order, and what it covers. An error
/// names the segment (`what`).
pub async fn read(vault: &Vault, catalog: &Catalog, seg: &SnapshotEntry, what: &str) -> Result<(Vec<Record>, Summary)> {
    let located = locate_segment(catalog, seg, what)?;
    read_located_segment(vault, seg, located, what).await
}

/// [`read`] of a segment whose chunks are located already.
pub async fn read_located_segment(
    vault: &Vault,
    seg: &SnapshotEntry,
    located: Vec<(Id, BlobEntry)>,
    what: &str,
) -> Result<(Vec<Record>, Summary)> {
    let i = info(seg)?.clone();
    let stream = seg.manifest.streams[0].clone();
    let name = what.to_string();
    let (records, summary, size, sha) = read_located(vault, located, move |rx| {
        let mut d = Decoder::new(name);
        let mut out = Vec::new();
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        for chunk in rx {
            size += chunk.len() as u64;
            hasher.update(&chunk);
            d.push(&chunk);
            while let Some(r) = d.next_record()? {
                out.push(r);
            }
        }
        let s = d.finish()?;
        Ok((out, s, size, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| {
        if e.what.starts_with(what) {
            e
        } else {
            Error::new(e.kind, format!("{what}: {}", e.what))
        }
    })?;
    let problem = if size != stream.size || sha != stream.sha256 {
        Some("the stream read back differs from the one recorded at capture (size or sha256)".to_string())
    } else if summary.first_revision != i.first_revision
        || summary.last_revision != i.last_revision
        || summary.groups != i.groups
        || summary.events != i.events
    {
        Some(format!(
            "its stream holds revisions {}..={} ({} groups, {} events) but its manifest says {}..={} ({} groups, {} events)",
            summary.first_revision,
            summary.last_revision,
            summary.groups,
            summary.events,
            i.first_revision,
            i.last_revision,
            i.groups,
            i.events
        ))
    } else if summary.groups as i64 != summary.last_revision - summary.first_revision + 1 {
        Some("its revisions are not dense".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::integrity(format!("{what} is corrupt: {p}"))),
        None => Ok((records, summary)),
    }
}
