//! End-to-end tests of etcd v3 backups: real etcd members, a real S3 server (moto), real TLS
//! certificates, and the real `vaultctl` binary. Each test starts what it needs and stops it on
//! the way out (also when it fails). Run `cargo build --workspace` first.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_e2e::data::{Rng, is_hex, k8s_like, k8s_value, sha256_file};
use vault_e2e::{Certs, Ctl, EtcdCluster, Moto, free_port, moto, n, objects, s, single_member_restore_args, tempdir};

/// Keys in the ordinary data set (~2 KB each: a snapshot of about 1.5 MB).
const KEYS: usize = 300;
const VALUE_LEN: usize = 2000;

fn dataset(seed: u64) -> Vec<(String, Vec<u8>)> {
    k8s_like(&mut Rng::new(seed), KEYS, VALUE_LEN)
}

#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Local,
    S3,
}

/// A vault session in a fresh scratch directory: a local directory vault or one in a fresh moto
/// bucket.
struct VaultEnv {
    ctl: Ctl,
    tmp: tempfile::TempDir,
    _moto: Option<Moto>,
}

impl VaultEnv {
    fn new(kind: StoreKind, label: &str) -> VaultEnv {
        let tmp = tempdir(label);
        let (repo, env, moto) = match kind {
            StoreKind::Local => (tmp.path().join("vault").display().to_string(), vec![], None),
            StoreKind::S3 => {
                let m = Moto::start();
                m.create_bucket("e2e-vault");
                (format!("s3://e2e-vault/{label}"), m.env(), Some(m))
            }
        };
        let ctl = Ctl::new(&tmp.path().join("ctl"), &repo, env);
        VaultEnv { ctl, tmp, _moto: moto }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The local vault's directory (local store only).
    fn vault_dir(&self) -> PathBuf {
        PathBuf::from(&self.ctl.repo)
    }
}

/// The fields of `backup etcd --json` are present and sane.
fn check_backup_report(r: &Value, cluster: &EtcdCluster, revision: i64) {
    assert!(is_hex(&s(r, "id"), 64), "id: {r:#}");
    assert_eq!(s(r, "kind"), "etcd-v3", "{r:#}");
    let bytes = n(r, "bytes");
    // An etcd v3 snapshot is a bbolt file (4 KiB pages) followed by a 32-byte sha256.
    assert!(bytes > 64 * 1024, "bytes: {r:#}");
    assert_eq!(bytes % 4096, 32, "bytes is not pages + trailer: {r:#}");
    let new_bytes = n(r, "new_bytes");
    assert!(new_bytes > 0 && new_bytes <= bytes, "new_bytes: {r:#}");
    let stored = n(r, "stored_bytes");
    assert!(stored > 0 && stored <= bytes + bytes / 10 + 4096, "stored_bytes: {r:#}");
    assert!(is_hex(&s(r, "sha256"), 64), "sha256: {r:#}");
    assert_eq!(r["revision"].as_i64(), Some(revision), "revision: {r:#}");
    let member = s(r, "member");
    assert!(
        cluster.members.iter().any(|m| m.name == member),
        "member {member} is not one of the cluster's: {r:#}"
    );
    let endpoint = s(r, "endpoint");
    assert!(cluster.endpoints().contains(&endpoint), "endpoint: {r:#}");
    assert!(n(r, "chunks") >= n(r, "new_chunks") && n(r, "chunks") > 0, "chunks: {r:#}");
}

/// `ETCDCTL_API=3 etcdctl snapshot status FILE -w json`, parsed.
fn etcdctl_snapshot_status(file: &Path) -> Value {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot status {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("etcdctl snapshot status -w json prints JSON")
}

fn to_map(kvs: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    kvs.iter().cloned().collect()
}

// ------------------------------------------------------------------------------------------------
// 1. The whole cycle against a 3-member cluster, for both stores.

#[tokio::test(flavor = "multi_thread")]
async fn full_cycle_local_vault() {
    full_cycle(StoreKind::Local, "cycle-local").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_cycle_s3_vault() {
    full_cycle(StoreKind::S3, "cycle-s3").await;
}

async fn full_cycle(kind: StoreKind, label: &str) {
    let cluster = EtcdCluster::start(3, None);
    let kvs = dataset(1);
    cluster.put_all(&kvs).await;
    let expected = cluster.get_all().await;
    assert_eq!(expected, to_map(&kvs), "the cluster holds exactly the test data");
    let revision = cluster.revision().await;

    let mut env = VaultEnv::new(kind, label);
    env.ctl.setup(&[]);
    let ctl = env.ctl.clone();

    // backup from all three endpoints
    let report = ctl.backup(&cluster.endpoints_arg(), &[]);
    check_backup_report(&report, &cluster, revision);
    let id = s(&report, "id");
    let sha = s(&report, "sha256");
    let bytes = n(&report, "bytes");

    // it is listed
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    let row = &snaps[0];
    assert_eq!(s(row, "id"), id);
    assert_eq!(s(row, "kind"), "etcd-v3");
    assert_eq!(n(row, "size"), bytes);
    assert_eq!(s(row, "sha256"), sha);
    assert_eq!(row["revision"].as_i64(), Some(revision));

    // verify: stored objects with the writer key, content with the identity
    let v = ctl.writer(&["verify", "--all", "--read-data", "--json"]).ok().json();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(s(&v, "level"), "stored-objects", "{v:#}");
    assert!(n(&v, "packs_checked") >= 1, "{v:#}");
    ctl.writer(&["verify", "--all", "--read-data"]).ok().mentions(&[&id[..8]]);
    let v = ctl.restorer(&["verify", &id, "--json"]).ok().json();
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(s(&v, "level"), "content", "{v:#}");
    assert_eq!(v["snapshots"][0]["id"].as_str(), Some(id.as_str()), "{v:#}");

    // restore to a file: the exact bytes etcd sent, accepted by etcdctl
    let file = env.path("restored/snapshot.db");
    let file_arg = file.display().to_string();
    ctl.restorer(&["restore", &id, "--to", &file_arg]).ok();
    assert_eq!(std::fs::metadata(&file).expect("restored file").len(), bytes);
    assert_eq!(sha256_file(&file), sha, "restored file's sha256");
    // every Secret of the cluster is in it: readable by its owner only, whatever the umask
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("restored file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the restored snapshot is mode {mode:o}");
    let left: Vec<_> = std::fs::read_dir(file.parent().expect("dir"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("snapshot.db")], "only the snapshot is left");
    let status = etcdctl_snapshot_status(&file);
    assert_eq!(status["revision"].as_i64(), Some(revision), "{status}");

    // etcd restore into a member data dir, then run etcd on it and read every key back
    let peer = format!("http://127.0.0.1:{}", free_port());
    let data_dir = env.path("restore/r1.etcd");
    let dd = data_dir.display().to_string();
    let restore_args = single_member_restore_args(&id, &data_dir, "r1", &peer);
    let r = ctl.restorer(&restore_args).ok();
    assert!(!r.stdout.contains("moved aside"), "nothing to move aside the first time:\n{r}");
    assert!(data_dir.join("member").is_dir(), "etcd restore built no member dir:\n{r}");
    {
        let restored = EtcdCluster::start_on_data_dir("r1", &data_dir, &peer);
        let got = restored.get_all().await;
        assert_eq!(got.len(), expected.len(), "key count after restore");
        for (k, v) in &expected {
            assert_eq!(got.get(k), Some(v), "key {k} after restore");
        }
        assert_eq!(got, expected);
        assert!(restored.revision().await >= revision);
    } // the restored member is stopped here

    // a second etcd restore to the same data dir moves the first one aside, never deletes it
    let r = ctl.restorer(&restore_args).ok();
    let old = PathBuf::from(format!("{dd}.old"));
    assert!(
        r.stdout.contains(&old.display().to_string()),
        "the output does not name the moved-aside dir {}:\n{r}",
        old.display()
    );
    assert!(old.join("member").is_dir(), "{} has no member/ dir", old.display());
    assert!(old.join("member/snap/db").is_file(), "{} lost its db", old.display());
    assert!(data_dir.join("member").is_dir(), "the new data dir is in place");
}

// ------------------------------------------------------------------------------------------------
// 2. Deduplication between consecutive backups.

#[tokio::test(flavor = "multi_thread")]
async fn second_backup_after_a_few_changes_deduplicates() {
    let cluster = EtcdCluster::start(3, None);
    // twice the usual data set (~2.6 MB snapshot), so that 15 changed keys are a small change
    let mut kvs = k8s_like(&mut Rng::new(2), 2 * KEYS, VALUE_LEN);
    cluster.put_all(&kvs).await;
    let mut env = VaultEnv::new(StoreKind::Local, "dedup");
    // 16 KiB average chunks: about the same granularity relative to this small snapshot as the
    // default 64 KiB has for real (hundreds of MB) etcd databases
    env.ctl.setup(&["--chunk-avg-kib", "16"]);
    let ctl = &env.ctl;
    let first = ctl.backup(&cluster.endpoints_arg(), &[]);

    // change 10 keys, add 5
    let mut rng = Rng::new(22);
    let mut changes: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (kvs[i * 29].0.clone(), k8s_value(&mut rng, i, VALUE_LEN)))
        .collect();
    changes.extend((0..5).map(|i| (format!("/registry/pods/new/obj-{i}"), k8s_value(&mut rng, 1000 + i, VALUE_LEN))));
    cluster.put_all(&changes).await;
    for (k, v) in &changes {
        match kvs.iter_mut().find(|(kk, _)| kk == k) {
            Some(e) => e.1 = v.clone(),
            None => kvs.push((k.clone(), v.clone())),
        }
    }
    assert_eq!(cluster.get_all().await, to_map(&kvs));
    let revision = cluster.revision().await;

    let second = ctl.backup(&cluster.endpoints_arg(), &[]);
    check_backup_report(&second, &cluster, revision);
    assert_ne!(s(&first, "id"), s(&second, "id"));
    assert_ne!(s(&first, "sha256"), s(&second, "sha256"));
    let (bytes, new_bytes) = (n(&second, "bytes"), n(&second, "new_bytes"));
    eprintln!(
        "first: {} bytes, {} new; second: {bytes} bytes, {new_bytes} new, {} stored",
        n(&first, "bytes"),
        n(&first, "new_bytes"),
        n(&second, "stored_bytes")
    );
    assert!(new_bytes * 4 < bytes, "second backup is not deduplicated: {second:#}");
    assert!(n(&second, "stored_bytes") * 2 < n(&first, "stored_bytes"), "{first:#}\n{second:#}");
    assert!(n(&second, "new_chunks") * 4 < n(&second, "chunks"), "{second:#}");

    assert_eq!(ctl.snapshots().len(), 2);
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
    // the second snapshot shares most chunks with the first: its content still checks out
    let v = ctl.restorer(&["verify", "--all", "--json"]).ok().json();
    assert_eq!(v["snapshots"].as_array().map(|a| a.len()), Some(2), "{v:#}");
    assert_eq!(v["ok"], true, "{v:#}");
}

// ------------------------------------------------------------------------------------------------
// 3. TLS with client-certificate authentication.

#[tokio::test(flavor = "multi_thread")]
async fn tls_cluster_with_client_certificates() {
    let tmp = tempdir("tls");
    let certs = Certs::generate(&tmp.path().join("certs"));
    let cluster = EtcdCluster::start(3, Some(&certs));
    assert!(cluster.endpoints().iter().all(|e| e.starts_with("https://")));
    let kvs = k8s_like(&mut Rng::new(3), 100, 1000);
    cluster.put_all(&kvs).await;
    let revision = cluster.revision().await;

    let mut env = VaultEnv::new(StoreKind::Local, "tls-vault");
    env.ctl.setup(&[]);
    let ctl = &env.ctl;
    let ca = certs.ca.display().to_string();
    let cert = certs.client_cert.display().to_string();
    let key = certs.client_key.display().to_string();
    let eps = cluster.endpoints_arg();

    let report = ctl.backup(&eps, &["--cacert", &ca, "--cert", &cert, "--key", &key]);
    check_backup_report(&report, &cluster, revision);
    assert!(s(&report, "endpoint").starts_with("https://127.0.0.1:"), "{report:#}");

    // the snapshot is real: restore it and let etcdctl read it
    let file = env.path("tls-snapshot.db");
    ctl.restorer(&["restore", &s(&report, "id"), "--to", &file.display().to_string()])
        .ok();
    assert_eq!(sha256_file(&file), s(&report, "sha256"));
    assert_eq!(etcdctl_snapshot_status(&file)["revision"].as_i64(), Some(revision));

    // without the client certificate the members refuse; the error names the endpoints
    let first = &cluster.endpoints()[0];
    let r = ctl
        .writer(&["backup", "etcd", "--endpoints", &eps, "--cacert", &ca])
        .failed()
        .code(6)
        .mentions(&[first]);
    for e in cluster.endpoints() {
        assert!(r.stderr.contains(&e), "error does not name {e}:\n{r}");
    }

    // a CA that did not sign the server certificate is refused too
    let other = Certs::generate(&tmp.path().join("other-certs"));
    ctl.writer(&[
        "backup",
        "etcd",
        "--endpoints",
        first,
        "--cacert",
        &other.ca.display().to_string(),
        "--cert",
        &cert,
        "--key",
        &key,
    ])
    .failed()
    .mentions(&[first]);

    // https endpoints without any TLS files fail cleanly as well (the server wants a client cert)
    ctl.writer(&["backup", "etcd", "--endpoints", first]).failed().mentions(&[first]);

    // failed attempts committed nothing
    assert_eq!(ctl.snapshots().len(), 1);
}

// ------------------------------------------------------------------------------------------------
// 4. A flipped byte in a pack is found, with the writer key and with the identity.

#[tokio::test(flavor = "multi_thread")]
async fn flipped_byte_in_a_pack_fails_verification() {
    let cluster = EtcdCluster::start(1, None);
    cluster.put_all(&dataset(4)).await;
    let mut env = VaultEnv::new(StoreKind::Local, "bitflip");
    env.ctl.setup(&[]);
    let ctl = &env.ctl;
    let report = ctl.backup(&cluster.endpoints_arg(), &[]);
    let id = s(&report, "id");
    ctl.writer(&["verify", "--all", "--read-data"]).ok();

    let packs = objects(&env.vault_dir().join("data"));
    assert!(!packs.is_empty(), "no pack under {}/data", env.vault_dir().display());
    let victim = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack");
    let mut bytes = std::fs::read(victim).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(victim, &bytes).expect("write pack");

    let r = ctl
        .writer(&["verify", "--all", "--read-data"])
        .failed()
        .code(3)
        .mentions(&[&id[..8], "FAILED"]);
    let pack_name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        r.stdout.contains(&pack_name),
        "the failure does not name the pack {pack_name}:\n{r}"
    );
    ctl.restorer(&["verify", "--all"]).failed().code(3).mentions(&[&id[..8], "FAILED"]);
    ctl.restorer(&["verify", &id[..8]]).failed().code(3).mentions(&[&id[..8]]);
    // the JSON report says which snapshot failed
    let v = ctl.writer(&["verify", "--all", "--read-data", "--json"]).failed().code(3).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["snapshots"][0]["ok"], false);

