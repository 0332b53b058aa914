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
}
