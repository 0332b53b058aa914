//! Delta chains as stored (docs/FORMAT.md section 8e): the links `deltas/<tag>/<base>/<seq>` that
//! fix each segment's place after its base snapshot, and the `end` object that closes a chain.
//! Links are made with conditional create, so a stalled watcher that lost its lock cannot fork a
//! chain: whoever creates link `seq` first owns that place, the other's segment stays an orphan.
//! Reading a chain needs the writer key only (links hold no cluster data).

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::format::{self, DELTAS_PREFIX, DeltaChainEnd, DeltaLink, Id, MetaKind};
use crate::repo::Vault;
use crate::store::PutMode;

/// One chain: its links in order and its end, with what is wrong with them (D1).
#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub base: Option<Id>,
    /// Links that open and parse, by `seq`.
    pub links: Vec<DeltaLink>,
    pub end: Option<DeltaChainEnd>,
    /// D1 violations and unreadable objects, each a sentence naming the object.
    pub problems: Vec<String>,
}

impl Chain {
    /// The last revision the chain covers without a hole, starting from `base_revision + 1`
    /// (the base's own revision when no link is whole).
    pub fn whole_until(&self, base_revision: i64) -> i64 {
        let mut last = base_revision;
        for (i, l) in self.links.iter().enumerate() {
            if l.seq != i as u64 || (i > 0 && l.first_revision != last + 1) {
                break;
            }
            last = l.last_revision;
        }
        last
    }

    /// The next link to create: `(seq, first revision)`.
    pub fn next(&self, base_revision: i64) -> (u64, i64) {
        match self.links.last() {
            Some(l) => (l.seq + 1, l.last_revision + 1),
            None => (0, base_revision + 1),
        }
    }
}

/// The chains of a job: the base snapshot ids that have a `deltas/<tag>/<base>/` entry.
pub async fn list_bases(vault: &Vault, job: &str) -> Result<Vec<Id>> {
    let prefix = format!("{DELTAS_PREFIX}{}/", vault.writer.job_tag(job));
    let mut bases: Vec<Id> = vault
        .store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| o.name.strip_prefix(&prefix)?.split('/').next().and_then(Id::parse))
        .collect();
    bases.sort();
    bases.dedup();
    Ok(bases)
}

/// Read one chain's links and end, and check D1 on them: links `0..n` without a hole, each
/// starting where the one before ended, the first at `base_revision + 1`.
pub async fn read_chain(vault: &Vault, job: &str, base: &Id, base_revision: i64) -> Result<Chain> {
    let tag = vault.writer.job_tag(job);
    let prefix = format!("{DELTAS_PREFIX}{tag}/{}/", base.hex());
    let mut names: Vec<String> = vault.store.list(&prefix).await?.into_iter().map(|o| o.name).collect();
    names.sort();
    let end_name = format::delta_chain_end_name(&tag, base);
    let has_end = names.contains(&end_name);
    names.retain(|n| *n != end_name);
    let mut chain = Chain {
        base: Some(*base),
        ..Default::default()
    };
    for m in vault.read_named_meta::<DeltaLink>(MetaKind::DeltaLink, names).await? {
        match m.value {
            Ok(l) if l.base == *base && m.name == format::delta_link_name(&tag, base, l.seq) => chain.links.push(l),
            Ok(l) => chain.problems.push(format!(
                "{} names base {} seq {}, which does not match its place",
                m.name,
                l.base.short(),
                l.seq
            )),
            Err(e) => chain.problems.push(format!("{} is unreadable: {e}", m.name)),
        }
    }
    chain.links.sort_by_key(|l| l.seq);
    if has_end {
        // (None: deleted since the listing)
        if let Some(m) = vault
            .read_named_meta::<DeltaChainEnd>(MetaKind::DeltaChainEnd, vec![end_name])
            .await?
            .pop()
        {
            match m.value {
                Ok(e) => chain.end = Some(e),
                Err(e) => chain.problems.push(format!("{} is unreadable: {e}", m.name)),
            }
        }
    }
    let mut expected_first = base_revision + 1;
    for (i, l) in chain.links.iter().enumerate() {
        if l.seq != i as u64 {
            chain.problems.push(format!(
                "link {i} of the chain of {} is missing (the next link is {}): revisions from {expected_first} on are not covered",
                base.short(),
                l.seq
            ));
            break;
        }
        if l.first_revision != expected_first {
            chain.problems.push(format!(
                "link {} of the chain of {} starts at revision {} where {expected_first} was expected (a {})",
                l.seq,
                base.short(),
                l.first_revision,
                if l.first_revision > expected_first { "gap" } else { "overlap" }
            ));
            break;
        }
        if l.last_revision < l.first_revision {
            chain
                .problems
                .push(format!("link {} of the chain of {} covers no revision", l.seq, base.short()));
            break;
        }
        expected_first = l.last_revision + 1;
    }
    Ok(chain)
}

/// Whether a link was created or its place was taken already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkCreated {
    Created,
    /// Another watcher created this link first: the caller lost the chain and must stop.
    Taken,
}

/// Create a link (the commit point of a segment's place in its chain). Needs conditional create.
pub async fn create_link(vault: &Vault, job: &str, link: &DeltaLink) -> Result<LinkCreated> {
    let name = format::delta_link_name(&vault.writer.job_tag(job), &link.base, link.seq);
    create(vault, MetaKind::DeltaLink, &name, serde_json::to_vec(link).expect("serialize link")).await
}

/// Close a chain. `Taken` when it was closed already.
pub async fn write_end(vault: &Vault, job: &str, end: &DeltaChainEnd) -> Result<LinkCreated> {
    let name = format::delta_chain_end_name(&vault.writer.job_tag(job), &end.base);
    create(
        vault,
        MetaKind::DeltaChainEnd,
        &name,
        serde_json::to_vec(end).expect("serialize chain end"),
    )
    .await
}

async fn create(vault: &Vault, kind: MetaKind, name: &str, json: Vec<u8>) -> Result<LinkCreated> {
    vault.check_may_write("writing a delta chain")?;
    if !vault.config.store.conditional_create {
        return Err(
            Error::usage("delta chains need a store with conditional create, and this vault's store does not have it")
                .hint("two watchers could otherwise both extend a chain; use a store that has it (local, or S3 with conditional writes)"),
        );
    }
    let sealed = vault.writer.seal_meta(kind, &json);
    match vault.store.put(name, Bytes::from(sealed), PutMode::Create).await {
        Ok(()) => Ok(LinkCreated::Created),
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(LinkCreated::Taken),
        Err(e) => Err(e),
    }
}
