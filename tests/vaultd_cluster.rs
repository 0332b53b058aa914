//! Three daemons (three "masters") share one vault on a real S3 server (moto) and a real 3-member
//! etcd cluster: the cluster-wide etcd job is taken once per schedule slot, by whichever daemon
//! claims the slot first; the per-host files job runs on every daemon. Run `cargo build
//! --workspace` first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use vault_e2e::daemon::{get, metric, vaultd_run, write_private};
use vault_e2e::data::{Rng, k8s_like};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, EtcdCluster, Moto, free_port, s, tempdir, wait_for};

const TOKEN: &str = "cluster-test-token";
const DAEMONS: usize = 3;

fn config(dir: &Path, i: usize, ctl: &Ctl, moto: &Moto, endpoints: &[String], port: u16) -> String {
    // Each daemon lists its own member first, as on a real master.
    let mut eps = endpoints.to_vec();
    let first = i % eps.len();
    eps.rotate_left(first);
    let host = dir.join(format!("host-{i}"));
    std::fs::create_dir_all(host.join("etc/origin/master")).unwrap();
    std::fs::write(host.join("etc/origin/master/master-config.yaml"), format!("nodeName: master-{i}\n")).unwrap();
    format!(
        r#"repo = "{repo}"
writer_key = "{wk}"
catalog = "{catalog}"
host = "master-{i}"
# Short enough that a run renews its claim's lease while it goes on.
claim_lease_secs = 2
[s3]
endpoint = "{s3}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
allow_http = true
[http]
listen = "127.0.0.1:{port}"
token_file = "{token}"

[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "*/3 * * * * *"
timeout_secs = 60
[job.etcd]
endpoints = [{eps}]

[[job]]
name = "files"
kind = "files"
schedule = "*/3 * * * * *"
paths = ["/etc/origin/master"]
root = "{root}"
"#,
        repo = ctl.repo,
        wk = ctl.writer_key.display(),
        catalog = dir.join(format!("catalog-{i}.sqlite")).display(),
        s3 = moto.endpoint(),
        token = dir.join("token").display(),
        eps = eps.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", "),
        root = host.display(),
    )
}

#[test]
fn daemons_sharing_a_vault_take_the_cluster_snapshot_once_per_slot() {
    let tmp = tempdir("vaultd-cluster");
    let dir = tmp.path();
    let moto = Moto::start();
    moto.create_bucket("cluster");
    let etcd = EtcdCluster::start(3, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(etcd.put_all(&k8s_like(&mut Rng::new(11), 200, 400)));
    let mut ctl = Ctl::new(&dir.join("ctl"), "s3://cluster/vault", moto.env());
    ctl.setup(&[]);
    write_private(&dir.join("token"), TOKEN);

    let mut daemons = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=DAEMONS {
        let port = free_port();
        let cfg = dir.join(format!("vaultd-{i}.toml"));
        write_private(&cfg, &config(dir, i, &ctl, &moto, &etcd.endpoints(), port));
        daemons.push(Proc::spawn(
            &format!("vaultd-{i}"),
            &mut vaultd_run(&cfg),
            &dir.join(format!("vaultd-{i}.log")),
        ));
        ports.push(port);
    }
    let logs = |daemons: &[Proc]| daemons.iter().map(|d| d.log_tail(40)).collect::<Vec<_>>().join("\n----\n");
    for &port in &ports {
        wait_for(Duration::from_secs(30), Duration::from_millis(100), || get(port, "/healthz", None))
            .unwrap_or_else(|| panic!("a daemon did not come up:\n{}", logs(&daemons)));
    }

    // Let at least four etcd slots pass with a snapshot, and two files runs on every daemon.
    let series = |job: &str, outcome: &str| format!("vault_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}}");
    let total = |job: &str, outcome: &str| -> f64 {
        ports
            .iter()
            .filter_map(|&p| get(p, "/metrics", Some(TOKEN)).and_then(|(_, body)| metric(&body, &series(job, outcome))))
            .sum()
    };
    wait_for(Duration::from_secs(90), Duration::from_millis(500), || {
        let files_everywhere = ports.iter().all(|&p| {
            get(p, "/metrics", Some(TOKEN))
                .and_then(|(_, body)| metric(&body, &series("files", "success")))
                .is_some_and(|n| n >= 2.0)
        });
        (total("etcd", "success") >= 4.0 && files_everywhere).then_some(())
    })
    .unwrap_or_else(|| panic!("the jobs did not run:\n{}", logs(&daemons)));
    let skipped = total("etcd", "skipped");
    // Runs start on time: a scheduled run begins within a second and a half of its slot (no jitter).
    for &port in &ports {
        let (code, body) = get(port, "/v1/runs?limit=100", Some(TOKEN)).expect("GET /v1/runs");
        assert_eq!(code, 200, "{body}");
        let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
        let scheduled: Vec<_> = runs.as_array().unwrap().iter().filter(|r| r["trigger"] == "schedule").collect();
        assert!(!scheduled.is_empty(), "{runs:#}");
        for r in scheduled {
            let at = |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
            let late = (at("started") - at("slot")).num_milliseconds();
            assert!((0..1500).contains(&late), "run started {late} ms after its slot: {r:#}");
        }
    }
    for d in &mut daemons {
        let status = d.terminate(Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()), "vaultd exit {status:?}:\n{}", d.log_tail(30));
    }

    // The vault: one etcd snapshot per slot (each with its slot), files snapshots from every host.
    let snaps = ctl.snapshots();
    let mut per_slot: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for snap in snaps.iter().filter(|x| x["job"] == "etcd") {
        let slot = snap["slot"]
            .as_str()
            .unwrap_or_else(|| panic!("an etcd snapshot without its slot: {snap}"));
        per_slot.entry(slot.to_string()).or_default().push(s(snap, "host"));
    }
    assert!(per_slot.len() >= 4, "{per_slot:?}");
    for (slot, hosts) in &per_slot {
        assert_eq!(hosts.len(), 1, "slot {slot} was taken by {hosts:?}:\n{}", logs(&daemons));
    }
    let files_hosts: BTreeSet<String> = snaps.iter().filter(|x| x["job"] == "files").map(|x| s(x, "host")).collect();
    assert_eq!(files_hosts.len(), DAEMONS, "{files_hosts:?}");
    // The others stood back: every slot a daemon did not run is counted as skipped there.
    assert!(skipped >= per_slot.len() as f64, "skipped {skipped}, slots {}", per_slot.len());
    // One claim object per slot that was run (slots may also be claimed without a snapshot
    // when the daemons stopped mid-slot), none naming the job.
    let claims = moto.list_keys("cluster", "vault/claims/");
    assert!(claims.len() >= per_slot.len(), "{claims:?}");
    assert!(claims.iter().all(|c| !c.contains("etcd")), "{claims:?}");
    // The logs say who took each slot (no jitter: the daemons race for every claim); every daemon
    // has an ID of its own, so none mistakes another for itself.
    let all_logs: String = daemons.iter().map(|d| std::fs::read_to_string(d.log()).unwrap()).collect();
    assert!(all_logs.contains("was claimed by master-"), "{all_logs}");
    assert!(
        !all_logs.contains("ANOTHER daemon") && !all_logs.contains("lost the claim"),
        "{all_logs}"
    );
    let ids: BTreeSet<String> = (1..=DAEMONS)
        .map(|i| std::fs::read_to_string(dir.join(format!("catalog-{i}.sqlite.daemon-id"))).unwrap())
        .collect();
    assert_eq!(ids.len(), DAEMONS, "{ids:?}");
    // The vault verifies clean.
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
}
