//! Tests of config parsing and `check-config`: one per class of problem.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::check::{check_config, file_problems, static_problems, vault_problems};
use crate::config::{Problem, parse};

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Static problems of a config text that parses.
fn statics(text: &str) -> Vec<Problem> {
    let p = parse(text);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    static_problems(p.config.as_ref().unwrap(), &p.locator, &[])
}

fn keys_lines(ps: &[Problem]) -> Vec<(String, Option<usize>)> {
    ps.iter().map(|p| (p.key.clone(), p.line)).collect()
}

const HEAD: &str = "repo = \"/srv/vault\"\nwriter_key = \"/etc/vault/writer.key\"\n";

fn etcd_job(name: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nkind = \"etcd-v3\"\nschedule = \"0 */15 * * * *\"\n[job.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n"
    )
}

#[test]
fn the_example_config_passes_the_static_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/vaultd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let p = parse(&text);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let cfg = p.config.unwrap();
    assert_eq!(cfg.jobs.len(), 6);
    assert_eq!(cfg.global.http.listen, "127.0.0.1:8765");
    assert!(!cfg.global.http.metrics_public);
    assert_eq!(cfg.global.shutdown_grace_secs, 30);
    let names: Vec<_> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        ["etcd", "master-files", "verify", "node-files", "etcd-local", "etcd-host-files"]
    );
    assert_eq!(cfg.jobs[0].etcd.as_ref().unwrap().endpoints.len(), 3);
    assert_eq!(cfg.jobs[1].profile.as_deref(), Some("master"));
    assert_eq!(cfg.jobs[0].tags["cluster"], "cluster-a");
    let problems = static_problems(&cfg, &p.locator, &[]);
    assert!(problems.is_empty(), "{problems:?}");
    // The file checks fail only for files this machine does not have.
    for pr in file_problems(&cfg, &p.locator, Some(&path)) {
        assert!(
            pr.message.contains("No such file") || pr.message.contains("does not exist"),
            "{pr:?}"
        );
    }
}

#[test]
fn every_syntax_error_is_reported_with_its_line() {
    let p = parse("repo = \"/x\"\nwriter_key = \nfoo = [1,\n");
    assert!(p.config.is_none());
    assert!(!p.problems.is_empty());
    assert_eq!(p.problems[0].line, Some(2), "{:?}", p.problems);
}

#[test]
fn unknown_keys_everywhere_are_all_reported_with_their_lines() {
    let text = format!(
        "{HEAD}bogus = 1\n[s3]\nregon = \"x\"\n[http]\nport = 1\n{}colour = \"red\"\n{}",
        etcd_job("a").replace("[job.etcd]", "retry = 3\nnmae = \"x\"\n[job.etcd]"),
        etcd_job("b")
    );
    let p = parse(&text);
    // What parsed is kept for the other checks.
    assert_eq!(p.config.as_ref().map(|c| c.jobs.len()), Some(2));
    let line = |s: &str| Some(text.lines().position(|l| l.starts_with(s)).unwrap() + 1);
    assert_eq!(
        keys_lines(&p.problems),
        vec![
            ("bogus".into(), Some(3)),
            ("s3.regon".into(), Some(5)),
            ("http.port".into(), Some(7)),
            ("job[0].retry".into(), line("retry ")),
            ("job[0].nmae".into(), line("nmae")),
            ("job[0].etcd.colour".into(), line("colour")),
        ],
        "{:#?}",
        p.problems
    );
    assert!(p.problems[1].message.contains("region"), "{}", p.problems[1].message);
    assert!(p.problems[5].message.contains("endpoints"), "{}", p.problems[5].message);
}

#[test]
fn structural_and_semantic_problems_are_reported_together() {
    // job[0] does not parse (no schedule); job[1] has an unknown key and a bad schedule; job[2] a
    // bad kind: all four problems, with the right job numbers.
    let text = format!(
        "{HEAD}[[job]]\nname = \"a\"\nkind = \"files\"\nprofile = \"node\"\n{}extra = 1\n{}",
        files_job_text("b").replace("0 0 * * * *", "bad"),
        files_job_text("c").replace("\"files\"", "\"tape\"")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaultd.toml");
    write(&path, &text, 0o600);
    let out = futures_lite_block(check_config(&path, &[], false));
    let mut keys: Vec<_> = out.iter().map(|l| l.split(": ").nth(1).unwrap_or("").to_string()).collect();
    keys.sort();
    // (the writer key of HEAD does not exist on the test machine)
    assert_eq!(
        keys,
        ["job[0]", "job[1].extra", "job[1].schedule", "job[2].kind", "writer_key"],
        "{out:#?}"
    );
}

fn files_job_text(name: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\nprofile = \"node\"\n")
}

fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn missing_keys_and_wrong_types_are_located() {
    let text = format!(
        "{HEAD}[[job]]\nname = \"a\"\nkind = \"files\"\nprofile = \"node\"\n[[job]]\nname = \"b\"\nkind = \"files\"\nschedule = \"0 * * * * *\"\njitter_secs = \"ten\"\nprofile = \"node\"\n"
    );
    let p = parse(&text);
    assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
    assert!(p.problems[0].message.contains("schedule"), "{:?}", p.problems[0]);
    assert_eq!(p.problems[0].key, "job[0]");
    assert!(matches!(p.problems[0].line, Some(3..=6)), "{:?}", p.problems[0]);
    assert_eq!(p.problems[1].line, Some(11), "{:?}", p.problems[1]);
    // The top level's required keys too.
    let p = parse("catalog = \"/x\"\n");
    assert!(p.problems[0].message.contains("repo"), "{:?}", p.problems);
}

#[test]
fn bad_cron_expressions_are_reported_at_their_schedule_key() {
    let text = format!(
        "{HEAD}{}{}{}",
        etcd_job("a").replace("0 */15 * * * *", "*/5 * * * *"),
        etcd_job("b").replace("0 */15 * * * *", "0 61 * * * *"),
        etcd_job("c")
    );
    let ps = statics(&text);
    assert_eq!(
        keys_lines(&ps),
        vec![("job[0].schedule".into(), Some(6)), ("job[1].schedule".into(), Some(12))]
    );
    assert!(ps[0].message.contains("5 field(s)"), "{}", ps[0].message);
    assert!(ps[1].message.contains("0 61 * * * *"), "{}", ps[1].message);
}

#[test]
fn duplicate_names_and_unknown_kinds_are_reported() {
    let text = format!(
        "{HEAD}{}{}{}",
        etcd_job("a"),
        etcd_job("a"),
        etcd_job("b").replace("etcd-v3", "etcd-v9")
    );
    let ps = statics(&text);
    let kl = keys_lines(&ps);
    assert!(kl.contains(&("job[1].name".into(), Some(10))), "{ps:?}");
    let dup = ps.iter().find(|p| p.key == "job[1].name").unwrap();
    assert!(dup.message.contains("job[0] (line 4)"), "{}", dup.message);
    let kind = ps.iter().find(|p| p.key == "job[2].kind").unwrap();
    assert!(
        kind.message.contains("etcd-v9") && kind.message.contains("\"files\""),
        "{}",
        kind.message
    );
    assert_eq!(kind.line, Some(text.lines().position(|l| l.contains("etcd-v9")).unwrap() + 1));
}

#[test]
fn job_settings_that_do_not_fit_the_kind_are_reported() {
    let text = format!(
        "{HEAD}[[job]]\nname = \"a\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\nprofile = \"master\"\n[job.etcd]\nendpoints = [\"127.0.0.1:2379\"]\ncert = \"/c\"\n[[job]]\nname = \"f\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/ok\", \"relative\"]\nprofile = \"mastr\"\n[[job]]\nname = \"g\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\n[[job]]\nname = \"e\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\n"
    );
    let ps = statics(&text);
    let kl = keys_lines(&ps);
    for expected in [
        ("job[0].profile", 7),
        ("job[0].etcd.endpoints[0]", 9),
        ("job[0].etcd", 8),
        ("job[1].profile", 16),
        ("job[1].paths[1]", 15),
        ("job[2].kind", 19),
        ("job[3].kind", 23),
    ] {
        assert!(
            kl.contains(&(expected.0.to_string(), Some(expected.1))),
            "{expected:?} not in {kl:?}"
        );
    }
    assert_eq!(ps.len(), 7, "{ps:?}");
}

