//! A vault on a full file system: the backup fails with an error that names the vault and says the
//! disk is full, and nothing is committed. Needs root to mount a small tmpfs; skipped otherwise.

use std::process::Command;

use bytes::Bytes;
use vault::catalog::Catalog;
use vault::ops::backup::ingest_stream;
use vault::repo::{InitOptions, KeySource, Vault};
use vault::store::Store;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_vault_disk_gives_a_clear_error_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _guard = Tmpfs(mnt.clone());
    let vault_dir = mnt.join("vault");
    let (idtext, recipient) = vault::crypto::generate_identity();
    std::fs::write(dir.path().join("id"), idtext).unwrap();
    let store = Store::open(vault_dir.to_str().unwrap(), &Default::default()).unwrap();
    let opts = InitOptions {
        recipients: vec![recipient],
        pack_target_size: 1 << 20,
        ..Default::default()
    };
    let (_, writer) = Vault::init(store.clone(), &opts).await.unwrap();
    std::fs::write(dir.path().join("wk"), writer.to_file_text()).unwrap();
    let keys = KeySource {
        writer_key: Some(dir.path().join("wk")),
        identity: None,
        trust: Default::default(),
    };
    let v = Vault::open(store.clone(), &keys).await.unwrap();
    let mut cat = Catalog::open(&dir.path().join("cat.sqlite"), &v.config.vault_id).unwrap();

    // 4 MiB of incompressible data cannot fit in 512 KiB.
    let mut data = vec![0u8; 4 << 20];
    blake3::Hasher::new().update(b"full").finalize_xof().fill(&mut data);
    let pieces: Vec<vault::Result<Bytes>> = data.chunks(32 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let e = ingest_stream(&v, &mut cat, "snapshot.db", futures::stream::iter(pieces), false, None)
        .await
        .err()
        .expect("must fail");
    let text = e.to_string();
    assert_eq!(e.kind, vault::ErrorKind::Store, "{text}");
    assert!(text.contains("full") && text.contains(vault_dir.to_str().unwrap()), "{text}");
    assert!(store.list("snapshots/").await.unwrap().is_empty());
    // no temporary files are left behind in the vault
    let leftovers = vault::store::local::temp_files(&vault_dir).unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
