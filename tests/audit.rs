//! End-to-end: a real `vaultd` with a files job every 2 seconds records its schedule and
//! retention policy in the vault and captures; it is stopped for a few slots and started again
//! with another policy; `vaultctl audit` then reports the taken slots and the missed ones, judges
//! each against the policy in force then, exits 3 when a control fails and 0 when the
//! thresholds allow; `--csv`; `--html` renders in headless Chromium to a non-blank page with the
//! calendar's colours; `GET /v1/audit` and the audit metrics answer while the daemon runs.
//! Run `cargo build -p vaultctl -p vaultd` first; needs /usr/bin/chromium (scripts/test.sh
//! installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use vault_e2e::daemon::{get, metric, vaultd_run, write_private};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, free_port, s, tempdir, wait_for};

const TOKEN: &str = "audit-test-token";

fn objects_under(repo: &Path, prefix: &str) -> usize {
    vault_e2e::objects(repo)
        .iter()
        .filter(|p| p.strip_prefix(repo).is_ok_and(|r| r.starts_with(prefix)))
        .count()
}

fn config(ctl: &Ctl, dir: &Path, host: &Path, port: u16, keep_last: u32) -> PathBuf {
    let token = dir.join("token");
    write_private(&token, &format!("{TOKEN}\n"));
    let path = dir.join("vaultd.toml");
    write_private(
        &path,
        &format!(
            "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\nhost = \"audit-host\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n\
             [[job]]\nname = \"app\"\nkind = \"files\"\nschedule = \"*/2 * * * * *\"\npaths = [\"/etc/app\"]\nroot = \"{}\"\n\
             [job.retention]\nkeep_last = {keep_last}\n\
             [[job]]\nname = \"check\"\nkind = \"verify\"\nschedule = \"1/2 * * * * *\"\n",
            ctl.repo,
            ctl.writer_key.display(),
            dir.join("catalog.sqlite").display(),
            token.display(),
            host.display()
        ),
    );
    path
}

fn snapshots_of_app(ctl: &Ctl) -> usize {
    ctl.snapshots().iter().filter(|s| s["job"] == "app").count()
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Run the daemon until the vault holds `n` snapshots of job `app`, then stop it; returns when it
/// stopped.
fn run_until(ctl: &Ctl, config: &Path, log: &Path, port: u16, n: usize, also: impl FnOnce()) -> DateTime<Utc> {
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(config), log);
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        get(port, "/healthz", None).map(|_| ())
    })
    .unwrap_or_else(|| panic!("vaultd did not start:\n{}", log_of(log)));
    wait_for(Duration::from_secs(40), Duration::from_millis(200), || {
        (snapshots_of_app(ctl) >= n).then_some(())
    })
    .unwrap_or_else(|| panic!("fewer than {n} snapshots; log:\n{}", log_of(log)));
    also();
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "vaultd exit {status:?}:\n{}", log_of(log));
    Utc::now()
}

fn t(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().to_utc()
}

