//! End-to-end: `vaultctl forget --dry-run --json` on a small real local vault (a few
//! `backup files` captures); `hold`, `release` and `holds` with the events stored sealed in the
//! vault; `forget` applied (tombstones in the deletion log), `undelete`, and `deletion-log` and
//! `audit` catching a record removed or rewritten and a snapshot deleted behind vault's back, on
//! the local store and S3 (moto). Run `cargo build -p vaultctl` first.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vault::store::{PutMode, S3Options, Store};
use vault_e2e::{Ctl, Moto, s, tempdir};

/// A new local vault and a host tree with `/etc/origin` to capture from.
fn vault_and_host(label: &str) -> (tempfile::TempDir, PathBuf, Ctl, PathBuf) {
    let tmp = tempdir(label);
    let repo = tmp.path().join("vault");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo.display().to_string(), Vec::new());
    ctl.setup(&[]);
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    (tmp, repo, ctl, root)
}

/// `backup files` of `/etc/origin` under `root` with master-config.yaml saying `content`; its ID.
fn capture_files(ctl: &Ctl, root: &Path, job: &str, content: &str, extra: &[&str]) -> String {
    fs::write(root.join("etc/origin/master-config.yaml"), content).unwrap();
    let root_arg = root.display().to_string();
    let mut args = vec![
        "backup",
        "files",
        "--json",
        "--root",
        root_arg.as_str(),
        "--path",
        "/etc/origin",
        "--no-packages",
        "--job",
        job,
    ];
    args.extend_from_slice(extra);
    s(&ctl.writer(&args).ok().json(), "id")
}

fn decision<'a>(group: &'a Value, id: &str) -> &'a Value {
    group["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not in {group}"))
}

fn reasons(d: &Value) -> Vec<String> {
    d["reasons"].as_array().unwrap().iter().map(|r| s(r, "text")).collect()
}

#[test]
fn forget_dry_run_lists_every_snapshot_with_its_reasons_and_changes_nothing() {
    let (_tmp, repo, ctl, root) = vault_and_host("retention");
    let capture = |job: &str, content: &str, extra: &[&str]| capture_files(&ctl, &root, job, content, extra);
    let oldest = capture("nightly", "a: 1\n", &[]);
    let tagged = capture("nightly", "a: 2\n", &["--tag", "change=CHG-1"]);
    let middle = capture("nightly", "a: 3\n", &[]);
    let newest = capture("nightly", "a: 4\n", &[]);
    let manual = capture("manual", "a: 5\n", &[]);
    // the oldest is verified: the newest verified snapshot of its group, kept by the floor
    ctl.writer(&["verify", &oldest]).ok();
    let objects_before = vault_e2e::objects(&repo);

    let plan = ctl
        .writer(&["--json", "forget", "--dry-run", "--keep-last", "1", "--keep-tag", "change=CHG-1"])
        .ok()
        .json();
    let groups = plan["groups"].as_array().unwrap();
    let names: Vec<String> = groups.iter().map(|g| s(g, "group")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("host:") && names[0].ends_with("/manual"), "{names:?}");
    assert!(names[1].ends_with("/nightly"), "{names:?}");
    let nightly = &groups[1];
    assert_eq!(
        (nightly["keep"].as_u64(), nightly["remove"].as_u64()),
        (Some(3), Some(1)),
        "{nightly}"
    );

    let d = decision(nightly, &newest);
    assert_eq!(s(d, "decision"), "keep");
    assert_eq!(reasons(d), ["last 1/1"]);
    let d = decision(nightly, &tagged);
    assert_eq!(reasons(d), ["tag change=CHG-1"]);
    let d = decision(nightly, &oldest);
    assert_eq!(d["verified"], true, "{d}");
    assert_eq!(reasons(d), ["newest verified snapshot of the group"]);
    let d = decision(nightly, &middle);
    assert_eq!(s(d, "decision"), "remove");
    assert_eq!(reasons(d), ["older than every rule reaches", "carries no kept tag (change=CHG-1)"]);
    assert_eq!(
        reasons(decision(&groups[0], &manual)),
        ["last 1/1", "newest snapshot of the group (none is verified yet)"]
    );
    assert_eq!(plan["needs_confirm"], false, "1 of 4 is below the 50% share");

    // --job narrows; a mistyped job names the groups that exist
    let only = ctl
        .writer(&["--json", "forget", "--dry-run", "--keep-last", "1", "--job", "manual"])
        .ok()
        .json();
    assert_eq!(only["groups"].as_array().unwrap().len(), 1);
    ctl.writer(&["forget", "--dry-run", "--keep-last", "1", "--job", "nigthly"])
        .code(2)
        .mentions(&["\"nigthly\"", "/nightly"]);
    // the human table says the same
    ctl.writer(&["forget", "--dry-run", "--keep-last", "1", "--keep-tag", "change=CHG-1"])
        .ok()
        .mentions(&[&newest[..8], "remove", "older than every rule reaches", "keep 3, remove 1 of 4"]);
    // with the identity too (metadata only)
    ctl.restorer(&["forget", "--dry-run", "--keep-daily", "7"]).ok();

    // refused: an empty policy
    ctl.writer(&["forget", "--dry-run"])
        .code(2)
        .mentions(&["keeps nothing", "--keep-last"]);
    ctl.writer(&["forget", "--dry-run", "--keep-daily", "7", "--timezone", "Europe/Berln"])
        .code(2)
        .mentions(&["Europe/Berln", "IANA"]);
    assert_eq!(vault_e2e::objects(&repo), objects_before, "a dry run changed the vault");
    assert_eq!(ctl.snapshots().len(), 5);
}

