//! The backup/restore/verify pipeline on an in-memory store, without etcd: fast checks of the
//! operations layer. The end-to-end tests in `tests/` do the same against real etcd and S3.

use bytes::Bytes;
use sha2::Digest;
use vault::catalog::Catalog;
use vault::format::{PayloadKind, SnapshotManifest};
use vault::ops::backup::{commit, ingest_stream};
use vault::ops::restore::restore_to_file;
use vault::ops::verify::{VerifyOptions, verify};
use vault::repo::{InitOptions, KeySource, Vault};
use vault::store::{PutMode, Store};

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    keys: KeySource,
    writer_only: KeySource,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (idtext, recipient) = vault::crypto::generate_identity();
    std::fs::write(dir.path().join("id"), idtext).unwrap();
    let store = Store::open("memory://", &Default::default()).unwrap();
    // Small chunks, so the dedup assertion below holds whatever the vault's random gear table.
    let mut opts = InitOptions {
        recipients: vec![recipient],
        pack_target_size: 1 << 20,
        ..Default::default()
    };
    opts.chunker.min_size = 4 << 10;
    opts.chunker.avg_size = 16 << 10;
    opts.chunker.max_size = 64 << 10;
    let (_, writer) = Vault::init(store.clone(), &opts).await.unwrap();
    std::fs::write(dir.path().join("wk"), writer.to_file_text()).unwrap();
    let keys = KeySource {
        writer_key: Some(dir.path().join("wk")),
        identity: Some(dir.path().join("id")),
        trust: Default::default(),
    };
    let writer_only = KeySource {
        writer_key: Some(dir.path().join("wk")),
        identity: None,
        trust: Default::default(),
    };
    Fixture {
        dir,
        store,
        keys,
        writer_only,
    }
}

impl Fixture {
    /// A catalog `name` under the fixture's directory for `vault`.
    fn catalog(&self, vault: &Vault, name: &str) -> Catalog {
        Catalog::open(&self.dir.path().join(name), &vault.config.vault_id).unwrap()
    }

    /// The vault opened with the writer key only, and a catalog `name` for it.
    async fn writer(&self, catalog: &str) -> (Vault, Catalog) {
        let vault = Vault::open(self.store.clone(), &self.writer_only).await.unwrap();
        let cat = self.catalog(&vault, catalog);
        (vault, cat)
    }
}

/// Something shaped like an etcd snapshot: 4 KiB pages, partly compressible, and a sha256 trailer.
fn snapshot_bytes(pages: usize, variant: u8) -> Vec<u8> {
    let mut body = Vec::with_capacity(pages * 4096 + 32);
    for p in 0..pages {
        let mut page = vec![0u8; 4096];
        page[..8].copy_from_slice(&(p as u64).to_le_bytes());
        let mut x = blake3::Hasher::new().update(&(p as u64).to_le_bytes()).finalize_xof();
        x.fill(&mut page[8..1024]);
        if variant != 0 && p % 500 == 7 {
            page[2000] = variant;
        }
        body.extend_from_slice(&page);
    }
    let digest = sha2::Sha256::digest(&body);
    body.extend_from_slice(&digest);
    body
}

