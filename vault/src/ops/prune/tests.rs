//! Prune on a real local store: both passes, the lock, the clock check, captures between passes.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;

use super::lock::PruneLockGuard;
use super::*;
use crate::catalog::Catalog;
use crate::error::ErrorKind;
use crate::format::PayloadKind;
use crate::ops::backup::{BackupOptions, commit, ingest_stream};
use crate::repo::{InitOptions, Vault};
use crate::store::Store;

struct Fixture {
    _dir: tempfile::TempDir,
    vault: Vault,
    catalog: Catalog,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (_, recipient) = crate::crypto::generate_identity();
    let opts = InitOptions {
        recipients: vec![recipient],
        ..Default::default()
    };
    let store = Store::open(dir.path().join("vault").to_str().unwrap(), &Default::default()).unwrap();
    store.create_root().unwrap();
    let (vault, _) = Vault::init(store, &opts).await.unwrap();
    let catalog = Catalog::open(&dir.path().join("catalog.sqlite"), &hex::encode(vault.vault_id())).unwrap();
    Fixture { _dir: dir, vault, catalog }
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    // Incompressible and distinct per seed (keyed BLAKE3 as a stream cipher of sorts).
    let mut out = Vec::with_capacity(len);
    let mut h = blake3::Hasher::new();
    h.update(&[seed]);
    let mut r = h.finalize_xof();
    out.resize(len, 0);
    r.fill(&mut out);
    out
}

/// Capture `bytes` as one snapshot; returns its ID and how many chunks it stored anew.
async fn capture(f: &mut Fixture, bytes: Vec<u8>) -> (Id, u64) {
    let src = futures::stream::iter(vec![Ok(Bytes::from(bytes))]);
    let ingested = ingest_stream(&f.vault, &mut f.catalog, "blob", src, false, None).await.unwrap();
    let new = ingested.stats.new_chunks;
    let m = BackupOptions::default().manifest(PayloadKind::Other("test".into()), vec![ingested.stream], ingested.stats);
    (commit(&f.vault, &mut f.catalog, &m).await.unwrap(), new)
}

fn opts(forgotten: &[Id], grace_secs: i64) -> PruneOptions {
    PruneOptions {
        forgotten: forgotten.iter().copied().collect(),
        grace: chrono::Duration::seconds(grace_secs),
        host: "test-host".into(),
        ..Default::default()
    }
}

async fn names(v: &Vault, prefix: &str) -> BTreeSet<String> {
    v.store.list(prefix).await.unwrap().into_iter().map(|o| o.name).collect()
}

/// Every chunk of every snapshot has a location in a pack the store lists.
async fn assert_whole(f: &mut Fixture) {
    f.catalog.sync(&f.vault).await.unwrap();
    let listed = crate::ops::pack_health::list_packs(&f.vault).await.unwrap();
    for s in f.catalog.snapshots().unwrap() {
        for st in &s.manifest.streams {
            for c in &st.chunks {
                let locs = f.catalog.chunk_locations(c).unwrap();
                assert!(
                    locs.iter().any(|(p, _)| listed.contains_key(p)),
                    "chunk {c} of snapshot {} has no listed pack",
                    s.id
                );
            }
        }
    }
}

async fn packs_of(f: &Fixture, snap: &Id) -> HashSet<Id> {
    let m = f.vault.read_snapshot(snap).await.unwrap();
    let mut out = HashSet::new();
    for c in &m.streams[0].chunks {
        for (p, _) in f.catalog.chunk_locations(c).unwrap() {
            out.insert(p);
        }
    }
    out
}

#[tokio::test]
async fn grace_zero_deletes_forgotten_snapshots_and_only_their_packs() {
    let mut f = fixture().await;
    let (a, _) = capture(&mut f, data(1, 700_000)).await;
    let (b, _) = capture(&mut f, data(2, 700_000)).await;
    let a_packs = packs_of(&f, &a).await;
    let b_packs = packs_of(&f, &b).await;
    let r = prune(&f.vault, &mut f.catalog, &opts(&[a], 0)).await.unwrap();
    assert_eq!(r.snapshots_removed, vec![a]);
    assert_eq!(r.packs_deleted, a_packs.len() as u64);
    assert!(r.bytes_freed > 600_000, "{r:?}");
    assert!(r.lock.is_some() && r.clock.is_some());
    let snaps = names(&f.vault, "snapshots/").await;
    assert_eq!(snaps, BTreeSet::from([format::snapshot_name(&b)]));
    let listed = crate::ops::pack_health::list_packs(&f.vault).await.unwrap();
    assert!(a_packs.iter().all(|p| !listed.contains_key(p)));
    assert!(b_packs.iter().all(|p| listed.contains_key(p)));
    // Every index segment left lists a pack that is still there.
    f.catalog.sync(&f.vault).await.unwrap();
    for (p, _, _) in f.catalog.packs().unwrap() {
        assert!(listed.contains_key(&p), "index still lists deleted pack {p}");
    }
    assert_whole(&mut f).await;
    // The lock is free again, and a second run finds nothing to do.
    let r = prune(&f.vault, &mut f.catalog, &opts(&[a], 0)).await.unwrap();
    assert_eq!((r.packs_deleted, r.snapshots_removed.len()), (0, 0));
}

