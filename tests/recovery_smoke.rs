//! The recovery flows end to end on plain-HTTP members, each a host tree of its own with a
//! stand-in systemctl running real etcd: `etcd recover` from a v3 snapshot on the first host, then
//! `etcd join` on the second. (The TLS, three-member disaster drill is `tests/recovery.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vault_e2e::okd::{ETCD_EXEC_START, etcd_unit};
use vault_e2e::{Ctl, Systemctl, free_port, s, tempdir, wait_for};

struct Member {
    name: String,
    root: PathBuf,
    client: String,
    peer: String,
    systemctl: Systemctl,
}

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn healthy(endpoint: &str) -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=1s", "endpoint", "health"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn members(tmp: &Path, n: usize) -> Vec<Member> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect();
    (0..n)
        .map(|i| {
            let root = tmp.join(format!("host{i}"));
            let (client, peer) = (
                format!("http://127.0.0.1:{}", ports[i].0),
                format!("http://127.0.0.1:{}", ports[i].1),
            );
            std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
            std::fs::create_dir_all(root.join("var/lib/etcd")).unwrap();
            std::fs::write(
                root.join("etc/etcd/etcd.conf"),
                format!(
                    "# member m{i}\nETCD_NAME=m{i}\nETCD_DATA_DIR=/var/lib/etcd\nETCD_LISTEN_CLIENT_URLS={client}\n\
                     ETCD_ADVERTISE_CLIENT_URLS={client}\nETCD_LISTEN_PEER_URLS={peer}\nETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\n\
                     ETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_TOKEN=smoke\nETCD_INITIAL_CLUSTER_STATE=new\n",
                    initial.join(",")
                ),
            )
            .unwrap();
            let systemctl = Systemctl::install(&root, &tmp.join(format!("systemctl{i}")));
            systemctl.add_unit("etcd", &etcd_unit(ETCD_EXEC_START));
            systemctl.root_paths(&["ETCD_DATA_DIR"]);
            Member {
                name: format!("m{i}"),
                root,
                client,
                peer,
                systemctl,
            }
        })
        .collect()
}

/// `--root <its tree> --systemctl <its stand-in>`: the member's host for a flow.
fn host_args(m: &Member) -> Vec<String> {
    vec![
        "--root".into(),
        m.root.display().to_string(),
        "--systemctl".into(),
        m.systemctl.program().display().to_string(),
    ]
}

/// `etcd recover ID` on the member's host, then `extra`.
fn recover_args(id: &str, m: &Member, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["etcd".to_string(), "recover".into(), id.to_string()];
    args.extend(host_args(m));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn systemctl(m: &Member, args: &[&str]) {
    let st = Command::new(m.systemctl.program()).args(args).status().unwrap();
    assert!(st.success(), "systemctl {args:?}: {}", m.systemctl.unit_log("etcd"));
}

#[test]
fn a_cluster_comes_back_from_a_v3_snapshot_with_recover_and_join() {
    let tmp = tempdir("recovery-smoke");
    let ms = members(tmp.path(), 2);
    // both must start before either is healthy (a two-member cluster needs both)
    let starting: Vec<_> = ms
        .iter()
        .map(|m| Command::new(m.systemctl.program()).args(["start", "etcd"]).spawn().unwrap())
        .collect();
    for mut child in starting {
        child.wait().unwrap();
    }
    for m in &ms {
        wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            healthy(&m.client).then_some(())
        })
        .unwrap_or_else(|| panic!("{} not healthy: {}", m.name, m.systemctl.unit_log("etcd")));
    }
    for i in 0..50 {
        etcdctl(&ms[0].client, &["put", &format!("/registry/k{i:03}"), &format!("value {i}")]);
    }
    let before = etcdctl(&ms[0].client, &["get", "--prefix", "/registry/"]);

    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let id = s(&ctl.backup(&ms[0].client, &[]), "id");

    // the disaster: etcd stopped everywhere, every data dir gone (kept here as .lost for the test)
    for m in &ms {
        systemctl(m, &["stop", "etcd"]);
        std::fs::rename(m.root.join("var/lib/etcd"), m.root.join("var/lib/etcd.lost")).unwrap();
    }
    let mut plan_args = recover_args(&id, &ms[0], &["--timeout", "60"]);
    let plan = ctl.restorer(&plan_args).ok();
    let text = plan.text();
    println!("{text}");
    assert!(
        text.contains(" 1. fetch snapshot") && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(!ms[0].root.join("var/lib/etcd").exists(), "a plan changes nothing");

    plan_args.push("--execute".into());
    let run = ctl.restorer(&plan_args).ok();
    println!("{}", run.text());
    assert!(run.text().contains("done: every step"), "{}", run.text());
    assert_eq!(etcdctl(&ms[0].client, &["get", "--prefix", "/registry/"]), before);
    let journals: Vec<_> = std::fs::read_dir(ms[0].root.join("var/lib/vault/recovery")).unwrap().collect();
    assert_eq!(journals.len(), 1, "the finished journal is kept");

    let mut join: Vec<String> = vec!["etcd".into(), "join".into(), "--cluster".into(), ms[0].client.clone()];
    join.extend(host_args(&ms[1]));
    join.extend(["--timeout".into(), "60".into(), "--execute".into()]);
    let run = ctl.run(&join).ok();
    println!("{}", run.text());
    assert!(run.text().contains("caught up"), "{}", run.text());
    let list = etcdctl(&ms[1].client, &["member", "list"]);
    for m in &ms {
        assert!(list.contains(&format!("{}, {}, {}", m.name, m.peer, m.client)), "{list}");
    }
    assert_eq!(etcdctl(&ms[1].client, &["get", "--prefix", "/registry/"]), before);
    let conf = std::fs::read_to_string(ms[1].root.join("etc/etcd/etcd.conf")).unwrap();
    assert!(conf.contains("ETCD_INITIAL_CLUSTER_STATE=existing"), "{conf}");
    assert!(ms[1].root.join("etc/etcd/etcd.conf.old").is_file());
    for m in &ms {
        m.systemctl.kill_all();
    }
}

