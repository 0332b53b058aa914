//! End-to-end tests of the real `vaultd` binary: jobs every 2 seconds against a real etcd member
//! and a host-file tree, snapshots appearing in the vault, /healthz and /metrics. Run
//! `cargo build --workspace` first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vault_e2e::daemon::{assert_config_ok, get, metric, request, vaultd_run, write_private};
use vault_e2e::data::{Rng, k8s_like};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, EtcdCluster, free_port, ports, proxy, tempdir, wait_for};

fn snapshots_of(snaps: &[Value], job: &str) -> usize {
    snaps.iter().filter(|s| s["job"].as_str() == Some(job)).count()
}

#[test]
fn vaultd_runs_jobs_on_their_schedules_and_metrics_move() {
    let tmp = tempdir("vaultd");
    let etcd = EtcdCluster::start(1, None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(etcd.put_all(&k8s_like(&mut Rng::new(7), 100, 500)));

    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc/origin")).unwrap();
    std::fs::write(host.join("etc/origin/master-config.yaml"), "kind: MasterConfig\n").unwrap();
    let token = "s3cret-token-for-the-test";
    let token_file = tmp.path().join("token");
    write_private(&token_file, &format!("{token}\n"));
    let port = free_port();
    let config = tmp.path().join("vaultd.toml");
    let text = format!(
        r#"repo = "{repo}"
writer_key = "{wk}"
catalog = "{catalog}"
[http]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"

[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "*/2 * * * * *"
timeout_secs = 60
[job.etcd]
endpoints = ["{endpoint}"]
[job.tags]
origin = "vaultd-test"

[[job]]
name = "files"
kind = "files"
schedule = "*/2 * * * * *"
paths = ["/etc/origin"]
root = "{host}"

[[job]]
name = "unreachable"
kind = "etcd-v3"
schedule = "*/2 * * * * *"
retries = 1
retry_backoff_secs = 0
[job.etcd]
endpoints = ["http://127.0.0.1:{closed}"]
connect_timeout_secs = 1
"#,
        repo = ctl.repo,
        wk = ctl.writer_key.display(),
        catalog = tmp.path().join("catalog.sqlite").display(),
        token_file = token_file.display(),
        endpoint = etcd.endpoints()[0],
        host = host.display(),
        closed = ports::closed_port(),
    );
    write_private(&config, &text);

    // check-config, live checks included, accepts it.
    assert_config_ok(&config);

    let log = tmp.path().join("vaultd.log");
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut cmd = vaultd_run(&config);
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let mut daemon = Proc::spawn("vaultd", &mut cmd, &log);

    // systemd readiness (Type=notify) once the vault and catalog are open and the listener is up.
    let mut buf = [0u8; 64];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}); log:\n{}", daemon.log_tail(30)));
    assert_eq!(&buf[..n], b"READY=1");
    let health = wait_for(Duration::from_secs(30), Duration::from_millis(100), || get(port, "/healthz", None));
    assert_eq!(health.map(|h| h.0), Some(200), "vaultd log:\n{}", daemon.log_tail(30));
    assert_eq!(get(port, "/metrics", None).unwrap().0, 401);
    assert_eq!(get(port, "/metrics", Some("wrong")).unwrap().0, 401);

    // Runs happen: at least three etcd and two files snapshots, and failures are counted.
    let series = |job: &str, outcome: &str| format!("vault_job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}}");
    let metrics = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        let (code, body) = get(port, "/metrics", Some(token))?;
        assert_eq!(code, 200);
        let ok = metric(&body, &series("etcd", "success"))? >= 3.0
            && metric(&body, &series("files", "success"))? >= 2.0
            && metric(&body, &series("unreachable", "failure"))? >= 1.0;
        ok.then_some(body)
    })
    .unwrap_or_else(|| panic!("the jobs did not run; vaultd log:\n{}", daemon.log_tail(40)));
    let now = chrono::Utc::now().timestamp() as f64;
    let last_success = metric(&metrics, "vault_job_last_success_timestamp_seconds{job=\"etcd\"}").unwrap();
    assert!((now - last_success).abs() < 30.0, "{metrics}");
    assert!(
        metric(&metrics, "vault_job_read_bytes_total{job=\"etcd\"}").unwrap() > 0.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, &series("unreachable", "success")), Some(0.0), "{metrics}");
    assert!(metric(&metrics, "vault_job_last_success_timestamp_seconds{job=\"unreachable\"}").is_none());

    // The API: token required; jobs listed; a run on request.
    assert_eq!(get(port, "/readyz", None).unwrap().0, 401);
    assert_eq!(get(port, "/readyz", Some(token)).unwrap().0, 200);
    assert_eq!(get(port, "/v1/jobs", Some("nope")).unwrap().0, 401);
    let (code, body) = get(port, "/v1/jobs", Some(token)).unwrap();
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["etcd", "files", "unreachable"]);
    let (code, body) = get(port, "/v1/jobs/etcd", Some(token)).unwrap();
    assert_eq!(code, 200, "{body}");
    let j: Value = serde_json::from_str(body.trim()).unwrap();
    assert!(j["runs"]["success"].as_u64().unwrap() >= 3 && j["next_slot"].is_string(), "{j}");
    assert_eq!(get(port, "/v1/jobs/nope", Some(token)).unwrap().0, 404);
    assert_eq!(request(port, "POST", "/v1/jobs/files/run", None).unwrap().0, 401);
    let (code, body) = request(port, "POST", "/v1/jobs/files/run", Some(token)).unwrap();
    assert!(code == 202 || code == 409, "{code} {body}");
    if code == 202 {
        let started: Value = serde_json::from_str(&body).unwrap();
        let id = started["run"].as_str().unwrap();
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains(&format!("job files: run {id} requested through the API"))
                .then_some(())
        })
        .expect("the API run was not logged");
    }

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "vaultd exit {status:?}; log:\n{}",
        daemon.log_tail(30)
    );

    // The snapshots are in the vault, with the job's name and tags.
    let snaps = ctl.snapshots();
    assert!(snapshots_of(&snaps, "etcd") >= 3, "{snaps:#?}");
    assert!(snapshots_of(&snaps, "files") >= 2, "{snaps:#?}");
    assert_eq!(snapshots_of(&snaps, "unreachable"), 0);
    let etcd_snap = snaps.iter().find(|s| s["job"] == "etcd").unwrap();
    assert_eq!(etcd_snap["tags"]["origin"], "vaultd-test", "{etcd_snap:#}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(token), "the token was logged");
    assert!(logged.contains("job unreachable: failed"), "{logged}");
    assert!(logged.contains("job unreachable: attempt 1 of 2 failed"), "{logged}");
    assert!(
        metric(&metrics, "vault_job_retries_total{job=\"unreachable\"}").unwrap() >= 1.0,
        "{metrics}"
    );
    // Runs of one job never overlapped: each start is followed by that run's end before the next.
    for job in ["etcd", "files", "unreachable"] {
        let events: Vec<bool> = logged
            .lines()
            .filter_map(|l| {
                let rest = l.split_once(&format!("job {job}: "))?.1;
                if rest.starts_with("run ") && rest.ends_with(" started") {
                    Some(true)
                } else if rest.starts_with("snapshot") || rest.starts_with("failed") || rest.starts_with("aborted") {
                    Some(false)
                } else {
                    None
                }
            })
            .collect();
        assert!(events.len() >= 2, "{job}: {logged}");
        assert!(
            events.iter().enumerate().all(|(i, &start)| start == (i % 2 == 0)),
            "{job}: overlapping runs:\n{logged}"
        );
    }
}

