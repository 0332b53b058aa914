//! Flows 3 and 4 against a real 3-member TLS etcd cluster, each member with a host tree of its
//! own run through the stand-in `systemctl`: `vaultctl etcd member remove` refuses a healthy
//! member, removes a stopped one; `vaultctl etcd member add --issue-certs` adds a fresh member
//! whose certificates and etcd.conf vault made, and it starts and joins. The config files change
//! only in the values the membership change needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vault_e2e::{Certs, Ctl, Systemctl, free_port, tempdir, wait_for};

const ETCD_UNIT: &str = "[Unit]\nDescription=Etcd Server (test)\n\n[Service]\nType=notify\nWorkingDirectory=/var/lib/etcd/\n\
    EnvironmentFile=-/etc/etcd/etcd.conf\nExecStart=/usr/bin/etcd\nRestart=on-failure\n";
const ROOTED: [&str; 7] = [
    "ETCD_DATA_DIR",
    "ETCD_CERT_FILE",
    "ETCD_KEY_FILE",
    "ETCD_TRUSTED_CA_FILE",
    "ETCD_PEER_CERT_FILE",
    "ETCD_PEER_KEY_FILE",
    "ETCD_PEER_TRUSTED_CA_FILE",
];

struct Member {
    name: String,
    root: PathBuf,
    client: String,
    peer: String,
    systemctl: Systemctl,
}

impl Member {
    fn new(dir: &Path, name: &str) -> Member {
        let root = dir.join(name).join("host");
        std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/etcd")).unwrap();
        let systemctl = Systemctl::install(&root, &dir.join(name).join("systemctl"));
        systemctl.add_unit("etcd", ETCD_UNIT);
        systemctl.root_paths(&ROOTED);
        Member {
            name: name.to_string(),
            root,
            client: format!("https://127.0.0.1:{}", free_port()),
            peer: format!("https://127.0.0.1:{}", free_port()),
            systemctl,
        }
    }

    fn systemctl(&self, verb: &str) {
        let st = Command::new(self.systemctl.program()).args([verb, "etcd"]).status().unwrap();
        assert!(st.success(), "{verb} {}: {}", self.name, self.systemctl.unit_log("etcd"));
    }

    fn file(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    fn read(&self, host_path: &str) -> String {
        std::fs::read_to_string(self.file(host_path)).unwrap_or_else(|e| panic!("{host_path} on {}: {e}", self.name))
    }
}

/// An OKD-style etcd.conf: comments, quoted values, the TLS files under /etc/etcd.
fn etcd_conf(m: &Member, cluster: &str) -> String {
    format!(
        "# etcd.conf as openshift-ansible lays it down (test)\nETCD_NAME={name}\nETCD_LISTEN_PEER_URLS={peer}\nETCD_DATA_DIR=/var/lib/etcd/\n\
         #ETCD_WAL_DIR=\"\"\nETCD_HEARTBEAT_INTERVAL=100\nETCD_ELECTION_TIMEOUT=1000\nETCD_LISTEN_CLIENT_URLS={client}\n\n#[cluster]\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\nETCD_INITIAL_CLUSTER={cluster}\nETCD_INITIAL_CLUSTER_STATE=new\n\
         ETCD_INITIAL_CLUSTER_TOKEN=etcd-member-test\nETCD_ADVERTISE_CLIENT_URLS={client}\n\n#[security]\n\
         ETCD_TRUSTED_CA_FILE=/etc/etcd/ca.crt\nETCD_CLIENT_CERT_AUTH=\"true\"\nETCD_CERT_FILE=/etc/etcd/server.crt\n\
         ETCD_KEY_FILE=/etc/etcd/server.key\nETCD_PEER_TRUSTED_CA_FILE=/etc/etcd/ca.crt\nETCD_PEER_CLIENT_CERT_AUTH=\"true\"\n\
         ETCD_PEER_CERT_FILE=/etc/etcd/peer.crt\nETCD_PEER_KEY_FILE=/etc/etcd/peer.key\nETCD_DEBUG=\"False\"\n",
        name = m.name,
        peer = m.peer,
        client = m.client,
    )
}

fn etcdctl(certs: &Certs, endpoints: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--dial-timeout", "2s", "--command-timeout", "4s"])
        .args(["--cacert", &certs.ca.display().to_string()])
        .args(["--cert", &certs.client_cert.display().to_string()])
        .args(["--key", &certs.client_key.display().to_string()])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("etcdctl {args:?} at {endpoints}: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_healthy(certs: &Certs, m: &Member) {
    wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        etcdctl(certs, &m.client, &["endpoint", "health"])
    })
    .unwrap_or_else(|| panic!("{} not healthy:\n{}", m.name, m.systemctl.unit_log("etcd")));
}