#[test]
fn a_held_snapshot_is_kept_until_released_and_the_events_are_sealed_in_the_vault() {
    let (_tmp, repo, ctl, root) = vault_and_host("holds");
    let capture = |content: &str| capture_files(&ctl, &root, "nightly", content, &[]);
    let oldest = capture("a: 1\n");
    let newest = capture("a: 2\n");
    let dry_run = || {
        let plan = ctl.writer(&["--json", "forget", "--dry-run", "--keep-last", "1"]).ok().json();
        plan["groups"][0].clone()
    };
    assert_eq!(s(decision(&dry_run(), &oldest), "decision"), "remove", "nothing holds it yet");

    // refused: an unknown snapshot, an until in the past, no reason
    ctl.writer(&["hold", "abcdef12", "--reason", "CHG-1234"])
        .failed()
        .mentions(&["no snapshot abcdef12"]);
    ctl.writer(&["hold", &oldest[..8], "--reason", "CHG-1234", "--until", "2020-01-01T00:00:00Z"])
        .code(2)
        .mentions(&["not in the future"]);
    ctl.writer(&["hold", &oldest[..8], "--reason", " "]).code(2).mentions(&["reason"]);
    ctl.writer(&["release", &oldest[..8], "--reason", "x"])
        .failed()
        .mentions(&["no active hold"]);
    assert!(vault_e2e::objects(&repo.join("holds")).is_empty(), "a refused hold wrote something");

    // held (with the writer key, by prefix): forget keeps it, with the hold as its reason
    let held = ctl
        .writer(&["--json", "hold", &oldest[..8], "--reason", "CHG-1234 audit"])
        .ok()
        .json();
    assert_eq!(s(&held, "snapshot"), oldest);
    assert_eq!(s(&held, "action"), "hold");
    let d = dry_run();
    let d = decision(&d, &oldest);
    assert_eq!(s(d, "decision"), "keep", "{d}");
    assert_eq!(d["held"], true, "{d}");
    assert_eq!(reasons(d), ["hold: CHG-1234 audit until released"]);
    ctl.writer(&["forget", "--dry-run", "--keep-last", "1"])
        .ok()
        .mentions(&[&oldest[..8], "hold: CHG-1234 audit until released"]);
    let active = ctl.restorer(&["--json", "holds"]).ok().json();
    let active = active.as_array().unwrap();
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(
        (s(&active[0], "snapshot"), s(&active[0], "reason")),
        (oldest.clone(), "CHG-1234 audit".into())
    );
    ctl.writer(&["holds"])
        .ok()
        .mentions(&[&oldest[..8], "CHG-1234 audit", "until released"]);

    // a hold on the newest too, ending in 30 days: its until is shown
    ctl.writer(&["hold", &newest, "--reason", "CHG-9", "--until", "30d"]).ok();
    let d = dry_run();
    let texts = reasons(decision(&d, &newest));
    assert!(texts.iter().any(|t| t.starts_with("hold: CHG-9 until 20")), "{texts:?}");

    // released (with the identity): the next dry run removes it again
    ctl.restorer(&["release", &oldest[..8], "--reason", "audit closed"]).ok();
    let d = dry_run();
    let d = decision(&d, &oldest);
    assert_eq!(s(d, "decision"), "remove", "{d}");
    assert_eq!(d["held"], false, "{d}");
    let active = ctl.writer(&["--json", "holds"]).ok().json();
    assert_eq!(active.as_array().unwrap().len(), 1, "only the newest's hold: {active}");
    let all = ctl.writer(&["--json", "holds", "--all"]).ok().json();
    let actions: Vec<String> = all.as_array().unwrap().iter().map(|e| s(e, "action")).collect();
    assert_eq!(actions, ["hold", "hold", "release"], "{all}");

    // nothing is deleted: both events of the oldest stay, each sealed metadata of kind 6
    let events = vault_e2e::objects(&repo.join("holds").join(&oldest));
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        let bytes = fs::read(e).unwrap();
        assert_eq!(&bytes[..8], b"VLTMETA1", "{}", e.display());
        assert_eq!(bytes[8], 6, "{}: metadata kind", e.display());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("CHG-1234") && !text.contains("audit"),
            "{} is not sealed",
            e.display()
        );
    }
    // a damaged event counts as a hold of its snapshot (it can keep, never release)
    fs::write(&events[1], b"junk").unwrap();
    ctl.writer(&["--json", "forget", "--dry-run", "--keep-last", "1"])
        .ok()
        .mentions(&["DAMAGED hold event", "unreadable hold event"]);
}