/// A files job every second on a small tree under `host`.
/// A fresh local vault (with its vaultctl) and a host tree with /etc/app/a.conf for files jobs.
fn vault_and_host(dir: &Path) -> (Ctl, PathBuf) {
    let mut ctl = Ctl::new(&dir.join("ctl"), &dir.join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let host = dir.join("host");
    std::fs::create_dir_all(host.join("etc/app")).unwrap();
    std::fs::write(host.join("etc/app/a.conf"), "a=1\n").unwrap();
    (ctl, host)
}

fn files_job(name: &str, host: &Path) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nkind = \"files\"\nschedule = \"* * * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{}\"\n",
        host.display()
    )
}

#[test]
fn sighup_reloads_jobs_and_a_bad_config_keeps_the_running_one() {
    let tmp = tempdir("vaultd-hup");
    let (ctl, host) = vault_and_host(tmp.path());
    let port = free_port();
    let head = format!(
        "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmetrics_public = true\n",
        ctl.repo,
        ctl.writer_key.display(),
        tmp.path().join("catalog.sqlite").display()
    );
    let config = tmp.path().join("vaultd.toml");
    write_private(&config, &format!("{head}{}", files_job("first", &host)));
    let log = tmp.path().join("vaultd.log");
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(&config), &log);
    let successes = |job: &str| {
        let (_, body) = get(port, "/metrics", None)?;
        metric(&body, &format!("vault_job_runs_total{{job=\"{job}\",outcome=\"success\"}}"))
    };
    let at_least = |job: &str, n: f64| {
        wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            successes(job).filter(|&v| v >= n)
        })
        .unwrap_or_else(|| panic!("job {job} did not reach {n} successes; log:\n{}", vaultd_log(&log)))
    };
    let hup = |pid: u32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let before = at_least("first", 1.0);

    // A bad config (an unknown key, a bad schedule) is refused; the running jobs go on.
    write_private(
        &config,
        &format!("bogus = 1\n{head}{}", files_job("second", &host).replace("* * * * * *", "never")),
    );
    hup(daemon.pid());
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        vaultd_log(&log).contains("config reload refused").then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal logged:\n{}", vaultd_log(&log)));
    let text = vaultd_log(&log);
    assert!(text.contains("bogus") && text.contains("job[0].schedule"), "{text}");
    at_least("first", before + 2.0);
    assert_eq!(successes("second"), None);

    // A good one replaces the jobs: "first" stops, "second" starts.
    write_private(&config, &format!("{head}{}", files_job("second", &host)));
    hup(daemon.pid());
    at_least("second", 2.0);
    assert_eq!(successes("first"), None, "the removed job is still in /metrics");
    let snaps_first = snapshots_of(&ctl.snapshots(), "first");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(snapshots_of(&ctl.snapshots(), "first"), snaps_first, "the removed job still runs");
    assert!(
        vaultd_log(&log).contains("stopped [\"first\"], started [\"second\"]"),
        "{}",
        vaultd_log(&log)
    );
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "vaultd exit {status:?}; log:\n{}",
        vaultd_log(&log)
    );
}

