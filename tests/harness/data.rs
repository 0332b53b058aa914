//! Deterministic test data and small hashing helpers.

use sha2::{Digest, Sha256};

/// splitmix64: deterministic, fast, and its output is incompressible for zstd.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `n` random lowercase alphanumeric characters.
    pub fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| A[(self.next_u64() % A.len() as u64) as usize] as char).collect()
    }
}

/// Kubernetes-like keys and JSON-ish values of about `value_len` bytes.
pub fn k8s_like(rng: &mut Rng, count: usize, value_len: usize) -> Vec<(String, Vec<u8>)> {
    const KINDS: [&str; 5] = ["pods", "configmaps", "secrets", "services/specs", "leases"];
    (0..count)
        .map(|i| {
            let key = format!("/registry/{}/ns{}/obj-{i:05}", KINDS[i % KINDS.len()], i % 7);
            (key, k8s_value(rng, i, value_len))
        })
        .collect()
}

/// One JSON-ish value.
pub fn k8s_value(rng: &mut Rng, i: usize, value_len: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"kind":"Object","metadata":{{"name":"obj-{i}","uid":"{}"}},"data":""#,
        rng.alnum(32)
    );
    let pad = value_len.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", rng.alnum(pad)).into_bytes()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &std::path::Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
