//! Flows 3 and 4 against the OKD-like 3-member TLS etcd cluster of `harness/okd.rs`, each member
//! with a host tree of its own run through the stand-in `systemctl`: `vaultctl etcd member
//! remove` refuses a healthy member, removes a stopped one; `vaultctl etcd member add
//! --issue-certs` adds a fresh member (a new host tree) whose certificates and etcd.conf vault
//! made, and it starts and joins. The config files change only in the values the membership
//! change needs. Run `cargo build -p vaultctl` first.

use std::time::Duration;

use vault_e2e::Run;
use vault_e2e::okd::{MEMBERS, OkdCluster, OkdHost};

const ETCD_CONF: &str = "/etc/etcd/etcd.conf";
const MASTER_CONFIG: &str = "/etc/origin/master/master-config.yaml";
const FLANNELD: &str = "/etc/sysconfig/flanneld";

/// `name` -> peer URLs of the cluster's members, through host `via`, by name.
fn members(okd: &OkdCluster, via: usize) -> Vec<(String, Vec<String>)> {
    okd.member_list(via).into_iter().map(|m| (m.name, m.peer_urls)).collect()
}

fn healthy(h: &OkdHost) {
    h.wait_healthy(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn member_remove_of_a_stopped_member_then_member_add_of_a_fresh_one_changes_only_the_values() {
    let okd = OkdCluster::start("etcd-member");
    let [m0, m1, m2] = [&okd.hosts[0], &okd.hosts[1], &okd.hosts[2]];
    // the first master also runs flanneld, which reads /etc/sysconfig/flanneld at start
    m0.systemctl.add_unit("flanneld", "[Service]\nExecStart=/bin/sleep 600\n");
    let conf0 = m0.read(ETCD_CONF);
    let master_config = m0.read(MASTER_CONFIG);
    let flanneld = m0.read(FLANNELD);
    let ctl = m0.ctl(&okd.ctl);
    let root0 = m0.root_arg();
    let flow = |verb: &[&str]| -> Run {
        let mut args: Vec<&str> = vec!["etcd", "member"];
        args.extend_from_slice(verb);
        args.extend(["--root", &root0, "--timeout", "30"]);
        ctl.run(&args)
    };

    // a healthy member is refused, and nothing changes
    flow(&["remove", &m2.name, "--execute"])
        .code(2)
        .mentions(&[&m2.name, "is healthy", "--force", "nothing was changed"]);
    assert_eq!(okd.member_list(0).len(), MEMBERS);
    assert_eq!(m0.read(ETCD_CONF), conf0);

    // stopped, it is removed, and the three files lose only its entries
    m2.stop().unwrap_or_else(|e| panic!("{e}"));
    let plan = flow(&["remove", &m2.name]).ok();
    assert!(plan.text().contains("systemctl restart flanneld"), "{}", plan.text());
    flow(&["remove", &m2.name, "--execute", "--restart"])
        .ok()
        .mentions(&[&format!("removed member {}", m2.name)]);
    assert_eq!(
        members(&okd, 0),
        [
            (m0.name.clone(), vec![m0.peer_url.clone()]),
            (m1.name.clone(), vec![m1.peer_url.clone()])
        ]
    );
    let m2_entry = format!(",{}={}", m2.name, m2.peer_url);
    assert!(conf0.contains(&m2_entry), "{conf0}");
    assert_eq!(m0.read(ETCD_CONF), conf0.replace(&m2_entry, ""));
    assert_eq!(m0.read("/etc/etcd/etcd.conf.old"), conf0, "the original is kept");
    let m2_url_line = format!("  - {}\n", m2.client_url);
    assert!(master_config.contains(&m2_url_line), "{master_config}");
    assert_eq!(m0.read(MASTER_CONFIG), master_config.replace(&m2_url_line, ""));
    let m2_endpoint = format!(",{}", m2.client_url);
    assert!(flanneld.contains(&m2_endpoint), "{flanneld}");
    assert_eq!(m0.read(FLANNELD), flanneld.replace(&m2_endpoint, ""));
    assert!(
        m0.systemctl.actions().iter().any(|a| a == "restart flanneld => 0"),
        "{:?}",
        m0.systemctl.actions()
    );

    // a fresh member on a new host, with certificates vault issues from the CA
    let m3 = okd.new_host(3);
    let conf_after_remove = m0.read(ETCD_CONF);
    flow(&[
        "add",
        &m3.name,
        "--peer-url",
        &m3.peer_url,
        "--client-url",
        &m3.client_url,
        "--issue-certs",
        "--execute",
    ])
    .ok()
    .mentions(&[
        &format!("added member {}", m3.name),
        &format!("issued server and peer certificates for {}", m3.name),
    ]);
    let generated = m0.path(&format!("/etc/etcd/generated_certs/etcd-{}", m3.name));
    let new_conf = std::fs::read_to_string(generated.join("etcd.conf")).unwrap();
    let cluster_before = format!("ETCD_INITIAL_CLUSTER={}={},{}={}\n", m0.name, m0.peer_url, m1.name, m1.peer_url);
    let cluster_after = format!(
        "ETCD_INITIAL_CLUSTER={}={},{}={},{}={}\n",
        m0.name, m0.peer_url, m1.name, m1.peer_url, m3.name, m3.peer_url
    );
    assert!(conf_after_remove.contains(&cluster_before), "{conf_after_remove}");
    let expected_new = conf_after_remove
        .replace(&cluster_before, "@CLUSTER@")
        .replace(&format!("ETCD_NAME={}\n", m0.name), &format!("ETCD_NAME={}\n", m3.name))
        .replace(&m0.peer_url, &m3.peer_url)
        .replace(&m0.client_url, &m3.client_url)
        .replace("ETCD_INITIAL_CLUSTER_STATE=new", "ETCD_INITIAL_CLUSTER_STATE=existing")
        .replace("@CLUSTER@", &cluster_after);
    assert_eq!(new_conf, expected_new);
    assert_eq!(m0.read(ETCD_CONF), conf_after_remove.replace(&cluster_before, &cluster_after));
    assert_eq!(
        m0.read(MASTER_CONFIG),
        master_config.replace(&m2_url_line, &format!("  - {}\n", m3.client_url))
    );
    assert_eq!(m0.read(FLANNELD), flanneld.replace(&m2.client_url, &m3.client_url));

    // the new host gets the directory as /etc/etcd, as the runbook's tarball does, and starts
    for f in std::fs::read_dir(&generated).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), m3.path("/etc/etcd").join(f.file_name())).unwrap();
    }
    m3.start().unwrap_or_else(|e| panic!("{e}"));
    healthy(&m3);
    let names: Vec<String> = members(&okd, 0).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [m0.name.clone(), m1.name.clone(), m3.name.clone()]);
    for h in [m0, m1, &m3] {
        healthy(h);
    }
    // adding it again (the rewrite on another host) changes nothing here
    flow(&["add", &m3.name, "--peer-url", &m3.peer_url, "--client-url", &m3.client_url])
        .ok()
        .mentions(&["already a member"]);
}
