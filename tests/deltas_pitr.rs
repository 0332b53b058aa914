//! Point-in-time restore against etcd's own answer (issue 10's oracle). etcd serves old revisions
//! until it compacts, so `get --prefix "" --rev R` is the exact keyspace at R. vaultd captures a
//! real etcd 3.4 continuously (`deltas_every_secs = 1`) while the test writes puts, overwrites,
//! deletes, multi-op transactions, keys with leases (revoked, expired, kept) and takes a second
//! base snapshot halfway; then `vaultctl etcd restore --revision R` (and `--at TIME`) at several
//! revisions builds a data dir, an etcd started on it must hold exactly etcd's answer at R: every
//! key, value, create and mod revision, version and lease, at revision R. Run `cargo build
//! --workspace` first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use vault::repo::{KeySource, Vault};
use vault_e2e::daemon::{get, request, vaultd_run, write_private};
use vault_e2e::data::{Rng, k8s_like, k8s_value};
use vault_e2e::process::Proc;
use vault_e2e::vaultctl::member_restore_args;
use vault_e2e::{Ctl, EtcdCluster, free_port, tempdir, wait_for};

const TOKEN: &str = "deltas-pitr-token";

/// One key as etcd reports it: value, create revision, mod revision, version, lease.
type KeyState = (Vec<u8>, i64, i64, i64, i64);

async fn state_at(client: &mut Client, revision: i64) -> (i64, BTreeMap<Vec<u8>, KeyState>) {
    let r = client
        .get("", Some(GetOptions::new().with_all_keys().with_revision(revision)))
        .await
        .unwrap_or_else(|e| panic!("get --rev {revision}: {e}"));
    let header = r.header().expect("header").revision();
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                (
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                ),
            )
        })
        .collect();
    (header, kvs)
}

fn config(dir: &Path, ctl: &Ctl, endpoints: &str, port: u16) -> String {
    format!(
        r#"repo = "{repo}"
writer_key = "{wk}"
catalog = "{catalog}"
host = "master-1"
[http]
listen = "127.0.0.1:{port}"
token_file = "{token}"

[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "0 0 3 * * *"
timeout_secs = 60
deltas_every_secs = 1
deltas_lease_secs = 6
[job.etcd]
endpoints = ["{endpoints}"]
"#,
        repo = ctl.repo,
        wk = ctl.writer_key.display(),
        catalog = dir.join("catalog.sqlite").display(),
        token = dir.join("token").display(),
    )
}

/// Run the etcd job now (through the API) and wait for its snapshot.
fn take_base(port: u16, daemon: &Proc) {
    let (code, body) = request(port, "POST", "/v1/jobs/etcd/run", Some(TOKEN)).expect("POST run");
    assert_eq!(code, 202, "run the etcd job: {body}\n{}", daemon.log_tail(40));
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = started["url"].as_str().expect("the run's url").to_string();
    wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
        let (_, body) = get(port, &url, Some(TOKEN))?;
        let run: serde_json::Value = serde_json::from_str(&body).ok()?;
        match run["state"].as_str() {
            Some("success") => Some(()),
            Some("running") | None => None,
            Some(other) => panic!("the base snapshot run ended {other}: {run:#}\n{}", daemon.log_tail(40)),
        }
    })
    .unwrap_or_else(|| panic!("no base snapshot within 60 s\n{}", daemon.log_tail(40)));
}

/// The highest revision some chain of job `etcd` covers without a hole.
async fn covered(repo: &str, writer_key: &Path) -> i64 {
    let store = vault::store::Store::open(repo, &Default::default()).expect("open store");
    let keys = KeySource {
        writer_key: Some(writer_key.to_path_buf()),
        identity: None,
        trust: Default::default(),
    };
    let vault = Vault::open(store, &keys).await.expect("open vault");
    let mut best = 0;
    for base in vault::ops::deltas::chain::list_bases(&vault, "etcd").await.expect("list chains") {
        let m = vault.read_snapshot(&base).await.expect("read base");
        let rev = m.etcd_v3.expect("an etcd-v3 base").revision;
        let chain = vault::ops::deltas::chain::read_chain(&vault, "etcd", &base, rev)
            .await
            .expect("read chain");
        best = best.max(chain.whole_until(rev));
    }
    best
}