fn vaultd_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `vaultctl status`, `jobs` and `run JOB --wait` against a running daemon; a clear error when the
/// token is missing and when the daemon is not running.
#[test]
fn vaultctl_status_jobs_and_run_talk_to_the_daemon() {
    let tmp = tempdir("vaultd-ctl");
    let (ctl, host) = vault_and_host(tmp.path());
    let port = free_port();
    let token = tmp.path().join("token");
    write_private(&token, "s3cret-token-for-the-test\n");
    let config = tmp.path().join("vaultd.toml");
    write_private(
        &config,
        &format!(
            "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n{}",
            ctl.repo,
            ctl.writer_key.display(),
            tmp.path().join("catalog.sqlite").display(),
            token.display(),
            files_job("conf", &host).replace("* * * * * *", "0 0 3 1 1 *")
        ),
    );
    let log = tmp.path().join("vaultd.log");
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(&config), &log);
    let cfg = config.display().to_string();
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        get(port, "/healthz", None).map(|_| ())
    })
    .unwrap_or_else(|| panic!("vaultd did not start:\n{}", vaultd_log(&log)));

    ctl.run(&["status", "--daemon-config", &cfg])
        .ok()
        .mentions(&["alive, ready", "conf", "last snapshot", "host"]);
    let jobs = ctl.run(&["--json", "jobs", "--daemon-config", &cfg]).ok().json();
    assert_eq!(jobs[0]["name"], "conf", "{jobs:#}");
    // wait for a start-up catch-up run, if any, to end so the count below is exact
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let j = ctl.run(&["--json", "jobs", "--daemon-config", &cfg]).ok().json();
        (j[0]["running"] == false).then_some(())
    })
    .expect("the job settles");
    let before = snapshots_of(&ctl.snapshots(), "conf");
    ctl.run(&["run", "conf", "--wait", "--daemon-config", &cfg])
        .ok()
        .mentions(&["job conf: run", "succeeded: snapshot"]);
    assert_eq!(snapshots_of(&ctl.snapshots(), "conf"), before + 1);
    // The run's record, through vaultctl --json and GET /v1/runs/{id}.
    let run = ctl.run(&["--json", "run", "conf", "--wait", "--daemon-config", &cfg]).ok().json();
    assert_eq!(
        (run["state"].as_str(), run["trigger"].as_str()),
        (Some("success"), Some("api")),
        "{run:#}"
    );
    let id = run["id"].as_str().unwrap();
    let (code, body) = get(port, &format!("/v1/runs/{id}"), Some("s3cret-token-for-the-test")).unwrap();
    assert_eq!(code, 200, "{body}");
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(again["snapshot"], run["snapshot"]);
    assert!(again["snapshot"].as_str().is_some_and(|s| s.len() == 64), "{again:#}");
    assert_eq!(get(port, &format!("/v1/runs/{id}"), None).map(|(c, _)| c), Some(401));
    assert_eq!(
        get(port, "/v1/runs/nosuch", Some("s3cret-token-for-the-test")).map(|(c, _)| c),
        Some(404)
    );
    let before = before + 1;
    ctl.run(&["run", "nosuch", "--daemon-config", &cfg])
        .failed()
        .mentions(&["no job \"nosuch\""]);
    let (code, body) = get(port, "/v1/snapshots", Some("s3cret-token-for-the-test")).expect("GET /v1/snapshots");
    assert_eq!(code, 200, "{body}");
    let snaps: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        snaps.as_array().map(|a| a.iter().filter(|s| s["job"] == "conf").count()),
        Some(before + 1),
        "{snaps:#}"
    );
    assert_eq!(get(port, "/v1/snapshots", None).map(|(c, _)| c), Some(401));

    // no token: refused with a hint, and the token never shows in the daemon's log
    ctl.run(&[
        "jobs",
        "--daemon-url",
        &format!("http://127.0.0.1:{port}"),
        "--daemon-config",
        "/nonexistent",
    ])
    .code(4)
    .mentions(&["bearer token", "--daemon-token-file"]);
    assert!(!vaultd_log(&log).contains("s3cret-token"), "the token was logged");

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "vaultd exit {status:?}");
    ctl.run(&["status", "--daemon-config", &cfg])
        .failed()
        .mentions(&["vaultd is not answering", "systemctl status vaultd"]);
}

