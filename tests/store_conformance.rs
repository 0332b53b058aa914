//! The store contract (vault/src/store/conformance.rs) against a real S3 server: moto.
//! The memory and local-directory stores run the same suite in the library's unit tests.

use vault::store::Store;
use vault_e2e::Moto;

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_on_moto_conforms() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    let store = Store::open("s3://conformance/some/prefix", &moto.s3_options()).expect("open s3 store");
    vault::store::conformance::run(&store).await;

    // A second prefix in the same bucket is independent of the first.
    let other = Store::open("s3://conformance/other", &moto.s3_options()).expect("open s3 store");
    vault::store::conformance::run(&other).await;
}

/// An S3-compatible store that rejects `If-None-Match` (as older servers do, with 501) is recorded
/// as lacking conditional create instead of failing `init`; a store that takes no write at all is
/// an error, not a store "without conditional create".
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_rejects_conditional_writes_gets_a_vault_without_them() {
    use vault::repo::{InitOptions, KeySource, Vault};
    use vault_e2e::proxy::{self, Rule};
    let moto = Moto::start();
    moto.create_bucket("older");
    let port = proxy::start(moto.port, |bytes| {
        if proxy::has_if_none_match(bytes) {
            Rule::Answer(proxy::NOT_IMPLEMENTED)
        } else {
            Rule::Forward
        }
    });
    let mut opts = moto.s3_options();
    opts.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let store = Store::open("s3://older/vault", &opts).expect("open s3 store");
    assert!(!store.probe_conditional_create().await.expect("probe"));
    assert!(store.list("probe/").await.unwrap().is_empty(), "probe cleans up");

    let (_, recipient) = vault::crypto::generate_identity();
    let init = InitOptions {
        recipients: vec![recipient],
        ..Default::default()
    };
    let (vault, writer) = Vault::init(store.clone(), &init).await.expect("init without conditional create");
    assert!(!vault.config.store.conditional_create);
    let dir = vault_e2e::tempdir("older-s3");
    let key = dir.path().join("writer.key");
    std::fs::write(&key, writer.to_file_text().as_bytes()).unwrap();
    let keys = KeySource {
        writer_key: Some(key),
        ..Default::default()
    };
    let reopened = Vault::open(store, &keys).await.expect("open");
    assert!(!reopened.config.store.conditional_create);
    let mut down = moto.s3_options();
    down.endpoint = Some(format!("http://127.0.0.1:{}", vault_e2e::ports::closed_port()));
    let e = Store::open("s3://older/vault", &down)
        .unwrap()
        .probe_conditional_create()
        .await
        .expect_err("an unreachable store is an error");
    assert_eq!(e.kind, vault::ErrorKind::Store, "{e}");
}