#[test]
fn http_settings_are_checked() {
    let text = format!("{HEAD}[http]\nlisten = \"0.0.0.0:8765\"\n{}", etcd_job("a"));
    let ps = statics(&text);
    assert_eq!(keys_lines(&ps), vec![("http.listen".into(), Some(4))]);
    assert!(ps[0].message.contains("token_file"), "{}", ps[0].message);
    let ps = statics(&format!("{HEAD}[http]\nlisten = \"localhost\"\n{}", etcd_job("a")));
    assert_eq!(keys_lines(&ps), vec![("http.listen".into(), Some(4))]);
    let ps = statics(HEAD);
    assert!(ps[0].message.contains("no [[job]]"), "{ps:?}");
}

#[test]
fn a_unix_socket_needs_an_absolute_path_and_no_token_file() {
    // Private (0600) by construction: no token_file needed to listen there, unlike a network address.
    let ps = statics(&format!("{HEAD}[http]\nlisten = \"unix:/run/vaultd/api.sock\"\n{}", etcd_job("a")));
    assert!(ps.is_empty(), "{ps:?}");
    for bad in ["unix:run/vaultd/api.sock", "unix:", "unix:/run/vaultd/"] {
        let ps = statics(&format!("{HEAD}[http]\nlisten = \"{bad}\"\n{}", etcd_job("a")));
        assert_eq!(keys_lines(&ps), vec![("http.listen".into(), Some(4))], "{bad}: {ps:?}");
        assert!(ps[0].message.contains("unix:/run/vaultd/api.sock"), "{}", ps[0].message);
    }
    let long = format!("unix:/{}/api.sock", "x".repeat(100));
    let ps = statics(&format!("{HEAD}[http]\nlisten = \"{long}\"\n{}", etcd_job("a")));
    assert!(ps.len() == 1 && ps[0].message.contains("too long"), "{ps:?}");
}

#[test]
fn a_unix_socket_needs_its_directory_and_nothing_but_a_socket_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("writer.key"), "k", 0o600);
    let problems = |listen: &Path| {
        let text = format!(
            "repo = \"{0}/vault\"\nwriter_key = \"{0}/writer.key\"\n[http]\nlisten = \"unix:{1}\"\n{2}",
            d.display(),
            listen.display(),
            etcd_job("a")
        );
        let p = parse(&text);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let cfg = p.config.unwrap();
        assert!(static_problems(&cfg, &p.locator, &[]).is_empty());
        file_problems(&cfg, &p.locator, None)
    };
    // A directory that is there: fine, and so is a stale socket left by a killed daemon.
    assert_eq!(problems(&d.join("api.sock")), vec![]);
    drop(std::os::unix::net::UnixListener::bind(d.join("stale.sock")).unwrap());
    assert_eq!(problems(&d.join("stale.sock")), vec![]);
    // No directory.
    let ps = problems(&d.join("run/vaultd/api.sock"));
    assert_eq!(keys_lines(&ps), vec![("http.listen".into(), Some(4))], "{ps:?}");
    assert!(
        ps[0].message.contains(&d.join("run/vaultd").display().to_string()) && ps[0].message.contains("does not exist"),
        "{}",
        ps[0].message
    );
    // A regular file or a directory where the socket goes: the daemon would refuse to replace it.
    write(&d.join("file.sock"), "x", 0o600);
    std::fs::create_dir(d.join("dir.sock")).unwrap();
    for name in ["file.sock", "dir.sock"] {
        let ps = problems(&d.join(name));
        assert_eq!(keys_lines(&ps), vec![("http.listen".into(), Some(4))], "{ps:?}");
        assert!(ps[0].message.contains("is not a socket"), "{}", ps[0].message);
    }
}