/// A run whose timeout fires while its manifest is being written (the S3 server stored it, its
/// answer is late) committed a snapshot: its run record says so instead of "nothing committed".
#[test]
fn a_run_that_times_out_while_committing_records_its_snapshot() {
    let tmp = tempdir("vaultd-timeout");
    let dir = tmp.path();
    let moto = vault_e2e::Moto::start();
    moto.create_bucket("late");
    let mut ctl = Ctl::new(&dir.join("ctl"), "s3://late/vault", moto.env());
    ctl.setup(&[]);
    // The answer to the manifest's PUT is held back past the job's timeout.
    let proxy = proxy::start(moto.port, |bytes| {
        if proxy::request_line(bytes).contains("/snapshots/") {
            proxy::Rule::HoldAnswer(Duration::from_secs(8))
        } else {
            proxy::Rule::Forward
        }
    });
    let host = dir.join("host");
    std::fs::create_dir_all(host.join("etc/app")).unwrap();
    std::fs::write(host.join("etc/app/a.conf"), "a=1\n").unwrap();
    let token = "timeout-test-token";
    write_private(&dir.join("token"), token);
    let port = free_port();
    let config = dir.join("vaultd.toml");
    write_private(
        &config,
        &format!(
            r#"repo = "s3://late/vault"
writer_key = "{wk}"
catalog = "{catalog}"
[s3]
endpoint = "http://127.0.0.1:{proxy}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
allow_http = true
[http]
listen = "127.0.0.1:{port}"
token_file = "{token_file}"
[[job]]
name = "conf"
kind = "files"
schedule = "0 0 0 1 1 *"
timeout_secs = 4
retries = 0
paths = ["/etc/app"]
root = "{root}"
"#,
            wk = ctl.writer_key.display(),
            catalog = dir.join("catalog.sqlite").display(),
            token_file = dir.join("token").display(),
            root = host.display(),
        ),
    );
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(&config), &dir.join("vaultd.log"));
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || get(port, "/healthz", None))
        .unwrap_or_else(|| panic!("vaultd did not come up:\n{}", daemon.log_tail(30)));
    let (code, body) = request(port, "POST", "/v1/jobs/conf/run", Some(token)).expect("POST run");
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["run"].as_str().unwrap().to_string();
    let run = wait_for(Duration::from_secs(40), Duration::from_millis(200), || {
        let (_, body) = get(port, &format!("/v1/runs/{id}"), Some(token))?;
        let run: Value = serde_json::from_str(&body).ok()?;
        (run["state"] != "running").then_some(run)
    })
    .unwrap_or_else(|| panic!("the run did not end:\n{}", daemon.log_tail(30)));
    assert!(daemon.terminate(Duration::from_secs(30)).is_some_and(|s| s.success()));
    let snaps = ctl.snapshots();
    assert_eq!(snaps.len(), 1, "the manifest reached the server: {snaps:?}");
    assert_eq!(run["state"], "timeout", "{run:#}");
    assert_eq!(run["snapshot"], snaps[0]["id"], "{run:#}\n{}", daemon.log_tail(20));
    assert!(run["error"].as_str().unwrap().contains("was committed"), "{run:#}");
    assert!(vaultd_log(&dir.join("vaultd.log")).contains("was committed"));
}
