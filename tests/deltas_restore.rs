//! Point-in-time restore end to end (issue 10): a real etcd 3.4 under a small write load (puts,
//! overwrites, deletes, a multi-op transaction, a range delete, keys with leases, a revoked
//! lease), a full snapshot taken with `vaultctl backup etcd`, and the changes after it written as
//! delta segments by a test helper (the events read back with a watch from the snapshot's
//! revision, encoded with `delta_stream::Encoder`, ingested, committed, linked), as the capture
//! side will. Then `vaultctl etcd restore --revision/--at` into fresh data dirs, each started
//! and compared key by key with the source etcd's own answer at that revision (`get --rev`: the
//! source is never compacted). A deleted segment manifest: verify names it, a restore past it
//! refuses naming it, `--up-to-last-whole` restores to the end of the segment before it.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use vault::catalog::Catalog;
use vault::delta_stream::{Encoder, Event, EventGroup, LeaseGrant, Record};
use vault::format::{DeltaLink, EtcdV3DeltaInfo, Id, PayloadKind};
use vault::ops::backup::{BackupOptions, commit, ingest_stream};
use vault::ops::deltas::chain::{LinkCreated, create_link};
use vault::repo::{KeySource, Vault};
use vault_e2e::{Ctl, EtcdCluster, free_port, n, s, tempdir};

/// The source's whole keyspace at `rev`: key -> (value, lease).
async fn state_at(c: &mut Client, rev: i64) -> BTreeMap<String, (Vec<u8>, i64)> {
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_revision(rev)))
        .await
        .expect("get at revision");
    r.kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), (kv.value().to_vec(), kv.lease())))
        .collect()
}

/// A mixed load; returns the leases it granted (id -> TTL).
async fn write_load(c: &mut Client) -> BTreeMap<i64, i64> {
    for i in 0..6 {
        c.put(format!("/a/{i}"), format!("v{i}"), None).await.unwrap();
    }
    c.put("/a/1", "v1-overwritten", None).await.unwrap();
    c.delete("/a/2", None).await.unwrap();
    c.txn(Txn::new().and_then(vec![
        TxnOp::put("/t/x", "tx", None),
        TxnOp::put("/t/y", "ty", None),
        TxnOp::delete("/a/3", None),
    ]))
    .await
    .unwrap();
    let long = c.lease_grant(600, None).await.unwrap().id();
    let short = c.lease_grant(60, None).await.unwrap().id();
    c.put("/l/1", "leased", Some(PutOptions::new().with_lease(long))).await.unwrap();
    c.put("/l/2", "leased-too", Some(PutOptions::new().with_lease(long))).await.unwrap();
    c.put("/l/3", "short", Some(PutOptions::new().with_lease(short))).await.unwrap();
    c.put("/l/4", "short-too", Some(PutOptions::new().with_lease(short))).await.unwrap();
    c.lease_revoke(short).await.unwrap();
    c.delete("/a/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    for i in 0..12 {
        c.put(format!("/b/{}", i % 5), vec![b'x'; 100 + i * 50], None).await.unwrap();
    }
    [(long, 600), (short, 60)].into_iter().collect()
}

/// The groups after `from` up to `to`, read back with a watch, with a lease record before the
/// first put of each lease; group times are made up: `t0 + 10 ms` per revision.
async fn groups(c: &mut Client, from: i64, to: i64, leases: &BTreeMap<i64, i64>, t0: i64) -> Vec<(i64, Vec<Record>)> {
    let mut w = c
        .watch("", Some(WatchOptions::new().with_all_keys().with_start_revision(from + 1)))
        .await
        .unwrap();
    let mut by_rev: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    while by_rev.keys().next_back().copied().unwrap_or(from) < to {
        let resp = w.message().await.unwrap().expect("watch open");
        for e in resp.events() {
            let (rev, ev) = vault::source::etcd_watch::event_of(e).expect("a watch event has a key-value");
            by_rev.entry(rev).or_default().push(ev);
        }
    }
    let mut seen = std::collections::HashSet::new();
    by_rev
        .into_iter()
        .map(|(rev, events)| {
            let mut recs = Vec::new();
            for e in &events {
                if let Event::Put { lease, .. } = e
                    && *lease != 0
                    && seen.insert(*lease)
                {
                    recs.push(Record::Lease(LeaseGrant {
                        id: *lease,
                        granted_ttl_secs: leases[lease],
                        remaining_ttl_secs: leases[lease],
                        observed_ms: t0,
                    }));
                }
            }
            recs.push(Record::Group(EventGroup {
                revision: rev,
                received_ms: t0 + 10 * (rev - from),
                catch_up: false,
                events,
            }));
            (rev, recs)
        })
        .collect()
}