#[tokio::test]
async fn two_passes_a_grace_period_apart_and_a_capture_between_them_loses_nothing() {
    let mut f = fixture().await;
    let (a, chunks_a) = capture(&mut f, data(1, 700_000)).await;
    let (_b, _) = capture(&mut f, data(2, 700_000)).await;
    let a_packs = packs_of(&f, &a).await;
    let before = names(&f.vault, "data/").await;

    // Pass 1: records A's packs as pending, deletes nothing.
    let r = prune(&f.vault, &mut f.catalog, &opts(&[a], 1)).await.unwrap();
    assert_eq!((r.packs_deleted, r.snapshots_removed.len()), (0, 0), "{r:?}");
    let rec = r.pending_recorded.expect("a pending set");
    assert_eq!(rec.packs, a_packs.len() as u64);
    assert_eq!(names(&f.vault, "data/").await, before);
    let pending = pending::pending_packs(&f.vault).await.unwrap();
    assert_eq!(pending, a_packs);

    // A capture between the passes does not deduplicate against pending packs: it stores A's
    // content again (without that, it would reference only pending packs, deleted below).
    let known = crate::ops::packing::present_chunks(&f.vault, &mut f.catalog).await.unwrap();
    let a_chunks = f.vault.read_snapshot(&a).await.unwrap().streams[0].chunks.clone();
    assert!(a_chunks.iter().all(|c| !known.contains(c)));
    let (d, new_d) = capture(&mut f, data(1, 700_000)).await;
    assert_eq!(new_d, chunks_a, "the capture between passes stores every chunk again");

    // Too early: the set waits.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Pass 2: A's manifest and packs go; D and B stay whole.
    let r = prune(&f.vault, &mut f.catalog, &opts(&[a], 1)).await.unwrap();
    assert_eq!(r.snapshots_removed, vec![a], "{r:?}");
    assert_eq!(r.packs_deleted, a_packs.len() as u64, "{r:?}");
    assert_eq!(r.pending_processed.len(), 1);
    assert!(r.packs_needed_again.is_empty());
    let listed = crate::ops::pack_health::list_packs(&f.vault).await.unwrap();
    assert!(a_packs.iter().all(|p| !listed.contains_key(p)));
    assert!(packs_of(&f, &d).await.iter().all(|p| listed.contains_key(p)));
    assert_whole(&mut f).await;
    assert!(pending::pending_packs(&f.vault).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pending_pack_needed_again_is_kept() {
    let mut f = fixture().await;
    let (a, _) = capture(&mut f, data(1, 700_000)).await;
    let a_packs = packs_of(&f, &a).await;
    let r = prune(&f.vault, &mut f.catalog, &opts(&[a], 1)).await.unwrap();
    assert_eq!(r.pending_recorded.unwrap().packs, a_packs.len() as u64);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // A was brought back (undelete) before pass 2: its manifest and packs stay.
    let r = prune(&f.vault, &mut f.catalog, &opts(&[], 1)).await.unwrap();
    assert!(r.snapshots_removed.is_empty());
    assert_eq!(r.packs_deleted, 0, "{r:?}");
    assert_eq!(r.packs_needed_again.iter().copied().collect::<HashSet<_>>(), a_packs);
    assert_whole(&mut f).await;
    assert_eq!(names(&f.vault, "snapshots/").await.len(), 1);
}

#[tokio::test]
async fn orphan_packs_of_killed_captures_are_collected_and_a_dry_run_changes_nothing() {
    let mut f = fixture().await;
    let (_a, _) = capture(&mut f, data(1, 300_000)).await;
    let orphan = Bytes::from(data(9, 1000));
    let orphan_id = Id::of_stored(&orphan);
    f.vault
        .store
        .put(&format::pack_name(&orphan_id), orphan, crate::store::PutMode::Overwrite)
        .await
        .unwrap();
    let before = names(&f.vault, "").await;
    let mut dry = opts(&[], 0);
    dry.dry_run = true;
    let r = prune(&f.vault, &mut f.catalog, &dry).await.unwrap();
    assert_eq!(r.packs_deleted, 1);
    assert_eq!(names(&f.vault, "").await, before, "a dry run writes nothing");
    let r = prune(&f.vault, &mut f.catalog, &opts(&[], 0)).await.unwrap();
    assert_eq!((r.packs_deleted, r.bytes_freed), (1, 1000));
    assert!(!names(&f.vault, "data/").await.contains(&format::pack_name(&orphan_id)));
    assert_whole(&mut f).await;
}

#[tokio::test]
async fn the_lock_is_taken_refused_while_held_and_broken_once_its_lease_ran_out() {
    let f = fixture().await;
    let lease = chrono::Duration::seconds(1);
    let first = PruneLockGuard::take(&f.vault, "host-1", chrono::Duration::minutes(5), 0)
        .await
        .unwrap();
    let e = PruneLockGuard::take(&f.vault, "host-2", lease, 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(e.what.contains("host-1") && e.what.contains(&first.info.owner), "{}", e.what);
    // A prune run is refused too, and says why.
    let e = prune(
        &f.vault,
        &mut Catalog::open(&f._dir.path().join("c2.sqlite"), &hex::encode(f.vault.vault_id())).unwrap(),
        &opts(&[], 0),
    )
    .await
    .unwrap_err();
    assert!(e.what.contains("another prune holds the prune lock"), "{}", e.what);
    first.release(&f.vault).await.unwrap();

    // Released: the next one takes it; its lease runs out; a third breaks it and says so.
    let mut stale = PruneLockGuard::take(&f.vault, "host-2", lease, 0).await.unwrap();
    assert!(stale.info.broke.is_none());
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let third = PruneLockGuard::take(&f.vault, "host-3", chrono::Duration::minutes(5), 0)
        .await
        .unwrap();
    let broke = third.info.broke.clone().expect("the stale lock was broken");
    assert!(broke.contains("host-2") && broke.contains("lease ran out"), "{broke}");
    // The stale holder finds out when it renews, and stops.
    let e = stale.keep(&f.vault).await.unwrap_err();
    assert!(e.what.contains("another prune took the prune lock"), "{}", e.what);
    third.release(&f.vault).await.unwrap();
    // Only the head generation stays.
    let left = names(&f.vault, format::PRUNE_LOCK_PREFIX).await;
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test]
async fn the_clock_check_passes_on_a_local_store_and_cleans_up_its_probe() {
    let f = fixture().await;
    let c = clock::check(&f.vault, chrono::Duration::minutes(5)).await.unwrap();
    assert!(c.skew_ms.abs() < 5_000, "{c:?}");
    assert!(names(&f.vault, format::PRUNE_LOCK_PREFIX).await.is_empty());
}

#[tokio::test]
async fn prune_refuses_a_store_without_conditional_create() {
    let mut f = fixture().await;
    f.vault.config.store.conditional_create = false;
    let e = PruneLockGuard::take(&f.vault, "host-1", chrono::Duration::minutes(5), 0)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(e.what.contains("no conditional create"), "{}", e.what);
    assert!(names(&f.vault, format::PRUNE_LOCK_PREFIX).await.is_empty());
}

#[tokio::test]
async fn an_orphan_pack_holding_the_only_copy_of_kept_chunks_is_kept() {
    let mut f = fixture().await;
    let (a, _) = capture(&mut f, data(1, 300_000)).await;
    let a_packs = packs_of(&f, &a).await;
    // Its index segments are lost: the packs are orphans, but the kept snapshot needs them.
    for seg in names(&f.vault, "index/").await {
        f.vault.store.delete(&seg).await.unwrap();
    }
    let r = prune(&f.vault, &mut f.catalog, &opts(&[], 0)).await.unwrap();
    assert_eq!(r.packs_deleted, 0, "{r:?}");
    assert_eq!(r.orphans_needed.iter().copied().collect::<HashSet<_>>(), a_packs);
    let listed = crate::ops::pack_health::list_packs(&f.vault).await.unwrap();
    assert!(a_packs.iter().all(|p| listed.contains_key(p)));
}

#[tokio::test]
async fn prune_refuses_to_run_while_a_manifest_is_unreadable() {
    let mut f = fixture().await;
    let (a, _) = capture(&mut f, data(1, 300_000)).await;
    let junk = Bytes::from_static(b"not a manifest");
    let name = format::snapshot_name(&Id::of_stored(&junk));
    f.vault.store.put(&name, junk, crate::store::PutMode::Overwrite).await.unwrap();
    let before = names(&f.vault, "").await;
    let e = prune(&f.vault, &mut f.catalog, &opts(&[a], 0)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Integrity);
    assert!(e.what.contains(&name), "{}", e.what);
    // Nothing deleted; the lock was released (a release generation replaces the taken one).
    let after = names(&f.vault, "").await;
    let data_and_snaps = |s: &BTreeSet<String>| s.iter().filter(|n| !n.starts_with("locks/")).cloned().collect::<Vec<_>>();
    assert_eq!(data_and_snaps(&after), data_and_snaps(&before));
    PruneLockGuard::take(&f.vault, "next", chrono::Duration::minutes(5), 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_holder_renews_its_lease_before_it_runs_out() {
    let f = fixture().await;
    let lease = chrono::Duration::seconds(3);
    let mut g = PruneLockGuard::take(&f.vault, "host-1", lease, 0).await.unwrap();
    let (gen0, exp0) = (g.info.generation, g.info.expires);
    g.keep(&f.vault).await.unwrap();
    assert_eq!(g.info.generation, gen0, "renewed with most of the lease left");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    g.keep(&f.vault).await.unwrap();
    assert_eq!(g.info.generation, gen0 + 1);
    assert!(g.info.expires > exp0);
    // Past the first lease's end, the renewed lock still holds others off.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let e = PruneLockGuard::take(&f.vault, "host-2", lease, 0).await.unwrap_err();
    assert!(e.what.contains("host-1"), "{}", e.what);
    g.release(&f.vault).await.unwrap();
}