#[test]
fn audit_reports_taken_and_missed_slots_under_the_recorded_policies() {
    let tmp = tempdir("audit");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let repo = PathBuf::from(&ctl.repo);
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc/app")).unwrap();
    std::fs::write(host.join("etc/app/a.conf"), "a=1\n").unwrap();
    let port = free_port();
    let log = tmp.path().join("vaultd.log");

    // First run: keep_last 100, three snapshots; /v1/audit and the metrics answer meanwhile.
    let cfg = config(&ctl, tmp.path(), &host, port, 100);
    let stopped = run_until(&ctl, &cfg, &log, port, 3, || {
        let (code, _) = get(port, "/v1/audit", None).unwrap();
        assert_eq!(code, 401, "the audit needs the token");
        let (code, body) = get(port, "/v1/audit", Some(TOKEN)).unwrap();
        assert_eq!(code, 200, "{body}");
        let a: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(a["jobs"][0]["job"], "app", "{a:#}");
        assert_eq!(a["jobs"][0]["expected_interval_secs"], 2);
        let (_, m) = get(port, "/metrics", Some(TOKEN)).unwrap();
        assert_eq!(metric(&m, "vault_job_expected_interval_seconds{job=\"app\"}"), Some(2.0), "{m}");
        assert!(
            m.contains("vault_group_missed_slots{job=\"app\",group=\"host:audit-host/app\"}"),
            "{m}"
        );
    });
    assert_eq!(objects_under(&repo, "policies"), 1, "one policy record (none for the verify job)");
    let by_daemon = objects_under(&repo, "verifications");
    assert!(by_daemon > 0, "the daemon's verify job records its results in the vault");

    // Down for ~6 s (about three slots), then up again with another policy.
    std::thread::sleep(Duration::from_secs(6));
    let restarted = Utc::now();
    let before = snapshots_of_app(&ctl);
    let cfg = config(&ctl, tmp.path(), &host, port, 50);
    run_until(&ctl, &cfg, &log, port, before + 3, || {});
    assert_eq!(objects_under(&repo, "policies"), 2, "a changed policy is a new record");
    // The same config again adds nothing.
    run_until(&ctl, &cfg, &log, port, snapshots_of_app(&ctl) + 1, || {});
    assert_eq!(objects_under(&repo, "policies"), 2, "an unchanged policy is not recorded again");

    // A verification recorded in the vault (seen from any host).
    ctl.writer(&["verify", "--all"]).ok();
    assert!(
        objects_under(&repo, "verifications") >= before,
        "verify records its results in the vault"
    );

    // The audit with the default thresholds: slots were missed while the daemon was down.
    let run = ctl.writer(&["--json", "audit", "--late-after", "1s"]).code(3);
    let a = run.json();
    let job = &a["jobs"][0];
    assert_eq!(job["job"], "app");
    assert_eq!(job["policies"].as_array().unwrap().len(), 2, "{job:#}");
    assert!(s(&job["policies"][0], "retention").contains("last 100"), "{job:#}");
    assert!(s(&job["policies"][1], "retention").contains("last 50"), "{job:#}");
    let g = &job["groups"][0];
    assert_eq!(g["group"], "host:audit-host/app");
    let slots = g["slots"].as_array().unwrap();
    let taken = slots.iter().filter(|x| x["status"] == "taken" || x["status"] == "late").count();
    assert!(taken >= 6, "{g:#}");
    let missed_while_down: Vec<&Value> = slots
        .iter()
        .filter(|x| x["status"] == "missed")
        .filter(|x| t(&x["slot"]) > stopped + chrono::Duration::seconds(1) && t(&x["slot"]) < restarted - chrono::Duration::seconds(1))
        .collect();
    assert!(!missed_while_down.is_empty(), "no slot missed while the daemon was down: {g:#}");
    let adherence = a["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "schedule-adherence")
        .unwrap();
    assert_eq!(adherence["status"], "non-compliant", "{adherence}");
    assert_eq!(a["compliant"], false);
    let structure = g["snapshots"][0]["structure"].clone();
    assert_eq!(structure["ok"], true, "{g:#}");

    // Thresholds that allow what happened: every control passes, exit 0.
    ctl.writer(&[
        "audit",
        "--late-after",
        "1s",
        "--max-missed",
        "1000",
        "--min-retention",
        "1min",
        "--max-age",
        "1h",
    ])
    .ok()
    .mentions(&["job app", "missed", "all controls compliant"]);

    // CSV rows of slots and controls.
    let csv = ctl.writer(&["audit", "--csv", "--late-after", "1s"]).code(3).stdout;
    assert!(csv.starts_with("record,job,group,time,status"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("slot,app,host:audit-host/app,") && l.contains(",missed,")),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("control,") && l.contains("schedule-adherence")),
        "{csv}"
    );

    // forget without keep flags plans with the recorded policy (the newest).
    ctl.writer(&["forget", "--dry-run"]).ok().mentions(&["recorded", "last 50"]);

    // One HTML page, rendered by a real browser.
    let html = tmp.path().join("audit.html");
    ctl.writer(&["audit", "--late-after", "1s", "--html", &html.display().to_string()])
        .code(3);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
    assert!(page.contains("class=\"missed\"") && page.contains("class=\"taken\"") || page.contains("class=\"late\""));
    let shot = tmp.path().join("audit.png");
    screenshot(&html, &shot, tmp.path());
    check_not_blank(&shot);

    // Retention forgets all but the 3 newest: the deletion log lists them, their slots still
    // count as taken, and the deletion-log control passes.
    let lenient = [
        "--late-after",
        "1s",
        "--max-missed",
        "1000",
        "--min-retention",
        "1min",
        "--max-age",
        "1h",
    ];
    let taken_before = count_taken(&ctl.writer(&[&["--json", "audit"][..], &lenient].concat()).ok().json());
    ctl.writer(&["forget", "--keep-last", "3", "--confirm"]).ok();
    let a = ctl.writer(&[&["--json", "audit"][..], &lenient].concat()).ok().json();
    assert_eq!(count_taken(&a), taken_before, "forgotten snapshots still took their slots");
    let records = a["deletion_log"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{:#}", a["deletion_log"]);
    assert_eq!(
        a["jobs"][0]["groups"][0]["snapshots"].as_array().unwrap().len(),
        3,
        "only the kept ones are listed"
    );
    let log_control = a["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "deletion-log")
        .unwrap();
    assert_eq!(log_control["status"], "compliant", "{log_control}");

    // A kept snapshot's manifest deleted behind vault's back: deleted outside policy, exit 3.
    let kept = s(&a["jobs"][0]["groups"][0]["snapshots"][0], "id");
    let manifest = vault_e2e::objects(&repo)
        .into_iter()
        .find(|p| p.strip_prefix(&repo).is_ok_and(|r| r.starts_with("snapshots")) && p.display().to_string().contains(&kept))
        .expect("the kept snapshot's manifest");
    std::fs::remove_file(manifest).unwrap();
    let a = ctl.writer(&[&["--json", "audit"][..], &lenient].concat()).code(3).json();
    let findings = a["deletion_log"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["kind"] == "deleted-outside-policy"),
        "{:#}",
        a["deletion_log"]
    );
    let log_control = a["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "deletion-log")
        .unwrap();
    assert_eq!(log_control["status"], "non-compliant", "{log_control}");

    // The job removed from the host's config: the daemon records its retirement, and the audit
    // expects no slot after it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let without_app = text
        .replace("name = \"app\"", "name = \"app-gone\"")
        .replace("*/2 * * * * *", "0 0 0 1 1 *");
    write_private(&cfg, &without_app);
    let mut daemon = Proc::spawn("vaultd", &mut vaultd_run(&cfg), &log);
    wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        (objects_under(&repo, "policies") == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("no retirement recorded:\n{}", log_of(&log)));
    let retired_at = Utc::now();
    assert!(daemon.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));
    std::thread::sleep(Duration::from_secs(3));
    let a = ctl.writer(&["--json", "audit", "--job", "app", "--late-after", "1s"]).json();
    assert_eq!(a["jobs"][0]["retired"], true, "{:#}", a["jobs"][0]);
    let after: Vec<&Value> = a["jobs"][0]["groups"][0]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| t(&x["slot"]) > retired_at)
        .collect();
    assert!(after.is_empty(), "slots expected after the job's retirement: {after:?}");
}

fn count_taken(a: &Value) -> usize {
    a["jobs"][0]["groups"][0]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["status"] == "taken" || x["status"] == "late")
        .count()
}

