//! End-to-end tests of healing (issue 11, section 3) with the real `vaultctl` and a real etcd: a
//! pack lost from the store (S3) or damaged in place (local directory) is stored again by the next
//! capture, whose snapshot then verifies with `--read-data`, and `vaultctl repair` shows and
//! applies its plan and says which capture healed which chunks. Run `cargo build --workspace` first.

use serde_json::Value;
use vault::store::{PutMode, S3Options, Store};
use vault_e2e::data::{Rng, k8s_like};
use vault_e2e::{Ctl, EtcdCluster, Moto, n, s, tempdir};

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The pack object is deleted.
    Delete,
    /// One byte in the middle of the pack is flipped (same size: only a read finds it).
    FlipByte,
}

/// The largest pack of the vault (the one holding most of the snapshot).
async fn largest_pack(store: &Store) -> String {
    let packs = store.list("data/").await.expect("list data/");
    packs.iter().max_by_key(|o| o.size).expect("a pack").name.clone()
}

async fn damage(store: &Store, pack: &str, how: Damage) {
    match how {
        Damage::Delete => store.delete(pack).await.expect("delete pack"),
        Damage::FlipByte => {
            let mut bytes = store.get(pack).await.expect("read pack").to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            store.put(pack, bytes.into(), PutMode::Overwrite).await.expect("write pack");
        }
    }
}

/// The snapshot entry `id` of a `repair --json` plan.
fn planned<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} is not in the plan: {plan:#}"))
}

async fn heals(ctl: &Ctl, store: &Store, how: Damage) {
    let cluster = EtcdCluster::start(1, None);
    // Enough data for many chunks: every capture of etcd changes a few (its meta pages, the keys
    // written in between), and repair credits a capture only with chunks it stored again.
    cluster.put_all(&k8s_like(&mut Rng::new(11), 2000, 2000)).await;
    let first = s(&ctl.backup(&cluster.endpoints_arg(), &[]), "id");
    let pack = largest_pack(store).await;
    damage(store, &pack, how).await;
    let pack_hash = pack.rsplit('/').next().unwrap().to_string();

    // Verify finds it (a flipped byte only with --read-data) and the catalog remembers it.
    let read_data: &[&str] = match how {
        Damage::Delete => &[],
        Damage::FlipByte => &["--read-data"],
    };
    ctl.writer(&[&["verify", "--all"], read_data].concat())
        .failed()
        .code(3)
        .mentions(&[&first[..8], &pack_hash]);

    // The dry run shows the plan and writes nothing; a plan always names the pack and the snapshot.
    let dry = ctl.writer(&["repair", "--dry-run"]).failed().code(3);
    let dry = dry.mentions(&[&pack_hash, &first[..8], "BROKEN", "cannot be made whole"]);
    assert!(dry.stdout.contains("dry run"), "{dry}");
    let plan = ctl.writer(&["repair", "--dry-run", "--json"]).failed().code(3).json();
    assert_eq!(plan["applied"], false, "{plan:#}");
    assert_eq!(plan["bad_packs"][0]["pack"], pack.as_str(), "{plan:#}");
    assert_eq!(planned(&plan, &first)["whole"], false, "{plan:#}");
    let applied = ctl.writer(&["repair", "--json"]).failed().code(3).json();
    assert_eq!(applied["applied"], true, "{applied:#}");

    // The next capture stores the lost chunks again instead of referencing the bad pack.
    cluster.put_all(&k8s_like(&mut Rng::new(12), 3, 2000)).await;
    let report = ctl.backup(&cluster.endpoints_arg(), &[]);
    let second = s(&report, "id");
    assert!(n(&report, "new_bytes") > 0 && n(&report, "stored_bytes") > 0, "{report:#}");
    ctl.writer(&["verify", &second, "--read-data"]).ok().mentions(&[&second[..8]]);
    ctl.restorer(&["verify", &second]).ok();

    // Repair says which capture healed which chunks of the first snapshot.
    let after = ctl.writer(&["repair", "--dry-run", "--json"]).json();
    let heal = &after["heals"][0];
    assert_eq!(heal["by"], second.as_str(), "{after:#}");
    assert!(n(heal, "chunks") > 0, "{after:#}");
    let old = planned(&after, &first);
    assert!(n(old, "healed_chunks") > 0, "{after:#}");
    assert_eq!(old["healed_by"][0], second.as_str(), "{after:#}");
    assert!(
        after["snapshots"].as_array().unwrap().iter().all(|s| s["id"] != second.as_str()),
        "{after:#}"
    );
    ctl.writer(&["repair", "--dry-run"])
        .mentions(&["healed", &second[..8], "nothing to change"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pack_heals_at_the_next_capture_s3() {
    let moto = Moto::start();
    moto.create_bucket("heal");
    let tmp = tempdir("heal-s3");
    let repo = "s3://heal/vault";
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), repo, moto.env());
    ctl.setup(&[]);
    let opts: S3Options = moto.s3_options();
    let store = Store::open(repo, &opts).expect("open store");
    heals(&ctl, &store, Damage::Delete).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_a_pack_heals_at_the_next_capture() {
    let tmp = tempdir("heal-flip");
    let repo = tmp.path().join("vault").display().to_string();
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo, vec![]);
    ctl.setup(&[]);
    let store = Store::open(&repo, &Default::default()).expect("open store");
    heals(&ctl, &store, Damage::FlipByte).await;
}