#[test]
fn missing_files_and_secrets_readable_by_others_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("writer.key"), "k", 0o644);
    write(&d.join("token"), "", 0o600);
    write(&d.join("ca.crt"), "ca", 0o644);
    write(&d.join("peer.key"), "k", 0o640);
    let text = format!(
        "repo = \"{0}/vault\"\nwriter_key = \"{0}/writer.key\"\ncatalog = \"{0}/nodir/c.sqlite\"\n[s3]\nsecret_access_key = \"s\"\n[http]\ntoken_file = \"{0}/token\"\n[[job]]\nname = \"a\"\nkind = \"etcd-v3\"\nschedule = \"0 0 * * * *\"\n[job.etcd]\nendpoints = [\"https://x:2379\"]\ncacert = \"{0}/ca.crt\"\ncert = \"{0}/missing.crt\"\nkey = \"{0}/peer.key\"\n[[job]]\nname = \"f\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc\"]\nroot = \"{0}/noroot\"\n",
        d.display()
    );
    let cfg_path = d.join("vaultd.toml");
    write(&cfg_path, &text, 0o644);
    let p = parse(&text);
    let ps = file_problems(p.config.as_ref().unwrap(), &p.locator, Some(&cfg_path));
    let kl = keys_lines(&ps);
    assert_eq!(
        kl,
        vec![
            ("writer_key".into(), Some(2)),
            ("http.token_file".into(), Some(7)),
            ("catalog".into(), Some(3)),
            ("s3.secret_access_key".into(), Some(5)),
            ("job[0].etcd.cert".into(), Some(15)),
            ("job[0].etcd.key".into(), Some(16)),
            ("job[1].root".into(), Some(22)),
        ],
        "{ps:#?}"
    );
    assert!(
        ps[0].message.contains("0644") && ps[0].message.contains("chmod 600"),
        "{}",
        ps[0].message
    );
    assert!(ps[1].message.contains("empty"), "{}", ps[1].message);
    assert!(ps[5].message.contains("0640"), "{}", ps[5].message);
    // No secret is ever echoed.
    assert!(!ps.iter().any(|p| p.message.contains("\"s\"")));
    // A directory where a file should be.
    let text = text.replace("writer.key", "");
    let p = parse(&text);
    let ps = file_problems(p.config.as_ref().unwrap(), &p.locator, None);
    assert!(ps[0].key == "writer_key" && ps[0].message.contains("not a regular file"), "{ps:?}");
}

/// A vault in `dir/vault` with its writer key at `dir/writer.key` (0600).
async fn make_vault(dir: &Path, name: &str) -> PathBuf {
    let store = vault::store::Store::open(&dir.join(name).display().to_string(), &Default::default()).unwrap();
    store.create_root().unwrap();
    let (_, recipient) = vault::crypto::generate_identity();
    let opts = vault::repo::InitOptions {
        recipients: vec![recipient],
        ..Default::default()
    };
    let (_, writer) = vault::repo::Vault::init(store, &opts).await.unwrap();
    let key = dir.join(format!("{name}.key"));
    write(&key, &writer.to_file_text(), 0o600);
    key
}

fn good_config(dir: &Path, vault: &str, key: &Path) -> String {
    format!(
        "repo = \"{}/{vault}\"\nwriter_key = \"{}\"\ncatalog = \"{}/catalog.sqlite\"\n[[job]]\nname = \"files\"\nkind = \"files\"\nschedule = \"*/2 * * * * *\"\npaths = [\"/etc/hostname\"]\n",
        dir.display(),
        key.display(),
        dir.display()
    )
}

#[tokio::test]
async fn an_unreachable_vault_and_a_wrong_writer_key_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_a = make_vault(d, "a").await;
    let key_b = make_vault(d, "b").await;

    // All good: no problem at all, live checks included.
    let cfg = d.join("ok.toml");
    write(&cfg, &good_config(d, "a", &key_a), 0o600);
    assert_eq!(check_config(&cfg, &[], true).await, Vec::<String>::new());

    // The key of another vault.
    let text = good_config(d, "a", &key_b);
    let p = parse(&text);
    let ps = vault_problems(p.config.as_ref().unwrap(), &p.locator).await;
    assert_eq!(keys_lines(&ps), vec![("writer_key".into(), Some(2))], "{ps:?}");
    assert!(ps[0].message.contains("belongs to vault"), "{}", ps[0].message);

    // No vault there.
    let text = good_config(d, "nothing-here", &key_a);
    let p = parse(&text);
    let ps = vault_problems(p.config.as_ref().unwrap(), &p.locator).await;
    assert_eq!(keys_lines(&ps), vec![("repo".into(), Some(1))], "{ps:?}");
    assert!(ps[0].message.contains("no vault at"), "{}", ps[0].message);
}

