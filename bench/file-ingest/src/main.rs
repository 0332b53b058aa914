//! vault-bench-ingest: store FILE (an etcd v3 snapshot as written by `etcdctl snapshot save`) in a
//! vault as an `etcd-v3` snapshot, through exactly the ingest pipeline of `vaultctl backup etcd`
//! (chunk, dedup, compress, encrypt, pack, upload, index, commit) but reading a local file instead
//! of the etcd Maintenance.Snapshot stream. Bench-only: it lets the benchmark compare vault with
//! restic and borg on identical bytes, and separates the vault pipeline's cost from etcd's.
//!
//! usage: vault-bench-ingest --repo URL --writer-key FILE --catalog FILE [--piece-kib N] SNAPSHOT_FILE
//! prints one JSON object (like `vaultctl backup --json`).

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use vault::catalog::Catalog;
use vault::format::{PayloadKind, SnapshotManifest};
use vault::ops::backup::{commit, hostname, ingest_stream};
use vault::repo::{KeySource, Vault};
use vault::store::{S3Options, Store};

fn usage() -> ! {
    eprintln!("usage: vault-bench-ingest --repo URL --writer-key FILE --catalog FILE [--piece-kib N] SNAPSHOT_FILE");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut repo = None;
    let mut writer_key = None;
    let mut catalog_path = None;
    let mut file = None;
    let mut piece_kib: usize = 32; // etcd sends ~32 KiB messages
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repo" => repo = args.next(),
            "--writer-key" => writer_key = args.next().map(PathBuf::from),
            "--catalog" => catalog_path = args.next().map(PathBuf::from),
            "--piece-kib" => piece_kib = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
            s if !s.starts_with("--") && file.is_none() => file = Some(PathBuf::from(s)),
            _ => usage(),
        }
    }
    let (Some(repo), Some(writer_key), Some(catalog_path), Some(file)) = (repo, writer_key, catalog_path, file) else {
        usage()
    };
    if let Err(e) = run(&repo, writer_key, &catalog_path, &file, piece_kib << 10).await {
        eprintln!("vault-bench-ingest: {e}");
        std::process::exit(1);
    }
}

async fn run(repo: &str, writer_key: PathBuf, catalog_path: &std::path::Path, file: &std::path::Path, piece: usize) -> vault::Result<()> {
    let store = Store::open(repo, &S3Options::default())?;
    let vault = Vault::open(store, &KeySource { writer_key: Some(writer_key), ..Default::default() }).await?;
    let mut catalog = Catalog::open(catalog_path, &vault.config.vault_id)?;
    catalog.sync(&vault).await?;

    // A reader thread feeds the file in etcd-message-sized pieces.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<vault::Result<Bytes>>(64);
    let path = file.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(vault::Error::io(format!("cannot open {}: {e}", path.display()))));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; piece];
            let mut n = 0;
            while n < piece {
                match f.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(vault::Error::io(format!("cannot read {}: {e}", path.display()))));
                        return;
                    }
                }
            }
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let ingested = ingest_stream(&vault, &mut catalog, "snapshot.db", stream, true, None).await?;
    let _ = reader.join();
    let trailer_ok = ingested.trailer.as_ref().map(|t| t.trailer_ok).unwrap_or(false);
    if !trailer_ok {
        return Err(vault::Error::integrity(format!("{} fails the etcd sha256 trailer check", file.display())));
    }
    let manifest = SnapshotManifest {
        time: chrono::Utc::now(),
        kind: PayloadKind::EtcdV3,
        host: hostname(),
        job: "bench-file-ingest".into(),
        slot: None,
        tags: [("source-file".to_string(), file.display().to_string())].into_iter().collect(),
        streams: vec![ingested.stream.clone()],
        stats: ingested.stats,
        etcd_v3: None,
        files: None,
        etcd_v2: None,
        etcd_datadir: None,
        etcd_v3_delta: None,
        log_head: None,
        previous: None,
    };
    let id = commit(&vault, &mut catalog, &manifest).await?;
    let s = ingested.stats;
    println!(
        "{}",
        serde_json::json!({
            "id": id.hex(), "kind": "etcd-v3", "bytes": s.bytes, "new_bytes": s.new_bytes,
            "stored_bytes": s.stored_bytes, "chunks": s.chunks, "new_chunks": s.new_chunks,
            "packs": s.packs, "seconds": s.seconds, "sha256": ingested.stream.sha256,
        })
    );
    Ok(())
}
