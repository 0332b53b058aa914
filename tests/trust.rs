//! End-to-end tests of the trust anchor (docs/FORMAT.md section 2a): a store writer who replaces
//! the vault's config and `keys/writer.age` with a writer key of its own (its recipient added, the
//! key check and MAC recomputed, wrapped to the real recipients) is refused by every client that
//! knows the vault's fingerprint, and a host that does not know it cannot write with an identity or
//! recover the writer key. Run `cargo build --workspace` first.

use std::fs;
use std::path::Path;

use serde_json::Value;
use vault::crypto::{Recipients, WriterKey, generate_identity};
use vault_e2e::{Ctl, s, tempdir};

/// What a store writer can do without any key: a new writer key W' for the same vault ID, its own
/// recipient added, the writer-key check and the config MAC recomputed under W', and W' wrapped to
/// every recipient, the real ones included (age does not authenticate the sender).
fn forge_vault(repo: &Path, attacker_recipient: &str) {
    let config_path = repo.join("config");
    let mut config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    let mut vault_id = [0u8; 16];
    hex::decode_to_slice(config["vault_id"].as_str().unwrap(), &mut vault_id).unwrap();
    let forged = WriterKey::generate(vault_id);
    config["recipients"].as_array_mut().unwrap().push(attacker_recipient.into());
    config["writer_key_check"] = forged.key_check().into();
    config.as_object_mut().unwrap().remove("mac");
    let mac = forged.config_mac(&serde_json::to_vec(&config).unwrap());
    config["mac"] = mac.into();
    let recipients: Vec<String> = config["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let wrapped = Recipients::parse(&recipients).unwrap().wrap(forged.to_file_text().as_bytes());
    fs::write(repo.join("keys/writer.age"), wrapped).unwrap();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Another host: its own scratch dir (known vaults, catalog), the same vault and identity.
fn host(base: &Path, name: &str, ops: &Ctl) -> Ctl {
    let mut h = Ctl::new(&base.join(name), &ops.repo, Vec::new());
    h.identity = ops.identity.clone();
    h
}

fn packs(repo: &Path) -> usize {
    vault_e2e::objects(repo).iter().filter(|p| p.starts_with(repo.join("data"))).count()
}

#[test]
fn a_forged_config_and_writer_key_are_refused_and_unknown_vaults_cannot_be_written_with_an_identity() {
    let tmp = tempdir("trust");
    let repo = tmp.path().join("vault");
    let mut ops = Ctl::new(&tmp.path().join("ops"), &repo.display().to_string(), Vec::new());
    let init = ops.setup(&[]);
    let fingerprint = s(&init, "fingerprint");
    assert_eq!(fingerprint.len(), 35, "fingerprint {fingerprint:?}");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    fs::write(root.join("etc/origin/master-config.yaml"), "kind: MasterConfig\n").unwrap();
    let root_arg = root.display().to_string();
    let capture = ["backup", "files", "--json", "--root", root_arg.as_str(), "--path", "/etc/origin"];
    ops.writer(&capture).ok();
    assert_eq!(
        s(&ops.restorer(&["key", "fingerprint", "--json"]).ok().json(), "fingerprint"),
        fingerprint
    );

    // A bare host without the fingerprint may read (remembering the vault on first use, and
    // saying so) but not recover the writer key or back up with an identity.
    let bare = host(tmp.path(), "bare", &ops);
    bare.restorer(&["snapshots"]).ok().mentions(&["first use", &fingerprint]);
    let before = packs(&repo);
    let wk = bare.dir.join("recovered.key").display().to_string();
    bare.restorer(&["key", "recover-writer", "--out", &wk])
        .code(4)
        .mentions(&["needs the vault's fingerprint", "--fingerprint"]);
    assert!(!Path::new(&wk).exists());
    bare.restorer(&capture).code(4).mentions(&["needs the vault's fingerprint"]);
    assert_eq!(packs(&repo), before, "a refused identity-only backup stored packs");
    // With the fingerprint it can.
    bare.restorer(&["--fingerprint", &fingerprint, "key", "recover-writer", "--out", &wk])
        .ok();
    assert!(Path::new(&wk).is_file());

    // The forgery.
    let (_, attacker) = generate_identity();
    forge_vault(&repo, &attacker);

    // A host that remembered the vault refuses it, saying what changed; so does one given the
    // fingerprint, on the command line or in the environment.
    bare.restorer(&["snapshots"])
        .code(4)
        .mentions(&[&format!("recipients added: {attacker}"), "the writer key changed", "do not use"]);
    let told = host(tmp.path(), "told", &ops);
    told.restorer(&["--fingerprint", &fingerprint, "snapshots"])
        .code(4)
        .mentions(&["not the expected", "do not use"]);
    let mut env_host = host(tmp.path(), "env", &ops);
    env_host.env.push(("VAULT_FINGERPRINT".into(), fingerprint.clone()));
    env_host
        .restorer(&["key", "recover-writer", "--out", &env_host.dir.join("w").display().to_string()])
        .code(4)
        .mentions(&["not the expected"]);
    // The host that ran init remembered the vault there and then.
    ops.restorer(&["snapshots"]).code(4).mentions(&["recipients added"]);
    // A backup host holding the real writer key sees that the config is not its vault's.
    ops.writer(&capture).code(4).mentions(&["key check differs"]);
    // A bare host that never saw the vault and has no fingerprint still cannot write through it.
    let fresh = host(tmp.path(), "fresh", &ops);
    let before = packs(&repo);
    fresh.restorer(&capture).code(4).mentions(&["needs the vault's fingerprint"]);
    fresh
        .restorer(&["key", "recover-writer", "--out", &fresh.dir.join("w").display().to_string()])
        .code(4);
    assert_eq!(packs(&repo), before);
}

#[test]
fn changing_recipients_is_an_operator_action_with_a_new_fingerprint_and_a_record() {
    let tmp = tempdir("trust-rekey");
    let repo = tmp.path().join("vault");
    let mut ops = Ctl::new(&tmp.path().join("ops"), &repo.display().to_string(), Vec::new());
    let old_fp = s(&ops.setup(&[]), "fingerprint");
    let (new_identity, new_recipient) = ops.keygen("new-operator.age");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/origin")).unwrap();
    fs::write(root.join("etc/origin/master-config.yaml"), "kind: MasterConfig\n").unwrap();
    let root_arg = root.display().to_string();
    let capture = ["backup", "files", "--json", "--root", root_arg.as_str(), "--path", "/etc/origin"];

    // A backup host with only the writer key cannot do it; nor can a host that never pinned it.
    let both = [ops.recipient.as_str(), new_recipient.as_str()];
    let set = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["key".to_string(), "set-recipients".into()];
        for r in both {
            a.extend(["--recipient".to_string(), r.to_string()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    ops.writer(&set(&[])).code(4).mentions(&["needs an identity"]);
    host(tmp.path(), "stranger", &ops)
        .restorer(&set(&[]))
        .code(4)
        .mentions(&["needs the vault's fingerprint"]);
    // A dry run shows the new fingerprint and changes nothing.
    let dry = ops.restorer(&set(&["--dry-run", "--json"])).ok().json();
    let new_fp = dry["change"]["new_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_fp, old_fp);
    assert_eq!(
        s(&ops.restorer(&["key", "fingerprint", "--json"]).ok().json(), "fingerprint"),
        old_fp
    );

    ops.restorer(&set(&[]))
        .ok()
        .mentions(&[&format!("recipients added: {new_recipient}"), &new_fp]);
    // This host moved on to the new fingerprint; the writer key still works; a host told the old
    // fingerprint refuses, one told the new one accepts.
    assert_eq!(
        s(&ops.restorer(&["key", "fingerprint", "--json"]).ok().json(), "fingerprint"),
        new_fp
    );
    let id = s(&ops.writer(&capture).ok().json(), "id");
    host(tmp.path(), "old-news", &ops)
        .restorer(&["--fingerprint", &old_fp, "snapshots"])
        .code(4)
        .mentions(&["not the expected"]);
    let mut newcomer = host(tmp.path(), "newcomer", &ops);
    newcomer.identity = new_identity;
    let out = newcomer.dir.join("restored");
    newcomer
        .restorer(&["--fingerprint", &new_fp, "restore", &id, "--to", &out.display().to_string()])
        .ok();
    assert_eq!(
        fs::read_to_string(out.join("etc/origin/master-config.yaml")).unwrap(),
        "kind: MasterConfig\n"
    );
    // The change is recorded in the vault.
    let history = ops.writer(&["key", "history", "--json"]).ok().json();
    let changes = history.as_array().unwrap();
    assert_eq!(changes.len(), 1, "{history:#}");
    assert_eq!(changes[0]["old_fingerprint"], old_fp.as_str());
    assert_eq!(changes[0]["new_fingerprint"], new_fp.as_str());
}