/// Headless Chromium renders `html` to `png` (no network, a throw-away profile).
fn screenshot(html: &Path, png: &Path, dir: &Path) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed: scripts/test.sh installs it (apt-get install chromium)");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        png.exists(),
        "chromium made no screenshot: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decode the PNG (python3's zlib; the PNG filters by hand) and require the calendar's colours:
/// red for missed slots and green or amber for taken ones, and many distinct colours (text).
fn check_not_blank(png: &Path) {
    const DECODE: &str = r#"
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w, h, ct = 8, b'', 0, 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos+8]); body = data[pos+8:pos+8+n]; pos += 12 + n
    if kind == b'IHDR': w, h, depth, ct = struct.unpack('>IIBB', body[:10])
    elif kind == b'IDAT': idat += body
bpp = {2: 3, 6: 4}[ct]
raw, stride, prev, colours, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), set(), 0
for y in range(h):
    f, line = raw[i], bytearray(raw[i+1:i+1+stride]); i += 1 + stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0; b = prev[x]; c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    if y % 2 == 0:
        for x in range(0, stride, bpp * 2): colours.add(bytes(line[x:x+3]))
    prev = line
print(len(colours), int(bytes([0xd6, 0x2f, 0x2f]) in colours), int(bytes([0x2e, 0x9e, 0x44]) in colours or bytes([0xe8, 0xb4, 0x00]) in colours))
"#;
    let out = Command::new("python3").arg("-c").arg(DECODE).arg(png).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let f: Vec<usize> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert!(f[0] > 20, "the screenshot is (nearly) blank: {} colours", f[0]);
    assert_eq!(f[1], 1, "no red (missed) slot cell in the screenshot");
    assert_eq!(f[2], 1, "no green or amber (taken) slot cell in the screenshot");
}

