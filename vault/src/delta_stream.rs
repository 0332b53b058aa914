//! The `events` stream of an etcd delta segment (docs/FORMAT.md section 8e): the changes etcd's
//! watch reported over a range of revisions, grouped by revision so that a transaction stays
//! whole, with the leases the puts use. Little endian throughout:
//!
//! ```text
//! header  "VLTDLT01"
//! group   'G' i64 revision  i64 received_unix_ms  u8 flags (bit 0: catch-up)  u32 n
//!         n x event: u8 op (0 put, 1 delete)  u32 key_len key
//!                    put: u32 value_len value  i64 create_revision  i64 version  i64 lease (0 none)
//! lease   'L' i64 id  i64 granted_ttl_s  i64 remaining_ttl_s  i64 observed_unix_ms
//! trailer 'E' i64 first_revision  i64 last_revision  u64 groups  u64 events  [32] BLAKE3
//! ```
//!
//! The trailer's BLAKE3 covers every byte before it, so a truncated or altered stream is caught
//! without the manifest. A lease record comes before the first group whose puts use the lease.
//! Groups are strictly increasing and, as the whole keyspace is watched, dense: every revision
//! between the first and the last has a group (etcd bumps the revision only for a write that
//! changes something, and every such change is an event). The [`Decoder`] checks all of this.

use crate::error::{Error, Result};

/// The first bytes of every events stream.
pub const MAGIC: &[u8; 8] = b"VLTDLT01";
const GROUP: u8 = b'G';
const LEASE: u8 = b'L';
const END: u8 = b'E';
const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;
const FLAG_CATCH_UP: u8 = 1;

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        create_revision: i64,
        version: i64,
        /// The lease the key is attached to, 0 for none.
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Event {
    pub fn key(&self) -> &[u8] {
        match self {
            Event::Put { key, .. } | Event::Delete { key } => key,
        }
    }
}

/// Every event of one revision, in etcd's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventGroup {
    pub revision: i64,
    /// When the watcher received the group (unix ms): events carry no time of their own.
    pub received_ms: i64,
    /// The watch was catching up (lagging etcd's head) when this group arrived, so
    /// `received_ms` may be well after the change was made.
    pub catch_up: bool,
    pub events: Vec<Event>,
}

/// A lease as the watcher found it (LeaseTimeToLive) the first time a put used it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: i64,
    pub granted_ttl_secs: i64,
    pub remaining_ttl_secs: i64,
    pub observed_ms: i64,
}

/// One record of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Group(EventGroup),
    Lease(LeaseGrant),
}

/// What a whole stream covers (its trailer, checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub first_revision: i64,
    pub last_revision: i64,
    pub groups: u64,
    pub events: u64,
}

