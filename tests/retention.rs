//! End-to-end: `vaultctl forget --dry-run --json` on a small real local vault (a few
//! `backup files` captures), and `forget` without `--dry-run` refused. Run `cargo build -p
//! vaultctl` first.

use std::fs;

use serde_json::Value;
use vault_e2e::{Ctl, s, tempdir};

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
    let tmp = tempdir("retention");
    let repo = tmp.path().join("vault");
    let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo.display().to_string(), Vec::new());
    ctl.setup(&[]);
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    let root_arg = root.display().to_string();
    let capture = |job: &str, content: &str, extra: &[&str]| -> String {
        fs::write(root.join("etc/origin/master-config.yaml"), content).unwrap();
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
        let v = ctl.writer(&args).ok().json();
        s(&v, "id")
    };
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

    // refused: an empty policy, and applying (not built yet)
    ctl.writer(&["forget", "--dry-run"])
        .code(2)
        .mentions(&["keeps nothing", "--keep-last"]);
    ctl.writer(&["forget", "--keep-last", "1"])
        .code(2)
        .mentions(&["not built yet", "--dry-run"]);
    ctl.writer(&["forget", "--dry-run", "--keep-daily", "7", "--timezone", "Europe/Berln"])
        .code(2)
        .mentions(&["Europe/Berln", "IANA"]);
    assert_eq!(vault_e2e::objects(&repo), objects_before, "a dry run changed the vault");
    assert_eq!(ctl.snapshots().len(), 5);
}
