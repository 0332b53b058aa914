//! End-to-end tests of the etcd v2 captures: the v2 keyspace (`backup etcd-v2`, `etcd v2 restore`)
//! and the member data dir (`backup etcd-datadir`, `etcd datadir restore`), against real etcd 3.4
//! members with the v2 API enabled, plain and with TLS, and vaultd jobs of both kinds. Run
//! `cargo build -p vaultctl -p vaultd` first.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vault_e2e::daemon::{assert_config_ok, get, metric, vaultd_run, write_private};
use vault_e2e::process::Proc;
use vault_e2e::{Certs, Ctl, EtcdCluster, free_port, ports, s, tempdir, wait_for};

/// A flannel network config, as OKD 3.x keeps it in the v2 keyspace.
const FLANNEL_CONFIG: &str = r#"{"Network":"10.128.0.0/14","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
/// A value with characters a form encoding must carry through.
const ODD_VALUE: &str = "a b ✓ & = % + /?#";

/// `ETCDCTL_API=2 etcdctl` against one member (with the client certificate under TLS).
fn v2ctl(endpoint: &str, tls: Option<&Certs>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "2").arg("--endpoints").arg(endpoint);
    if let Some(c) = tls {
        cmd.arg("--ca-file")
            .arg(&c.ca)
            .arg("--cert-file")
            .arg(&c.client_cert)
            .arg("--key-file")
            .arg(&c.client_key);
    }
    cmd.args(args).output().expect("run etcdctl")
}

fn v2ok(endpoint: &str, tls: Option<&Certs>, args: &[&str]) -> String {
    let out = v2ctl(endpoint, tls, args);
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One node as the cluster holds it: a dir, or a key's value and TTL.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Dir,
    Key(String, Option<i64>),
}

/// Every node the v2 API lists, plus the named hidden ones.
fn dump(endpoint: &str, tls: Option<&Certs>, hidden: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let listing = v2ok(endpoint, tls, &["ls", "--recursive", "-p", "/"]);
    let mut keys: Vec<String> = Vec::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        match line.strip_suffix('/') {
            Some(d) => {
                out.insert(d.to_string(), Node::Dir);
            }
            None => keys.push(line.to_string()),
        }
    }
    keys.extend(hidden.iter().map(|h| h.to_string()));
    for k in keys {
        let o = v2ctl(endpoint, tls, &["-o", "json", "get", &k]);
        if !o.status.success() {
            continue; // a named hidden key that is not there
        }
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("etcdctl get {k}: {e}"));
        let node = &v["node"];
        out.insert(k, Node::Key(node["value"].as_str().unwrap_or("").to_string(), node["ttl"].as_i64()));
    }
    out
}

/// The flannel-style data set: config, subnets with TTLs, nested dirs, an empty dir, a short
/// TTL that runs out before the restore, a hidden key, an odd value.
fn populate(ep: &str, tls: Option<&Certs>) {
    v2ok(ep, tls, &["set", "/coreos.com/network/config", FLANNEL_CONFIG]);
    for (i, ip) in [(5, "10.0.0.1"), (7, "10.0.0.2")] {
        let key = format!("/coreos.com/network/subnets/10.128.{i}.0-24");
        let val = format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan"}}"#);
        v2ok(ep, tls, &["set", "--ttl", "86400", &key, &val]);
    }
    v2ok(ep, tls, &["set", "/a/b/c/deep", "deep value"]);
    v2ok(ep, tls, &["mkdir", "/emptydir"]);
    v2ok(ep, tls, &["set", "--ttl", "2", "/short-lived", "gone soon"]);
    v2ok(ep, tls, &["set", "/coreos.com/_hidden", "hidden value"]);
    v2ok(ep, tls, &["set", "/odd", ODD_VALUE]);
}

fn wipe(ep: &str, tls: Option<&Certs>) {
    for d in ["/coreos.com", "/a", "/emptydir"] {
        let _ = v2ctl(ep, tls, &["rm", "--recursive", d]);
    }
    for k in ["/odd", "/short-lived"] {
        let _ = v2ctl(ep, tls, &["rm", k]);
    }
    assert_eq!(dump(ep, tls, &["/coreos.com/_hidden"]), BTreeMap::new(), "wipe left something");
}

