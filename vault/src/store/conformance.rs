//! The store contract as one test suite, run against every backend (unit tests: memory and local
//! directory; end-to-end tests: S3 on a real server). Panics on the first violation.

use bytes::Bytes;

use super::{ObjectInfo, PutMode, Store};
use crate::error::ErrorKind;

/// Run the whole contract against an empty store.
pub async fn run(store: &Store) {
    assert!(store.list("data/").await.expect("list empty").is_empty(), "store must start empty");

    // put / get / head
    store
        .put("data/ab/one", Bytes::from_static(b"hello world"), PutMode::Overwrite)
        .await
        .expect("put");
    assert_eq!(&store.get("data/ab/one").await.expect("get")[..], b"hello world");
    assert_eq!(store.head("data/ab/one").await.expect("head"), Some(11));
    assert_eq!(store.head("data/ab/missing").await.expect("head missing"), None);

    // get of a missing object is NotFound
    let e = store.get("data/ab/missing").await.expect_err("get missing");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    // ranges
    assert_eq!(&store.get_range("data/ab/one", 6, 5).await.expect("range")[..], b"world");
    assert_eq!(&store.get_range("data/ab/one", 0, 1).await.expect("range")[..], b"h");

    // overwrite replaces
    store
        .put("data/ab/one", Bytes::from_static(b"replaced"), PutMode::Overwrite)
        .await
        .expect("overwrite");
    assert_eq!(&store.get("data/ab/one").await.expect("get")[..], b"replaced");

    // create refuses an existing name and leaves it untouched
    store
        .put("snapshots/s1", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .expect("create");
    let e = store
        .put("snapshots/s1", Bytes::from_static(b"second"), PutMode::Create)
        .await
        .expect_err("create twice");
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
    assert_eq!(&store.get("snapshots/s1").await.expect("get")[..], b"first");

    // list is recursive, prefix-scoped and sorted
    store
        .put("data/cd/two", Bytes::from(vec![7u8; 3 << 20]), PutMode::Overwrite)
        .await
        .expect("put big");
    store
        .put("index/i1", Bytes::from_static(b"i"), PutMode::Overwrite)
        .await
        .expect("put index");
    let listed = store.list("data/").await.expect("list");
    assert_eq!(
        listed,
        vec![
            ObjectInfo {
                name: "data/ab/one".into(),
                size: 8
            },
            ObjectInfo {
                name: "data/cd/two".into(),
                size: 3 << 20
            }
        ]
    );
    assert_eq!(store.list("index/").await.expect("list index").len(), 1);
    assert_eq!(store.list("nothing/").await.expect("list nothing"), vec![]);
    assert_eq!(store.get("data/cd/two").await.expect("get big").len(), 3 << 20);

    // a large object (uploaded in parts by an object store) arrives whole, parts in order
    let large: Vec<u8> = (0..super::object::MULTIPART_THRESHOLD + 3 * super::object::MULTIPART_PART_SIZE / 2)
        .map(|i| (i / 4096 % 251) as u8)
        .collect();
    store
        .put("data/ef/large", Bytes::from(large.clone()), PutMode::Overwrite)
        .await
        .expect("put large");
    assert_eq!(store.head("data/ef/large").await.expect("head large"), Some(large.len() as u64));
    assert!(
        store.get("data/ef/large").await.expect("get large")[..] == large[..],
        "large object differs"
    );
    store.delete("data/ef/large").await.expect("delete large");

    // delete is idempotent
    store.delete("data/ab/one").await.expect("delete");
    store.delete("data/ab/one").await.expect("delete again");
    assert_eq!(store.head("data/ab/one").await.expect("head deleted"), None);

    // names that could escape are refused
    for bad in ["../x", "/abs", "a//b", "a/./b", ".hidden", "dir/"] {
        let e = store.put(bad, Bytes::from_static(b"x"), PutMode::Overwrite).await.expect_err(bad);
        assert_eq!(e.kind, ErrorKind::Usage, "{bad}: {e}");
    }

    // conditional create is honoured
    assert!(store.probe_conditional_create().await.expect("probe"));
    assert!(store.list("probe/").await.expect("list probe").is_empty(), "probe cleans up");

    for o in store.list("").await.expect("list all") {
        store.delete(&o.name).await.expect("cleanup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_conforms() {
        run(&Store::open("memory://", &Default::default()).unwrap()).await;
    }

    #[tokio::test]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        run(&Store::open(dir.path().to_str().unwrap(), &Default::default()).unwrap()).await;
        // no temporary files are left behind
        let leftovers = crate::store::local::temp_files(dir.path()).unwrap();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn stale_temporary_files_of_killed_writers_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        store
            .put("data/ab/abcd", bytes::Bytes::from_static(b"x"), crate::store::PutMode::Create)
            .await
            .unwrap();
        // What a writer killed mid-write leaves, long ago and just now.
        let stale = dir.path().join("data/ab/.abcd.tmp-0123456789ab");
        let fresh = dir.path().join("data/ab/.abce.tmp-ba9876543210");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(&fresh, b"in progress").unwrap();
        let old = std::time::SystemTime::now() - crate::store::STALE_TEMP_AGE - std::time::Duration::from_secs(60);
        filetime::set_file_mtime(&stale, filetime::FileTime::from_system_time(old)).unwrap();
        let removed = store.remove_stale_temporaries().await.unwrap();
        assert_eq!(removed, vec!["data/ab/.abcd.tmp-0123456789ab".to_string()]);
        assert!(!stale.exists() && fresh.exists());
        assert_eq!(&store.get("data/ab/abcd").await.unwrap()[..], b"x");
        assert!(store.list("").await.unwrap().iter().all(|o| !o.name.contains(".tmp-")));
        let memory = Store::open("memory://", &Default::default()).unwrap();
        assert!(memory.remove_stale_temporaries().await.unwrap().is_empty());
    }
}