/// vaultd applies `[job.retention]` after each successful capture, to its own host's group only:
/// with keep_last 2, the daemon's group holds two live snapshots and the rest are forgotten by
/// `vaultd job app`; a group of the same job from another host is left alone.
#[test]
fn vaultd_applies_the_retention_policy_after_each_run_to_its_own_group() {
    let tmp = tempdir("audit-retention");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc/app")).unwrap();
    let root = host.display().to_string();
    // Three captures of job `app` from this machine's host name: another group of the job.
    for i in 0..3 {
        std::fs::write(host.join("etc/app/a.conf"), format!("a={i}\n")).unwrap();
        ctl.writer(&[
            "backup",
            "files",
            "--root",
            &root,
            "--path",
            "/etc/app",
            "--no-packages",
            "--job",
            "app",
        ])
        .ok();
    }
    let port = free_port();
    let log = tmp.path().join("vaultd.log");
    let cfg = config(&ctl, tmp.path(), &host, port, 2);
    run_until(&ctl, &cfg, &log, port, 3 + 5, || {});

    let listed = ctl.snapshots();
    let live = |h: &str| {
        listed
            .iter()
            .filter(|r| r["job"] == "app" && (r["host"] == "audit-host") == (h == "audit-host") && r["forgotten"] != true)
            .count()
    };
    assert!(listed.iter().filter(|r| r["host"] == "audit-host").count() >= 5, "{listed:?}");
    assert_eq!(
        live("audit-host"),
        2,
        "keep_last 2 in the daemon's group: {listed:#?}\n{}",
        log_of(&log)
    );
    assert_eq!(live("other"), 3, "another host's group is not the daemon's to forget: {listed:#?}");
    let d = ctl.writer(&["--json", "deletion-log"]).ok().json();
    let records = d["log"]["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{d}");
    assert!(
        records
            .iter()
            .all(|r| r["record"]["command"] == "vaultd job app" && r["record"]["host"] == "audit-host"),
        "{d}"
    );
    assert!(log_of(&log).contains("retention forgot"), "{}", log_of(&log));

    // forget without keep flags: each group under its job's recorded policy (the other host
    // recorded none, so the daemon's record of the job serves), one plan per group.
    let f = ctl.writer(&["--json", "forget", "--dry-run"]).ok().json();
    let groups = f["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{f:#}");
    assert!(groups.iter().all(|g| s(g, "policy_record").starts_with("policies/")), "{f:#}");
    let other = groups.iter().find(|g| !s(g, "group").contains("audit-host")).unwrap();
    assert_eq!(other["groups"][0]["remove"], 1, "keep_last 2 of 3: {other:#}");
}