/// The captured set without what expired, TTLs dropped for comparison (checked separately).
fn without_ttls(m: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    m.iter()
        .filter(|(k, _)| k.as_str() != "/short-lived")
        .map(|(k, v)| {
            let v = match v {
                Node::Key(val, _) => Node::Key(val.clone(), None),
                Node::Dir => Node::Dir,
            };
            (k.clone(), v)
        })
        .collect()
}

fn ttl_of(m: &BTreeMap<String, Node>, key: &str) -> Option<i64> {
    match m.get(key) {
        Some(Node::Key(_, t)) => *t,
        other => panic!("{key} is {other:?}"),
    }
}

fn backup_v2(ctl: &Ctl, ep: &str, extra: &[&str]) -> Value {
    let mut args = vec!["backup", "etcd-v2", "--json", "--endpoints", ep, "--hidden", "/coreos.com/_hidden"];
    args.extend_from_slice(extra);
    ctl.writer(&args).ok().json()
}

#[test]
fn v2_keyspace_is_captured_and_restored_with_ttls_hidden_keys_and_a_plan() {
    let tmp = tempdir("etcd-v2");
    let etcd = EtcdCluster::start(1, None);
    let ep = etcd.endpoints()[0].clone();
    populate(&ep, None);
    let hidden = ["/coreos.com/_hidden"];
    let before = dump(&ep, None, &hidden);
    assert_eq!(before.len(), 14, "{before:?}");

    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let v = backup_v2(&ctl, &ep, &[]);
    let id = s(&v, "id");
    assert_eq!(v["kind"], "etcd-v2", "{v}");
    assert_eq!(v["etcd_v2"]["keys"], 7, "{v}");
    assert_eq!(v["etcd_v2"]["dirs"], 7, "{v}"); // coreos.com, network, subnets, a, b, c, emptydir
    assert_eq!(v["etcd_v2"]["with_ttl"], 3, "{v}");
    assert_eq!(v["etcd_v2"]["hidden"][0], "/coreos.com/_hidden", "{v}");
    ctl.restorer(&["verify", &id]).ok();

    std::thread::sleep(Duration::from_secs(3)); // /short-lived runs out
    wipe(&ep, None);

    // --dry-run: the plan, and nothing changes.
    let plan = ctl
        .restorer(&["etcd", "v2", "restore", &id, "--endpoints", &ep, "--dry-run"])
        .ok()
        .mentions(&[
            "create",
            "/coreos.com/network/config",
            "expired",
            "/short-lived",
            "nothing was changed",
        ]);
    assert!(plan.stdout.contains("   1. create"), "{}", plan.stdout);
    assert_eq!(dump(&ep, None, &hidden), BTreeMap::new(), "--dry-run changed the cluster");

    // The restore: every dir, key and value back, the hidden key too, TTLs as remaining time.
    let r = ctl
        .restorer(&["--json", "etcd", "v2", "restore", &id, "--endpoints", &ep])
        .ok()
        .json();
    assert_eq!(r["expired"], 1, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let after = dump(&ep, None, &hidden);
    assert_eq!(without_ttls(&after), without_ttls(&before));
    for k in [
        "/coreos.com/network/subnets/10.128.5.0-24",
        "/coreos.com/network/subnets/10.128.7.0-24",
    ] {
        let (was, now) = (ttl_of(&before, k).unwrap(), ttl_of(&after, k).unwrap());
        assert!(now <= was && now >= was - 60, "{k}: ttl {was} at capture, {now} after restore");
    }
    assert_eq!(ttl_of(&after, "/coreos.com/network/config"), None);

    // Existing keys are reported and left alone; --overwrite sets them.
    v2ok(&ep, None, &["set", "/coreos.com/network/config", "changed by hand"]);
    ctl.restorer(&["etcd", "v2", "restore", &id, "--endpoints", &ep]).ok().mentions(&[
        "left alone",
        "exists with another value",
        "0 created",
    ]);
    assert_eq!(
        dump(&ep, None, &[])["/coreos.com/network/config"],
        Node::Key("changed by hand".into(), None)
    );
    ctl.restorer(&["etcd", "v2", "restore", &id, "--endpoints", &ep, "--overwrite"])
        .ok()
        .mentions(&["overwrite", "1 overwritten"]);
    assert_eq!(
        dump(&ep, None, &[])["/coreos.com/network/config"],
        Node::Key(FLANNEL_CONFIG.into(), None)
    );

    // --prefix restores that subtree only.
    wipe(&ep, None);
    ctl.restorer(&["etcd", "v2", "restore", &id, "--endpoints", &ep, "--prefix", "/coreos.com/network"])
        .ok();
    let part = dump(&ep, None, &hidden);
    assert!(part.contains_key("/coreos.com/network/config"), "{part:?}");
    assert!(
        !part.contains_key("/a") && !part.contains_key("/odd") && !part.contains_key("/coreos.com/_hidden"),
        "{part:?}"
    );

    // A v2 snapshot is not a file to restore, and an etcd-v3 restore refuses it.
    ctl.restorer(&["restore", &id, "--to", tmp.path().join("x").to_str().unwrap()])
        .failed()
        .mentions(&["etcd v2 restore"]);
}

#[test]
fn v2_keyspace_over_tls_and_bad_input() {
    let tmp = tempdir("etcd-v2-tls");
    let certs = Certs::generate(&tmp.path().join("certs"));
    let etcd = EtcdCluster::start(1, Some(&certs));
    let ep = etcd.endpoints()[0].clone();
    let tls = Some(&certs);
    populate(&ep, tls);
    let before = dump(&ep, tls, &["/coreos.com/_hidden"]);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.client_cert.display().to_string(),
        certs.client_key.display().to_string(),
    );
    let tls_args = ["--cacert", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    let id = s(&backup_v2(&ctl, &ep, &tls_args), "id");
    wipe(&ep, tls);
    let mut args = vec!["etcd", "v2", "restore", id.as_str(), "--endpoints", ep.as_str()];
    args.extend_from_slice(&tls_args);
    ctl.restorer(&args).ok();
    assert_eq!(without_ttls(&dump(&ep, tls, &["/coreos.com/_hidden"])), without_ttls(&before));

    // The data dir of a TLS member: client URL and TLS files from etcd.conf (OKD: the peer
    // certificate is the client certificate), read under --root.
    let root = tmp.path().join("host");
    host_tree(&root, &etcd.members[0], "m1");
    for (from, name) in [
        (&certs.ca, "ca.crt"),
        (&certs.client_cert, "peer.crt"),
        (&certs.client_key, "peer.key"),
    ] {
        std::fs::copy(from, root.join("etc/etcd").join(name)).unwrap();
    }
    let conf = root.join("etc/etcd/etcd.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("ETCD_TRUSTED_CA_FILE=/etc/etcd/ca.crt\nETCD_PEER_CERT_FILE=/etc/etcd/peer.crt\nETCD_PEER_KEY_FILE=/etc/etcd/peer.key\n");
    std::fs::write(&conf, text).unwrap();
    let root_arg = root.display().to_string();
    let d = ctl.writer(&["backup", "etcd-datadir", "--json", "--root", &root_arg]).ok().json();
    assert_eq!(d["etcd_datadir"]["member_name"], "m1", "{d}");
    assert!(d["etcd_datadir"]["endpoint"].as_str().unwrap().starts_with("https://"), "{d}");

    // Without the client certificate: refused, saying why.
    ctl.writer(&["backup", "etcd-v2", "--endpoints", &ep, "--cacert", &ca])
        .code(6)
        .mentions(&["no etcd member with a working v2 API", &ep]);
    // Unreachable.
    let closed = format!("http://127.0.0.1:{}", ports::closed_port());
    ctl.writer(&["backup", "etcd-v2", "--endpoints", &closed])
        .code(6)
        .mentions(&["connection refused", "check that etcd is running"]);
    // A member without --enable-v2.
    let plain = PlainEtcd::start(tmp.path(), "nov2", false, &[]);
    ctl.writer(&["backup", "etcd-v2", "--endpoints", &plain.client_url])
        .code(6)
        .mentions(&["v2 API is not enabled", "--enable-v2=true"]);
}

/// A single etcd member started here directly (the harness's always has v2 on), for a member
/// without the v2 API and for one started on a laid down data dir with extra flags.
struct PlainEtcd {
    proc: Proc,
    client_url: String,
}

impl PlainEtcd {
    fn start(dir: &Path, name: &str, enable_v2: bool, extra: &[&str]) -> PlainEtcd {
        Self::start_on(dir, name, &dir.join(format!("{name}.etcd")), enable_v2, extra)
    }

    fn start_on(dir: &Path, name: &str, data_dir: &Path, enable_v2: bool, extra: &[&str]) -> PlainEtcd {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .arg(format!("--initial-cluster={name}={peer_url}"))
            .arg(format!("--enable-v2={enable_v2}"))
            .args(extra);
        let mut proc = Proc::spawn(&format!("etcd {name}"), &mut cmd, &dir.join(format!("{name}.log")));
        let healthy = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            if let Some(st) = proc.exited() {
                panic!("etcd {name} exited ({st}):\n{}", proc.log_tail(20));
            }
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &client_url, "--dial-timeout=1s", "endpoint", "health"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        assert!(healthy.is_some(), "etcd {name} not healthy:\n{}", proc.log_tail(20));
        PlainEtcd { proc, client_url }
    }
}

impl Drop for PlainEtcd {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(10));
    }
}