fn time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

/// Write one segment as the capture side does: stream, manifest, link. Returns its id.
async fn write_segment(
    vault: &Vault,
    catalog: &mut Catalog,
    base: Id,
    cluster_id: &str,
    seq: u64,
    prev: Option<Id>,
    recs: &[(i64, Vec<Record>)],
) -> Id {
    let mut enc = Encoder::new();
    let mut bytes = enc.header();
    let mut times = Vec::new();
    for (_, rs) in recs {
        for r in rs {
            bytes.extend(match r {
                Record::Group(g) => {
                    times.push(g.received_ms);
                    enc.group(g)
                }
                Record::Lease(l) => enc.lease(l),
            });
        }
    }
    let (trailer, sum) = enc.finish();
    bytes.extend(trailer);
    let source = futures::stream::iter(vec![Ok(Bytes::from(bytes))]);
    let ing = ingest_stream(vault, catalog, "events", source, false, None)
        .await
        .expect("ingest segment");
    let opts = BackupOptions {
        job: "manual".into(),
        ..Default::default()
    };
    let mut m = opts.manifest(PayloadKind::EtcdV3Delta, vec![ing.stream], ing.stats);
    let (first_t, last_t) = (time(times[0]), time(*times.last().unwrap()));
    m.etcd_v3_delta = Some(EtcdV3DeltaInfo {
        base,
        seq,
        prev,
        cluster_id: cluster_id.into(),
        member_id: "1".into(),
        endpoint: "http://127.0.0.1".into(),
        first_revision: sum.first_revision,
        last_revision: sum.last_revision,
        groups: sum.groups,
        events: sum.events,
        first_event_time: first_t,
        last_event_time: last_t,
        covered_until: last_t,
        catch_up: false,
        watcher: "test".into(),
    });
    let id = commit(vault, catalog, &m).await.expect("commit segment");
    let link = DeltaLink {
        base,
        seq,
        segment: id,
        first_revision: sum.first_revision,
        last_revision: sum.last_revision,
        last_event_time: last_t,
        covered_until: last_t,
        watcher: "test".into(),
        time: chrono::Utc::now(),
    };
    assert_eq!(create_link(vault, "manual", &link).await.unwrap(), LinkCreated::Created);
    id
}

fn restore_args(target: &[&str], data_dir: &Path, peer: &str) -> Vec<String> {
    let mut a = vault_e2e::vaultctl::member_restore_args(target, data_dir, "pitr", peer);
    a.push("--json".into());
    a
}

