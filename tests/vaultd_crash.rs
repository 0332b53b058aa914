//! End-to-end test of the real `vaultd` binary killed with SIGKILL in the middle of an etcd capture:
//! nothing of the capture is committed, the vault verifies clean, and the restarted daemon catches
//! up the slot it missed at once, with a snapshot that restores. Real etcd, real `vaultctl`. Run
//! `cargo build --workspace` first.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use serde_json::Value;
use vault_e2e::daemon::{get, vaultd_run, write_private};
use vault_e2e::data::{Rng, k8s_like};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, EtcdCluster, free_port, objects, s, single_member_restore_args, tempdir, wait_for};

/// Keys and value size of each data set: about 25 MiB, so that a capture in the debug build takes
/// seconds and stores many 1 MiB packs along the way.
const KEYS: usize = 200;
const VALUE_LEN: usize = 128 * 1024;

/// What the daemon logs when a capture is committed.
const COMMITTED: &str = "job etcd: snapshot ";

fn config(ctl: &Ctl, dir: &Path, port: u16, endpoint: &str, schedule: &str) -> String {
    format!(
        "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n[[job]]\nname = \"etcd\"\nkind = \"etcd-v3\"\nschedule = \"{schedule}\"\ntimeout_secs = 600\n[job.etcd]\nendpoints = [\"{endpoint}\"]\n",
        ctl.repo,
        ctl.writer_key.display(),
        dir.join("catalog.sqlite").display(),
        dir.join("token").display(),
    )
}

fn start(config: &Path, log: &Path, port: u16) -> Proc {
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(config), log);
    let up = wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
        if let Some(st) = daemon.exited() {
            panic!("vaultd exited ({st}):\n{}", daemon.log_tail(30));
        }
        get(port, "/healthz", None)
    });
    assert!(up.is_some(), "vaultd did not answer:\n{}", daemon.log_tail(30));
    daemon
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn time_of(snap: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&s(snap, "time"))
        .unwrap_or_else(|e| panic!("snapshot time: {e}: {snap:#}"))
        .with_timezone(&Utc)
}