/// `etcdctl get --prefix /vault-test/` as key -> value.
fn v3_keys(endpoint: &str) -> BTreeMap<String, String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "get", "--prefix", "/vault-test/"])
        .output()
        .expect("etcdctl get");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines.chunks(2).map(|kv| (kv[0].to_string(), kv[1].to_string())).collect()
}

/// A host tree for the member: `etc/etcd/etcd.conf` as OKD writes it, and the data dir under
/// `var/lib/etcd` (a symlink to the running member's).
fn host_tree(root: &Path, member: &vault_e2e::EtcdMember, name: &str) {
    std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&member.data_dir, root.join("var/lib/etcd")).unwrap();
    std::fs::write(
        root.join("etc/etcd/etcd.conf"),
        format!(
            "# [member]\nETCD_NAME={name}\nETCD_DATA_DIR=/var/lib/etcd/\n#ETCD_WAL_DIR=\"\"\nETCD_ADVERTISE_CLIENT_URLS={}\nETCD_ENABLE_V2=true\n",
            member.client_url
        ),
    )
    .unwrap();
}

#[test]
fn datadir_of_a_running_member_restarts_as_a_new_cluster_with_v2_and_v3_keys() {
    let tmp = tempdir("etcd-datadir");
    let etcd = EtcdCluster::start(1, None);
    let ep = etcd.endpoints()[0].clone();
    populate(&ep, None);
    let v3: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("/vault-test/key-{i:04}"), format!("value {i}").into_bytes()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(etcd.put_all(&v3));
    let v2_before = dump(&ep, None, &["/coreos.com/_hidden"]);
    let v3_before = v3_keys(&ep);
    assert_eq!(v3_before.len(), 200);

    let root = tmp.path().join("host");
    host_tree(&root, &etcd.members[0], "m1");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let root_arg = root.display().to_string();
    let v = ctl.writer(&["backup", "etcd-datadir", "--json", "--root", &root_arg]).ok().json();
    let id = s(&v, "id");
    let info = &v["etcd_datadir"];
    assert_eq!(v["kind"], "etcd-datadir", "{v}");
    assert_eq!(info["member_name"], "m1", "{v}");
    assert_eq!(info["data_dir"], "/var/lib/etcd/", "{v}");
    assert_eq!(info["members"].as_array().map(|m| m.len()), Some(1), "{v}");
    assert!(info["tool"].as_str().unwrap().starts_with("etcdctl backup --with-v3"), "{v}");
    let layout: Vec<&str> = info["layout"].as_array().unwrap().iter().filter_map(|l| l.as_str()).collect();
    assert!(layout.contains(&"member/snap/db"), "{layout:?}");
    assert!(
        layout.iter().any(|l| l.starts_with("member/wal/") && l.ends_with(".wal")),
        "{layout:?}"
    );
    assert_eq!(info["db_sha256"], v["sha256"], "{v}");
    // Nothing of the capture's staging is left beside the data dir.
    let beside: Vec<String> = std::fs::read_dir(etcd.members[0].data_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vault-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    ctl.restorer(&["verify", &id]).ok();

    // Written after the capture: must not come back.
    v2ok(&ep, None, &["set", "/after-capture", "x"]);

    // Laid down over an existing dir (moved aside, kept), then started with --force-new-cluster.
    let dest = tmp.path().join("restored.etcd");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("keep-me"), "old data").unwrap();
    let dest_arg = dest.display().to_string();
    ctl.restorer(&["etcd", "datadir", "restore", &id, "--data-dir", &dest_arg])
        .ok()
        .mentions(&["moved aside", "--force-new-cluster"]);
    let old = tmp.path().join("restored.etcd.old");
    assert_eq!(std::fs::read_to_string(old.join("keep-me")).unwrap(), "old data");
    assert!(dest.join("member/snap/db").is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dest).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "laid down data dir is {mode:o}");
    drop(etcd); // the old member is gone, as in a disaster

    let solo = PlainEtcd::start_on(tmp.path(), "solo", &dest, true, &["--force-new-cluster"]);
    assert_eq!(v3_keys(&solo.client_url), v3_before);
    let v2_after = dump(&solo.client_url, None, &["/coreos.com/_hidden"]);
    let keep = |m: &BTreeMap<String, Node>| {
        let mut m = without_ttls(m);
        m.remove("/short-lived"); // may or may not have run out meanwhile
        m
    };
    assert_eq!(keep(&v2_after), keep(&v2_before));
    assert!(!v2_after.contains_key("/after-capture"));
    // It is a cluster of its own that takes writes, v2 and v3 (a database whose consistent index
    // is ahead of the backup's renumbered WAL would make etcd skip the first v3 ones).
    v2ok(&solo.client_url, None, &["set", "/new", "1"]);
    v3_put_and_read(&solo.client_url, 20);
}