/// Names of the snapshots a `--json` forget removed.
fn removed(report: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for g in report["groups"].as_array().unwrap() {
        for d in g["snapshots"].as_array().unwrap() {
            if d["decision"] == "remove" {
                out.push(s(d, "id"));
            }
        }
    }
    out
}

/// The kinds of finding `audit --json` reports in its deletion-log section; it must exit 3 (the
/// deletion-log control fails).
fn audit_findings(ctl: &Ctl) -> Vec<String> {
    let a = ctl.writer(&["--json", "audit"]).code(3).json();
    let control = a["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "deletion-log")
        .unwrap_or_else(|| panic!("no deletion-log control: {a:#}"));
    assert_eq!(control["status"], "non-compliant", "{control}");
    a["deletion_log"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(f, "kind"))
        .collect()
}

/// The deletion log: forget writes one sealed record (tombstones, manifests stay), undelete a
/// second, every new manifest records the head; the log's checks catch a snapshot deleted from the
/// store, a record rewritten and a record removed.
async fn tombstones_and_tamper_checks(ctl: &Ctl, root: &Path, store: &Store) {
    let capture = |content: &str| capture_files(ctl, root, "nightly", content, &[]);
    let ids: Vec<String> = ["a: 1\n", "a: 2\n", "a: 3\n", "a: 4\n"].iter().map(|c| capture(c)).collect();
    assert!(store.list("log/").await.unwrap().is_empty());

    // 3 of 4 is above the 50% share: refused, nothing written
    ctl.writer(&["forget", "--keep-last", "1"])
        .code(2)
        .mentions(&["--confirm", "3 of 4", "nothing was forgotten"]);
    assert!(store.list("log/").await.unwrap().is_empty(), "a refused forget wrote to the log");

    // 2 of 4: applied, one record, the manifests stay (prune deletes them later)
    let report = ctl.writer(&["--json", "forget", "--keep-last", "2"]).ok().json();
    assert_eq!(report["applied"], true, "{report}");
    assert_eq!(report["record"]["seq"], 1, "{report}");
    let gone = removed(&report);
    assert_eq!(gone.len(), 2, "{report}");
    assert!(gone.contains(&ids[0]) && gone.contains(&ids[1]), "{gone:?} vs {ids:?}");
    let record = store.get("log/000000000001").await.unwrap();
    assert_eq!(&record[..8], b"VLTMETA1");
    assert_eq!(record[8], 7, "metadata kind of a log record");
    assert!(!String::from_utf8_lossy(&record).contains("older than"), "the record is not sealed");
    let listed = ctl.snapshots();
    assert_eq!(listed.len(), 4, "forget deletes nothing");
    let marked: Vec<String> = listed.iter().filter(|r| r["forgotten"] == true).map(|r| s(r, "id")).collect();
    assert_eq!(marked.len(), 2, "{listed:?}");
    assert!(gone.iter().all(|g| marked.contains(g)), "{marked:?} vs {gone:?}");

    // forgotten snapshots are no longer counted: a second run removes nothing
    let again = ctl.writer(&["--json", "forget", "--keep-last", "2"]).ok().json();
    assert_eq!(again["already_forgotten"], 2, "{again}");
    assert!(removed(&again).is_empty(), "{again}");
    assert!(again.get("record").is_none(), "{again}");

    let log = ctl.writer(&["--json", "deletion-log"]).ok().json();
    let records = log["log"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    let entries = records[0]["record"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(s(&records[0]["record"], "action"), "forget");
    assert!(
        entries.iter().all(|e| e["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "older than every rule reaches")),
        "{entries:?}"
    );
    assert_eq!(log["findings"].as_array().unwrap().len(), 0, "{log}");

    // undelete: only a forgotten snapshot, with a reason
    ctl.writer(&["undelete", &ids[3][..8], "--reason", "keep"])
        .code(2)
        .mentions(&["is not forgotten"]);
    ctl.writer(&["undelete", &ids[0][..8], "--reason", " "])
        .code(2)
        .mentions(&["reason"]);
    let back = ctl
        .writer(&["--json", "undelete", &ids[0][..8], "--reason", "INC-7: needed"])
        .ok()
        .json();
    assert_eq!(back["seq"], 2, "{back}");
    let plan = ctl.writer(&["--json", "forget", "--dry-run", "--keep-last", "9"]).ok().json();
    assert_eq!(plan["already_forgotten"], 1, "{plan}");

    // a new snapshot records the log's head and its predecessor
    let newest = capture("a: 5\n");
    let log = ctl.writer(&["--json", "deletion-log"]).ok().json();
    assert_eq!(log["findings"].as_array().unwrap().len(), 0, "{log}");

    // a snapshot deleted from the store behind vault's back
    store.delete(&format!("snapshots/{}", ids[3])).await.unwrap();
    let found = ctl.writer(&["--json", "deletion-log"]).code(3).json();
    let kinds: Vec<String> = found["findings"].as_array().unwrap().iter().map(|f| s(f, "kind")).collect();
    assert_eq!(kinds, ["deleted-outside-policy"], "{found}");
    assert!(s(&found["findings"][0], "detail").contains(&ids[3][..8]), "{found}");
    ctl.writer(&["deletion-log"])
        .code(3)
        .mentions(&["FOUND deleted-outside-policy", &ids[3][..8]]);
    assert_eq!(audit_findings(ctl), ["deleted-outside-policy"], "the audit catches it too");

    // record 1 rewritten (here: with record 2's bytes): the chain breaks
    let one = store.get("log/000000000001").await.unwrap();
    let two = store.get("log/000000000002").await.unwrap();
    store.put("log/000000000001", two.clone(), PutMode::Overwrite).await.unwrap();
    let found = ctl.writer(&["--json", "deletion-log"]).code(3).json();
    let kinds: Vec<String> = found["findings"].as_array().unwrap().iter().map(|f| s(f, "kind")).collect();
    assert!(
        kinds.contains(&"chain-broken".to_string()) && kinds.contains(&"record-unreadable".to_string()),
        "{found}"
    );
    let audited = audit_findings(ctl);
    assert!(
        audited.contains(&"chain-broken".to_string()),
        "the audit catches it too: {audited:?}"
    );
    store.put("log/000000000001", one, PutMode::Overwrite).await.unwrap();

    // the newest record removed: the newest manifest recorded it
    store.delete("log/000000000002").await.unwrap();
    let found = ctl.writer(&["--json", "deletion-log"]).code(3).json();
    let missing: Vec<&Value> = found["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "record-missing")
        .collect();
    assert_eq!(missing.len(), 1, "{found}");
    assert!(s(missing[0], "detail").contains("record 2"), "{found}");
    assert!(
        audit_findings(ctl).contains(&"record-missing".to_string()),
        "the audit catches it too"
    );
    let _ = newest;
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_writes_tombstones_to_a_log_that_detects_tampering() {
    let (_tmp, repo, ctl, root) = vault_and_host("tombstones");
    let store = Store::open(&repo.display().to_string(), &Default::default()).expect("open store");
    tombstones_and_tamper_checks(&ctl, &root, &store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_writes_tombstones_to_a_log_that_detects_tampering_s3() {
    let moto = Moto::start();
    moto.create_bucket("tomb");
    let tmp = tempdir("tombstones-s3");
    let repo = "s3://tomb/vault";
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), repo, moto.env());
    ctl.setup(&[]);
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    let opts: S3Options = moto.s3_options();
    let store = Store::open(repo, &opts).expect("open store");
    tombstones_and_tamper_checks(&ctl, &root, &store).await;
}

/// Eight writers append to one log at once: every record lands under its own number, in one
/// unbroken chain (conditional create decides; losers read the new head and take the next).
async fn concurrent_appends_make_one_chain(ctl: &Ctl, store: &Store) {
    use vault::format::{LogAction, PayloadKind};
    use vault::ops::retention::log;
    let keys = vault::repo::KeySource {
        writer_key: Some(ctl.writer_key.clone()),
        identity: None,
        trust: Default::default(),
    };
    let vault = std::sync::Arc::new(vault::repo::Vault::open(store.clone(), &keys).await.expect("open vault"));
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let vault = vault.clone();
            tokio::spawn(async move {
                let entry = vault::format::LogEntry {
                    snapshot: vault::format::Id::of_stored(&[i]),
                    time: chrono::Utc::now(),
                    kind: PayloadKind::Files,
                    job: "nightly".into(),
                    group: "host:h/nightly".into(),
                    reasons: vec![format!("writer {i}")],
                };
                let new = log::NewRecord {
                    action: LogAction::Forget,
                    entries: vec![entry],
                    host: format!("writer-{i}"),
                    command: "test".into(),
                };
                log::append(&vault, new, chrono::Utc::now()).await.expect("append").seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    let read = log::read(&vault).await.unwrap();
    assert_eq!(read.records.len(), 8);
    assert!(read.check(&[], &[]).is_empty(), "{:?}", read.check(&[], &[]));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_to_the_deletion_log_make_one_chain() {
    let (_tmp, repo, ctl, _root) = vault_and_host("log-race");
    let store = Store::open(&repo.display().to_string(), &Default::default()).expect("open store");
    concurrent_appends_make_one_chain(&ctl, &store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_to_the_deletion_log_make_one_chain_s3() {
    let moto = Moto::start();
    moto.create_bucket("lograce");
    let tmp = tempdir("log-race-s3");
    let repo = "s3://lograce/vault";
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), repo, moto.env());
    ctl.setup(&[]);
    let store = Store::open(repo, &moto.s3_options()).expect("open store");
    concurrent_appends_make_one_chain(&ctl, &store).await;
}
