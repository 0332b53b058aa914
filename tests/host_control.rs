//! Host control against real processes: vault's host layer (`vault::host`) starts, stops and
//! restarts a real etcd through the harness's stand-in `systemctl` (unit file, EnvironmentFile,
//! drop-ins honoured after daemon-reload), and `vaultctl restore --in-place --restart` runs its
//! restart plan through whatever `systemctl` is on PATH.

use std::path::Path;
use std::time::Duration;

use vault::host::{Applied, DropIn, Host, HostAction, ServiceControl, ServiceOp, ServiceState, dropin, etcd_conf};
use vault_e2e::etcd::http_healthy;
use vault_e2e::{Ctl, Systemctl, free_port, s, tempdir, wait_for};

/// The test unit: etcd configured by its env file alone (as if chrooted into the host tree: the
/// stand-in puts the tree in front of ETCD_DATA_DIR), `ExecStart` over two lines.
const ETCD_UNIT: &str = "[Unit]\nDescription=Etcd Server (test)\n\n[Service]\nType=notify\nWorkingDirectory=/var/lib/etcd/\n\
    EnvironmentFile=-/etc/etcd/etcd.conf\nExecStart=/bin/bash -c \"GOMAXPROCS=2 \\\n  /usr/bin/etcd\"\nRestart=on-failure\n";

fn wait_healthy(systemctl: &Systemctl, client_url: &str) {
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        http_healthy(client_url).then_some(())
    })
    .unwrap_or_else(|| panic!("etcd not healthy at {client_url}:\n{}", systemctl.unit_log("etcd")));
}

fn apply(action: &HostAction, host: &Host) -> Applied {
    action.apply(host).unwrap_or_else(|e| panic!("{}: {e}", action.describe(host)))
}

#[test]
fn a_real_etcd_is_stopped_started_and_forced_into_a_new_cluster_through_a_drop_in() {
    let tmp = tempdir("host-etcd");
    let root = tmp.path().join("host");
    let (client, peer) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    std::fs::create_dir_all(root.join("etc/etcd")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/etcd")).unwrap();
    std::fs::write(
        root.join("etc/etcd/etcd.conf"),
        format!(
            "# test member\nETCD_NAME=m0\nETCD_DATA_DIR=/var/lib/etcd\nETCD_LISTEN_CLIENT_URLS={client}\nETCD_ADVERTISE_CLIENT_URLS={client}\n\
             ETCD_LISTEN_PEER_URLS={peer}\nETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\nETCD_INITIAL_CLUSTER=m0={peer}\n\
             ETCD_INITIAL_CLUSTER_TOKEN=host-test\nETCD_INITIAL_CLUSTER_STATE=new\n"
        ),
    )
    .unwrap();
    let systemctl = Systemctl::install(&root, &tmp.path().join("systemctl"));
    systemctl.add_unit("etcd", ETCD_UNIT);
    systemctl.root_paths(&["ETCD_DATA_DIR"]);
    let host = Host {
        root: root.clone(),
        systemctl: systemctl.program().display().to_string(),
    };
    let conf = etcd_conf::EtcdConf::load(&root, Path::new(etcd_conf::ETCD_CONF)).unwrap();
    assert_eq!(conf.advertise_client_urls, std::slice::from_ref(&client));
    let etcd = ServiceControl::etcd_unit();
    let start = HostAction::Service(etcd.clone(), ServiceOp::Start);
    let stop = HostAction::Service(etcd.clone(), ServiceOp::Stop);

    assert_eq!(etcd.status(&host).unwrap(), ServiceState::Stopped);
    apply(&start, &host);
    wait_healthy(&systemctl, &client);
    assert_eq!(etcd.status(&host).unwrap(), ServiceState::Running);
    assert!(root.join("var/lib/etcd/member").is_dir(), "the data dir is in the host tree");
    assert!(matches!(apply(&start, &host), Applied::AlreadyDone(_)));
    let pid = systemctl.main_pid("etcd").expect("running");
    apply(&stop, &host);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || systemctl.main_pid("etcd").is_none());
    assert!(!http_healthy(&client));
    assert!(matches!(apply(&stop, &host), Applied::AlreadyDone(_)));

    // the runbook's force-new-cluster steps: seen only after daemon-reload, gone after the next
    let drop_in: DropIn = dropin::force_new_cluster(&host, "etcd").unwrap();
    apply(&HostAction::WriteDropIn(drop_in.clone()), &host);
    apply(&start, &host);
    wait_healthy(&systemctl, &client);
    let cmdline = systemctl.cmdline("etcd").unwrap();
    assert!(
        !cmdline.contains("--force-new-cluster"),
        "a drop-in without daemon-reload is not seen: {cmdline}"
    );
    apply(&stop, &host);
    apply(&HostAction::DaemonReload, &host);
    apply(&start, &host);
    wait_healthy(&systemctl, &client);
    let cmdline = systemctl.cmdline("etcd").unwrap();
    assert!(cmdline.contains("--force-new-cluster"), "{cmdline}");
    apply(&HostAction::RemoveDropIn(drop_in), &host);
    apply(&HostAction::DaemonReload, &host);
    apply(&HostAction::Service(etcd.clone(), ServiceOp::Restart), &host);
    wait_healthy(&systemctl, &client);
    let cmdline = systemctl.cmdline("etcd").unwrap();
    assert!(!cmdline.contains("--force-new-cluster"), "{cmdline}");

    assert_eq!(
        systemctl.actions(),
        [
            "start etcd => 0",
            "stop etcd => 0",
            "start etcd => 0",
            "stop etcd => 0",
            "daemon-reload => 0",
            "start etcd => 0",
            "daemon-reload => 0",
            "restart etcd => 0"
        ]
    );

    // a start that fails says what systemctl said
    apply(&stop, &host);
    systemctl.fail("start", "etcd");
    let e = start.apply(&host).unwrap_err();
    assert!(
        e.to_string().contains("injected failure of start etcd") && e.to_string().contains("journalctl -u etcd"),
        "{e}"
    );
    assert_eq!(systemctl.calls().last().map(String::as_str), Some("start etcd => 1"));
}

