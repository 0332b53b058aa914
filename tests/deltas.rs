//! End-to-end test of continuous etcd capture (issue 10, docs/FORMAT.md section 8e) with the real
//! `vaultd` binary and a real etcd 3.4 on a local vault:
//! 1. a daemon with `deltas_every_secs = 1` commits the writes made after its full snapshot as a
//!    chain of delta segments, and every event of the chain matches etcd's own history;
//! 2. the watching daemon SIGKILLed under a write load, a second daemon (same vault, another host
//!    name) takes over within the lease + 10 s, and the chain has no gap and no duplicate;
//! 3. a compaction while the watching daemon is SIGSTOPped: the daemon taking over finds the
//!    revision it needs compacted, ends the chain (`compacted`), takes a full snapshot at once and
//!    starts a new chain from it; the stopped one, continued, does not extend the old chain.
//!
//! On a local vault and on S3 (moto). Run `cargo build -p vaultctl -p vaultd` first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, WatchOptions};
use vault::catalog::Catalog;
use vault::delta_stream::{Event, EventGroup, Record};
use vault::ops::deltas::chain::{self, Chain};
use vault::ops::deltas::segment_read;
use vault::ops::deltas::watcher::{Base, current_base};
use vault::repo::{KeySource, Vault};
use vault::store::Store;
use vault_e2e::daemon::{get, metric, vaultd_run, write_private};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, EtcdCluster, Moto, free_port, tempdir, wait_for};

const LEASE_SECS: u64 = 6;
const TOKEN: &str = "deltas-test-token";

struct Daemon {
    proc: Proc,
    port: u16,
    config: PathBuf,
}

/// Where the vault is: a local directory, or a bucket on moto (S3).
struct Backend {
    repo: String,
    /// The daemon config's `[s3]` table (empty for a local vault).
    s3_table: String,
    s3: Option<vault::store::S3Options>,
    env: Vec<(String, String)>,
    _moto: Option<Moto>,
}

impl Backend {
    fn local(dir: &Path) -> Backend {
        Backend {
            repo: dir.join("vault").display().to_string(),
            s3_table: String::new(),
            s3: None,
            env: vec![],
            _moto: None,
        }
    }

    fn s3() -> Backend {
        let moto = Moto::start();
        moto.create_bucket("deltas");
        Backend {
            repo: "s3://deltas/vault".into(),
            s3_table: format!(
                "[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n",
                moto.endpoint()
            ),
            s3: Some(moto.s3_options()),
            env: moto.env(),
            _moto: Some(moto),
        }
    }
}

fn start_daemon(ctl: &Ctl, backend: &Backend, dir: &Path, host: &str, endpoint: &str) -> Daemon {
    let port = free_port();
    let ddir = dir.join(host);
    std::fs::create_dir_all(&ddir).unwrap();
    write_private(&ddir.join("token"), &format!("{TOKEN}\n"));
    let config = ddir.join("vaultd.toml");
    write_private(
        &config,
        &format!(
            "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\nhost = \"{host}\"\n{}[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n[[job]]\nname = \"etcd\"\nkind = \"etcd-v3\"\nschedule = \"0 0 0 1 1 * 2099\"\ntimeout_secs = 300\ndeltas_every_secs = 1\ndeltas_lease_secs = {LEASE_SECS}\n[job.etcd]\nendpoints = [\"{endpoint}\"]\n",
            ctl.repo,
            ctl.writer_key.display(),
            ddir.join("catalog.sqlite").display(),
            backend.s3_table,
            ddir.join("token").display(),
        ),
    );
    let mut proc = Proc::spawn(&format!("vaultd-{host}"), &mut vaultd_run(&config), &ddir.join("vaultd.log"));
    let up = wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
        if let Some(st) = proc.exited() {
            panic!("vaultd {host} exited ({st}):\n{}", proc.log_tail(30));
        }
        get(port, "/healthz", None)
    });
    assert!(up.is_some(), "vaultd {host} did not answer:\n{}", proc.log_tail(30));
    Daemon { proc, port, config }
}

