//! Content-defined chunking: FastCDC (2020, normalised level 2) with a secret gear table
//! derived from the writer key (docs/FORMAT.md section 12).

use crate::format::ChunkerParams;

/// A configured chunker. Cheap to clone.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    min: usize,
    avg: usize,
    max: usize,
    mask_small: u64,
    mask_large: u64,
}

/// `bits` one-bits at the top of a u64: the gear hash's high bits depend on the last 64 bytes.
fn top_mask(bits: u32) -> u64 {
    if bits == 0 { 0 } else { u64::MAX << (64 - bits) }
}

impl Chunker {
    pub fn new(params: &ChunkerParams, gear: [u64; 256]) -> Self {
        let bits = (params.avg_size as f64).log2().round() as u32;
        Chunker {
            gear: Box::new(gear),
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_small: top_mask(bits + 2),
            mask_large: top_mask(bits.saturating_sub(2)),
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at least `max_size` bytes
    /// unless it is the end of the stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let end = n.min(self.max);
        let center = n.min(self.avg);
        let gear = &*self.gear;
        let mut h: u64 = 0;
        let mut i = self.min;
        while i < center {
            h = (h << 1).wrapping_add(gear[data[i] as usize]);
            if h & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < end {
            h = (h << 1).wrapping_add(gear[data[i] as usize]);
            if h & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        end
    }
}

/// Feeds arbitrary pieces of a stream through a [`Chunker`], calling `emit` for each chunk.
/// Memory stays bounded by about twice the maximum chunk size.
pub struct StreamChunker {
    chunker: Chunker,
    buf: Vec<u8>,
}

impl StreamChunker {
    pub fn new(chunker: Chunker) -> Self {
        let cap = chunker.max_size() * 2;
        StreamChunker {
            chunker,
            buf: Vec::with_capacity(cap),
        }
    }

    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        let max = self.chunker.max_size();
        while !data.is_empty() {
            let take = (2 * max - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let mut start = 0;
            while self.buf.len() - start >= max {
                let len = self.chunker.cut(&self.buf[start..]);
                emit(&self.buf[start..start + len]);
                start += len;
            }
            self.buf.drain(..start);
        }
    }

    pub fn finish(mut self, emit: &mut impl FnMut(&[u8])) {
        let mut start = 0;
        while start < self.buf.len() {
            let len = self.chunker.cut(&self.buf[start..]);
            emit(&self.buf[start..start + len]);
            start += len;
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkerAlgorithm;

    fn params() -> ChunkerParams {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020KeyedGear,
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        }
    }

    fn gear(seed: u8) -> [u64; 256] {
        let mut t = [0u64; 256];
        let mut x = blake3::Hasher::new().update(&[seed]).finalize_xof();
        for v in t.iter_mut() {
            let mut b = [0u8; 8];
            x.fill(&mut b);
            *v = u64::from_le_bytes(b);
        }
        t
    }

    fn data(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new().update(b"data").finalize_xof().fill(&mut v);
        v
    }

    fn chunks_of(c: &Chunker, d: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut sc = StreamChunker::new(c.clone());
        for p in d.chunks(piece) {
            sc.push(p, &mut |c| out.push(c.to_vec()));
        }
        sc.finish(&mut |c| out.push(c.to_vec()));
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_how_the_stream_arrives() {
        let c = Chunker::new(&params(), gear(1));
        let d = data(1 << 20);
        let a = chunks_of(&c, &d, 1 << 20);
        let b = chunks_of(&c, &d, 977);
        assert_eq!(a, b);
        assert_eq!(a.concat(), d);
        for ch in &a[..a.len() - 1] {
            assert!(ch.len() >= 2048 && ch.len() <= 32768, "{}", ch.len());
        }
        let avg = d.len() / a.len();
        assert!((4096..=16384).contains(&avg), "average chunk {avg}");
    }

    #[test]
    fn an_insert_changes_only_nearby_chunks() {
        let c = Chunker::new(&params(), gear(1));
        let d = data(1 << 20);
        let mut e = d.clone();
        e.splice(500_000..500_000, b"inserted bytes".iter().copied());
        let a = chunks_of(&c, &d, 4096);
        let b = chunks_of(&c, &e, 4096);
        let shared = b.iter().filter(|x| a.contains(x)).count();
        assert!(shared + 3 >= b.len(), "{shared} of {} chunks shared", b.len());
    }

    #[test]
    fn the_gear_table_changes_boundaries() {
        let d = data(1 << 20);
        let a = chunks_of(&Chunker::new(&params(), gear(1)), &d, 1 << 20);
        let b = chunks_of(&Chunker::new(&params(), gear(2)), &d, 1 << 20);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}