/// `name` -> (started, peer URLs) of the cluster's members, as etcdctl lists them.
fn members(certs: &Certs, endpoint: &str) -> Vec<(String, String)> {
    let out = etcdctl(certs, endpoint, &["member", "list"]).expect("member list");
    // ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS
    let mut v: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f[2].to_string(), f[3].to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn member_remove_of_a_stopped_member_then_member_add_of_a_fresh_one_changes_only_the_values() {
    let tmp = tempdir("etcd-member");
    let certs = Certs::generate(&tmp.path().join("certs"));
    let hosts: Vec<Member> = (0..3).map(|i| Member::new(tmp.path(), &format!("m{i}"))).collect();
    let cluster = hosts.iter().map(|m| format!("{}={}", m.name, m.peer)).collect::<Vec<_>>().join(",");
    let clients: Vec<&str> = hosts.iter().map(|m| m.client.as_str()).collect();
    let master_config = format!(
        "kind: MasterConfig\netcdClientInfo:\n  ca: master.etcd-ca.crt\n  certFile: master.etcd-client.crt\n  keyFile: master.etcd-client.key\n  urls:\n  - {}\n  - {}   # rack B\n  - {}\netcdStorageConfig:\n  kubernetesStoragePrefix: kubernetes.io\n",
        clients[0], clients[1], clients[2]
    );
    let flanneld = format!(
        "# Flanneld configuration options\nFLANNEL_ETCD_ENDPOINTS={}\nFLANNEL_ETCD_PREFIX=/openshift.com/network\n",
        clients.join(",")
    );
    for m in &hosts {
        let etc = m.file("/etc/etcd");
        for (from, to) in [
            (&certs.server_cert, "server.crt"),
            (&certs.server_key, "server.key"),
            (&certs.server_cert, "peer.crt"),
            (&certs.server_key, "peer.key"),
            (&certs.ca, "ca.crt"),
        ] {
            std::fs::copy(from, etc.join(to)).unwrap();
        }
        std::fs::write(etc.join("etcd.conf"), etcd_conf(m, &cluster)).unwrap();
    }
    // the first master holds the etcd CA, master-config.yaml and flanneld
    let m0 = &hosts[0];
    std::fs::create_dir_all(m0.file("/etc/etcd/ca")).unwrap();
    std::fs::copy(&certs.ca, m0.file("/etc/etcd/ca/ca.crt")).unwrap();
    std::fs::copy(certs.dir.join("ca.key"), m0.file("/etc/etcd/ca/ca.key")).unwrap();
    std::fs::create_dir_all(m0.file("/etc/origin/master")).unwrap();
    std::fs::write(m0.file("/etc/origin/master/master-config.yaml"), &master_config).unwrap();
    std::fs::create_dir_all(m0.file("/etc/sysconfig")).unwrap();
    std::fs::write(m0.file("/etc/sysconfig/flanneld"), &flanneld).unwrap();
    m0.systemctl.add_unit("flanneld", "[Service]\nExecStart=/bin/sleep 600\n");

    for m in &hosts {
        m.systemctl("start");
    }
    for m in &hosts {
        wait_healthy(&certs, m);
    }
    let conf0 = m0.read("/etc/etcd/etcd.conf");
    let root0 = m0.root.display().to_string();
    let ctl = Ctl::new(&tmp.path().join("ctl"), "unused", vec![m0.systemctl.path_env()]);
    let flow = |verb: &[&str]| {
        let mut args: Vec<String> = ["etcd", "member"].iter().map(|s| s.to_string()).collect();
        args.extend(verb.iter().map(|s| s.to_string()));
        args.extend(["--root".to_string(), root0.clone(), "--timeout".into(), "30".into()]);
        ctl.run(&args)
    };

    // a healthy member is refused, and nothing changes
    flow(&["remove", "m2", "--execute"])
        .code(2)
        .mentions(&["m2", "is healthy", "--force", "nothing was changed"]);
    assert_eq!(members(&certs, &m0.client).len(), 3);
    assert_eq!(m0.read("/etc/etcd/etcd.conf"), conf0);

    // stopped, it is removed, and the three files lose only its entries
    hosts[2].systemctl("stop");
    let plan = flow(&["remove", "m2"]).ok();
    assert!(plan.text().contains("systemctl restart flanneld"), "{}", plan.text());
    flow(&["remove", "m2", "--execute", "--restart"])
        .ok()
        .mentions(&["removed member m2"]);
    assert_eq!(
        members(&certs, &m0.client),
        [("m0".to_string(), m0.peer.clone()), ("m1".to_string(), hosts[1].peer.clone())]
    );
    let m2_entry = format!(",m2={}", hosts[2].peer);
    assert_eq!(m0.read("/etc/etcd/etcd.conf"), conf0.replace(&m2_entry, ""));
    assert_eq!(m0.read("/etc/etcd/etcd.conf.old"), conf0, "the original is kept");
    assert_eq!(
        m0.read("/etc/origin/master/master-config.yaml"),
        master_config.replace(&format!("  - {}\n", clients[2]), "")
    );
    assert_eq!(
        m0.read("/etc/sysconfig/flanneld"),
        flanneld.replace(&format!(",{}", clients[2]), "")
    );
    assert!(
        m0.systemctl.actions().iter().any(|a| a == "restart flanneld => 0"),
        "{:?}",
        m0.systemctl.actions()
    );

    // a fresh member, with certificates vault issues from the CA
    let m3 = Member::new(tmp.path(), "m3");
    let conf_after_remove = m0.read("/etc/etcd/etcd.conf");
    flow(&[
        "add",
        "m3",
        "--peer-url",
        &m3.peer,
        "--client-url",
        &m3.client,
        "--issue-certs",
        "--execute",
    ])
    .ok()
    .mentions(&["added member m3", "issued server and peer certificates for m3"]);
    let generated = m0.file("/etc/etcd/generated_certs/etcd-m3");
    let new_conf = std::fs::read_to_string(generated.join("etcd.conf")).unwrap();
    let cluster_before = format!("ETCD_INITIAL_CLUSTER=m0={},m1={}\n", m0.peer, hosts[1].peer);
    let cluster_after = format!("ETCD_INITIAL_CLUSTER=m0={},m1={},m3={}\n", m0.peer, hosts[1].peer, m3.peer);
    assert!(conf_after_remove.contains(&cluster_before));
    let expected_new = conf_after_remove
        .replace(&cluster_before, "@CLUSTER@")
        .replace("ETCD_NAME=m0", "ETCD_NAME=m3")
        .replace(&m0.peer, &m3.peer)
        .replace(&m0.client, &m3.client)
        .replace("ETCD_INITIAL_CLUSTER_STATE=new", "ETCD_INITIAL_CLUSTER_STATE=existing")
        .replace("@CLUSTER@", &cluster_after);
    assert_eq!(new_conf, expected_new);
    assert_eq!(
        m0.read("/etc/etcd/etcd.conf"),
        conf_after_remove.replace(&cluster_before, &cluster_after)
    );
    assert_eq!(
        m0.read("/etc/origin/master/master-config.yaml"),
        master_config.replace(&format!("  - {}\n", clients[2]), &format!("  - {}\n", m3.client))
    );
    assert_eq!(m0.read("/etc/sysconfig/flanneld"), flanneld.replace(clients[2], &m3.client));

    // the new host gets the directory as /etc/etcd, as the runbook's tarball does, and starts
    for f in std::fs::read_dir(&generated).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), m3.file("/etc/etcd").join(f.file_name())).unwrap();
    }
    m3.systemctl("start");
    wait_healthy(&certs, &m3);
    let names: Vec<String> = members(&certs, &m0.client).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["m0", "m1", "m3"]);
    for m in [&hosts[0], &hosts[1], &m3] {
        wait_healthy(&certs, m);
    }
    // adding it again (the rewrite on another host) changes nothing here
    flow(&["add", "m3", "--peer-url", &m3.peer, "--client-url", &m3.client])
        .ok()
        .mentions(&["already a member"]);

    for m in hosts.iter().chain([&m3]) {
        m.systemctl.kill_all();
    }
}