#[tokio::test]
async fn check_config_reports_every_problem_rendered_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = make_vault(d, "a").await;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = good_config(d, "a", &key).replace("*/2 * * * * *", "bad") + &etcd_job("files").replace("http://", "");
    let cfg = d.join("vaultd.toml");
    write(&cfg, &text, 0o600);
    let out = check_config(&cfg, &[], true).await;
    let f = cfg.display().to_string();
    assert_eq!(out.len(), 4, "{out:#?}");
    assert!(out[0].starts_with(&format!("{f}:2: writer_key: ")), "{out:#?}");
    assert!(out[1].starts_with(&format!("{f}:7: job[0].schedule: ")), "{out:#?}");
    assert!(out[2].starts_with(&format!("{f}:10: job[1].name: ")), "{out:#?}");
    assert!(out[3].starts_with(&format!("{f}:14: job[1].etcd.endpoints[0]: ")), "{out:#?}");
    // The vault is not opened with a key that failed its checks.
    assert!(!out.iter().any(|l| l.contains("belongs to vault")), "{out:#?}");
    // A file that cannot be read.
    let out = check_config(&d.join("missing.toml"), &[], true).await;
    assert!(out[0].contains("missing.toml"), "{out:?}");
}

#[test]
fn jobs_that_do_not_parse_are_not_also_reported_as_missing() {
    let p = parse(&format!("{HEAD}[[job]]\nname = \"a\"\n"));
    assert!(!p.problems.is_empty());
    let ps = static_problems(p.config.as_ref().unwrap(), &p.locator, &[]);
    assert!(ps.iter().all(|p| !p.message.contains("no [[job]]")), "{ps:?}");
}

#[test]
fn scope_host_and_webhook_are_checked() {
    let job = etcd_job("a").replace("kind = \"etcd-v3\"\n", "kind = \"etcd-v3\"\nscope = \"everywhere\"\n");
    let ps = statics(&format!(
        "{HEAD}host = \"\"\n[webhook]\nurl = \"ftp://hooks.example/s3cret\"\ntimeout_secs = 0\n{job}"
    ));
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("host".into(), Some(3)),
            ("webhook.url".into(), Some(5)),
            ("webhook.timeout_secs".into(), Some(6)),
            ("job[0].scope".into(), Some(10)),
        ]
    );
    // The URL may hold a secret: it is not repeated.
    assert!(ps.iter().all(|p| !p.message.contains("s3cret")), "{ps:?}");
    let p = parse(&format!(
        "{HEAD}[webhook]\nurl = \"https://hooks.example/x\"\nsecret = 1\n{}",
        etcd_job("a")
    ));
    assert_eq!(keys_lines(&p.problems), vec![("webhook.secret".into(), Some(5))]);
    // Defaults: etcd jobs are cluster-wide, files jobs per host.
    let cfg = parse(&format!(
        "{HEAD}{}[[job]]\nname = \"f\"\nkind = \"files\"\nschedule = \"0 0 * * * *\"\npaths = [\"/etc/x\"]\n",
        etcd_job("a")
    ))
    .config
    .unwrap();
    assert_eq!(cfg.jobs[0].scope(), Some(crate::config::Scope::Cluster));
    assert_eq!(cfg.jobs[1].scope(), Some(crate::config::Scope::Host));
}

#[test]
fn verify_jobs_take_only_their_own_settings() {
    let job = "[[job]]\nname = \"v\"\nkind = \"verify\"\nschedule = \"0 0 4 * * *\"\nread_data_percent = 150.0\npaths = [\"/etc\"]\n";
    let ps = statics(&format!(
        "{HEAD}{job}{}",
        etcd_job("e").replace("[job.etcd]", "read_data_percent = 5.0\n[job.etcd]")
    ));
    assert_eq!(
        keys_lines(&ps),
        vec![
            ("job[0].paths".into(), Some(8)),
            ("job[0].read_data_percent".into(), Some(7)),
            ("job[1].read_data_percent".into(), Some(13)),
        ]
    );
}

