//! Fill a vault with a synthetic history for the retention benchmarks (`bench/retention.sh`):
//! `--snapshots N` etcd-v3 manifests, one an hour back from now, over `--chunks M` small distinct
//! chunks stored in real packs with real index segments, each snapshot referencing a window of
//! `--window W` chunks that slides by M/N, so neighbours share chunks the way successive snapshots
//! of a slowly changing database do. Only the writer key is needed.
//!
//! cargo run --release -p vault --example synthetic_vault -- --repo DIR --writer-key FILE \
//!     --catalog FILE [--snapshots 2000] [--chunks 1000000] [--window 1000] [--chunk-bytes 64]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use vault::catalog::Catalog;
use vault::format::{CaptureStats, PackType, PayloadKind, SnapshotManifest, Stream};
use vault::ops::{backup, packing};
use vault::repo::{KeySource, Vault};
use vault::store::Store;

struct Args {
    repo: String,
    writer_key: PathBuf,
    catalog: PathBuf,
    snapshots: u64,
    chunks: u64,
    window: u64,
    chunk_bytes: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        repo: String::new(),
        writer_key: PathBuf::new(),
        catalog: PathBuf::new(),
        snapshots: 2000,
        chunks: 1_000_000,
        window: 1000,
        chunk_bytes: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--repo" => a.repo = value,
            "--writer-key" => a.writer_key = value.into(),
            "--catalog" => a.catalog = value.into(),
            "--snapshots" => a.snapshots = value.parse().expect("--snapshots N"),
            "--chunks" => a.chunks = value.parse().expect("--chunks N"),
            "--window" => a.window = value.parse().expect("--window N"),
            "--chunk-bytes" => a.chunk_bytes = value.parse().expect("--chunk-bytes N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.repo.is_empty() && !a.writer_key.as_os_str().is_empty(),
        "--repo and --writer-key are required"
    );
    a
}

/// Chunk `n`'s bytes: distinct and incompressible.
fn chunk(n: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&n.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

#[tokio::main]
async fn main() -> vault::Result<()> {
    let a = parse_args();
    let store = Store::open(&a.repo, &Default::default())?;
    let keys = KeySource {
        writer_key: Some(a.writer_key.clone()),
        identity: None,
        trust: Default::default(),
    };
    let vault = Vault::open(store, &keys).await?;
    let mut catalog = Catalog::open(&a.catalog, &vault.config.vault_id)?;
    catalog.sync(&vault).await?;

    // Store every chunk once, in order, remembering its ID.
    let started = std::time::Instant::now();
    let (mut sink, packer) = packing::start(&vault, HashSet::new());
    let (count, len) = (a.chunks, a.chunk_bytes);
    let adder = std::thread::spawn(move || (0..count).map(|n| sink.add(PackType::Data, &chunk(n, len))).collect::<Vec<_>>());
    let (bytes, packs) = packer.upload_all(&vault, &mut catalog).await?;
    let ids = adder.join().expect("chunk thread");
    eprintln!(
        "stored {} chunks in {packs} packs ({bytes} bytes) in {:.1}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );

    // One manifest an hour, each over a sliding window of chunks.
    let step = (a.chunks / a.snapshots).max(1);
    let now = chrono::Utc::now();
    for i in 0..a.snapshots {
        let start = (i * step) as usize;
        let end = (start + a.window as usize).min(ids.len());
        let chunks = ids[start.min(ids.len())..end].to_vec();
        let size = (chunks.len() * a.chunk_bytes) as u64;
        let manifest = SnapshotManifest {
            time: now - chrono::Duration::hours((a.snapshots - i) as i64),
            kind: PayloadKind::EtcdV3,
            host: "bench-master".into(),
            job: "etcd".into(),
            tags: BTreeMap::new(),
            streams: vec![Stream {
                name: "snapshot.db".into(),
                size,
                sha256: String::new(),
                chunks,
            }],
            stats: CaptureStats {
                bytes: size,
                ..Default::default()
            },
            slot: None,
            etcd_v3: None,
            files: None,
            etcd_v2: None,
            etcd_datadir: None,
            etcd_v3_delta: None,
            log_head: None,
            previous: None,
        };
        backup::commit(&vault, &mut catalog, &manifest).await?;
    }
    eprintln!("committed {} snapshots in {:.1}s", a.snapshots, started.elapsed().as_secs_f64());
    Ok(())
}
