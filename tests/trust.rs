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
