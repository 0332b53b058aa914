//! The disaster drill of issue 8: an OKD-3.x-like 3-member etcd cluster with TLS, each member on a
//! host tree of its own (harness/okd.rs), backed up with the real `vaultctl`, every data dir
//! destroyed, and brought back with `vaultctl etcd recover` and `vaultctl etcd join`. Run
//! `cargo build -p vaultctl` first.

use std::time::Duration;

use vault_e2e::okd::{MEMBERS, OkdCluster, marker};

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
