//! Delta segments through the real pipeline on an in-memory store: two segments of a chain
//! written with `SegmentWriter`, read back through the chain's links, the catalog and the events
//! decoder, event for event.

use std::sync::Arc;

use vault::catalog::Catalog;
use vault::delta_stream::{Event, EventGroup, LeaseGrant, Record};
use vault::format::{Id, PayloadKind};
use vault::ops::deltas::chain;
use vault::ops::deltas::segment::{Closed, SegmentSpec, SegmentWriter, SharedVault};
use vault::ops::deltas::segment_read;
use vault::repo::{InitOptions, KeySource, Vault};
use vault::store::Store;

async fn vault() -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().unwrap();
    let (idtext, recipient) = vault::crypto::generate_identity();
    std::fs::write(dir.path().join("id"), idtext).unwrap();
    let store = Store::open("memory://", &Default::default()).unwrap();
    let opts = InitOptions {
        recipients: vec![recipient],
        pack_target_size: 1 << 20,
        ..Default::default()
    };
    let (_, writer) = Vault::init(store.clone(), &opts).await.unwrap();
    std::fs::write(dir.path().join("wk"), writer.to_file_text()).unwrap();
    let keys = KeySource {
        writer_key: Some(dir.path().join("wk")),
        identity: Some(dir.path().join("id")),
        trust: Default::default(),
    };
    let v = Vault::open(store, &keys).await.unwrap();
    (dir, v)
}

fn group(revision: i64) -> EventGroup {
    let mut events = vec![Event::Put {
        key: format!("/registry/pods/p{revision}").into_bytes(),
        // values big enough that a segment spans several pieces of the writer's channel
        value: vec![(revision % 251) as u8; 3000 + (revision as usize % 7) * 100],
        create_revision: revision,
        version: 1,
        lease: if revision % 10 == 0 { 77 } else { 0 },
    }];
    if revision % 3 == 0 {
        events.push(Event::Delete {
            key: format!("/registry/pods/p{}", revision - 1).into_bytes(),
        });
    }
    EventGroup {
        revision,
        received_ms: 1_780_000_000_000 + revision * 10,
        catch_up: false,
        events,
    }
}

