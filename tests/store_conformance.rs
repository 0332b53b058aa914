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
