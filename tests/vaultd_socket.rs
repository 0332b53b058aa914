//! End-to-end test of the real `vaultd` binary serving its API on a unix socket
//! (`http.listen = "unix:PATH"`), and the real `vaultctl` talking to it. Run
//! `cargo build --workspace` first.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use vault_e2e::daemon::{assert_config_ok, unix_request, vaultd_run, write_private};
use vault_e2e::process::Proc;
use vault_e2e::{Ctl, tempdir, wait_for};

const TOKEN: &str = "s3cret-token-for-the-socket-test";

fn start(config: &Path, log: &Path) -> Proc {
    Proc::spawn("vaultd", &mut vaultd_run(config), log)
}

fn wait_healthy(sock: &Path, daemon: &mut Proc) {
    let up = wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        if let Some(st) = daemon.exited() {
            panic!("vaultd exited ({st}):\n{}", daemon.log_tail(30));
        }
        unix_request(sock, "GET", "/healthz", None)
    });
    assert_eq!(
        up,
        Some((200, "ok\n".to_string())),
        "no /healthz on {}:\n{}",
        sock.display(),
        daemon.log_tail(30)
    );
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn vaultd_serves_its_api_on_a_private_unix_socket() {
    let tmp = tempdir("vaultd-sock");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &tmp.path().join("vault").display().to_string(), vec![]);
    ctl.setup(&[]);
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("etc/app")).unwrap();
    std::fs::write(host.join("etc/app/a.conf"), "a=1\n").unwrap();
    // The socket's directory is open to everyone: the socket itself must still be private.
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = run_dir.join("api.sock");
    let token = tmp.path().join("token");
    write_private(&token, &format!("{TOKEN}\n"));
    let config = tmp.path().join("vaultd.toml");
    write_private(
        &config,
        &format!(
            "repo = \"{}\"\nwriter_key = \"{}\"\ncatalog = \"{}\"\n[http]\nlisten = \"unix:{}\"\ntoken_file = \"{}\"\n[[job]]\nname = \"conf\"\nkind = \"files\"\nschedule = \"0 0 3 1 1 *\"\npaths = [\"/etc/app\"]\nroot = \"{}\"\n",
            ctl.repo,
            ctl.writer_key.display(),
            tmp.path().join("catalog.sqlite").display(),
            sock.display(),
            token.display(),
            host.display()
        ),
    );
    assert_config_ok(&config);

    let log = tmp.path().join("vaultd.log");
    let mut daemon = start(&config, &log);
    wait_healthy(&sock, &mut daemon);

    // The socket is there, mode 0600, and nothing else was left in its directory.
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert!(md.file_type().is_socket(), "{} is not a socket", sock.display());
    assert_eq!(md.permissions().mode() & 0o7777, 0o600, "socket mode");
    let names: Vec<_> = std::fs::read_dir(&run_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["api.sock"]);
    assert!(log_text(&log).contains(&format!("vaultd listening on unix:{}", sock.display())));

    // The token is still required for everything but /healthz.
    assert_eq!(unix_request(&sock, "GET", "/v1/jobs", None).map(|r| r.0), Some(401));
    assert_eq!(unix_request(&sock, "GET", "/readyz", Some("wrong")).map(|r| r.0), Some(401));
    assert_eq!(unix_request(&sock, "POST", "/v1/jobs/conf/run", None).map(|r| r.0), Some(401));
    assert_eq!(unix_request(&sock, "GET", "/readyz", Some(TOKEN)).map(|r| r.0), Some(200));
    let (code, body) = unix_request(&sock, "GET", "/v1/jobs", Some(TOKEN)).unwrap();
    assert!(code == 200 && body.contains("\"conf\""), "{code} {body}");

    // vaultctl finds the socket in the daemon's config, or takes it as --daemon-url.
    let cfg = config.display().to_string();
    let url = format!("unix:{}", sock.display());
    ctl.run(&["status", "--daemon-config", &cfg])
        .ok()
        .mentions(&["alive, ready", "conf", &url]);
    let token_arg = token.display().to_string();
    let jobs = ctl
        .run(&[
            "--json",
            "jobs",
            "--daemon-url",
            &url,
            "--daemon-token-file",
            &token_arg,
            "--daemon-config",
            "/nonexistent",
        ])
        .ok()
        .json();
    assert_eq!(jobs[0]["name"], "conf", "{jobs:#}");
    ctl.run(&["run", "conf", "--wait", "--daemon-config", &cfg])
        .ok()
        .mentions(&["job conf: run", "succeeded: snapshot"]);
    assert_eq!(ctl.snapshots().len(), 1);
    ctl.run(&["jobs", "--daemon-url", &url, "--daemon-config", "/nonexistent"])
        .code(4)
        .mentions(&["bearer token", &url]);

    // A second daemon on the same socket is refused, and the first one keeps answering.
    let log2 = tmp.path().join("vaultd-2.log");
    let mut second = start(&config, &log2);
    let status = wait_for(Duration::from_secs(30), Duration::from_millis(50), || second.exited())
        .unwrap_or_else(|| panic!("a second vaultd started on the same socket:\n{}", second.log_tail(20)));
    assert!(!status.success(), "{status}");
    let text = log_text(&log2);
    assert!(
        text.contains("another process answers on it") && text.contains(&sock.display().to_string()),
        "{text}"
    );
    assert_eq!(unix_request(&sock, "GET", "/healthz", None).map(|r| r.0), Some(200));

    // Killed: the socket file stays behind, stale; a restart replaces it.
    daemon.kill();
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(unix_request(&sock, "GET", "/healthz", None), None);
    ctl.run(&["status", "--daemon-config", &cfg])
        .failed()
        .mentions(&["vaultd is not answering at", &url, "mode 0600"]);
    let mut daemon = start(&config, &log);
    wait_healthy(&sock, &mut daemon);
    assert!(log_text(&log).contains("removed the stale socket"), "{}", log_text(&log));
    assert_eq!(std::fs::symlink_metadata(&sock).unwrap().permissions().mode() & 0o7777, 0o600);

    // A clean stop removes it.
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "vaultd exit {status:?}:\n{}",
        daemon.log_tail(20)
    );
    assert!(!sock.exists(), "the socket was left behind after a clean stop");
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0);
    assert!(!log_text(&log).contains(TOKEN), "the token was logged");

    // Something that is not a socket in its place: refused at start-up, and left alone.
    std::fs::write(&sock, "not a socket").unwrap();
    let mut refused = start(&config, &log2);
    let status = wait_for(Duration::from_secs(30), Duration::from_millis(50), || refused.exited())
        .unwrap_or_else(|| panic!("vaultd started over a regular file:\n{}", refused.log_tail(20)));
    assert_eq!(status.code(), Some(2), "{}", log_text(&log2));
    assert!(log_text(&log2).contains("is not a socket"), "{}", log_text(&log2));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
}