#[test]
fn sigkill_mid_capture_then_restart_leaves_a_clean_vault_and_catches_up_the_overdue_run() {
    let tmp = tempdir("vaultd-crash");
    let dir = tmp.path();
    let etcd = EtcdCluster::start(1, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(etcd.put_all(&k8s_like(&mut Rng::new(41), KEYS, VALUE_LEN)));
    let mut ctl = Ctl::new(&dir.join("ctl"), &dir.join("vault").display().to_string(), vec![]);
    ctl.setup(&["--pack-size-mib", "1"]);
    write_private(&dir.join("token"), "s3cret-token-for-the-crash-test\n");
    let vault_dir = Path::new(&ctl.repo).to_path_buf();
    let endpoint = etcd.endpoints()[0].clone();

    // Phase 1: a schedule that cannot fire during the test; runs only on request.
    let port = free_port();
    let cfg_path = dir.join("vaultd.toml");
    write_private(&cfg_path, &config(&ctl, dir, port, &endpoint, "0 0 0 1 1 * 2099"));
    let cfg = cfg_path.display().to_string();
    let log1 = dir.join("vaultd-1.log");
    let mut daemon = start(&cfg_path, &log1, port);

    // The first snapshot, through vaultctl.
    let started = Instant::now();
    ctl.run(&["run", "etcd", "--wait", "--daemon-config", &cfg])
        .ok()
        .mentions(&["job etcd: run", "succeeded: snapshot"]);
    let first_took = started.elapsed();
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:#?}");
    let first = snaps[0].clone();
    assert_eq!(first["job"], "etcd", "{first:#}");
    let packs_after_first = objects(&vault_dir.join("data")).len();
    eprintln!("first capture: {first_took:?}, {packs_after_first} pack(s)");

    // New content, so that the second capture has new packs to store; then kill the daemon once it
    // has stored at least one of them, before the capture ends.
    rt.block_on(etcd.put_all(&k8s_like(&mut Rng::new(42), KEYS, VALUE_LEN)));
    ctl.run(&["run", "etcd", "--daemon-config", &cfg])
        .ok()
        .mentions(&["job etcd: run", "started"]);
    let second_started = Instant::now();
    loop {
        let log = log_text(&log1);
        assert!(
            log.matches(COMMITTED).count() < 2,
            "the second capture finished after {:?}, before it could be killed: make the data set bigger\n{log}",
            second_started.elapsed()
        );
        if let Some(st) = daemon.exited() {
            panic!("vaultd exited ({st}) during the second capture:\n{log}");
        }
        if objects(&vault_dir.join("data")).len() > packs_after_first {
            break;
        }
        assert!(
            second_started.elapsed() < Duration::from_secs(120),
            "the second capture stored no pack within 120 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = daemon.kill().expect("vaultd reaped");
    let killed_at = Utc::now();
    assert_eq!(status.signal(), Some(9), "vaultd was not killed by SIGKILL ({status})");
    let packs_at_kill = objects(&vault_dir.join("data")).len();
    eprintln!(
        "killed vaultd {:?} into the second capture, {} new pack(s) stored",
        second_started.elapsed(),
        packs_at_kill - packs_after_first
    );
    let log = log_text(&log1);
    assert!(log.matches(" requested through the API").count() == 2, "{log}");
    assert_eq!(
        log.matches(COMMITTED).count(),
        1,
        "the second capture was committed before the kill: make the data set bigger\n{log}"
    );

    // Nothing of the killed capture is a snapshot, and the vault verifies clean.
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 1, "the killed capture left a snapshot: {snaps:#?}");
    assert_eq!(s(&snaps[0], "id"), s(&first, "id"));
    assert_eq!(objects(&vault_dir.join("snapshots")).len(), 1);
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
    ctl.restorer(&["verify", "--all"]).ok();

    // Phase 2: a schedule with a slot that passed after the first snapshot, and whose next slot is
    // far away: "S * * * * *" fires at second S of every minute. With the slot 2 s before now and
    // the first snapshot at least 1 s before the slot (the listed time is truncated to the second,
    // so the real one is less than 1 s after it), the first slot after the first snapshot has
    // passed when the daemon starts, and the next one is 58 s away.
    let t1 = time_of(&first);
    while Utc::now() < t1 + chrono::Duration::seconds(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = Utc::now();
    let slot = (now - chrono::Duration::seconds(2)).with_nanosecond(0).unwrap();
    let next_slot = slot + chrono::Duration::seconds(60);
    assert!(slot > t1 + chrono::Duration::seconds(1) && slot < now, "{t1} {slot} {now}");
    assert!(next_slot - now >= chrono::Duration::seconds(20), "{now} {next_slot}");
    let schedule = format!("{} * * * * *", slot.second());
    let port = free_port();
    write_private(&cfg_path, &config(&ctl, dir, port, &endpoint, &schedule));
    let log2 = dir.join("vaultd-2.log");
    let restarted = Instant::now();
    let mut daemon = start(&cfg_path, &log2, port);
    let missed = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        log_text(&log2).contains("job etcd: a scheduled run was missed").then_some(())
    });
    assert!(
        missed.is_some(),
        "no catch-up at start-up ({schedule:?}, first snapshot {t1}, slot {slot}):\n{}",
        log_text(&log2)
    );
    let caught_up = wait_for(Duration::from_secs(120), Duration::from_millis(100), || {
        let log = log_text(&log2);
        (log.contains(COMMITTED) || log.contains("job etcd: failed") || log.contains("job etcd: aborted")).then_some(log)
    })
    .unwrap_or_else(|| panic!("the catch-up run did not end:\n{}", log_text(&log2)));
    assert!(caught_up.contains(COMMITTED), "the catch-up run failed:\n{caught_up}");
    eprintln!("catch-up snapshot {:?} after the restart", restarted.elapsed());
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "vaultd exit {status:?}:\n{}", log_text(&log2));

    // The catch-up snapshot: one, taken after the restart and before the schedule's next slot.
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    let caught = snaps.iter().find(|x| x["id"] != first["id"]).expect("a new snapshot").clone();
    assert_eq!(caught["job"], "etcd", "{caught:#}");
    let t2 = time_of(&caught);
    assert!(
        t2 >= killed_at - chrono::Duration::seconds(1) && t2 < next_slot,
        "snapshot at {t2}: not between the restart ({killed_at}) and the next slot ({next_slot})"
    );
    ctl.writer(&["verify", "--all", "--read-data"]).ok();
    ctl.restorer(&["verify", "--all"]).ok();

    // It restores: an etcd member started on the restored data dir holds every key.
    let id = s(&caught, "id");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let data_dir = dir.join("restore/r1.etcd");
    ctl.restorer(&single_member_restore_args(&id, &data_dir, "r1", &peer)).ok();
    let expected = rt.block_on(etcd.get_all());
    assert_eq!(expected.len(), KEYS);
    let restored = EtcdCluster::start_on_data_dir("r1", &data_dir, &peer);
    let got = rt.block_on(restored.get_all());
    assert!(got == expected, "the restored member's keys differ from the source's");
}