/// Restore to `target` into a fresh data dir, start etcd on it and compare every key with the
/// source at `want_rev`.
async fn restore_and_compare(ctl: &Ctl, dir: &Path, label: &str, target: &[&str], source: &mut Client, want_rev: i64) -> serde_json::Value {
    let data_dir = dir.join(label).join("member");
    std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let report = ctl.restorer(&restore_args(target, &data_dir, &peer)).ok().json();
    assert_eq!(n(&report, "revision") as i64, want_rev, "{label}: {report}");
    let restored = EtcdCluster::start_on_data_dir("pitr", &data_dir, &peer);
    assert_eq!(
        restored.revision().await,
        want_rev,
        "{label}: the restored member is at the original revision"
    );
    let mut rc = restored.client().await;
    let got = state_at(&mut rc, want_rev).await;
    let want = state_at(source, want_rev).await;
    assert!(!want.is_empty());
    assert_eq!(
        got, want,
        "{label}: every key, value and lease equals the source's at revision {want_rev}"
    );
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_restore_replays_segments_and_refuses_past_a_missing_one() {
    let cluster = EtcdCluster::start(1, None);
    let mut source = cluster.client().await;
    for i in 0..5 {
        source.put(format!("/base/{i}"), format!("b{i}"), None).await.unwrap();
    }
    let tmp = tempdir("deltas-restore");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let base_report = ctl.backup(&cluster.endpoints_arg(), &[]);
    let base = Id::parse(&s(&base_report, "id")).unwrap();
    let base_rev = n(&base_report, "revision") as i64;
    let cluster_id = s(&base_report, "cluster_id");
    let t0 = chrono::Utc::now().timestamp_millis() + 5;

    let leases = write_load(&mut source).await;
    let head = cluster.revision().await;
    let all = groups(&mut source, base_rev, head, &leases, t0).await;
    assert_eq!(all.len() as i64, head - base_rev, "one group per revision");
    // Three segments.
    let cut1 = all.len() / 3;
    let cut2 = 2 * all.len() / 3;
    let store = vault::store::Store::open(&ctl.repo, &Default::default()).unwrap();
    let keys = KeySource {
        writer_key: Some(ctl.writer_key.clone()),
        identity: None,
        trust: Default::default(),
    };
    let vault = Vault::open(store, &keys).await.unwrap();
    let mut catalog = Catalog::open(&tmp.path().join("helper-catalog.db"), &vault.config.vault_id).unwrap();
    catalog.sync(&vault).await.unwrap();
    let s0 = write_segment(&vault, &mut catalog, base, &cluster_id, 0, None, &all[..cut1]).await;
    let s1 = write_segment(&vault, &mut catalog, base, &cluster_id, 1, Some(s0), &all[cut1..cut2]).await;
    let s2 = write_segment(&vault, &mut catalog, base, &cluster_id, 2, Some(s1), &all[cut2..]).await;
    let seg0_last = all[cut1 - 1].0;
    let seg1 = (all[cut1].0, all[cut2 - 1].0);

    // Every revision of a transaction, a lease revoke and the newest one, by revision.
    let dir = tmp.path();
    for rev in [base_rev + 3, (seg1.0 + seg1.1) / 2, head] {
        let rev_s = rev.to_string();
        let r = restore_and_compare(&ctl, dir, &format!("rev{rev}"), &["--revision", &rev_s], &mut source, rev).await;
        assert_eq!(s(&r["plan"]["base"], "id"), base.hex(), "{r}");
    }
    // By time: the last group received at or before the time.
    let at_rev = seg1.0 + 1;
    let at = time(t0 + 10 * (at_rev - base_rev) + 5).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    restore_and_compare(&ctl, dir, "at", &["--at", &at], &mut source, at_rev).await;

    // An interrupt during the replay stops the temporary etcd (only the process it started) and
    // removes the staging directory; the data dir is not touched.
    let pidfile = dir.join("replay-etcd.pid");
    let wrapper = dir.join("slow-etcd.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\necho $$ > {}\nsleep 5\nexec /usr/bin/etcd \"$@\"\n", pidfile.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let parent = dir.join("interrupted");
    std::fs::create_dir_all(&parent).unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let head_s = head.to_string();
    let mut args: Vec<String> = vec![
        "--repo".into(),
        ctl.repo.clone(),
        "--identity".into(),
        ctl.identity.display().to_string(),
    ];
    args.extend(restore_args(
        &["--revision", &head_s, "--etcd-binary", &wrapper.display().to_string()],
        &parent.join("member"),
        &peer,
    ));
    let mut sp = ctl.spawn("interrupted", &args);
    let etcd_pid = vault_e2e::wait_for(std::time::Duration::from_secs(60), std::time::Duration::from_millis(20), || {
        std::fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse::<i32>().ok())
    })
    .expect("the temporary etcd was started");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sp.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = sp
        .wait_timeout(std::time::Duration::from_secs(30))
        .expect("vaultctl exits after SIGTERM");
    assert!(!st.success());
    assert!(sp.stderr().contains("interrupted by SIGTERM"), "{}", sp.stderr());
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(etcd_pid), None).is_err(),
        "the temporary etcd {etcd_pid} is gone"
    );
    let left: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "no staging directory and no data dir left: {left:?}");

    // History: every change to /a/1 (two puts and the range delete), with sizes.
    let h = ctl.restorer(&["etcd", "history", "/a/1", "--json"]).ok().json();
    let ops: Vec<String> = h["changes"].as_array().unwrap().iter().map(|c| s(c, "op")).collect();
    assert_eq!(ops, ["put", "put", "delete"], "{h}");
    assert_eq!(n(&h["changes"][1], "value_size"), "v1-overwritten".len() as u64, "{h}");
    let p = ctl.restorer(&["etcd", "history", "--prefix", "/l/", "--json"]).ok().json();
    assert_eq!(p["changes"].as_array().unwrap().len(), 6, "4 puts and 2 deletes by the revoke: {p}");

    // A damaged pack of the last segment: a restore into it refuses naming it, before it works,
    // --up-to-last-whole stops at the end of the segment before it, and verify names it.
    ctl.restorer(&["verify", "--all", "--json"]).ok();
    let seg2_entry = catalog.snapshots().unwrap().into_iter().find(|e| e.id == s2).unwrap();
    let (pack, _) = catalog.chunk_locations(&seg2_entry.manifest.streams[0].chunks[0]).unwrap()[0];
    let pack_file = Path::new(&ctl.repo).join(vault::format::pack_name(&pack));
    let mut bytes = std::fs::read(&pack_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let mut perm = std::fs::metadata(&pack_file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&pack_file, perm).unwrap();
    std::fs::write(&pack_file, bytes).unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    ctl.restorer(&restore_args(&["--revision", &head_s], &dir.join("damaged").join("member"), &peer))
        .failed()
        .code(3)
        .mentions(&["delta segment seq 2", &s2.short(), &format!("whole up to revision {}", seg1.1)]);
    assert!(!dir.join("damaged").join("member").exists(), "a refused restore leaves no data dir");
    let r = restore_and_compare(
        &ctl,
        dir,
        "damaged-last-whole",
        &["--revision", &head_s, "--up-to-last-whole"],
        &mut source,
        seg1.1,
    )
    .await;
    assert!(s(&r, "stopped_early").contains("seq 2"), "{r}");
    ctl.restorer(&["verify", "--all"])
        .failed()
        .mentions(&["delta segment seq 2", &s2.short()]);

    // A missing segment manifest: verify names it, a restore past it refuses naming it.
    vault.store.delete(&vault::format::snapshot_name(&s1)).await.unwrap();
    ctl.writer(&["verify", "--all"])
        .failed()
        .mentions(&["delta segment seq 1", &s1.short(), "missing"]);
    let past = (seg1.1 + 1).to_string();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let refused_dir = dir.join("refused").join("member");
    std::fs::create_dir_all(&refused_dir).unwrap();
    std::fs::write(refused_dir.join("keep"), "existing data").unwrap();
    ctl.restorer(&restore_args(&["--revision", &past], &refused_dir, &peer))
        .failed()
        .code(3)
        .mentions(&[
            "delta segment seq 1",
            &s1.short(),
            &format!("whole up to revision {seg0_last}"),
            "--up-to-last-whole",
        ]);
    assert_eq!(
        std::fs::read_to_string(refused_dir.join("keep")).unwrap(),
        "existing data",
        "a refusal touches nothing"
    );
    // Before it still works; --up-to-last-whole stops at the end of segment 0.
    let before = seg0_last.to_string();
    restore_and_compare(&ctl, dir, "before-gap", &["--revision", &before], &mut source, seg0_last).await;
    let r = restore_and_compare(
        &ctl,
        dir,
        "last-whole",
        &["--revision", &past, "--up-to-last-whole"],
        &mut source,
        seg0_last,
    )
    .await;
    assert_eq!(r["plan"]["cut_to_last_whole"], true, "{r}");
}