impl Daemon {
    fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = get(self.port, "/metrics", Some(TOKEN))?;
        assert_eq!(status, 200, "{text}");
        metric(&text, series)
    }

    fn holding(&self) -> bool {
        self.metric("vault_etcd_deltas_watcher{job=\"etcd\",state=\"holding\"}") == Some(1.0)
    }

    /// Holding the lock, with or without a snapshot to extend yet.
    fn has_lock(&self) -> bool {
        self.holding() || self.metric("vault_etcd_deltas_watcher{job=\"etcd\",state=\"waiting\"}") == Some(1.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log()).unwrap_or_default()
    }
}

/// The vault opened with both keys, as the test reads it.
async fn open_vault(ctl: &Ctl, backend: &Backend) -> Vault {
    let store = Store::open(&ctl.repo, &backend.s3.clone().unwrap_or_default()).unwrap();
    let keys = KeySource {
        writer_key: Some(ctl.writer_key.clone()),
        identity: Some(ctl.identity.clone()),
        trust: Default::default(),
    };
    Vault::open(store, &keys).await.unwrap()
}

/// A chain and every group of its segments, decoded (identity), in order.
async fn chain_groups(vault: &Vault, cat_path: &Path, base: &Base) -> (Chain, Vec<EventGroup>) {
    let chain = chain::read_chain(vault, "etcd", &base.id, base.revision).await.unwrap();
    let mut cat = Catalog::open(cat_path, &vault.config.vault_id).unwrap();
    cat.sync(vault).await.unwrap();
    let mut groups = Vec::new();
    for l in &chain.links {
        let seg = cat.resolve(&l.segment.hex()).unwrap();
        let info = seg.manifest.etcd_v3_delta.clone().expect("a delta segment");
        assert_eq!(
            (info.base, info.seq, info.first_revision, info.last_revision),
            (base.id, l.seq, l.first_revision, l.last_revision)
        );
        let what = format!("segment {} of {}", l.seq, base.id.short());
        let (records, _) = segment_read::read(vault, &cat, &seg, &what).await.unwrap();
        groups.extend(records.into_iter().filter_map(|r| match r {
            Record::Group(g) => Some(g),
            Record::Lease(_) => None,
        }));
    }
    (chain, groups)
}

/// etcd's own history of revisions `from..=to` (a watch of every key), as groups.
async fn etcd_history(client: &mut Client, from: i64, to: i64) -> Vec<(i64, Vec<Event>)> {
    let mut stream = client
        .watch(
            vec![0u8],
            Some(WatchOptions::new().with_all_keys().with_start_revision(from).with_fragment()),
        )
        .await
        .unwrap();
    let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
    while out.last().map(|(r, _)| *r).unwrap_or(from - 1) < to {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("etcd's history within 10 s")
            .unwrap()
            .expect("watch open");
        assert!(!resp.canceled(), "history watch canceled: {}", resp.cancel_reason());
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let ev = match e.event_type() {
                etcd_client::EventType::Put => Event::Put {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    version: kv.version(),
                    lease: kv.lease(),
                },
                etcd_client::EventType::Delete => Event::Delete { key: kv.key().to_vec() },
            };
            match out.last_mut() {
                Some((r, evs)) if *r == kv.mod_revision() => evs.push(ev),
                _ => out.push((kv.mod_revision(), vec![ev])),
            }
        }
    }
    out.retain(|(r, _)| *r <= to);
    out
}

/// Every revision from `from` to `to` once, in order, and each group exactly as etcd has it.
async fn assert_matches_etcd(client: &mut Client, groups: &[EventGroup], from: i64, to: i64) {
    let revisions: Vec<i64> = groups.iter().map(|g| g.revision).collect();
    let expected: Vec<i64> = (from..=to).collect();
    assert!(
        revisions.len() >= expected.len() && revisions[..expected.len()] == expected[..],
        "the chain does not hold every revision {from}..={to} once in order: {revisions:?}"
    );
    let history = etcd_history(client, from, to).await;
    assert_eq!(history.len(), expected.len());
    for ((rev, events), g) in history.iter().zip(groups) {
        assert_eq!(*rev, g.revision);
        assert_eq!(events, &g.events, "revision {rev} differs from etcd's history");
    }
}