async fn backup(vault: &Vault, catalog: &mut Catalog, data: &[u8]) -> (vault::format::Id, vault::format::CaptureStats) {
    let pieces: Vec<vault::Result<Bytes>> = data.chunks(32 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let ingested = ingest_stream(vault, catalog, "snapshot.db", futures::stream::iter(pieces), true, None)
        .await
        .unwrap();
    assert!(ingested.trailer.as_ref().unwrap().trailer_ok);
    let m = SnapshotManifest {
        time: chrono::Utc::now(),
        kind: PayloadKind::EtcdV3,
        host: "test".into(),
        job: "test".into(),
        tags: Default::default(),
        slot: None,
        streams: vec![ingested.stream],
        stats: ingested.stats,
        etcd_v3: None,
        files: None,
        etcd_v2: None,
        etcd_datadir: None,
        etcd_v3_delta: None,
        log_head: None,
        previous: None,
    };
    (commit(vault, catalog, &m).await.unwrap(), ingested.stats)
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_dedup_restore_verify_and_rebuild() {
    let f = fixture().await;
    let v = Vault::open(f.store.clone(), &f.keys).await.unwrap();
    let mut cat = f.catalog(&v, "cat.sqlite");
    cat.sync(&v).await.unwrap();

    let a = snapshot_bytes(1500, 0);
    let (id_a, stats_a) = backup(&v, &mut cat, &a).await;
    assert_eq!(stats_a.bytes, a.len() as u64);
    assert!(stats_a.packs >= 2, "1 MiB packs: {stats_a:?}");
    assert!(stats_a.stored_bytes < stats_a.bytes, "compressed: {stats_a:?}");

    let b = snapshot_bytes(1500, 9);
    let (id_b, stats_b) = backup(&v, &mut cat, &b).await;
    assert!(stats_b.new_bytes * 3 < stats_b.bytes, "second backup deduplicates: {stats_b:?}");

    // restore both exactly
    for (id, want) in [(id_a, &a), (id_b, &b)] {
        let snap = cat.resolve(&id.hex()[..8]).unwrap();
        let out = f.dir.path().join(format!("{}.db", id.short()));
        let r = restore_to_file(&v, &cat, &snap, &out, None).await.unwrap();
        assert_eq!(&std::fs::read(&out).unwrap(), want);
        assert_eq!(r.moved_aside, None);
    }

    // an existing file is moved aside, never overwritten
    let snap_a = cat.resolve(&id_a.hex()).unwrap();
    let out = f.dir.path().join("again.db");
    std::fs::write(&out, b"precious").unwrap();
    let r = restore_to_file(&v, &cat, &snap_a, &out, None).await.unwrap();
    let aside = r.moved_aside.unwrap();
    assert_eq!(std::fs::read(&aside).unwrap(), b"precious");
    assert_eq!(&std::fs::read(&out).unwrap(), &a);

    // verification at every level passes
    let all = cat.snapshots().unwrap();
    assert!(verify(&v, &mut cat, &all, &VerifyOptions::default()).await.unwrap().ok);
    let wv = Vault::open(f.store.clone(), &f.writer_only).await.unwrap();
    let rep = verify(
        &wv,
        &mut cat,
        &all,
        &VerifyOptions {
            read_data_percent: Some(100.0),
        },
    )
    .await
    .unwrap();
    assert!(rep.ok && rep.level == "stored-objects" && rep.packs_checked >= 2, "{rep:?}");

    // a rebuilt catalog knows the same snapshots, from the identity alone
    let idonly = KeySource {
        writer_key: None,
        identity: f.keys.identity.clone(),
        trust: Default::default(),
    };
    let v2 = Vault::open(f.store.clone(), &idonly).await.unwrap();
    let mut cat2 = f.catalog(&v2, "cat2.sqlite");
    cat2.sync(&v2).await.unwrap();
    let ids: Vec<_> = cat2.snapshots().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id_a) && ids.contains(&id_b));
    assert_eq!(cat2.packs().unwrap(), cat.packs().unwrap());

    // the writer key alone cannot restore
    let e = restore_to_file(&wv, &cat, &snap_a, &f.dir.path().join("nope.db"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, vault::ErrorKind::Key, "{e}");

    // flip one byte in one pack: verify names exactly the snapshots that use it
    let packs = cat.packs().unwrap();
    let (victim, _, _) = packs.last().unwrap();
    let name = vault::format::pack_name(victim);
    let mut bytes = f.store.get(&name).await.unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    f.store.put(&name, Bytes::from(bytes), PutMode::Overwrite).await.unwrap();
    for vault in [&wv, &v] {
        let rep = verify(
            vault,
            &mut cat,
            &all,
            &VerifyOptions {
                read_data_percent: Some(100.0),
            },
        )
        .await
        .unwrap();
        assert!(!rep.ok, "{rep:?}");
        assert!(
            rep.failed()
                .iter()
                .all(|s| s.problems.iter().any(|p| p.contains(&victim.hex()[..8]) || p.contains("chunk"))),
            "{rep:?}"
        );
    }
    // structure-only verification does not read data, but the catalog remembers what a read found
    let rep = verify(&wv, &mut cat, &all, &VerifyOptions::default()).await.unwrap();
    assert!(!rep.ok && rep.bad_packs.iter().any(|p| p.contains(&victim.hex())), "{rep:?}");
    // ...which a fresh catalog does not: it takes a read to find a flipped byte
    let mut fresh = f.catalog(&wv, "fresh.sqlite");
    fresh.sync(&wv).await.unwrap();
    assert!(verify(&wv, &mut fresh, &all, &VerifyOptions::default()).await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_or_corrupt_stream_is_never_committed() {
    let f = fixture().await;
    let v = Vault::open(f.store.clone(), &f.keys).await.unwrap();
    let mut cat = f.catalog(&v, "cat.sqlite");
    let mut data = snapshot_bytes(300, 0);
    data.truncate(data.len() - 1000);
    let pieces = vec![Ok(Bytes::from(data))];
    let ingested = ingest_stream(&v, &mut cat, "snapshot.db", futures::stream::iter(pieces), true, None)
        .await
        .unwrap();
    assert!(!ingested.trailer.unwrap().trailer_ok);

    // a stream that errors part-way fails the ingest, and nothing references its chunks
    let pieces: Vec<vault::Result<Bytes>> = vec![
        Ok(Bytes::from(snapshot_bytes(100, 0))),
        Err(vault::Error::source_err("stream broke off")),
    ];
    let e = ingest_stream(&v, &mut cat, "snapshot.db", futures::stream::iter(pieces), true, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, vault::ErrorKind::Source);
    assert!(f.store.list("snapshots/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_and_tampering_are_refused() {
    let f = fixture().await;
    // a writer key of another vault
    let other = fixture().await;
    let e = Vault::open(f.store.clone(), &other.writer_only).await.err().unwrap();
    assert_eq!(e.kind, vault::ErrorKind::Key, "{e}");
    // an identity that is not a recipient
    let e = Vault::open(
        f.store.clone(),
        &KeySource {
            writer_key: None,
            identity: other.keys.identity.clone(),
            trust: Default::default(),
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.kind, vault::ErrorKind::Key, "{e}");
    // a config whose recipients were swapped
    let raw = f.store.get("config").await.unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    cfg["recipients"] = serde_json::json!(["age1attacker"]);
    f.store
        .put("config", Bytes::from(serde_json::to_vec(&cfg).unwrap()), PutMode::Overwrite)
        .await
        .unwrap();
    let e = Vault::open(f.store.clone(), &f.writer_only).await.err().unwrap();
    assert_eq!(e.kind, vault::ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("MAC"), "{e}");
    // init refuses an existing vault
    let opts = InitOptions {
        recipients: vec![vault::crypto::generate_identity().1],
        ..Default::default()
    };
    let e = Vault::init(f.store.clone(), &opts).await.err().unwrap();
    assert_eq!(e.kind, vault::ErrorKind::AlreadyExists, "{e}");
    // a future format is refused
    cfg["format"] = serde_json::json!(2);
    f.store
        .put("config", Bytes::from(serde_json::to_vec(&cfg).unwrap()), PutMode::Overwrite)
        .await
        .unwrap();
    let e = Vault::open(f.store.clone(), &f.writer_only).await.err().unwrap();
    assert!(e.to_string().contains("format 2"), "{e}");
}

/// Several connections to one catalog file (a daemon's concurrent jobs) sync at once without
/// failing and without recording a chunk twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_of_one_catalog_agree() {
    let f = fixture().await;
    let (vault, mut first) = f.writer("writer.sqlite").await;
    backup(&vault, &mut first, &snapshot_bytes(2000, 0)).await;
    let shared = f.dir.path().join("shared.sqlite");
    let vault_id = vault.config.vault_id.clone();
    let vault = std::sync::Arc::new(vault);
    let syncs: Vec<_> = (0..4)
        .map(|_| {
            let (vault, shared, vault_id) = (vault.clone(), shared.clone(), vault_id.clone());
            tokio::spawn(async move { Catalog::open(&shared, &vault_id).unwrap().sync(&vault).await })
        })
        .collect();
    for s in syncs {
        s.await.unwrap().unwrap();
    }
    let a = Catalog::open(&shared, &vault_id).unwrap();
    let chunks = a.known_chunks().unwrap();
    assert!(!chunks.is_empty());
    for id in &chunks {
        assert_eq!(a.chunk_locations(id).unwrap().len(), 1, "chunk {} recorded twice", id.hex());
    }
    assert_eq!(a.snapshots().unwrap().len(), 1);
}

/// A damaged index segment or manifest does not stop the catalog (nor the backups that sync it):
/// it is left out and named, and verify fails naming it.
#[tokio::test]
async fn a_damaged_index_segment_or_manifest_is_named_not_fatal() {
    let f = fixture().await;
    let (vault, mut cat) = f.writer("first.sqlite").await;
    let (first, _) = backup(&vault, &mut cat, &snapshot_bytes(600, 0)).await;
    let (second, _) = backup(&vault, &mut cat, &snapshot_bytes(600, 9)).await;
    // Flip a byte of one index segment and of the second manifest.
    let segment = f.store.list("index/").await.unwrap()[0].name.clone();
    let manifest = format!("snapshots/{}", second.hex());
    for name in [&segment, &manifest] {
        let mut bytes = f.store.get(name).await.unwrap().to_vec();
        let n = bytes.len() - 20;
        bytes[n] ^= 1;
        f.store.put(name, Bytes::from(bytes), PutMode::Overwrite).await.unwrap();
    }
    let mut fresh = f.catalog(&vault, "fresh.sqlite");
    let report = fresh.sync(&vault).await.expect("the sync goes on past damaged objects");
    assert_eq!(report.unreadable.len(), 2, "{:?}", report.unreadable);
    assert!(report.unreadable.iter().any(|u| u.starts_with(&segment)), "{:?}", report.unreadable);
    assert!(
        report.unreadable.iter().any(|u| u.starts_with(&manifest)),
        "{:?}",
        report.unreadable
    );
    let listed: Vec<_> = fresh.snapshots().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, [first]);
    let all = fresh.snapshots().unwrap();
    let r = verify(&vault, &mut fresh, &all, &VerifyOptions::default()).await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.damaged_objects.len(), 2, "{r:?}");
    // The next sync reads them again (still damaged), and a backup goes on: it stores again what
    // the damaged segment indexed.
    assert_eq!(fresh.sync(&vault).await.unwrap().unreadable.len(), 2);
    backup(&vault, &mut fresh, &snapshot_bytes(600, 3)).await;
    assert_eq!(fresh.snapshots().unwrap().len(), 2);
}

/// The catalog's cheap queries (no manifest parsing in Rust) agree with the manifests.
#[tokio::test]
async fn catalog_summary_and_latest_time_agree_with_the_manifests() {
    let f = fixture().await;
    let (vault, mut cat) = f.writer("c.sqlite").await;
    assert_eq!(cat.latest_time("test", None).unwrap(), None);
    let (first, a) = backup(&vault, &mut cat, &snapshot_bytes(300, 0)).await;
    let (_, b) = backup(&vault, &mut cat, &snapshot_bytes(300, 1)).await;
    let all = cat.snapshots().unwrap();
    let newest = all.iter().map(|s| s.manifest.time).max().unwrap();
    let latest = cat.latest_time("test", Some("test")).unwrap().unwrap();
    assert!((newest - latest).num_milliseconds().abs() <= 1, "{newest} {latest}");
    assert_eq!(cat.latest_time("test", Some("other-host")).unwrap(), None);
    cat.record_verification(&first, "structure", false, "damaged").unwrap();
    let s = cat.summary().unwrap();
    assert_eq!(s.snapshots.get("test"), Some(&2));
    assert_eq!(s.logical_bytes, a.bytes + b.bytes);
    assert_eq!((s.verified_ok, s.damaged, s.unverified), (0, 1, 1));
    assert_eq!(s.last_verification.map(|(_, ok)| ok), Some(false));
    assert_eq!(s.packs as usize, cat.packs().unwrap().len());
    assert!(s.pack_bytes > 0);
    // `latest` of a kind.
    let latest = cat.resolve_kind("latest", &PayloadKind::EtcdV3).unwrap();
    assert_eq!(latest.id, all.last().unwrap().id);
    let e = cat.resolve_kind("latest", &PayloadKind::Files).err().unwrap();
    assert_eq!(e.kind, vault::ErrorKind::NotFound, "{e}");
    assert_eq!(cat.resolve_kind(&first.hex()[..8], &PayloadKind::Files).unwrap().id, first);
}

/// Verify at every level: (writer key, structure), (writer key, all packs read), (identity,
/// content).
async fn verify_all_levels(f: &Fixture, cat: &mut Catalog) -> Vec<vault::ops::verify::VerifyReport> {
    let writer = Vault::open(f.store.clone(), &f.writer_only).await.unwrap();
    let reader = Vault::open(f.store.clone(), &f.keys).await.unwrap();
    let all = cat.snapshots().unwrap();
    let read_all = VerifyOptions {
        read_data_percent: Some(100.0),
    };
    vec![
        verify(&writer, cat, &all, &VerifyOptions::default()).await.unwrap(),
        verify(&writer, cat, &all, &read_all).await.unwrap(),
        verify(&reader, cat, &all, &VerifyOptions::default()).await.unwrap(),
    ]
}

/// A pack deleted from the store: verify names it, the next capture of the same data stores its
/// chunks again (instead of deduplicating against the lost pack), and then the new snapshot and the
/// old one verify at every level and restore exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pack_heals_at_the_next_capture() {
    let f = fixture().await;
    let (vault, mut cat) = f.writer("w.sqlite").await;
    let data = snapshot_bytes(1500, 0);
    let (old, first) = backup(&vault, &mut cat, &data).await;
    assert!(first.packs >= 2, "{first:?}");
    let (lost, _, _) = cat.packs().unwrap()[0].clone();
    f.store.delete(&vault::format::pack_name(&lost)).await.unwrap();
    let all = cat.snapshots().unwrap();
    let r = verify(&vault, &mut cat, &all, &VerifyOptions::default()).await.unwrap();
    assert!(!r.ok && r.snapshots[0].problems.iter().any(|p| p.contains(&lost.hex())), "{r:?}");

    let (new, again) = backup(&vault, &mut cat, &data).await;
    assert!(
        again.new_chunks > 0 && again.new_bytes > 0,
        "the lost chunks are stored again: {again:?}"
    );
    let reader = assert_whole_and_restorable(&f, &mut cat, &[old, new], &data).await;
    // A third capture deduplicates completely again.
    let (_, third) = backup(&vault, &mut cat, &data).await;
    assert_eq!(third.new_chunks, 0, "{third:?}");

    // A catalog built from the vault alone, on another host, sees the same: both snapshots whole,
    // and a restore of the old one reads the copies the second capture stored.
    let mut fresh = f.catalog(&reader, "fresh.sqlite");
    fresh.sync(&reader).await.unwrap();
    for r in verify_all_levels(&f, &mut fresh).await {
        assert!(r.ok, "{r:?}");
    }
    let mut other = f.catalog(&reader, "other.sqlite");
    other.sync(&reader).await.unwrap();
    let out = f.dir.path().join("other.db");
    restore_to_file(&reader, &other, &other.resolve(&old.hex()).unwrap(), &out, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

/// Every snapshot verifies at every level and each of `ids` restores to `data`; returns the
/// restorer's vault.
async fn assert_whole_and_restorable(f: &Fixture, cat: &mut Catalog, ids: &[vault::format::Id], data: &[u8]) -> Vault {
    for r in verify_all_levels(f, cat).await {
        assert!(r.ok, "{r:?}");
    }
    let reader = Vault::open(f.store.clone(), &f.keys).await.unwrap();
    for id in ids {
        let out = f.dir.path().join(format!("{}.db", id.short()));
        restore_to_file(&reader, cat, &cat.resolve(&id.hex()).unwrap(), &out, None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }
    reader
}

/// A flipped byte inside a pack: once a read found it (verify --read-data), the next capture stores
/// its chunks again, and every snapshot verifies and restores from the good copies.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_heals_at_the_next_capture() {
    let f = fixture().await;
    let (vault, mut cat) = f.writer("w.sqlite").await;
    let data = snapshot_bytes(1500, 0);
    let (old, _) = backup(&vault, &mut cat, &data).await;
    let (victim, _, _) = cat.packs().unwrap()[0].clone();
    let name = vault::format::pack_name(&victim);
    let mut bytes = f.store.get(&name).await.unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    f.store.put(&name, Bytes::from(bytes), PutMode::Overwrite).await.unwrap();
    let all = cat.snapshots().unwrap();
    let read_all = VerifyOptions {
        read_data_percent: Some(100.0),
    };
    let r = verify(&vault, &mut cat, &all, &read_all).await.unwrap();
    assert!(!r.ok && r.snapshots[0].problems.iter().any(|p| p.contains(&victim.hex())), "{r:?}");

    let (new, again) = backup(&vault, &mut cat, &data).await;
    assert!(
        again.new_chunks > 0 && again.new_bytes > 0,
        "the damaged chunks are stored again: {again:?}"
    );
    assert_whole_and_restorable(&f, &mut cat, &[old, new], &data).await;
}

/// `repair` with the writer key alone: a dry run writes nothing; repair records a lost pack,
/// indexes a pack whose index segment is gone, and after the next capture says which snapshots
/// that capture made whole again and which cannot be made whole.
#[tokio::test(flavor = "multi_thread")]
async fn repair_indexes_stray_packs_and_says_what_a_capture_healed() {
    use vault::ops::repair::{RepairOptions, apply, plan};
    let f = fixture().await;
    let (vault, mut cat) = f.writer("w.sqlite").await;
    let a = snapshot_bytes(3000, 0);
    let (s1, _) = backup(&vault, &mut cat, &a).await;
    let packs_of_a: Vec<_> = cat.packs().unwrap().into_iter().map(|(id, _, _)| id).collect();
    let (s2, _) = backup(&vault, &mut cat, &snapshot_bytes(3000, 9)).await;
    let only_b: Vec<_> = cat
        .packs()
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|p| !packs_of_a.contains(p))
        .collect();
    assert!(packs_of_a.len() >= 3 && !only_b.is_empty(), "{packs_of_a:?} {only_b:?}");
    // Lose a pack of the first capture (both snapshots use it) and one only the second uses, and
    // the index segment (not the pack) of another pack of the first capture.
    let (lost_a, lost_b, stray) = (packs_of_a[0], only_b[0], packs_of_a[1]);
    for p in [lost_a, lost_b] {
        f.store.delete(&vault::format::pack_name(&p)).await.unwrap();
    }
    for seg in f.store.list("index/").await.unwrap() {
        let id = vault::format::id_from_name(&seg.name).unwrap();
        if vault.read_index(&id).await.unwrap().packs.iter().any(|p| p.id == stray) {
            f.store.delete(&seg.name).await.unwrap();
        }
    }
    cat.sync(&vault).await.unwrap();
    let segments_before = f.store.list("index/").await.unwrap().len();

    let dry = plan(&vault, &mut cat, &RepairOptions::default()).await.unwrap();
    assert!(!dry.applied && dry.changes_anything(), "{dry:#?}");
    let bad: Vec<_> = dry.bad_packs.iter().map(|b| b.pack.clone()).collect();
    let mut want = vec![vault::format::pack_name(&lost_a), vault::format::pack_name(&lost_b)];
    want.sort();
    assert_eq!(bad, want, "{dry:#?}");
    assert!(
        dry.bad_packs.iter().all(|b| b.lost_chunks > 0 && b.lost_chunks == b.chunks),
        "{dry:#?}"
    );
    let stray_name = vault::format::pack_name(&stray);
    assert_eq!(dry.unindexed_packs.len(), 1, "{dry:#?}");
    assert_eq!(dry.unindexed_packs[0].pack, stray_name);
    let broken: Vec<_> = dry.broken().iter().map(|s| s.id.clone()).collect();
    assert_eq!(broken, [s1.hex(), s2.hex()], "{dry:#?}");
    // ...and the dry run wrote nothing, to the vault or the catalog
    assert_eq!(f.store.list("index/").await.unwrap().len(), segments_before);
    assert!(cat.bad_packs().unwrap().is_empty());

    let done = apply(&vault, &mut cat, dry).await.unwrap();
    assert!(done.applied);
    assert_eq!(f.store.list("index/").await.unwrap().len(), segments_before + 1);
    assert_eq!(cat.bad_packs().unwrap().len(), 2);
    let again = plan(&vault, &mut cat, &RepairOptions::default()).await.unwrap();
    assert!(!again.changes_anything(), "{again:#?}");

    // The next capture of the first data stores the lost pack's chunks again, and nothing of the
    // re-indexed pack: the first snapshot is whole again, healed by it; the second still lacks
    // what only it held.
    let (s3, stats) = backup(&vault, &mut cat, &a).await;
    let lost_a_chunks = done.bad_packs.iter().find(|b| b.pack.contains(&lost_a.hex())).unwrap().chunks as u64;
    assert_eq!(stats.new_chunks, lost_a_chunks, "{stats:?}");
    let after = plan(&vault, &mut cat, &RepairOptions { read_data: true }).await.unwrap();
    assert!(!after.changes_anything(), "{after:#?}");
    let by_id = |id: &vault::format::Id| after.snapshots.iter().find(|s| s.id == id.hex()).unwrap();
    let first = by_id(&s1);
    assert!(first.whole && first.healed_by == [Some(s3.hex())], "{after:#?}");
    assert_eq!(first.healed_chunks as u64, lost_a_chunks);
    let second = by_id(&s2);
    assert!(!second.whole && second.lost_in == [vault::format::pack_name(&lost_b)], "{after:#?}");
    assert!(
        after.snapshots.iter().all(|s| s.id != s3.hex()),
        "the healing capture never lacked anything"
    );
    assert_eq!(after.heals.len(), 1, "{after:#?}");
    assert_eq!(after.heals[0].by, Some(s3.hex()));
    assert_eq!(after.heals[0].chunks as u64, lost_a_chunks);

    let all = cat.snapshots().unwrap();
    let r = verify(
        &vault,
        &mut cat,
        &all,
        &VerifyOptions {
            read_data_percent: Some(100.0),
        },
    )
    .await
    .unwrap();
    let failed: Vec<_> = r.failed().iter().map(|s| s.id.clone()).collect();
    assert_eq!(failed, [s2.hex()], "{r:?}");
}