/// Flow 1 to a point in time: `etcd recover --revision R` on a one-member host tree (stand-in
/// systemctl running real etcd) replays the segments on the base and brings the member back as
/// it was at R.
#[tokio::test(flavor = "multi_thread")]
async fn recover_flow_brings_the_cluster_back_at_a_revision() {
    use vault_e2e::Systemctl;
    use vault_e2e::okd::{ETCD_EXEC_START, etcd_unit};

    let tmp = tempdir("deltas-recover");
    let root = tmp.path().join("host0");
    let (client, peer) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/etcd")).unwrap();
    std::fs::write(
        root.join("etc/etcd/etcd.conf"),
        format!(
            "ETCD_NAME=m0\nETCD_DATA_DIR=/var/lib/etcd\nETCD_LISTEN_CLIENT_URLS={client}\nETCD_ADVERTISE_CLIENT_URLS={client}\n\
             ETCD_LISTEN_PEER_URLS={peer}\nETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\nETCD_INITIAL_CLUSTER=m0={peer}\n\
             ETCD_INITIAL_CLUSTER_TOKEN=pitr\nETCD_INITIAL_CLUSTER_STATE=new\n"
        ),
    )
    .unwrap();
    let systemctl = Systemctl::install(&root, &tmp.path().join("systemctl0"));
    systemctl.add_unit("etcd", &etcd_unit(ETCD_EXEC_START));
    systemctl.root_paths(&["ETCD_DATA_DIR"]);
    let sysctl = |args: &[&str]| {
        let st = std::process::Command::new(systemctl.program()).args(args).status().unwrap();
        assert!(st.success(), "systemctl {args:?}: {}", systemctl.unit_log("etcd"));
    };
    sysctl(&["start", "etcd"]);
    let connect = || async {
        for _ in 0..300 {
            if let Ok(mut c) = Client::connect([client.as_str()], None).await
                && c.status().await.is_ok()
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("etcd not healthy: {}", systemctl.unit_log("etcd"));
    };
    let mut source = connect().await;
    source.put("/base/k", "v", None).await.unwrap();

    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let base_report = ctl.backup(&client, &[]);
    let base = Id::parse(&s(&base_report, "id")).unwrap();
    let base_rev = n(&base_report, "revision") as i64;
    let t0 = chrono::Utc::now().timestamp_millis() + 5;
    let leases = write_load(&mut source).await;
    let head = source.get("/", None).await.unwrap().header().unwrap().revision();
    let all = groups(&mut source, base_rev, head, &leases, t0).await;
    let store = vault::store::Store::open(&ctl.repo, &Default::default()).unwrap();
    let keys = KeySource {
        writer_key: Some(ctl.writer_key.clone()),
        identity: None,
        trust: Default::default(),
    };
    let vault = Vault::open(store, &keys).await.unwrap();
    let mut catalog = Catalog::open(&tmp.path().join("helper-catalog.db"), &vault.config.vault_id).unwrap();
    catalog.sync(&vault).await.unwrap();
    let half = all.len() / 2;
    let s0 = write_segment(&vault, &mut catalog, base, &s(&base_report, "cluster_id"), 0, None, &all[..half]).await;
    write_segment(
        &vault,
        &mut catalog,
        base,
        &s(&base_report, "cluster_id"),
        1,
        Some(s0),
        &all[half..],
    )
    .await;
    let target = all[half + 2].0;
    let want = state_at(&mut source, target).await;

    // The disaster: etcd stopped, its data dir gone (kept as .lost).
    drop(source);
    sysctl(&["stop", "etcd"]);
    std::fs::rename(root.join("var/lib/etcd"), root.join("var/lib/etcd.lost")).unwrap();
    let target_s = target.to_string();
    let mut args: Vec<String> = ["etcd", "recover", "--revision", &target_s, "--root"].map(String::from).to_vec();
    args.push(root.display().to_string());
    args.extend([
        "--systemctl".to_string(),
        systemctl.program().display().to_string(),
        "--timeout".into(),
        "60".into(),
    ]);
    let plan = ctl
        .restorer(&args)
        .ok()
        .mentions(&[&format!("replay its delta segments up to revision {target}"), "nothing was changed"]);
    println!("{}", plan.text());
    args.push("--execute".into());
    let run = ctl
        .restorer(&args)
        .ok()
        .mentions(&["done: every step", &format!("up to revision {target}")]);
    println!("{}", run.text());
    let mut restored = connect().await;
    let got = state_at(&mut restored, target).await;
    assert_eq!(got, want, "the recovered member holds the keyspace of revision {target}");
    let rev = restored.get("/", None).await.unwrap().header().unwrap().revision();
    assert_eq!(rev, target, "at the original revision");
    drop(restored);
    systemctl.kill_all();
}