#[test]
fn restore_at_a_revision_or_time_equals_etcds_own_answer_at_that_revision() {
    let tmp = tempdir("deltas-pitr");
    let dir = tmp.path();
    let etcd = EtcdCluster::start(1, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = Rng::new(42);
    rt.block_on(etcd.put_all(&k8s_like(&mut rng, 200, 800)));
    let repo = dir.join("vault").display().to_string();
    let mut ctl = Ctl::new(&dir.join("ctl"), &repo, Vec::new());
    ctl.setup(&[]);
    write_private(&dir.join("token"), TOKEN);
    let port = free_port();
    let cfg = dir.join("vaultd.toml");
    write_private(&cfg, &config(dir, &ctl, &etcd.endpoints()[0], port));
    let daemon = Proc::spawn("vaultd", &mut vaultd_run(&cfg), &dir.join("vaultd.log"));
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || get(port, "/healthz", None))
        .unwrap_or_else(|| panic!("vaultd did not come up:\n{}", daemon.log_tail(40)));
    take_base(port, &daemon);

    // The write load, with checkpoints: (what, revision, wall time just after it).
    let mut checkpoints: Vec<(String, i64, Option<chrono::DateTime<chrono::Utc>>)> = Vec::new();
    let mut client = rt.block_on(etcd.client());
    let key = |i: u64| format!("/registry/pods/ns{}/load-{i:04}", i % 5);
    let long_lease = rt.block_on(client.lease_grant(600, None)).expect("grant").id();
    let short_lease = rt.block_on(client.lease_grant(3, None)).expect("grant").id();
    for i in 0..4 {
        let opts = PutOptions::new().with_lease(short_lease);
        rt.block_on(client.put(format!("/registry/leases/short-{i}"), b"expires".to_vec(), Some(opts)))
            .expect("put");
    }
    let revoked = rt.block_on(client.lease_grant(600, None)).expect("grant").id();
    let started = Instant::now();
    for step in 0..700u64 {
        let rev = match step % 10 {
            0..=4 => {
                let k = key(rng.next_u64() % 300);
                let len = 300 + (rng.next_u64() % 3000) as usize;
                let v = k8s_value(&mut rng, step as usize, len);
                rt.block_on(client.put(k, v, None)).expect("put").header().unwrap().revision()
            }
            5 => {
                let k = key(rng.next_u64() % 300);
                rt.block_on(client.delete(k, None)).expect("delete").header().unwrap().revision()
            }
            6 => {
                // A transaction: two puts and a delete at one revision.
                let i = rng.next_u64() % 298; // three distinct keys: etcd refuses a txn that names one twice
                let (a, b, c) = (key(i), key(i + 1), key(i + 2));
                let txn = Txn::new().when([Compare::version(a.clone(), CompareOp::NotEqual, -1)]).and_then([
                    TxnOp::put(a, k8s_value(&mut rng, 1, 500), None),
                    TxnOp::put(b, k8s_value(&mut rng, 2, 700), None),
                    TxnOp::delete(c, None),
                ]);
                rt.block_on(client.txn(txn)).expect("txn").header().unwrap().revision()
            }
            7 => {
                // The lease revoked at step 400 takes half the leased puts before then.
                let lease = if step % 20 == 7 || step > 400 { long_lease } else { revoked };
                let opts = PutOptions::new().with_lease(lease);
                let k = format!("/registry/leases/held-{}", rng.next_u64() % 40);
                rt.block_on(client.put(k, k8s_value(&mut rng, 3, 200), Some(opts)))
                    .expect("put with lease")
                    .header()
                    .unwrap()
                    .revision()
            }
            _ => {
                // A range delete now and then.
                let prefix = format!("/registry/pods/ns{}/load-00", rng.next_u64() % 5);
                rt.block_on(client.delete(prefix, Some(etcd_client::DeleteOptions::new().with_prefix())))
                    .expect("range delete")
                    .header()
                    .unwrap()
                    .revision()
            }
        };
        match step {
            106 => checkpoints.push(("a transaction".into(), rev, None)),
            250 => {
                // Idle for a moment: a checkpoint for --at, then a new base mid-load.
                std::thread::sleep(Duration::from_millis(1500));
                checkpoints.push(("before a second base (and --at)".into(), rev, Some(chrono::Utc::now())));
                std::thread::sleep(Duration::from_millis(500));
                take_base(port, &daemon);
            }
            400 => {
                let r = rt.block_on(client.lease_revoke(revoked)).expect("revoke");
                checkpoints.push(("after a lease revoke".into(), r.header().unwrap().revision(), None));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    let (last, _) = rt.block_on(state_at(&mut client, 0));
    checkpoints.push(("the last write (short-lease keys long expired)".into(), last, None));
    eprintln!(
        "load: 700 operations in {:.1} s, up to revision {last}",
        started.elapsed().as_secs_f64()
    );

    wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        (rt.block_on(covered(&repo, &ctl.writer_key)) >= last).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the delta chains did not reach revision {last} within 60 s\n{}",
            daemon.log_tail(60)
        )
    });

    for (n, (what, rev, at)) in checkpoints.iter().enumerate() {
        let (_, want) = rt.block_on(state_at(&mut client, *rev));
        for by_time in [false, true] {
            if by_time && at.is_none() {
                continue;
            }
            let data_dir = dir.join(format!("restored-{n}-{by_time}"));
            let peer = format!("http://127.0.0.1:{}", free_port());
            let target = if by_time {
                vec!["--at".to_string(), at.unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)]
            } else {
                vec!["--revision".to_string(), rev.to_string()]
            };
            let target: Vec<&str> = target.iter().map(String::as_str).collect();
            let args = member_restore_args(&target, &data_dir, "pitr", &peer);
            let run = ctl.restorer(&args);
            assert!(
                run.code == Some(0),
                "restore at {what} (revision {rev}, by time: {by_time}):\n{run}"
            );
            let restored = EtcdCluster::start_on_data_dir("pitr", &data_dir, &peer);
            let mut rc = rt.block_on(restored.client());
            let (reached, got) = rt.block_on(state_at(&mut rc, 0));
            assert_eq!(reached, *rev, "the restored etcd is at revision {reached}, not {rev} ({what})");
            let differing: Vec<String> = want
                .keys()
                .chain(got.keys())
                .filter(|k| want.get(*k) != got.get(*k))
                .take(5)
                .map(|k| {
                    let show = |s: Option<&KeyState>| {
                        s.map(|(v, c, m, ver, l)| format!("{} bytes c{c} m{m} v{ver} lease {l:x}", v.len()))
                            .unwrap_or_else(|| "absent".into())
                    };
                    format!(
                        "{}: want {}, got {}",
                        String::from_utf8_lossy(k),
                        show(want.get(k)),
                        show(got.get(k))
                    )
                })
                .collect();
            assert!(
                differing.is_empty(),
                "restore at {what} (revision {rev}, by time: {by_time}) differs from etcd's answer at that revision ({} keys wanted, {} restored):\n{}",
                want.len(),
                got.len(),
                differing.join("\n")
            );
            eprintln!(
                "restored at {what}: revision {rev}, {} keys, equal (by time: {by_time})",
                want.len()
            );
        }
    }
    assert!(
        checkpoints.len() >= 4,
        "the checkpoints cover a transaction, a base change, a revoke and the end"
    );

    // The listing sums each base's chain up; --deltas lists the segments.
    let mut daemon = daemon;
    assert!(
        daemon.terminate(Duration::from_secs(30)).is_some_and(|s| s.success()),
        "{}",
        daemon.log_tail(30)
    );
    let listed = ctl.writer(&["--json", "snapshots"]).ok().json();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "two bases, no segment rows: {listed:#}");
    let (first, second) = (&rows[0], &rows[1]);
    assert!(first["deltas"]["segments"].as_u64().unwrap() >= 1, "{first:#}");
    assert_eq!(second["deltas"]["last_revision"], last, "{second:#}");
    let all = ctl.writer(&["--json", "snapshots", "--deltas"]).ok().json();
    let segments = |v: &serde_json::Value| v.as_array().unwrap().iter().filter(|r| r["kind"] == "etcd-v3-delta").count();
    assert!(segments(&all) >= 2, "{all:#}");

    // A chain follows its base: forgetting the first base forgets its segments in the same
    // record, and prune deletes them with the chain's links; the second chain stays whole.
    let forgot = ctl
        .writer(&["--json", "forget", "--keep-last", "1", "--job", "etcd", "--confirm"])
        .ok()
        .json();
    let entries = forgot["record"]["record"]["entries"].as_array().expect("a log record").clone();
    let first_id = first["id"].as_str().unwrap();
    assert!(entries.iter().any(|e| e["snapshot"] == first_id), "{forgot:#}");
    let first_segments: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "etcd-v3-delta" && r["base"] == first_id)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!first_segments.is_empty(), "{all:#}");
    for seg in &first_segments {
        assert!(
            entries.iter().any(|e| e["snapshot"] == seg.as_str()),
            "segment {seg} not forgotten with its base: {forgot:#}"
        );
    }
    let chain_dir = |base: &str| {
        std::fs::read_dir(dir.join("vault/deltas"))
            .unwrap()
            .flatten()
            .any(|tag| std::fs::read_dir(tag.path().join(base)).is_ok_and(|mut d| d.next().is_some()))
    };
    assert!(chain_dir(first_id), "the first chain's links are there before the prune");
    let pruned = ctl.writer(&["--json", "prune", "--grace", "0"]).ok().json();
    assert!(pruned["chain_objects_deleted"].as_u64().unwrap() >= 1, "{pruned:#}");
    assert!(!chain_dir(first_id), "the first chain's links went with its base");
    assert!(chain_dir(second["id"].as_str().unwrap()), "the second chain stays");
    let verified = ctl.restorer(&["--json", "verify", "--all", "--read-data"]);
    assert_eq!(verified.code, Some(0), "{verified}");
    let data_dir = dir.join("restored-after-prune");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let run = ctl.restorer(&member_restore_args(&["--revision", &last.to_string()], &data_dir, "pitr", &peer));
    assert_eq!(run.code, Some(0), "a restore through the second chain after the prune:\n{run}");
}
