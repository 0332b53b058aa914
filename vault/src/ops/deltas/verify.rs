//! Verify's checks of delta chains (docs/FORMAT.md section 8e). For every selected etcd-v3
//! snapshot that has a chain, D1 on its links (no hole, each starting where the one before
//! ended), and each linked segment's manifest present and matching its link; problems go to the
//! base's verdict and name the segment (seq, revisions, id). With the identity (content level),
//! D2 on every selected segment: its stream decodes, is dense, and its trailer and manifest agree.

use std::collections::{BTreeMap, HashSet};

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::{ErrorKind, Result};
use crate::format::{Id, PayloadKind};
use crate::ops::deltas::{chain, segment_read};
use crate::repo::Vault;

pub async fn check(
    vault: &Vault,
    catalog: &mut Catalog,
    selected: &[SnapshotEntry],
    content: bool,
    problems: &mut BTreeMap<Id, Vec<String>>,
) -> Result<()> {
    let mut with_chain: HashSet<Id> = HashSet::new();
    let jobs: std::collections::BTreeSet<&str> = selected
        .iter()
        .filter(|s| s.manifest.kind == PayloadKind::EtcdV3)
        .map(|s| s.manifest.job.as_str())
        .collect();
    for j in jobs {
        with_chain.extend(chain::list_bases(vault, j).await?);
    }
    let all = catalog.snapshots()?;
    for base in selected.iter().filter(|s| with_chain.contains(&s.id)) {
        let Some(e) = &base.manifest.etcd_v3 else { continue };
        let c = chain::read_chain(vault, &base.manifest.job, &base.id, e.revision).await?;
        let list = problems.entry(base.id).or_default();
        list.extend(c.problems.iter().cloned());
        for l in &c.links {
            match all.iter().find(|s| s.id == l.segment) {
                None => list.push(format!(
                    "{}: its manifest is missing from the vault",
                    segment_read::describe_link(l)
                )),
                Some(seg) => {
                    if let Err(p) = segment_read::check_against_link(seg, l) {
                        list.push(p);
                    }
                }
            }
        }
    }
    for seg in selected.iter().filter(|s| s.manifest.kind == PayloadKind::EtcdV3Delta) {
        let what = match segment_read::info(seg) {
            Ok(i) => segment_read::describe(i.seq, i.first_revision, i.last_revision, &seg.id.short()),
            Err(e) => {
                problems.entry(seg.id).or_default().push(e.what);
                continue;
            }
        };
        // What the generic checks found, said of the segment.
        if let Some(found) = problems.get_mut(&seg.id).filter(|p| !p.is_empty()) {
            for p in found.iter_mut() {
                *p = format!("{what}: {p}");
            }
            continue;
        }
        if content {
            let located = match segment_read::locate_segment(catalog, seg, &what) {
                Ok(l) => l,
                Err(e) => {
                    problems.entry(seg.id).or_default().push(e.what);
                    continue;
                }
            };
            match segment_read::read_located_segment(vault, seg, located, &what).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind, ErrorKind::Integrity | ErrorKind::NotFound) => problems.entry(seg.id).or_default().push(e.what),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
