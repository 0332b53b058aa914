//! End-to-end: `vaultctl prune` on real vaults, local and S3 (moto): (a) forgotten snapshots'
//! data freed with `--grace 0` and the rest verifies with a full data read; (b) a capture between
//! pass 1 and pass 2 stores again what is pending and loses nothing; (c) a prune killed (SIGKILL)
//! mid-run leaves a vault that verifies and the next prune finishes; (d) a second prune is refused
//! while another holds the lock. Run `cargo build -p vaultctl` first.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vault::repo::{KeySource, Vault};
use vault::store::{S3Options, Store};
use vault::trust::TrustOptions;
use vault_e2e::{Ctl, Moto, n, s, tempdir};

/// A vault (local, or on moto when given) and a host tree to capture from.
struct Setup {
    _tmp: tempfile::TempDir,
    ctl: Ctl,
    root: PathBuf,
    s3: Option<S3Options>,
    _moto: Option<Moto>,
}

fn local(label: &str) -> Setup {
    let tmp = tempdir(label);
    let repo = tmp.path().join("vault");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo.display().to_string(), Vec::new());
    ctl.setup(&[]);
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    Setup {
        _tmp: tmp,
        ctl,
        root,
        s3: None,
        _moto: None,
    }
}

fn on_s3(label: &str) -> Setup {
    let moto = Moto::start();
    moto.create_bucket(label);
    let tmp = tempdir(label);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &format!("s3://{label}/vault"), moto.env());
    ctl.setup(&[]);
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    Setup {
        _tmp: tmp,
        ctl,
        root,
        s3: Some(moto.s3_options()),
        _moto: Some(moto),
    }
}

/// Incompressible bytes, distinct per seed.
fn noise(seed: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&[seed, 0x5a]);
    h.finalize_xof().fill(&mut out);
    out
}

impl Setup {
    /// `backup files` of `/etc/origin` holding `big.bin` = noise(seed); the report.
    fn capture(&self, seed: u8) -> Value {
        fs::write(self.root.join("etc/origin/big.bin"), noise(seed, 1_500_000)).unwrap();
        fs::write(self.root.join("etc/origin/master-config.yaml"), "kept: everywhere\n").unwrap();
        let root = self.root.display().to_string();
        self.ctl
            .writer(&[
                "backup",
                "files",
                "--json",
                "--root",
                &root,
                "--path",
                "/etc/origin",
                "--no-packages",
                "--job",
                "nightly",
            ])
            .ok()
            .json()
    }

    fn prune(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json", "prune"];
        all.extend_from_slice(args);
        self.ctl.restorer(&all).ok().json()
    }

    /// Every snapshot verifies with a full data read (identity).
    fn verify_all(&self) {
        self.ctl.restorer(&["verify", "--all", "--read-data"]).ok();
    }

    fn store(&self) -> Store {
        match &self.s3 {
            Some(o) => Store::open(&self.ctl.repo, o).unwrap(),
            None => Store::open(&self.ctl.repo, &Default::default()).unwrap(),
        }
    }

    async fn count(&self, prefix: &str) -> usize {
        self.store().list(prefix).await.unwrap().len()
    }

    async fn vault(&self) -> Vault {
        let keys = KeySource {
            writer_key: Some(self.ctl.writer_key.clone()),
            identity: None,
            trust: TrustOptions {
                fingerprint: None,
                known_vaults: Some(self.ctl.dir.join("config/vault/known_vaults.json")),
            },
        };
        Vault::open(self.store(), &keys).await.expect("open the vault in the test")
    }

    fn ids(&self) -> Vec<String> {
        self.ctl.snapshots().iter().map(|v| s(v, "id")).collect()
    }
}