/// Put `n` keys `/vault-test/after-N` one by one, and read them all back.
fn v3_put_and_read(endpoint: &str, n: usize) {
    for i in 0..n {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                endpoint,
                "--command-timeout=5s",
                "put",
                &format!("/vault-test/after-{i:06}"),
                "v",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "put {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let keys = v3_keys(endpoint).into_keys();
    assert_eq!(contiguous(keys, "/vault-test/after-"), n, "writes after the restore were lost");
}

#[test]
fn datadir_bad_input_is_refused_with_what_to_do() {
    let tmp = tempdir("etcd-datadir-bad");
    let etcd = EtcdCluster::start(1, None);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    // A data dir that is none.
    let missing = tmp.path().join("no-such-dir").display().to_string();
    ctl.writer(&[
        "backup",
        "etcd-datadir",
        "--data-dir",
        &missing,
        "--endpoints",
        &etcd.endpoints()[0],
    ])
    .code(2)
    .mentions(&["is not an etcd member data dir", "member/wal is missing"]);
    // A host tree without etcd.conf, one whose etcd.conf sets no data dir, one naming another member.
    let root = tmp.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.display().to_string();
    ctl.writer(&["backup", "etcd-datadir", "--root", &root_arg])
        .code(2)
        .mentions(&["cannot read etcd config", "etc/etcd/etcd.conf"]);
    std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
    std::fs::write(root.join("etc/etcd/etcd.conf"), "ETCD_NAME=m1\n").unwrap();
    ctl.writer(&["backup", "etcd-datadir", "--root", &root_arg])
        .code(2)
        .mentions(&["sets no ETCD_DATA_DIR"]);
    std::fs::remove_file(root.join("etc/etcd/etcd.conf")).unwrap();
    host_tree(&root, &etcd.members[0], "master-2");
    ctl.writer(&["backup", "etcd-datadir", "--root", &root_arg])
        .code(2)
        .mentions(&["belongs to member \"master-2\"", "--endpoints"]);
    assert!(ctl.snapshots().is_empty());
}

#[test]
fn vaultd_runs_etcd_v2_and_etcd_datadir_jobs() {
    let tmp = tempdir("vaultd-etcd-v2");
    let etcd = EtcdCluster::start(1, None);
    let ep = etcd.endpoints()[0].clone();
    populate(&ep, None);
    let root = tmp.path().join("host");
    host_tree(&root, &etcd.members[0], "m1");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let token = "token-for-the-v2-test";
    let token_file = tmp.path().join("token");
    write_private(&token_file, token);
    let port = free_port();
    let config = tmp.path().join("vaultd.toml");
    write_private(
        &config,
        &format!(
            r#"repo = "{repo}"
writer_key = "{wk}"
catalog = "{catalog}"
[http]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"

[[job]]
name = "flannel"
kind = "etcd-v2"
schedule = "*/2 * * * * *"
hidden = ["/coreos.com/_hidden"]
[job.etcd]
endpoints = ["{ep}"]

[[job]]
name = "datadir"
kind = "etcd-datadir"
schedule = "*/3 * * * * *"
root = "{root}"
"#,
            repo = ctl.repo,
            wk = ctl.writer_key.display(),
            catalog = tmp.path().join("catalog.sqlite").display(),
            token_file = token_file.display(),
            root = root.display(),
        ),
    );
    assert_config_ok(&config);
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(&config), &tmp.path().join("vaultd.log"));
    let series = |job: &str| format!("vault_job_runs_total{{job=\"{job}\",outcome=\"success\"}}");
    let ok = wait_for(Duration::from_secs(90), Duration::from_millis(500), || {
        let (_, body) = get(port, "/metrics", Some(token))?;
        (metric(&body, &series("flannel"))? >= 1.0 && metric(&body, &series("datadir"))? >= 1.0).then_some(())
    });
    let log = std::fs::read_to_string(tmp.path().join("vaultd.log")).unwrap_or_default();
    let datadir_lines: Vec<&str> = log.lines().filter(|l| l.contains("datadir")).take(20).collect();
    assert!(ok.is_some(), "jobs did not succeed; vaultd log:\n{}", datadir_lines.join("\n"));
    daemon.terminate(Duration::from_secs(20));
    let snaps = ctl.snapshots();
    let kinds: Vec<&str> = snaps.iter().filter_map(|s| s["kind"].as_str()).collect();
    assert!(kinds.contains(&"etcd-v2") && kinds.contains(&"etcd-datadir"), "{snaps:?}");
    // Both verify with content.
    ctl.restorer(&["verify", "--all"]).ok();
}