    // a restore refuses to produce a damaged file
    let file = env.path("from-damaged.db");
    ctl.restorer(&["restore", &id, "--to", &file.display().to_string()])
        .failed()
        .code(3);
    assert!(!file.exists(), "a damaged restore left a file behind");
}

// ------------------------------------------------------------------------------------------------
// 5. A capture killed mid-stream leaves no snapshot, and its uploads are reused.

/// Raw bytes of the distinct chunks the vault's index segments list (read with the library).
async fn indexed_raw_bytes(vault_dir: &Path, writer_key: &Path) -> (u64, usize) {
    let store = vault::store::Store::open(&vault_dir.display().to_string(), &Default::default()).expect("open store");
    let keys = vault::repo::KeySource {
        writer_key: Some(writer_key.to_path_buf()),
        identity: None,
        trust: Default::default(),
    };
    let vault = vault::repo::Vault::open(store, &keys).await.expect("open vault");
    let mut seen = HashSet::new();
    let mut raw = 0u64;
    let segments = vault.list_ids(vault::format::INDEX_PREFIX).await.expect("list index");
    for seg in &segments {
        for p in vault.read_index(seg).await.expect("read index segment").packs {
            for b in p.blobs {
                if seen.insert(b.id.hex()) {
                    raw += u64::from(b.raw_length);
                }
            }
        }
    }
    (raw, segments.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_killed_mid_stream_leaves_no_snapshot_and_is_resumed() {
    let cluster = EtcdCluster::start(1, None);
    // a small baseline so there is a snapshot to keep verifying
    cluster.put_all(&k8s_like(&mut Rng::new(5), 50, 1000)).await;
    let mut env = VaultEnv::new(StoreKind::Local, "killed");
    env.ctl.setup(&["--pack-size-mib", "1"]);
    let ctl = env.ctl.clone();
    let baseline = ctl.backup(&cluster.endpoints_arg(), &[]);
    let (baseline_raw, baseline_segments) = indexed_raw_bytes(&env.vault_dir(), &ctl.writer_key).await;

    cluster.put_all(&big_values(55)).await;

    let wk = ctl.writer_key.display().to_string();
    let eps = cluster.endpoints_arg();
    let index_dir = env.vault_dir().join("index");
    let data_dir = env.vault_dir().join("data");
    let packs_before = objects(&data_dir).len();
    let mut backup = ctl.spawn(
        "killed",
        &[
            "--repo",
            &ctl.repo,
            "--writer-key",
            &wk,
            "backup",
            "etcd",
            "--json",
            "--endpoints",
            &eps,
        ],
    );
    // wait until at least one new pack and its index segment are stored, then SIGKILL
    backup.while_running_until(Duration::from_secs(60), "make the data bigger", || {
        objects(&data_dir).len() > packs_before && objects(&index_dir).len() > baseline_segments
    });
    let status = backup.kill();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "vaultctl was not killed mid-stream (it exited on its own: {status}); make the data bigger"
    );
    eprintln!(
        "killed vaultctl after {:?}: {} pack(s) stored",
        backup.started.elapsed(),
        objects(&data_dir).len() - packs_before
    );
    assert!(backup.stdout().trim().is_empty(), "the killed backup printed a report");

    // no new snapshot, and the vault still verifies
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 1, "the killed capture left a snapshot: {snaps:#?}");
    assert_eq!(s(&snaps[0], "id"), s(&baseline, "id"));
    assert_eq!(objects(&env.vault_dir().join("snapshots")).len(), 1);
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
    ctl.restorer(&["verify", "--all"]).ok();

    // the uploads of the killed run are indexed...
    let (indexed_raw, _) = indexed_raw_bytes(&env.vault_dir(), &ctl.writer_key).await;
    let reusable = indexed_raw - baseline_raw;
    // ...and the next backup succeeds and does not upload them again
    let revision = cluster.revision().await;
    let next = ctl.backup(&cluster.endpoints_arg(), &[]);
    check_backup_report(&next, &cluster, revision);
    let (bytes, new_bytes) = (n(&next, "bytes"), n(&next, "new_bytes"));
    eprintln!("after the kill: {reusable} raw bytes indexed; next backup: {bytes} bytes, {new_bytes} new");
    assert!(new_bytes < bytes, "{next:#}");
    assert!(reusable >= 1 << 20, "the killed run indexed less than a pack: {reusable}");
    // same member, same revision, no writes since: the same stream, so every chunk the killed run
    // stored counts as already there
    assert!(
        bytes - new_bytes >= reusable,
        "the next backup did not reuse the killed run's packs ({reusable} raw bytes indexed): {next:#}"
    );
    assert_eq!(ctl.snapshots().len(), 2);
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
}