/// (a) Three captures, all but the newest forgotten, `prune --grace 0`: their manifests and data
/// go, the deletion log says so, the newest verifies with a full data read.
async fn frees_the_forgotten(x: &Setup) {
    let a = s(&x.capture(1), "id");
    let b = s(&x.capture(2), "id");
    let c = s(&x.capture(3), "id");
    let packs_before = x.count("data/").await;
    x.ctl.writer(&["forget", "--keep-last", "1", "--confirm"]).ok();
    // A dry run says what it would do and changes nothing.
    let dry = x.prune(&["--grace", "0", "--dry-run"]);
    assert_eq!(dry["snapshots_removed"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(x.ids().len(), 3);
    assert_eq!(x.count("data/").await, packs_before);

    let r = x.prune(&["--grace", "0"]);
    let removed: Vec<String> = r["snapshots_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed.len(), 2, "{r}");
    assert!(removed.contains(&a) && removed.contains(&b), "{r}");
    assert!(n(&r, "bytes_freed") >= 2 * 1_400_000, "{r}");
    assert!(n(&r, "packs_deleted") >= 2, "{r}");
    assert!(r["log_record"].as_u64().is_some(), "{r}");
    assert_eq!(x.ids(), vec![c.clone()]);
    // The first capture's pack also holds master-config.yaml, which the kept snapshot shares:
    // mostly unused, it was repacked (with the identity) and its used chunk copied.
    assert!(n(&r, "packs_rewritten") >= 1, "{r}");
    assert_eq!(
        x.count("data/").await,
        packs_before + n(&r, "repack_new_packs") as usize - n(&r, "packs_deleted") as usize,
        "{r}"
    );
    x.verify_all();
    let log = x.ctl.writer(&["--json", "deletion-log"]).ok().json();
    assert!(log.to_string().contains("\"prune\""), "{log}");
    // Nothing left to do; the lock was released.
    let again = x.prune(&["--grace", "0"]);
    assert_eq!(
        (n(&again, "packs_deleted"), again["snapshots_removed"].as_array().unwrap().len()),
        (0, 0),
        "{again}"
    );
}

/// A snapshot held after it was forgotten is not pruned (a hold wins over retention), and the run
/// says so; released and pruned again, it goes.
async fn held_after_forget_survives(x: &Setup) {
    let a = s(&x.capture(1), "id");
    let b = s(&x.capture(2), "id");
    x.ctl.writer(&["forget", "--keep-last", "1", "--confirm"]).ok();
    x.ctl.writer(&["hold", &a[..12], "--reason", "INC-9: evidence"]).ok();
    let r = x.prune(&["--grace", "0"]);
    assert_eq!(r["snapshots_removed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["held"][0], a.as_str(), "{r}");
    assert_eq!(x.ids(), vec![a.clone(), b.clone()]);
    x.ctl.restorer(&["prune", "--grace", "0"]).ok().mentions(&["held", &a[..8]]);
    x.ctl.writer(&["release", &a[..12], "--reason", "INC-9 closed"]).ok();
    let r = x.prune(&["--grace", "0"]);
    assert_eq!(r["snapshots_removed"][0], a.as_str(), "{r}");
    assert_eq!(x.ids(), vec![b]);
    x.verify_all();
}

/// (b) Pass 1, then a capture of what is pending (it must store it again), then pass 2 after the
/// grace period: the forgotten snapshot goes, the new capture verifies.
async fn capture_between_passes(x: &Setup) {
    let _a = x.capture(1);
    x.capture(2);
    x.ctl.writer(&["forget", "--keep-last", "1", "--confirm"]).ok();
    let p1 = x.prune(&["--grace", "4s"]);
    assert_eq!(n(&p1, "packs_deleted"), 0, "{p1}");
    assert!(n(&p1["pending_recorded"], "packs") >= 1, "{p1}");
    assert_eq!(x.count("prune/pending/").await, 1);
    // The same content as the forgotten snapshot: not deduplicated against pending packs.
    let c = x.capture(1);
    assert!(
        n(&c, "new_bytes") >= 1_400_000,
        "the capture deduplicated against pending packs: {c}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let p2 = x.prune(&["--grace", "4s"]);
    assert_eq!(p2["snapshots_removed"].as_array().unwrap().len(), 1, "{p2}");
    assert!(n(&p2, "packs_deleted") >= 1, "{p2}");
    assert_eq!(p2["pending_processed"].as_array().unwrap().len(), 1, "{p2}");
    assert_eq!(x.ids().len(), 2);
    x.verify_all();
}

/// (c) A prune killed with SIGKILL mid-run (after it took the lock, while marking or repacking),
/// then one killed while deleting if it gets that far: the kept snapshot verifies after each;
/// the next prune is refused while the dead run's lease lasts, then breaks it and finishes.
async fn killed_mid_run(x: &Setup) {
    for seed in 10..18 {
        x.capture(seed);
    }
    x.ctl.writer(&["forget", "--keep-last", "1", "--confirm"]).ok();
    let mut logged = Ctl::new(&x.ctl.dir, &x.ctl.repo, x.ctl.env.clone());
    logged.env.push(("VAULT_LOG".into(), "info".into()));
    logged.identity = x.ctl.identity.clone();
    let id = x.ctl.identity.display().to_string();
    let args = [
        "--repo",
        x.ctl.repo.as_str(),
        "--identity",
        id.as_str(),
        "prune",
        "--grace",
        "0",
        "--lease",
        "10s",
    ];

    let mut p = logged.spawn("prune-killed-1", &args);
    let err = p.err.clone();
    p.while_running_until(Duration::from_secs(60), "prune ends before it marks", || {
        fs::read_to_string(&err).unwrap_or_default().contains("prune: marking")
    });
    assert!(!p.kill().success());
    x.verify_all();
    x.ctl
        .restorer(&["prune", "--grace", "0"])
        .failed()
        .mentions(&["another prune holds the prune lock", "lease until"]);

    // After the lease: a run killed while it deletes, if the kill lands in time.
    std::thread::sleep(Duration::from_secs(11));
    let mut p = logged.spawn("prune-killed-2", &args);
    let deleting = vault_e2e::wait_for(Duration::from_secs(60), Duration::from_millis(2), || {
        (p_stderr(&p).contains("prune: deleting") || p.exited().is_some()).then_some(())
    });
    assert!(deleting.is_some(), "the second prune neither deleted nor ended");
    let status = p.kill();
    assert!(p_stderr(&p).contains("broke the prune lock"), "{}", p_stderr(&p));
    eprintln!("second prune: {status}; {} snapshot(s) left", x.ids().len());
    x.verify_all();

    // The next prune finishes (once the killed run's lease ran out) and leaves nothing to do.
    let r = vault_e2e::wait_for(Duration::from_secs(30), Duration::from_secs(1), || {
        let r = x.ctl.restorer(&["--json", "prune", "--grace", "0"]);
        (r.code == Some(0)).then(|| r.json())
    })
    .expect("a prune after the killed ones finishes");
    assert_eq!(x.ids().len(), 1, "{r}");
    x.verify_all();
    let again = x.prune(&["--grace", "0"]);
    assert_eq!(n(&again, "packs_deleted"), 0, "the first full run left work: {again}");
    assert_eq!(n(&again, "packs_rewritten"), 0, "{again}");
}

fn p_stderr(p: &vault_e2e::Spawned) -> String {
    fs::read_to_string(&p.err).unwrap_or_default()
}

/// (d) While another prune holds the lock, prune is refused, naming the holder; then it runs.
async fn refused_while_locked(x: &Setup) {
    x.capture(1);
    let vault = x.vault().await;
    let guard = vault::ops::prune::lock::PruneLockGuard::take(&vault, "other-host", chrono::Duration::minutes(5), 0)
        .await
        .unwrap();
    x.ctl
        .restorer(&["prune", "--grace", "0"])
        .failed()
        .mentions(&["another prune holds the prune lock", "other-host", &guard.info.owner]);
    guard.release(&vault).await.unwrap();
    x.prune(&["--grace", "0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_a_snapshot_held_after_it_was_forgotten() {
    held_after_forget_survives(&local("prune-held")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_frees_forgotten_data_local() {
    frees_the_forgotten(&local("prune-a")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_frees_forgotten_data_s3() {
    frees_the_forgotten(&on_s3("prune-a")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_capture_between_passes_loses_nothing_local() {
    capture_between_passes(&local("prune-b")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_capture_between_passes_loses_nothing_s3() {
    capture_between_passes(&on_s3("prune-b")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_killed_mid_run_then_the_next_finishes_local() {
    killed_mid_run(&local("prune-c")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_killed_mid_run_then_the_next_finishes_s3() {
    killed_mid_run(&on_s3("prune-c")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_refused_while_another_holds_the_lock_local() {
    refused_while_locked(&local("prune-d")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_refused_while_another_holds_the_lock_s3() {
    refused_while_locked(&on_s3("prune-d")).await;
}