/// Encodes records; each call returns the bytes to append to the stream.
pub struct Encoder {
    hasher: blake3::Hasher,
    summary: Summary,
    bytes: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            hasher: blake3::Hasher::new(),
            summary: Summary::default(),
            bytes: 0,
        }
    }

    /// The stream's header: the first bytes to write.
    pub fn header(&mut self) -> Vec<u8> {
        self.emit(MAGIC.to_vec())
    }

    /// A group; its revision must follow the previous group's (checked by the caller's source,
    /// which never commits a gap; asserted here in debug builds).
    pub fn group(&mut self, g: &EventGroup) -> Vec<u8> {
        debug_assert!(self.summary.groups == 0 || g.revision == self.summary.last_revision + 1);
        let mut b = Vec::with_capacity(32 + g.events.iter().map(|e| e.key().len() + 40).sum::<usize>());
        b.push(GROUP);
        b.extend_from_slice(&g.revision.to_le_bytes());
        b.extend_from_slice(&g.received_ms.to_le_bytes());
        b.push(if g.catch_up { FLAG_CATCH_UP } else { 0 });
        b.extend_from_slice(&(g.events.len() as u32).to_le_bytes());
        for e in &g.events {
            match e {
                Event::Put {
                    key,
                    value,
                    create_revision,
                    version,
                    lease,
                } => {
                    b.push(OP_PUT);
                    put_bytes(&mut b, key);
                    put_bytes(&mut b, value);
                    b.extend_from_slice(&create_revision.to_le_bytes());
                    b.extend_from_slice(&version.to_le_bytes());
                    b.extend_from_slice(&lease.to_le_bytes());
                }
                Event::Delete { key } => {
                    b.push(OP_DELETE);
                    put_bytes(&mut b, key);
                }
            }
        }
        if self.summary.groups == 0 {
            self.summary.first_revision = g.revision;
        }
        self.summary.last_revision = g.revision;
        self.summary.groups += 1;
        self.summary.events += g.events.len() as u64;
        self.emit(b)
    }

    pub fn lease(&mut self, l: &LeaseGrant) -> Vec<u8> {
        let mut b = Vec::with_capacity(33);
        b.push(LEASE);
        for v in [l.id, l.granted_ttl_secs, l.remaining_ttl_secs, l.observed_ms] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        self.emit(b)
    }

    /// What the stream covers so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Bytes encoded so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The trailer: the last bytes of the stream.
    pub fn finish(mut self) -> (Vec<u8>, Summary) {
        let mut b = vec![END];
        b.extend_from_slice(&self.summary.first_revision.to_le_bytes());
        b.extend_from_slice(&self.summary.last_revision.to_le_bytes());
        b.extend_from_slice(&self.summary.groups.to_le_bytes());
        b.extend_from_slice(&self.summary.events.to_le_bytes());
        self.hasher.update(&b);
        let hash = self.hasher.finalize();
        b.extend_from_slice(hash.as_bytes());
        (b, self.summary)
    }

    fn emit(&mut self, b: Vec<u8>) -> Vec<u8> {
        self.hasher.update(&b);
        self.bytes += b.len() as u64;
        b
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

/// Decodes a stream fed in pieces of any size: [`Decoder::push`] the bytes as they come, take
/// the records with [`Decoder::next_record`], and call [`Decoder::finish`] at the end, which
/// checks the trailer. Every error names what is wrong; `what` (e.g. "delta segment 4be1... seq 17")
/// prefixes it.
pub struct Decoder {
    what: String,
    buf: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    seen_header: bool,
    summary: Summary,
    trailer: Option<Summary>,
    /// Bytes consumed before `buf` (for error offsets).
    offset: u64,
}

impl Decoder {
    pub fn new(what: impl Into<String>) -> Self {
        Decoder {
            what: what.into(),
            buf: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            seen_header: false,
            summary: Summary::default(),
            trailer: None,
            offset: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.offset += self.pos as u64;
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole record, or `None` when more bytes are needed (or the trailer was read).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if !self.seen_header {
            if self.buf.len() - self.pos < MAGIC.len() {
                return Ok(None);
            }
            if &self.buf[self.pos..self.pos + MAGIC.len()] != MAGIC {
                return Err(self.corrupt("it does not start with the events stream header (VLTDLT01)"));
            }
            self.consume(MAGIC.len());
            self.seen_header = true;
        }
        if self.trailer.is_some() {
            if self.pos < self.buf.len() {
                return Err(self.corrupt("bytes follow the trailer"));
            }
            return Ok(None);
        }
        let Some(&tag) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        match tag {
            GROUP => {
                let Some(len) = self.group_len()? else {
                    return Ok(None);
                };
                let g = self.parse_group(len);
                if self.summary.groups > 0 && g.revision != self.summary.last_revision + 1 {
                    return Err(self.corrupt(&format!(
                        "revision {} follows revision {}: the segment has a gap or is out of order",
                        g.revision, self.summary.last_revision
                    )));
                }
                if self.summary.groups == 0 {
                    self.summary.first_revision = g.revision;
                }
                self.summary.last_revision = g.revision;
                self.summary.groups += 1;
                self.summary.events += g.events.len() as u64;
                self.consume(len);
                Ok(Some(Record::Group(g)))
            }
            LEASE => {
                if self.buf.len() - self.pos < 33 {
                    return Ok(None);
                }
                let mut r = Reader::new(&self.buf[self.pos + 1..]);
                let l = LeaseGrant {
                    id: r.i64(),
                    granted_ttl_secs: r.i64(),
                    remaining_ttl_secs: r.i64(),
                    observed_ms: r.i64(),
                };
                self.consume(33);
                Ok(Some(Record::Lease(l)))
            }
            END => {
                if self.buf.len() - self.pos < 65 {
                    return Ok(None);
                }
                let mut r = Reader::new(&self.buf[self.pos + 1..]);
                let t = Summary {
                    first_revision: r.i64(),
                    last_revision: r.i64(),
                    groups: r.u64(),
                    events: r.u64(),
                };
                self.hasher.update(&self.buf[self.pos..self.pos + 33]);
                let hash = *self.hasher.finalize().as_bytes();
                if hash[..] != self.buf[self.pos + 33..self.pos + 65] {
                    return Err(self.corrupt("its BLAKE3 hash does not match its trailer: the stream was altered"));
                }
                if t != self.summary {
                    return Err(self.corrupt(&format!(
                        "its trailer says revisions {}..={} in {} groups and {} events, but the stream holds {}..={} in {} groups and {} events",
                        t.first_revision,
                        t.last_revision,
                        t.groups,
                        t.events,
                        self.summary.first_revision,
                        self.summary.last_revision,
                        self.summary.groups,
                        self.summary.events
                    )));
                }
                self.pos += 65;
                self.trailer = Some(t);
                Ok(None)
            }
            other => Err(self.corrupt(&format!("unknown record type 0x{other:02x}"))),
        }
    }

    /// The end of the input: the trailer must have been read, and nothing after it.
    pub fn finish(&mut self) -> Result<Summary> {
        while self.next_record()?.is_some() {}
        match &self.trailer {
            Some(t) => Ok(t.clone()),
            None => Err(self.corrupt(&format!(
                "it ends without its trailer after revision {} (truncated)",
                self.summary.last_revision
            ))),
        }
    }

    /// What was decoded so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The length of the group record at `pos` once it is all in the buffer.
    fn group_len(&self) -> Result<Option<usize>> {
        let b = &self.buf[self.pos..];
        const HEAD: usize = 1 + 8 + 8 + 1 + 4;
        if b.len() < HEAD {
            return Ok(None);
        }
        let n = u32::from_le_bytes(b[18..22].try_into().expect("4 bytes")) as usize;
        let mut at = HEAD;
        for _ in 0..n {
            let Some(&op) = b.get(at) else { return Ok(None) };
            at += 1;
            let Some(key_len) = len_at(b, at) else { return Ok(None) };
            at += 4 + key_len;
            match op {
                OP_PUT => {
                    let Some(value_len) = len_at(b, at) else { return Ok(None) };
                    at += 4 + value_len + 24;
                }
                OP_DELETE => {}
                other => return Err(self.corrupt(&format!("unknown event type {other}"))),
            }
        }
        Ok((b.len() >= at).then_some(at))
    }

    fn parse_group(&self, len: usize) -> EventGroup {
        let mut r = Reader::new(&self.buf[self.pos + 1..self.pos + len]);
        let revision = r.i64();
        let received_ms = r.i64();
        let flags = r.u8();
        let n = r.u32();
        let mut events = Vec::with_capacity(n as usize);
        for _ in 0..n {
            events.push(match r.u8() {
                OP_PUT => Event::Put {
                    key: r.bytes(),
                    value: r.bytes(),
                    create_revision: r.i64(),
                    version: r.i64(),
                    lease: r.i64(),
                },
                _ => Event::Delete { key: r.bytes() },
            });
        }
        EventGroup {
            revision,
            received_ms,
            catch_up: flags & FLAG_CATCH_UP != 0,
            events,
        }
    }

    fn consume(&mut self, n: usize) {
        self.hasher.update(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }

    fn corrupt(&self, problem: &str) -> Error {
        Error::integrity(format!(
            "{} is corrupt: {problem} (at byte {})",
            self.what,
            self.offset + self.pos as u64
        ))
    }
}

fn len_at(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
}

/// Reads fields from a record already known to be whole.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str, lease: i64) -> Event {
        Event::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            create_revision: 5,
            version: 2,
            lease,
        }
    }

    fn sample() -> (Vec<u8>, Vec<Record>) {
        let records = vec![
            Record::Lease(LeaseGrant {
                id: 77,
                granted_ttl_secs: 60,
                remaining_ttl_secs: 58,
                observed_ms: 1000,
            }),
            Record::Group(EventGroup {
                revision: 10,
                received_ms: 1001,
                catch_up: false,
                events: vec![
                    put("/registry/a", "x", 77),
                    Event::Delete {
                        key: b"/registry/b".to_vec(),
                    },
                ],
            }),
            Record::Group(EventGroup {
                revision: 11,
                received_ms: 1002,
                catch_up: true,
                events: vec![put("/registry/c", "", 0)],
            }),
        ];
        let mut e = Encoder::new();
        let mut out = e.header();
        for r in &records {
            out.extend(match r {
                Record::Group(g) => e.group(g),
                Record::Lease(l) => e.lease(l),
            });
        }
        let (t, s) = e.finish();
        out.extend(t);
        assert_eq!((s.first_revision, s.last_revision, s.groups, s.events), (10, 11, 2, 3));
        (out, records)
    }

    fn decode(bytes: &[u8], piece: usize) -> Result<(Vec<Record>, Summary)> {
        let mut d = Decoder::new("test segment");
        let mut out = Vec::new();
        for c in bytes.chunks(piece) {
            d.push(c);
            while let Some(r) = d.next_record()? {
                out.push(r);
            }
        }
        let s = d.finish()?;
        Ok((out, s))
    }

    #[test]
    fn round_trips_in_pieces_of_any_size() {
        let (bytes, records) = sample();
        for piece in [1, 3, 7, 64, bytes.len()] {
            let (got, s) = decode(&bytes, piece).unwrap();
            assert_eq!(got, records, "piece {piece}");
            assert_eq!(s.events, 3);
        }
    }

    #[test]
    fn truncation_and_alteration_are_caught() {
        let (bytes, _) = sample();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            let e = decode(&bytes[..cut], 4).unwrap_err().to_string();
            assert!(e.contains("test segment is corrupt"), "cut {cut}: {e}");
        }
        let mut bad = bytes.clone();
        let at = bytes.len() - 70; // inside the last group's value bytes/fields
        bad[at] ^= 1;
        assert!(decode(&bad, 16).is_err(), "a flipped bit is caught");
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra, 16).unwrap_err().to_string().contains("follow the trailer"));
    }

    #[test]
    fn a_gap_between_revisions_is_refused() {
        let mut e = Encoder::new();
        let mut out = e.header();
        let g = |rev| EventGroup {
            revision: rev,
            received_ms: 0,
            catch_up: false,
            events: vec![Event::Delete { key: b"k".to_vec() }],
        };
        out.extend(e.group(&g(3)));
        // A fresh encoder does not know revision 3 came first, so it writes revision 5.
        let mut other = Encoder::new();
        out.extend(other.group(&g(5)));
        let err = decode(&out, 8).unwrap_err().to_string();
        assert!(err.contains("revision 5 follows revision 3"), "{err}");
    }
}