fn spec(base: Id, seq: u64, prev: Option<Id>) -> SegmentSpec {
    SegmentSpec {
        job: "etcd".into(),
        host: "master-0".into(),
        base,
        seq,
        prev,
        cluster_id: "cdf818194e3a8c32".into(),
        member_id: "8e9e05c52164694d".into(),
        endpoint: "http://127.0.0.1:2379".into(),
        watcher: "w1".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_segments_are_chained_and_read_back_event_for_event() {
    let (dir, v) = vault().await;
    let shared: Arc<Vault> = Arc::new(v);
    let sv: SharedVault = shared.clone();
    let v: &Vault = &shared;
    let cat = Catalog::open(&dir.path().join("cat"), &v.config.vault_id).unwrap();
    let base = Id([7; 32]);
    let base_revision = 100;
    let lease = LeaseGrant {
        id: 77,
        granted_ttl_secs: 60,
        remaining_ttl_secs: 59,
        observed_ms: 1_780_000_000_000,
    };

    let mut written = Vec::new();
    let mut w = SegmentWriter::open(sv.clone(), cat, spec(base, 0, None)).unwrap();
    for r in 101..=400 {
        if r == 110 {
            w.push_lease(&lease).await.unwrap();
            written.push(Record::Lease(lease.clone()));
        }
        w.push_group(&group(r)).await.unwrap();
        written.push(Record::Group(group(r)));
    }
    // a gap is refused before it reaches the stream
    assert!(w.push_group(&group(402)).await.is_err());
    let (cat, closed) = w.close(chrono::Utc::now()).await.unwrap();
    let Closed::Committed { id: first, link } = closed else {
        panic!("lost a race alone: {closed:?}")
    };
    assert_eq!((link.first_revision, link.last_revision), (101, 400));

    let mut w = SegmentWriter::open(sv.clone(), cat, spec(base, 1, Some(first))).unwrap();
    for r in 401..=450 {
        w.push_group(&group(r)).await.unwrap();
        written.push(Record::Group(group(r)));
    }
    let (mut cat, closed) = w.close(chrono::Utc::now()).await.unwrap();
    assert!(matches!(closed, Closed::Committed { .. }));

    // A second writer for a place already taken loses the race; its manifest is an orphan.
    let mut w = SegmentWriter::open(
        sv.clone(),
        Catalog::open(&dir.path().join("cat2"), &v.config.vault_id).unwrap(),
        spec(base, 1, Some(first)),
    )
    .unwrap();
    w.push_group(&group(401)).await.unwrap();
    let (_, closed) = w.close(chrono::Utc::now()).await.unwrap();
    assert!(matches!(closed, Closed::LostRace { .. }), "{closed:?}");

    let c = chain::read_chain(v, "etcd", &base, base_revision).await.unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.links.len(), 2);
    assert_eq!(c.whole_until(base_revision), 450);
    assert_eq!(c.next(base_revision), (2, 451));
    assert_eq!(chain::list_bases(v, "etcd").await.unwrap(), vec![base]);

    cat.sync(v).await.unwrap();
    let mut read = Vec::new();
    for l in &c.links {
        let seg = cat.resolve(&l.segment.hex()).unwrap();
        let m = &seg.manifest;
        assert_eq!(m.kind, PayloadKind::EtcdV3Delta);
        assert_eq!(m.previous, None, "segments belong to no retention group");
        let info = m.etcd_v3_delta.clone().unwrap();
        assert_eq!(
            (info.seq, info.first_revision, info.last_revision),
            (l.seq, l.first_revision, l.last_revision)
        );
        assert_eq!(info.prev, if l.seq == 0 { None } else { Some(first) });
        let what = format!("segment {}", l.seq);
        let (records, _) = segment_read::read(v, &cat, &seg, &what).await.unwrap();
        read.extend(records);
    }
    assert_eq!(read.len(), written.len());
    assert!(read == written, "the decoded records differ from those written");
}

/// An etcd-v3 snapshot stand-in (no etcd here): a small stream with the facts a base needs.
async fn commit_base(v: &Vault, cat: &mut Catalog, revision: i64, seed: u8) -> Id {
    let src = futures::stream::iter(vec![Ok(bytes::Bytes::from(vec![seed; 50_000]))]);
    let ingested = vault::ops::backup::ingest_stream(v, cat, "snapshot.db", src, false, None)
        .await
        .unwrap();
    let mut m = vault::ops::backup::BackupOptions {
        job: "etcd".into(),
        host: Some("master-0".into()),
        ..Default::default()
    }
    .manifest(PayloadKind::EtcdV3, vec![ingested.stream], ingested.stats);
    m.etcd_v3 = Some(vault::format::EtcdV3Info {
        cluster_id: "cdf818194e3a8c32".into(),
        revision,
        ..Default::default()
    });
    vault::ops::backup::commit(v, cat, &m).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn forgetting_a_base_forgets_its_chain_in_the_same_record() {
    use vault::ops::retention::{RetentionPolicy, Scope, forget, log};
    let (dir, v) = vault().await;
    let shared: Arc<Vault> = Arc::new(v);
    let sv: SharedVault = shared.clone();
    let v: &Vault = &shared;
    let cat_path = dir.path().join("cat");
    let mut cat = Catalog::open(&cat_path, &v.config.vault_id).unwrap();
    let old = commit_base(v, &mut cat, 100, 1).await;
    let mut segments = Vec::new();
    for seq in 0..2u64 {
        let mut w = SegmentWriter::open(
            sv.clone(),
            Catalog::open(&cat_path, &v.config.vault_id).unwrap(),
            spec(old, seq, segments.last().copied()),
        )
        .unwrap();
        for r in 0..10 {
            w.push_group(&group(101 + seq as i64 * 10 + r)).await.unwrap();
        }
        let (_, closed) = w.close(chrono::Utc::now()).await.unwrap();
        let Closed::Committed { id, .. } = closed else {
            panic!("{closed:?}")
        };
        segments.push(id);
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let new = commit_base(v, &mut cat, 121, 2).await;
    cat.sync(v).await.unwrap();

    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    let actor = forget::Actor {
        host: "test".into(),
        command: "test".into(),
    };
    let now = chrono::Utc::now();
    let mut report = forget::plan(v, &mut cat, &policy, &Scope::default(), now).await.unwrap();
    forget::apply(v, &mut cat, &mut report, true, &actor, now).await.unwrap();
    let record = report.record.expect("a forget record");
    let forgotten: Vec<Id> = record.record.expect("readable").entries.iter().map(|e| e.snapshot).collect();
    assert_eq!(forgotten, vec![old, segments[0], segments[1]], "the base, then its chain in order");
    let tombstones = log::read(v).await.unwrap().tombstones();
    assert!(!tombstones.contains_key(&new));
    // Planning again finds nothing more to forget, and the segments are not planned twice.
    let mut again = forget::plan(v, &mut cat, &policy, &Scope::default(), now).await.unwrap();
    forget::apply(v, &mut cat, &mut again, true, &actor, now).await.unwrap();
    assert!(again.record.is_none(), "{:?}", again.record);
}