#[test]
fn etcd_v2_and_datadir_jobs_take_only_their_own_keys() {
    let job = |kind: &str, extra: &str| format!("[[job]]\nname = \"j\"\nkind = \"{kind}\"\nschedule = \"0 */15 * * * *\"\n{extra}");
    let etcd = "[job.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n";
    assert!(statics(&format!("{HEAD}{}", job("etcd-v2", &format!("hidden = [\"/_x\"]\n{etcd}")))).is_empty());
    assert!(statics(&format!("{HEAD}{}", job("etcd-datadir", "data_dir = \"/var/lib/etcd\"\n"))).is_empty());
    let p = statics(&format!("{HEAD}{}", job("etcd-v2", "")));
    assert!(p.iter().any(|p| p.message.contains("needs a [job.etcd] table")), "{p:?}");
    let p = statics(&format!(
        "{HEAD}{}",
        job("etcd-v3", &format!("hidden = [\"/_x\"]\ndata_dir = \"/d\"\n{etcd}"))
    ));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["job[0].hidden", "job[0].data_dir"], "{p:?}");
    let p = statics(&format!("{HEAD}{}", job("etcd-datadir", "profile = \"etcd\"\n")));
    assert!(p.iter().any(|p| p.key == "job[0].profile"), "{p:?}");
}

#[test]
fn a_jobs_retention_table_is_parsed_and_checked() {
    let good = format!(
        "{HEAD}{}[job.retention]\nkeep_daily = 7\nkeep_within = \"2d\"\ntimezone = \"Europe/Berlin\"\n",
        etcd_job("etcd")
    );
    let p = parse(&good);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let r = p.config.as_ref().unwrap().jobs[0].retention.clone().unwrap();
    assert_eq!(r.keep_daily, Some(7));
    assert!(statics(&good).is_empty());

    // Keeps nothing; an unknown zone; an unknown key: each named with its key and line.
    let nothing = format!("{HEAD}{}[job.retention]\nkeep_daily = 0\n", etcd_job("etcd"));
    let ps = statics(&nothing);
    assert_eq!(keys_lines(&ps), [("job[0].retention".to_string(), Some(9))]);
    assert!(ps[0].message.contains("keeps nothing"), "{ps:?}");
    let zone = format!(
        "{HEAD}{}[job.retention]\nkeep_last = 3\ntimezone = \"Mars/Olympus\"\n",
        etcd_job("etcd")
    );
    let ps = statics(&zone);
    assert!(ps[0].message.contains("Mars/Olympus"), "{ps:?}");
    let verify = format!("{HEAD}[[job]]\nname = \"v\"\nkind = \"verify\"\nschedule = \"0 0 * * * *\"\n[job.retention]\nkeep_last = 3\n");
    let ps = statics(&verify);
    assert!(ps[0].key == "job[0].retention" && ps[0].message.contains("verify job"), "{ps:?}");
    let typo = format!("{HEAD}{}[job.retention]\nkeep_dayly = 3\n", etcd_job("etcd"));
    let p = parse(&typo);
    assert_eq!(p.problems[0].key, "job[0].retention.keep_dayly", "{:?}", p.problems);
    assert!(p.problems[0].message.contains("keep_daily"), "{:?}", p.problems);
}

#[test]
fn deltas_settings_apply_to_etcd_v3_jobs_within_bounds() {
    let good = format!(
        "{HEAD}{}",
        etcd_job("etcd").replace(
            "[job.etcd]",
            "deltas_every_secs = 20\ndeltas_lease_secs = 30\ndeltas_max_bytes = 1048576\n[job.etcd]"
        )
    );
    assert!(statics(&good).is_empty(), "{:?}", statics(&good));
    let p = parse(&good);
    let d = p.config.unwrap().jobs[0].deltas().expect("on");
    assert_eq!((d.every.as_secs(), d.max_bytes, d.lease.as_secs()), (20, 1 << 20, 30));

    let files = format!("{HEAD}{}deltas_every_secs = 20\n", files_job_text("f"));
    let ps = statics(&files);
    assert!(
        ps.iter()
            .any(|p| p.key == "job[0].deltas_every_secs" && p.message.contains("etcd-v3 jobs only")),
        "{ps:?}"
    );

    let bad = etcd_job("etcd").replace("[job.etcd]", "deltas_max_bytes = 10\ndeltas_lease_secs = 1\n[job.etcd]");
    let ps = statics(&format!("{HEAD}{bad}"));
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"job[0].deltas_max_bytes"), "{ps:?}");
    assert!(keys.contains(&"job[0].deltas_lease_secs"), "{ps:?}");
    assert!(keys.contains(&"job[0].deltas_every_secs"), "off, so the others do nothing: {ps:?}");

    let off = format!("{HEAD}{}", etcd_job("etcd"));
    assert!(parse(&off).config.unwrap().jobs[0].deltas().is_none());
}