/// The runbook's v2 path: a data-dir snapshot laid down and started once with
/// `--force-new-cluster` through a drop-in, which is gone afterwards, and the peer URL that comes
/// back as localhost fixed.
#[test]
fn a_member_comes_back_from_a_data_dir_snapshot_through_force_new_cluster() {
    let tmp = tempdir("recovery-smoke-datadir");
    let ms = members(tmp.path(), 1);
    let m = &ms[0];
    systemctl(m, &["start", "etcd"]);
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        healthy(&m.client).then_some(())
    })
    .unwrap_or_else(|| panic!("not healthy: {}", m.systemctl.unit_log("etcd")));
    for i in 0..20 {
        etcdctl(&m.client, &["put", &format!("/registry/k{i:03}"), &format!("value {i}")]);
    }
    let before = etcdctl(&m.client, &["get", "--prefix", "/registry/"]);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let root = m.root.display().to_string();
    let id = s(
        &ctl.writer(&["backup", "etcd-datadir", "--json", "--root", &root]).ok().json(),
        "id",
    );
    systemctl(m, &["stop", "etcd"]);
    std::fs::remove_dir_all(m.root.join("var/lib/etcd/member")).unwrap();

    let run = ctl.restorer(&recover_args(&id, m, &["--execute"])).ok();
    println!("{}", run.text());
    assert!(run.text().contains("--force-new-cluster"), "{}", run.text());
    assert_eq!(etcdctl(&m.client, &["get", "--prefix", "/registry/"]), before);
    let list = etcdctl(&m.client, &["member", "list"]);
    assert!(list.contains(&format!("m0, {}, {}", m.peer, m.client)), "peer URL fixed: {list}");
    assert!(
        !m.root
            .join("etc/systemd/system/etcd.service.d/90-vault-force-new-cluster.conf")
            .exists()
    );
    assert!(m.root.join("var/lib/etcd.old").is_dir(), "the old data dir was moved aside");
    let cmdline = m.systemctl.cmdline("etcd").unwrap_or_default();
    assert!(!cmdline.contains("force-new-cluster"), "runs normally at the end: {cmdline}");
    m.systemctl.kill_all();
}

/// A bind mount made by the test, undone when dropped, also when the test fails. A lazy unmount:
/// the etcd the test started may still hold files in it while it exits, which makes a plain
/// `umount` fail with "target is busy" and leave the mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// OKD puts the data dir on a disk of its own: `/var/lib/etcd` is a mount point, which no rename
/// can move. The flow then replaces its `member` directory (kept as `member.old`) instead.
#[test]
fn a_data_dir_that_is_a_mount_point_keeps_its_mount_and_gets_a_new_member_dir() {
    let tmp = tempdir("recovery-smoke-mount");
    let ms = members(tmp.path(), 1);
    let m = &ms[0];
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let data_dir = m.root.join("var/lib/etcd");
    let mounted = Command::new("mount").arg("--bind").arg(&disk).arg(&data_dir).output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: this test needs `mount --bind` (root with CAP_SYS_ADMIN): {mounted:?}");
        return;
    }
    let _mount = Mount(data_dir.clone());
    systemctl(m, &["start", "etcd"]);
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        healthy(&m.client).then_some(())
    })
    .unwrap_or_else(|| panic!("not healthy: {}", m.systemctl.unit_log("etcd")));
    etcdctl(&m.client, &["put", "/registry/before", "snapshot"]);
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let id = s(&ctl.backup(&m.client, &[]), "id");
    etcdctl(&m.client, &["put", "/registry/after", "lost"]);

    let run = ctl.restorer(&recover_args(&id, m, &["--execute"])).ok();
    assert!(
        run.text().contains("a mount point: its member/ directory is replaced"),
        "{}",
        run.text()
    );
    assert_eq!(
        etcdctl(&m.client, &["get", "--prefix", "/registry/", "--print-value-only"]),
        "snapshot\n"
    );
    assert!(
        disk.join("member.old/snap/db").is_file(),
        "the old member dir stays on the disk, aside"
    );
    assert!(disk.join("member/snap/db").is_file(), "the new one is on the same disk");
    let left: Vec<_> = std::fs::read_dir(&disk).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "no staging left behind: {left:?}");
    m.systemctl.kill_all();
}
