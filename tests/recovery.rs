//! The disaster drill of issue 8: an OKD-3.x-like 3-member etcd cluster with TLS, each member on a
//! host tree of its own (harness/okd.rs), backed up with the real `vaultctl`, every data dir
//! destroyed, and brought back with `vaultctl etcd recover` and `vaultctl etcd join`. Run
//! `cargo build -p vaultctl` first.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vault_e2e::okd::ETCD_EXEC_START;
use vault_e2e::okd::{ListedMember, MEMBERS, OkdCluster, marker};
use vault_e2e::{Ctl, EtcdCluster, Run, s};

/// The harness itself: three TLS members up through their systemctl, keys loaded, backups taken,
/// and every data dir destroyed (members down, nothing healthy, markers in place).
#[test]
fn harness_cluster_comes_up_with_tls_is_backed_up_and_destroyed() {
    let mut okd = OkdCluster::start("drill-smoke");
    okd.load(300);
    let members = okd.member_list(1);
    assert_eq!(members.len(), MEMBERS, "{members:?}");
    for h in &okd.hosts {
        let m = members
            .iter()
            .find(|m| m.name == h.name)
            .unwrap_or_else(|| panic!("{} in {members:?}", h.name));
        assert_eq!(m.peer_urls, std::slice::from_ref(&h.peer_url));
        assert!(h.client_url.starts_with("https://") && h.peer_url.starts_with("https://"));
        assert!(h.systemctl.cmdline("etcd").unwrap().contains("/usr/bin/etcd"));
    }
    assert_eq!(okd.v3_all(2), okd.v3);
    assert_eq!(okd.v2_all(1), okd.v2);

    let b = okd.backup_all();
    assert_eq!((b.datadir.len(), b.files.len()), (MEMBERS, MEMBERS));
    okd.destroy();
    for h in &okd.hosts {
        assert!(!h.running() && !h.healthy(), "host{} still up", h.index);
        assert_eq!(h.find("DRILL-MARKER"), [std::path::PathBuf::from("var/lib/etcd/DRILL-MARKER")]);
        assert_eq!(std::fs::read_to_string(h.data_dir().join("DRILL-MARKER")).unwrap(), marker(h.index));
        assert!(okd.wreck.join(format!("host{}/member/snap/db", h.index)).is_file());
        // etcd dies at once on the garbage WAL (the stand-in's start says so) or never gets healthy
        if h.start().is_ok() {
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(!h.healthy(), "etcd must not come up on the wrecked data dir: {}", h.unit_log());
        assert!(h.unit_log().contains("wal"), "{}", h.unit_log());
        h.kill();
    }
}

/// `vaultctl etcd recover ID --root hostN` (plus `extra`) as the operator on that host runs it.
fn recover(okd: &OkdCluster, host: usize, id: &str, extra: &[&str]) -> Run {
    let h = &okd.hosts[host];
    let mut args = vec!["etcd", "recover", id, "--root"];
    let root = h.root_arg();
    args.push(&root);
    args.extend_from_slice(extra);
    h.ctl(&okd.ctl).restorer(&args)
}

/// `vaultctl etcd join --cluster <host0's client URL> --root hostN` (plus `extra`).
fn join(okd: &OkdCluster, host: usize, extra: &[&str]) -> Run {
    let h = &okd.hosts[host];
    let root = h.root_arg();
    let mut args = vec!["etcd", "join", "--cluster", okd.hosts[0].client_url.as_str(), "--root", &root];
    args.extend_from_slice(extra);
    h.ctl(&okd.ctl).restorer(&args)
}

/// The plan (without --execute) prints numbered steps and changes nothing on the host: same tree,
/// no systemctl action, no journal.
fn plan_changes_nothing(okd: &OkdCluster, host: usize, run: impl FnOnce() -> Run) -> Run {
    let h = &okd.hosts[host];
    let tree = h.fingerprint(&[]);
    let actions = h.systemctl.actions();
    let r = run().ok();
    assert!(
        r.stdout.lines().any(|l| l.trim_start().starts_with("1.")) && r.stdout.lines().any(|l| l.trim_start().starts_with("2.")),
        "the plan numbers its steps:\n{r}"
    );
    assert_eq!(h.fingerprint(&[]), tree, "a plan changed host{host}'s tree:\n{r}");
    assert_eq!(h.systemctl.actions(), actions, "a plan ran systemctl on host{host}:\n{r}");
    assert!(!h.journal().exists(), "a plan wrote a journal on host{host}");
    r
}

/// Join hosts 1 and 2, one at a time (plan first), and wait until each is healthy. The second
/// join follows the first at once, as an operator runs the printed commands.
fn join_the_others(okd: &OkdCluster) {
    for i in 1..MEMBERS {
        plan_changes_nothing(okd, i, || join(okd, i, &[]));
        join(okd, i, &["--execute"]).ok();
        okd.wait_healthy(&[i], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("host{i} after join: {e}"));
        let conf = std::fs::read_to_string(okd.hosts[i].etcd_conf()).unwrap();
        assert!(
            conf.contains("\nETCD_INITIAL_CLUSTER_STATE=existing\n"),
            "host{i} etcd.conf:\n{conf}"
        );
    }
}

/// After a recovery: three healthy members, each with its own peer and client URL (no
/// localhost), and every wrecked data dir still on disk, moved aside within its host's tree.
fn assert_cluster_whole(okd: &OkdCluster) {
    okd.wait_healthy(&[0, 1, 2], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    for via in 0..MEMBERS {
        let members = okd.member_list(via);
        let want: Vec<ListedMember> = okd
            .hosts
            .iter()
            .map(|h| {
                let got = members.iter().find(|m| m.name == h.name);
                ListedMember {
                    id: got.map_or(0, |m| m.id),
                    name: h.name.clone(),
                    peer_urls: vec![h.peer_url.clone()],
                    client_urls: vec![h.client_url.clone()],
                }
            })
            .collect();
        assert_eq!(members, want, "member list through host{via}");
    }
    for h in &okd.hosts {
        let markers: Vec<PathBuf> = h
            .find("DRILL-MARKER")
            .into_iter()
            .filter(|p| !p.starts_with("var/lib/etcd/"))
            .collect();
        assert!(
            !markers.is_empty(),
            "host{}: the wrecked data dir is gone (not moved aside)",
            h.index
        );
        for m in markers {
            assert_eq!(
                std::fs::read_to_string(h.root.join(&m)).unwrap(),
                marker(h.index),
                "{}",
                m.display()
            );
        }
        assert!(
            !h.data_dir().join("DRILL-MARKER").exists(),
            "host{} runs on the wrecked dir",
            h.index
        );
    }
}

/// Every loaded v3 key is back with its value, read through member `via` (a short message, not
/// two dumps, when not).
fn assert_v3_back(okd: &OkdCluster, via: usize, when: &str) {
    let got = okd.v3_all(via);
    let missing: Vec<&String> = okd.v3.keys().filter(|k| !got.contains_key(*k)).collect();
    let changed: Vec<&String> = okd
        .v3
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    let extra: Vec<&String> = got.keys().filter(|k| !okd.v3.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && changed.is_empty() && extra.is_empty(),
        "{when}, through host{via}: {} of {} v3 keys missing (first {:?}), {} with another value (first {:?}), {} not loaded (first {:?})",
        missing.len(),
        okd.v3.len(),
        missing.first(),
        changed.len(),
        changed.first(),
        extra.len(),
        extra.first()
    );
}

/// Flow 1 + 2 from the v3 snapshot: recover on host0, join host1 and host2; every v3 key back.
#[test]
fn v3_snapshot_recover_and_join_bring_back_every_key_and_three_members() {
    let mut okd = OkdCluster::start("drill-v3");
    okd.load(300);
    let b = okd.backup_all();
    let old_cluster = okd.cluster_id(0);
    okd.destroy();

    let plan = plan_changes_nothing(&okd, 0, || recover(&okd, 0, &b.v3, &[]));
    eprintln!("{plan}");
    assert!(plan.stdout.contains(&okd.hosts[0].name), "the plan names the member:\n{plan}");
    let r = recover(&okd, 0, &b.v3, &["--execute"]).ok();
    eprintln!("{r}");
    // the exact command for each other member
    assert!(
        r.stdout.contains("vaultctl etcd join") && r.stdout.contains(&okd.hosts[0].client_url),
        "recover prints the join command:\n{r}"
    );
    okd.wait_healthy(&[0], Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let solo = okd.member_list(0);
    assert_eq!(solo.len(), 1, "{solo:?}");
    assert_eq!(
        solo[0].peer_urls,
        [okd.hosts[0].peer_url.clone()],
        "the real peer URL, not localhost"
    );
    assert_v3_back(&okd, 0, "after recover");
    assert_ne!(okd.cluster_id(0), old_cluster, "a new cluster (new token)");

    join_the_others(&okd);
    assert_cluster_whole(&okd);
    assert_v3_back(&okd, 2, "after both joins");
    // a second recover on a healthy cluster is refused (quorum)
    recover(&okd, 0, &b.v3, &["--execute"]).failed().mentions(&["quorum"]);
}

/// Flow 1 + 2 from host0's data-dir snapshot (the runbook's force-new-cluster path), then the v2
/// keyspace restore: every v2 and v3 key back.
#[test]
fn datadir_snapshot_recover_with_force_new_cluster_and_v2_restore_bring_back_every_v2_key() {
    let mut okd = OkdCluster::start("drill-datadir");
    okd.load(200);
    let b = okd.backup_all();
    okd.destroy();

    let plan = plan_changes_nothing(&okd, 0, || recover(&okd, 0, &b.datadir[0], &[]));
    assert!(plan.stdout.contains("--force-new-cluster"), "the plan shows the drop-in:\n{plan}");
    let r = recover(&okd, 0, &b.datadir[0], &["--execute"]).ok();
    eprintln!("{r}");
    let h0 = &okd.hosts[0];
    okd.wait_healthy(&[0], Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let cmdline = h0.systemctl.cmdline("etcd").unwrap_or_default();
    assert!(!cmdline.contains("force-new-cluster"), "still forced: {cmdline}");
    let dropins = h0.root.join("etc/systemd/system/etcd.service.d");
    let left: Vec<_> = std::fs::read_dir(&dropins)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the force-new-cluster drop-in is removed: {left:?}");
    let calls = h0.systemctl.actions();
    assert!(calls.iter().filter(|c| c.starts_with("daemon-reload")).count() >= 2, "{calls:?}");
    assert_eq!(
        okd.member_list(0)[0].peer_urls,
        std::slice::from_ref(&h0.peer_url),
        "peer URL fixed with member update"
    );
    let v2_from_datadir = okd.v2_all(0);
    assert_v3_back(&okd, 0, "after recover from the data-dir snapshot");

    join_the_others(&okd);
    assert_cluster_whole(&okd);
    for via in 0..MEMBERS {
        assert_v3_back(&okd, via, "after both joins");
    }

    let mut args = vec!["etcd", "v2", "restore", b.v2.as_str(), "--endpoints", h0.client_url.as_str()];
    let tls = h0.tls_args();
    args.extend(tls.iter().map(String::as_str));
    okd.ctl.restorer(&args).ok();
    assert_eq!(okd.v2_all(2), okd.v2, "every v2 key after the v2 restore");
    assert_eq!(v2_from_datadir, okd.v2, "the data-dir snapshot carries the v2 store");
}

/// The state of each step in a recovery journal, in plan order (`""` when it has none yet).
fn journal_states(journal: &Value) -> Vec<String> {
    let steps = journal["steps"]
        .as_array()
        .or_else(|| journal["plan"]["steps"].as_array())
        .unwrap_or_else(|| panic!("no steps in the journal: {journal:#}"));
    steps
        .iter()
        .map(|st| {
            let state = ["state", "status"].iter().map(|f| &st[*f]).find(|v| !v.is_null());
            match state {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o.keys().next().cloned().unwrap_or_default(),
                Some(v) => v.to_string(),
                None => String::new(),
            }
            .to_ascii_lowercase()
        })
        .collect()
}

/// Flow 1 killed with SIGKILL while a middle step runs, finished with `--resume`; then the
/// others join as usual.
#[test]
fn a_recovery_killed_at_a_middle_step_finishes_with_resume() {
    let mut okd = OkdCluster::start("drill-resume");
    okd.load(200);
    let b = okd.backup_all();
    okd.destroy();
    let h0 = &okd.hosts[0];
    let root = h0.root_arg();
    let id = okd.ctl.identity.display().to_string();
    let ctl = h0.ctl(&okd.ctl);
    let args = [
        "--repo",
        &ctl.repo,
        "--identity",
        &id,
        "etcd",
        "recover",
        &b.v3,
        "--root",
        &root,
        "--execute",
    ];
    let mut run = ctl.spawn("recover-killed", &args);
    let mut killed_at = None;
    let journal = h0.journal();
    // a step of the second half (the data dir already moved aside), not the last ones
    run.while_running_until(Duration::from_secs(120), "a middle step of the journal is started", || {
        let Ok(text) = std::fs::read_to_string(&journal) else {
            return false;
        };
        let Ok(j) = serde_json::from_str::<Value>(&text) else {
            return false;
        };
        let states = journal_states(&j);
        let n = states.len();
        let middle = (n / 2..n.saturating_sub(2)).find(|&i| states[i].starts_with("start") || states[i].starts_with("run"));
        killed_at = middle.map(|i| (i, n, states.clone()));
        middle.is_some()
    });
    let st = run.kill();
    assert!(st.code().is_none(), "killed by the signal: {st}");
    let (step, n, states) = killed_at.expect("recorded");
    eprintln!("killed at step {} of {n}: {states:?}", step + 1);

    // a new --execute does not start over on top of a half-done recovery
    recover(&okd, 0, &b.v3, &["--execute"]).failed().mentions(&["--resume"]);
    recover(&okd, 0, &b.v3, &["--resume"]).ok();
    // the finished journal is kept as journal.<time>.json, every step done
    assert!(!journal.exists(), "the finished journal is not left as the one in progress");
    let kept: Vec<PathBuf> = std::fs::read_dir(journal.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        // (a write of the journal that the kill interrupted leaves its temporary file behind)
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("journal.")))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&kept[0]).unwrap()).unwrap();
    let states = journal_states(&j);
    assert!(states.iter().all(|s| s == "done"), "{states:?}");
    okd.wait_healthy(&[0], Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    assert_v3_back(&okd, 0, "after --resume");
    join_the_others(&okd);
    assert_cluster_whole(&okd);
}

/// Bad input, each refused before anything changes on the host (same tree, no systemctl action),
/// with a message that says what to do.
#[test]
fn bad_input_is_refused_before_anything_changes() {
    let mut okd = OkdCluster::start("drill-refusals");
    okd.load(50);
    let b = okd.backup_all();
    let h0 = &okd.hosts[0];
    let refused = |what: &str, ctl: &Ctl, id: &str, extra: &[&str], needles: &[&str]| -> Run {
        let skip: &[&str] = if h0.running() { &["var/lib/etcd"] } else { &[] };
        let tree = h0.fingerprint(skip);
        let actions = h0.systemctl.actions();
        let root = h0.root_arg();
        let mut args = vec!["etcd", "recover", id, "--root", &root, "--execute"];
        args.extend_from_slice(extra);
        let r = ctl.restorer(&args).failed().mentions(needles);
        assert_eq!(h0.fingerprint(skip), tree, "{what}: host0's tree changed:\n{r}");
        assert_eq!(h0.systemctl.actions(), actions, "{what}: systemctl was run:\n{r}");
        assert!(!h0.journal().exists(), "{what}: a journal was written:\n{r}");
        eprintln!("{what}: refused:\n{r}");
        r
    };
    let ctl0 = h0.ctl(&okd.ctl);

    // the cluster still has quorum: nothing is stopped
    refused("quorum", &ctl0, &b.v3, &[], &["quorum", "--force"]);
    okd.wait_healthy(&[0, 1, 2], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    okd.destroy();
    // a snapshot of another cluster (in the same vault)
    let other = EtcdCluster::start(1, None);
    let other_id = s(&okd.ctl.backup(&other.endpoints_arg(), &[]), "id");
    drop(other);
    refused("other cluster", &ctl0, &other_id, &[], &["cluster", "--force"]);
    let forced = recover(&okd, 0, &other_id, &["--force"]);
    assert_eq!(
        forced.code,
        Some(0),
        "--force accepts another cluster's snapshot (plan only):\n{forced}"
    );

    // a wrong identity
    let mut stranger = ctl0.clone();
    let (identity, _) = stranger.keygen("stranger.txt");
    stranger.identity = identity;
    refused("wrong identity", &stranger, &b.v3, &[], &["identity"]);

    // a missing etcd binary: the unit names one that is not installed
    h0.set_exec_start("/bin/bash -c \"GOMAXPROCS=2 /opt/etcd/bin/etcd\"");
    refused(
        "missing binary",
        &ctl0,
        &b.v3,
        &[],
        &["/opt/etcd/bin/etcd", "does not exist", "install etcd"],
    );
    h0.set_exec_start(ETCD_EXEC_START);

    // the peer port in use
    let addr = h0.peer_url.trim_start_matches("https://").to_string();
    let listener = std::net::TcpListener::bind(&addr).expect("hold the peer port");
    let port = addr.rsplit(':').next().unwrap().to_string();
    refused("peer port in use", &ctl0, &b.v3, &[], &[&port, "in use"]);
    drop(listener);

    // with everything right again, the plan passes its pre-flight checks
    plan_changes_nothing(&okd, 0, || recover(&okd, 0, &b.v3, &[]));
}