// ------------------------------------------------------------------------------------------------
// 6. Bad input gets clear errors and a non-zero exit.

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors() {
    let cluster = EtcdCluster::start(1, None);
    cluster.put_all(&k8s_like(&mut Rng::new(6), 60, 1000)).await;
    let mut env = VaultEnv::new(StoreKind::Local, "bad-input");
    env.ctl.setup(&[]);
    let ctl = env.ctl.clone();
    let eps = cluster.endpoints_arg();
    let id = s(&ctl.backup(&eps, &[]), "id");

    // an identity that is not a recipient of this vault
    let (stranger, _) = ctl.keygen("stranger.txt");
    let stranger = stranger.display().to_string();
    let file = env.path("out/snapshot.db");
    let file_arg = file.display().to_string();
    let r = ctl
        .run(&["--repo", &ctl.repo, "--identity", &stranger, "restore", &id, "--to", &file_arg])
        .failed()
        .code(4);
    assert!(
        r.stderr.contains("identity") && r.stderr.contains("recipient"),
        "the error does not explain the identity is not a recipient:\n{r}"
    );
    assert!(!file.exists());
    let dd = env.path("out/r1.etcd").display().to_string();
    ctl.run(&[
        "--repo",
        &ctl.repo,
        "--identity",
        &stranger,
        "etcd",
        "restore",
        &id,
        "--data-dir",
        &dd,
        "--name",
        "r1",
        "--initial-cluster",
        "r1=http://127.0.0.1:2380",
        "--initial-cluster-token",
        "t",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ])
    .failed()
    .code(4)
    .mentions(&["recipient"]);
    assert!(!Path::new(&dd).exists());
    // restoring with only the writer key is refused: it cannot decrypt content
    ctl.writer(&["restore", &id, "--to", &file_arg])
        .failed()
        .code(4)
        .mentions(&["identity"]);

    // no key at all for a backup
    let r = ctl.repo(&["backup", "etcd", "--endpoints", &eps]).failed().code(4);
    assert!(
        r.stderr.contains("key") && r.stderr.contains("--writer-key"),
        "the error does not say a key is needed:\n{r}"
    );

    // an etcd endpoint nobody listens on
    let dead = format!("http://127.0.0.1:{}", vault_e2e::ports::closed_port());
    let t = Instant::now();
    let r = ctl
        .writer(&["backup", "etcd", "--endpoints", &dead])
        .failed()
        .code(6)
        .mentions(&[&dead]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "an unreachable endpoint took {:?}:\n{r}",
        t.elapsed()
    );
    // a dead endpoint first and a live one second: the live one is used, the dead one reported
    let v = ctl.backup(&format!("{dead},{eps}"), &[]);
    assert_eq!(s(&v, "endpoint"), eps);
    assert!(v["skipped_endpoints"].to_string().contains(&dead), "{v:#}");

    // an S3 store nobody listens on
    let s3_port = vault_e2e::ports::closed_port();
    let s3_ctl = Ctl::new(
        &env.path("s3-ctl"),
        "s3://nowhere/vault",
        moto::s3_env(&format!("http://127.0.0.1:{s3_port}")),
    );
    let wk = ctl.writer_key.display().to_string();
    let t = Instant::now();
    let r = s3_ctl
        .run(&["--repo", "s3://nowhere/vault", "--writer-key", &wk, "snapshots"])
        .failed()
        .code(5)
        .mentions(&[&format!("127.0.0.1:{s3_port}")]);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "an unreachable S3 endpoint took {:?}:\n{r}",
        t.elapsed()
    );
    s3_ctl
        .run(&[
            "--repo",
            "s3://nowhere/vault",
            "--writer-key",
            &wk,
            "backup",
            "etcd",
            "--endpoints",
            &eps,
        ])
        .failed()
        .code(5)
        .mentions(&[&format!("127.0.0.1:{s3_port}")]);

    // a local vault path that does not exist
    let missing = env.path("no/such/vault").display().to_string();
    ctl.run(&["--repo", &missing, "--writer-key", &wk, "snapshots"])
        .failed()
        .mentions(&[&missing, "no vault"]);
    ctl.run(&["--repo", &missing, "--writer-key", &wk, "backup", "etcd", "--endpoints", &eps])
        .failed()
        .mentions(&[&missing]);
    assert!(!Path::new(&missing).exists(), "a failed command created the vault directory");

    // init over an existing vault refuses and changes nothing
    let config = env.vault_dir().join("config");
    let config_before = std::fs::read(&config).expect("config");
    let wk2 = env.path("ctl/writer2.key");
    ctl.repo(&[
        "init",
        "--recipient",
        &ctl.recipient,
        "--writer-key-out",
        &wk2.display().to_string(),
    ])
    .failed()
    .mentions(&["already exists"]);
    assert_eq!(std::fs::read(&config).unwrap(), config_before, "init modified an existing vault");
    assert!(!wk2.exists(), "a refused init wrote a writer key");
    // ...and never overwrites an existing writer key file either
    let elsewhere = env.path("other-vault").display().to_string();
    ctl.run(&["--repo", &elsewhere, "init", "--recipient", &ctl.recipient, "--writer-key-out", &wk])
        .failed()
        .mentions(&["already exists"]);

    // an unknown snapshot id
    ctl.restorer(&["restore", "deadbeef00", "--to", &file_arg])
        .failed()
        .mentions(&["deadbeef00"]);

    // a truncated pack is found by verify (by size, without even downloading), and restore refuses
    let packs = objects(&env.vault_dir().join("data"));
    assert!(!packs.is_empty());
    for p in &packs {
        let len = std::fs::metadata(p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len / 2).unwrap();
    }
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 2);
    let r = ctl.writer(&["verify", "--all"]).failed().code(3);
    for snap in &snaps {
        assert!(
            r.text().contains(&s(snap, "id")[..8]),
            "verify does not name {}:\n{r}",
            s(snap, "id")
        );
    }
    ctl.writer(&["verify", "--all", "--read-data"])
        .failed()
        .code(3)
        .mentions(&[&id[..8]]);
    ctl.restorer(&["verify", &id]).failed().code(3).mentions(&[&id[..8]]);
    ctl.restorer(&["restore", &id, "--to", &file_arg]).failed();
    assert!(!file.exists());
}