/// `restore --in-place --restart` runs the profile's restarts through the `systemctl` on PATH: a
/// unit it knows is really restarted, units the host lacks are skipped, and a failing restart
/// fails the command after the other steps ran.
#[test]
fn an_in_place_restore_with_restart_restarts_through_systemctl_on_path() {
    let tmp = tempdir("host-restart");
    let tree = tmp.path().join("host");
    let master = tree.join("etc/origin/master/master-config.yaml");
    let flanneld = tree.join("etc/sysconfig/flanneld");
    std::fs::create_dir_all(master.parent().unwrap()).unwrap();
    std::fs::create_dir_all(flanneld.parent().unwrap()).unwrap();
    std::fs::write(&master, include_str!("../vault/src/host/testdata/master-config.yaml")).unwrap();
    std::fs::write(&flanneld, include_str!("../vault/src/host/testdata/flanneld")).unwrap();
    let systemctl = Systemctl::install(&tree, &tmp.path().join("systemctl"));
    for unit in ["atomic-openshift-master-api", "flanneld"] {
        systemctl.add_unit(unit, "[Service]\nExecStart=/bin/sleep 600\n");
        let st = std::process::Command::new(systemctl.program())
            .args(["start", unit])
            .status()
            .unwrap();
        assert!(st.success(), "{}", systemctl.unit_log(unit));
    }
    let api_pid = systemctl.main_pid("atomic-openshift-master-api").expect("running");

    let repo = tmp.path().join("vault").display().to_string();
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo, vec![systemctl.path_env()]);
    ctl.setup(&[]);
    let root = tree.display().to_string();
    let id = s(
        &ctl.writer(&["backup", "files", "--json", "--root", &root, "--profile", "master", "--no-packages"])
            .ok()
            .json(),
        "id",
    );
    std::fs::write(&master, "broken: true\n").unwrap();
    std::fs::write(&flanneld, "FLANNEL_ETCD_ENDPOINTS=\n").unwrap();

    systemctl.fail("restart", "flanneld");
    ctl.restorer(&["restore", &id, "--in-place", "--root", &root, "--restart"])
        .failed()
        .mentions(&[
            "ran: systemctl restart atomic-openshift-master-api",
            "skipped: systemctl restart atomic-openshift-master-controllers (systemd has no unit atomic-openshift-master-controllers",
            "injected failure of restart flanneld",
            "1 restart action(s) failed",
        ]);
    assert_eq!(
        systemctl.actions()[2..],
        ["restart atomic-openshift-master-api => 0", "restart flanneld => 1"],
        "{:?}",
        systemctl.calls()
    );
    let new_pid = systemctl.main_pid("atomic-openshift-master-api").expect("running again");
    assert_ne!(new_pid, api_pid, "really restarted");
    assert_eq!(
        std::fs::read_to_string(&master).unwrap(),
        include_str!("../vault/src/host/testdata/master-config.yaml")
    );
}