/// The numbers `n` of keys `prefix{n:06}` in `keys`, which must be 0..k without a gap.
fn contiguous(keys: impl Iterator<Item = String>, prefix: &str) -> usize {
    let mut ns: Vec<usize> = keys.filter_map(|k| k.strip_prefix(prefix).and_then(|n| n.parse().ok())).collect();
    ns.sort();
    for (i, n) in ns.iter().enumerate() {
        assert_eq!(i, *n, "key {prefix}{i:06} is missing but later ones came back: {ns:?}");
    }
    ns.len()
}

/// Captured while v2 and v3 writers run and etcd cuts v2 snap files: the laid down dir starts, and
/// each writer's keys come back as a gap-free prefix reaching at least as far as the capture's start.
#[test]
fn datadir_captured_under_writes_is_consistent() {
    // With --snapshot-count=500: one v2 snap file at about index 500, then the restart's entry.
    const BASE: usize = 600;
    let tmp = tempdir("etcd-datadir-busy");
    let live = PlainEtcd::start(tmp.path(), "busy", true, &["--snapshot-count=500"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt
        .block_on(etcd_client::Client::connect([live.client_url.as_str()], None))
        .expect("connect");
    rt.block_on(async {
        for i in 0..BASE {
            client.put(format!("/vault-test/base-{i:06}"), "v", None).await.expect("put");
        }
    });
    // Restarted: the member publishes its attributes again, an entry `etcdctl backup` filters
    // out, in the WAL after the last v2 snap file.
    drop(live);
    let data_dir = tmp.path().join("busy.etcd");
    let live = PlainEtcd::start_on(tmp.path(), "busy", &data_dir, true, &["--snapshot-count=500"]);
    let ep = live.client_url.clone();
    let client = rt.block_on(etcd_client::Client::connect([ep.as_str()], None)).expect("connect");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let v3_written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v3_writer = {
        let (stop, written, mut client) = (stop.clone(), v3_written.clone(), client.clone());
        rt.spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                client.put(format!("/vault-test/live-{i:06}"), "v", None).await.expect("put");
                i += 1;
                written.store(i, std::sync::atomic::Ordering::SeqCst);
                // slow enough that etcd cuts no new snap file before the capture
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let v2_written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v2_writer = {
        let (stop, written, ep) = (stop.clone(), v2_written.clone(), ep.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                v2ok(&ep, None, &["set", &format!("/live/k{i:06}"), "v"]);
                i += 1;
                written.store(i, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let (v3_at_start, v2_at_start) = (
        v3_written.load(std::sync::atomic::Ordering::SeqCst),
        v2_written.load(std::sync::atomic::Ordering::SeqCst),
    );
    let data_dir = data_dir.display().to_string();
    let v = ctl
        .writer(&["backup", "etcd-datadir", "--json", "--data-dir", &data_dir, "--endpoints", &ep])
        .ok()
        .json();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    rt.block_on(v3_writer).unwrap();
    v2_writer.join().unwrap();
    assert!(
        v["etcd_datadir"]["snap_index"].as_u64().unwrap() > 0,
        "no v2 snap file was cut: {v}"
    );
    drop(live);

    let dest = tmp.path().join("restored.etcd");
    ctl.restorer(&["etcd", "datadir", "restore", &s(&v, "id"), "--data-dir", dest.to_str().unwrap()])
        .ok();
    let solo = PlainEtcd::start_on(tmp.path(), "solo", &dest, true, &["--force-new-cluster"]);
    let keys: Vec<String> = v3_keys(&solo.client_url).into_keys().collect();
    assert_eq!(contiguous(keys.iter().cloned(), "/vault-test/base-"), BASE);
    let v3_back = contiguous(keys.into_iter(), "/vault-test/live-");
    assert!(
        v3_back >= v3_at_start,
        "{v3_back} v3 keys back, {v3_at_start} written before the capture"
    );
    let v2_keys = v2ok(&solo.client_url, None, &["ls", "/live"]);
    let v2_back = contiguous(v2_keys.lines().map(String::from), "/live/k");
    assert!(
        v2_back >= v2_at_start,
        "{v2_back} v2 keys back, {v2_at_start} written before the capture"
    );
    eprintln!("v3: {v3_at_start} at start, {v3_back} back; v2: {v2_at_start} at start, {v2_back} back");
    // New writes land (a database ahead of the WAL would make etcd skip them as already applied).
    v3_put_and_read(&solo.client_url, 20);
}

/// A member restarted often since its last v2 snap file: `etcdctl backup` drops each restart's
/// attribute update from the WAL and renumbers the entries after it, so the database's consistent
/// index must be brought in line or etcd skips the first writes after the recovery.
#[test]
fn datadir_of_an_often_restarted_member_takes_writes_after_recovery() {
    let tmp = tempdir("etcd-datadir-restarts");
    let data_dir = tmp.path().join("m.etcd");
    let mut live = PlainEtcd::start_on(tmp.path(), "m", &data_dir, true, &[]);
    for i in 0..8 {
        v2ok(&live.client_url, None, &["set", &format!("/restart/k{i}"), "v"]);
        drop(live);
        live = PlainEtcd::start_on(tmp.path(), "m", &data_dir, true, &[]);
    }
    v3_put_and_read_prefix(&live.client_url, "/vault-test/before-", 5);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let dd = data_dir.display().to_string();
    let v = ctl
        .writer(&[
            "backup",
            "etcd-datadir",
            "--json",
            "--data-dir",
            &dd,
            "--endpoints",
            &live.client_url,
        ])
        .ok()
        .json();
    drop(live);
    let dest = tmp.path().join("restored.etcd");
    ctl.restorer(&["etcd", "datadir", "restore", &s(&v, "id"), "--data-dir", dest.to_str().unwrap()])
        .ok();
    let solo = PlainEtcd::start_on(tmp.path(), "solo", &dest, true, &["--force-new-cluster"]);
    assert_eq!(v3_keys(&solo.client_url).len(), 5);
    assert_eq!(v2ok(&solo.client_url, None, &["ls", "/restart"]).lines().count(), 8);
    v3_put_and_read(&solo.client_url, 20);
}

fn v3_put_and_read_prefix(endpoint: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint, "put", &format!("{prefix}{i:06}"), "v"])
            .output()
            .unwrap();
        assert!(out.status.success(), "put {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