// ------------------------------------------------------------------------------------------------
// Failures in the middle of a capture: vaultctl fails (never hangs), names the culprit, and
// commits nothing.

/// ~24 MiB of incompressible values: a capture that takes seconds in a debug build.
fn big_values(seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    (0..96).map(|i| (format!("/big/{i:04}"), rng.bytes(256 * 1024))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn store_failing_mid_capture_fails_cleanly() {
    let cluster = EtcdCluster::start(1, None);
    cluster.put_all(&big_values(7)).await;

    let tmp = tempdir("s3-dies");
    let mut moto = Moto::start();
    moto.create_bucket("dies");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), "s3://dies/vault", moto.env());
    ctl.setup(&["--pack-size-mib", "1"]);
    let wk = ctl.writer_key.display().to_string();
    let eps = cluster.endpoints_arg();
    let mut backup = ctl.spawn(
        "s3-dies",
        &["--repo", &ctl.repo, "--writer-key", &wk, "backup", "etcd", "--endpoints", &eps],
    );
    backup.while_running_until(Duration::from_secs(60), "make the data bigger", || {
        !moto.list_keys("dies", "vault/index/").is_empty()
    });
    moto.stop();
    let stopped = Instant::now();

    // it must give up on its own, with an error naming the store
    let Some(status) = backup.wait_timeout(Duration::from_secs(90)) else {
        panic!("vaultctl hung for 90 s after the store went away:\n{}", backup.stderr());
    };
    let stderr = backup.stderr();
    eprintln!("vaultctl exited ({status}) {:?} after the store stopped", stopped.elapsed());
    assert_eq!(status.code(), Some(5), "expected a store error (exit 5):\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", moto.port)),
        "the error does not name the store:\n{stderr}"
    );
    assert!(backup.stdout().trim().is_empty(), "a failed backup printed an id");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_member_dying_mid_stream_commits_nothing() {
    let mut cluster = EtcdCluster::start(1, None);
    cluster.put_all(&big_values(8)).await;
    let mut env = VaultEnv::new(StoreKind::Local, "etcd-dies");
    env.ctl.setup(&["--pack-size-mib", "1"]);
    let ctl = env.ctl.clone();
    let wk = ctl.writer_key.display().to_string();
    let eps = cluster.endpoints_arg();
    let index_dir = env.vault_dir().join("index");
    let mut backup = ctl.spawn(
        "etcd-dies",
        &["--repo", &ctl.repo, "--writer-key", &wk, "backup", "etcd", "--endpoints", &eps],
    );
    backup.while_running_until(Duration::from_secs(60), "make the data bigger", || !objects(&index_dir).is_empty());
    cluster.members[0].kill();

    let Some(status) = backup.wait_timeout(Duration::from_secs(90)) else {
        panic!("vaultctl hung for 90 s after etcd died:\n{}", backup.stderr());
    };
    let stderr = backup.stderr();
    assert_eq!(status.code(), Some(6), "expected a source error (exit 6):\n{stderr}");
    assert!(stderr.contains(&eps), "the error does not name the endpoint:\n{stderr}");
    assert!(backup.stdout().trim().is_empty(), "a failed backup printed an id");
    assert!(
        objects(&env.vault_dir().join("snapshots")).is_empty(),
        "a broken stream was committed"
    );
    assert!(ctl.snapshots().is_empty());
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
}