/// A mix of writes: puts, overwrites, deletes, a range delete, a multi-op transaction, and keys
/// on a lease. Returns the revision after them.
async fn mixed_writes(client: &mut Client, round: u32) -> i64 {
    for i in 0..20 {
        client
            .put(
                format!("/registry/pods/ns{round}/p{i}"),
                format!("pod {i} round {round}").repeat(20),
                None,
            )
            .await
            .unwrap();
    }
    for i in 0..5 {
        client
            .put(format!("/registry/pods/ns{round}/p{i}"), format!("updated {i}"), None)
            .await
            .unwrap();
    }
    client.delete(format!("/registry/pods/ns{round}/p19"), None).await.unwrap();
    client
        .delete(format!("/registry/pods/ns{round}/p1"), Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let txn = Txn::new()
        .when(vec![Compare::version(
            format!("/registry/pods/ns{round}/p2"),
            CompareOp::Greater,
            0,
        )])
        .and_then(vec![
            TxnOp::put(format!("/registry/configmaps/ns{round}/a"), "a", None),
            TxnOp::put(format!("/registry/configmaps/ns{round}/b"), "b", None),
            TxnOp::delete(format!("/registry/pods/ns{round}/p3"), None),
        ]);
    client.txn(txn).await.unwrap();
    let lease = client.lease_grant(300, None).await.unwrap().id();
    for i in 0..3 {
        client
            .put(
                format!("/registry/events/ns{round}/e{i}"),
                "event",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
    }
    let r = client.put(format!("/registry/last/{round}"), "last", None).await.unwrap();
    r.header().unwrap().revision()
}

/// Wait until the chain of `base` covers `revision`; returns it and its groups.
async fn wait_covered(
    vault: &Vault,
    cat: &Path,
    base: &Base,
    revision: i64,
    within: Duration,
    logs: &dyn Fn() -> String,
) -> (Chain, Vec<EventGroup>) {
    let deadline = Instant::now() + within;
    loop {
        let c = chain::read_chain(vault, "etcd", &base.id, base.revision).await.unwrap();
        assert!(c.problems.is_empty(), "chain problems: {:?}", c.problems);
        if c.whole_until(base.revision) >= revision {
            return chain_groups(vault, cat, base).await;
        }
        assert!(
            Instant::now() < deadline,
            "the chain of {} covers up to {} only, not revision {revision}, after {within:?}:\n{}",
            base.id.short(),
            c.whole_until(base.revision),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn deltas_cover_every_write_survive_a_sigkill_and_break_cleanly_at_compaction() {
    let tmp = tempdir("deltas");
    scenario(tmp.path(), Backend::local(tmp.path()));
}

#[test]
fn deltas_on_s3_cover_every_write_survive_a_sigkill_and_break_cleanly_at_compaction() {
    let tmp = tempdir("deltas-s3");
    scenario(tmp.path(), Backend::s3());
}

fn scenario(dir: &Path, backend: Backend) {
    let etcd = EtcdCluster::start(1, None);
    let endpoint = etcd.endpoints()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ctl = Ctl::new(&dir.join("ctl"), &backend.repo, backend.env.clone());
    ctl.setup(&["--pack-size-mib", "1"]);
    let cat = dir.join("test-catalog.sqlite");
    let vault = rt.block_on(open_vault(&ctl, &backend));
    let mut client = rt.block_on(etcd.client());
    rt.block_on(mixed_writes(&mut client, 0));

    // 1. The first daemon, its full snapshot, then writes: the chain covers each one.
    let mut a = start_daemon(&ctl, &backend, dir, "host-a", &endpoint);
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(100), || a.has_lock().then_some(())).is_some(),
        "host-a does not hold the watcher lock:\n{}",
        a.log()
    );
    let cfg = a.config.display().to_string();
    ctl.run(&["run", "etcd", "--wait", "--daemon-config", &cfg])
        .ok()
        .mentions(&["succeeded: snapshot"]);
    let base = rt.block_on(current_base(&vault, &cat, "etcd")).unwrap().expect("a base");
    let last = rt.block_on(mixed_writes(&mut client, 1));
    let (_, groups) = rt.block_on(wait_covered(&vault, &cat, &base, last, Duration::from_secs(30), &|| a.log()));
    rt.block_on(assert_matches_etcd(&mut client, &groups, base.revision + 1, last));
    assert!(a.metric("vault_etcd_deltas_segments_total{job=\"etcd\"}").unwrap() >= 1.0);
    // Idle: nothing is committed, yet the recovery point stays current (progress responses).
    std::thread::sleep(Duration::from_secs(5));
    let rpo = a
        .metric("vault_etcd_deltas_recovery_point_seconds{job=\"etcd\"}")
        .expect("recovery point");
    assert!(rpo < 3.5, "recovery point {rpo} s after 5 idle seconds:\n{}", a.log());
    let age = a
        .metric("vault_etcd_deltas_newest_event_age_seconds{job=\"etcd\"}")
        .expect("newest event age");
    assert!(age >= 5.0, "newest event age {age} s after 5 idle seconds");

    // A new full snapshot: the old chain ends (superseded) once it reached the new base's
    // revision, and the new base's chain carries on.
    ctl.run(&["run", "etcd", "--wait", "--daemon-config", &cfg])
        .ok()
        .mentions(&["succeeded: snapshot"]);
    let old_base = base;
    let base = rt.block_on(current_base(&vault, &cat, "etcd")).unwrap().expect("a base");
    assert_ne!(base.id, old_base.id);
    let last = rt.block_on(mixed_writes(&mut client, 11));
    let (_, groups) = rt.block_on(wait_covered(&vault, &cat, &base, last, Duration::from_secs(30), &|| a.log()));
    rt.block_on(assert_matches_etcd(&mut client, &groups, base.revision + 1, last));
    let old = rt
        .block_on(chain::read_chain(&vault, "etcd", &old_base.id, old_base.revision))
        .unwrap();
    let end = old.end.clone().unwrap_or_else(|| panic!("the old chain did not end:\n{}", a.log()));
    assert_eq!((end.reason.as_str(), end.next_base), ("superseded", Some(base.id)), "{end:?}");
    assert!(
        old.whole_until(old_base.revision) >= base.revision,
        "the old chain stops short of the new base: {end:?}"
    );

    // 2. A standby, a write load, SIGKILL of the watching daemon: the standby takes over.
    let b = start_daemon(&ctl, &backend, dir, "host-b", &endpoint);
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            (b.metric("vault_etcd_deltas_watcher{job=\"etcd\",state=\"standby\"}") == Some(1.0)).then_some(())
        })
        .is_some(),
        "host-b does not stand by:\n{}",
        b.log()
    );
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let endpoint = endpoint.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let mut c = Client::connect([endpoint], None).await.unwrap();
                let mut i = 0u64;
                while writing.load(Ordering::Relaxed) {
                    c.put(format!("/registry/load/k{}", i % 50), format!("value {i}"), None)
                        .await
                        .unwrap();
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                i
            })
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    a.proc.kill();
    let killed = Instant::now();
    // While nobody watches, large values: the standby catches up over a batch far above gRPC's
    // 4 MiB message size, which etcd sends in fragments (one revision of two 600 KiB values may
    // be split between two of them).
    rt.block_on(async {
        for i in 0..16 {
            client
                .put(format!("/registry/big/v{i}"), vec![b'a' + i as u8; 512 << 10], None)
                .await
                .unwrap();
        }
        let txn = Txn::new().and_then(vec![
            TxnOp::put("/registry/big/pair-1", vec![b'x'; 600 << 10], None),
            TxnOp::put("/registry/big/pair-2", vec![b'y'; 600 << 10], None),
        ]);
        client.txn(txn).await.unwrap();
    });
    let took_over = wait_for(Duration::from_secs(LEASE_SECS + 10), Duration::from_millis(100), || {
        b.holding().then_some(())
    });
    assert!(
        took_over.is_some(),
        "host-b did not take over within the lease + 10 s:\n{}",
        b.log()
    );
    eprintln!("host-b took over {:?} after the kill", killed.elapsed());
    std::thread::sleep(Duration::from_millis(2000));
    writing.store(false, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 100, "the load wrote {written} values only");
    let last = rt.block_on(mixed_writes(&mut client, 2));
    let (chain_ab, groups) = rt.block_on(wait_covered(&vault, &cat, &base, last, Duration::from_secs(30), &|| b.log()));
    // No gap (D1 and density, checked by read_chain and the decoder) and no duplicate revision.
    rt.block_on(assert_matches_etcd(&mut client, &groups, base.revision + 1, last));
    let watchers: std::collections::BTreeSet<&str> = chain_ab.links.iter().map(|l| l.watcher.as_str()).collect();
    assert!(watchers.len() >= 2, "one watcher wrote the whole chain: {watchers:?}");

    // 3. A compaction while the watching daemon (host-b) is stopped: host-a, started again,
    // takes over, finds the revision it needs compacted, ends the chain and snapshots at once.
    let a = start_daemon(&ctl, &backend, dir, "host-a", &endpoint);
    let b_pid = nix::unistd::Pid::from_raw(b.proc.pid() as i32);
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(b_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped_at = rt.block_on(etcd.revision());
    let compact_at = rt.block_on(async {
        for i in 0..20 {
            client
                .put(format!("/registry/lost/k{i}"), "written while the watcher was stopped", None)
                .await
                .unwrap();
        }
        let rev = client
            .put("/registry/lost/last", "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client.compact(rev, None).await.unwrap();
        rev
    });
    let ended = wait_for(Duration::from_secs(LEASE_SECS + 30), Duration::from_millis(250), || {
        let c = rt.block_on(chain::read_chain(&vault, "etcd", &base.id, base.revision)).unwrap();
        c.end.clone()
    });
    nix::sys::signal::kill(b_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let end = ended.unwrap_or_else(|| panic!("the chain did not end after the compaction:\n{}", a.log()));
    assert_eq!(end.reason, "compacted", "{end:?}");
    assert_eq!(end.compact_revision, Some(compact_at), "{end:?}");
    assert!(
        end.last_revision >= stopped_at - 1 && end.last_revision < compact_at,
        "{end:?} (stopped at {stopped_at})"
    );
    // A new full snapshot and a new chain from it.
    let new_base = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
        rt.block_on(current_base(&vault, &cat, "etcd")).unwrap().filter(|b| b.id != base.id)
    })
    .unwrap_or_else(|| panic!("no full snapshot after the compaction:\n{}", a.log()));
    assert!(new_base.revision >= compact_at, "{new_base:?}");
    assert!(a.log().contains("were compacted away before they were captured"), "{}", a.log());
    let last = rt.block_on(mixed_writes(&mut client, 3));
    let (_, groups) = rt.block_on(wait_covered(&vault, &cat, &new_base, last, Duration::from_secs(30), &|| a.log()));
    rt.block_on(assert_matches_etcd(&mut client, &groups, new_base.revision + 1, last));
    assert_eq!(
        a.metric("vault_etcd_deltas_chain_breaks_total{job=\"etcd\",reason=\"compacted\"}"),
        Some(1.0)
    );
    // The old chain was not extended after its end by the continued daemon.
    std::thread::sleep(Duration::from_secs(3));
    let old = rt.block_on(chain::read_chain(&vault, "etcd", &base.id, base.revision)).unwrap();
    assert_eq!(old.whole_until(base.revision), end.last_revision, "{:?}", old.links.last());
    assert!(old.problems.is_empty(), "{:?}", old.problems);
    ctl.writer(&["verify", "--all"]).ok();
}
