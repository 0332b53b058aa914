//! etcd v3's watch as a capture source (docs/FORMAT.md section 8e): every key, from a start
//! revision, on one healthy member. Responses become [`EventGroup`]s, one per revision, so a
//! transaction stays whole; each lease a put uses is looked up once (LeaseTimeToLive) and
//! reported before the first group that uses it; compaction is an outcome of its own. A sequence
//! of revisions that is not dense (a hole, a repeat, a step back) is never handed on: it is an
//! integrity error, as it means a bug or a filtering proxy, never a quiet change.
//!
//! Fragments: without them etcd sends a catch-up batch of up to 1000 revisions as one message
//! (with large values, far beyond any decode limit and the watcher's memory). The watch asks for
//! fragments (etcd 3.4+ splits a response at its request size limit), but etcd-client 0.21 does
//! not expose a response's `fragment` flag, so the [`Assembler`] holds each response's last group
//! until a later revision or a progress response shows it whole; the watcher asks for progress
//! every second. (So a revision sent twice in a row would be taken for its own fragment; once a
//! later revision or a progress response came, a repeat is refused.) The client's decode limit is also raised to [`MAX_WATCH_MESSAGE_BYTES`], for a
//! single event larger than etcd's fragment size.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchStream};

use super::etcd_v3::{self, EtcdOptions, grpc_cause};
use crate::delta_stream::{Event, EventGroup, LeaseGrant};
use crate::error::{Error, Result};
use crate::format::EtcdV3Info;

/// The largest watch response accepted (gRPC decode limit). etcd's own request limit is 1.5 MiB
/// by default (`--max-request-bytes`); a lease revoke or a range delete can make one revision far
/// larger than any request.
pub const MAX_WATCH_MESSAGE_BYTES: usize = 256 << 20;

/// What the watch delivered next.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// A lease, the first time a put uses it (always before that put's group).
    Lease(LeaseGrant),
    Group(EventGroup),
    /// etcd's head is at `revision` and every group up to it was delivered, as of `at_ms`.
    Progress {
        revision: i64,
        at_ms: i64,
    },
    /// The revision the watch needed is compacted: revisions below `compact_revision` can no
    /// longer be read, so the chain cannot go on.
    Compacted {
        compact_revision: i64,
    },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Turns responses into groups and checks density (no etcd involved: unit-tested below).
///
/// The watch asks etcd to fragment large responses, and etcd-client 0.21 does not say which
/// response is a fragment, so the last group of a response is held back: the next response may
/// continue its revision (a fragment), and only a later revision or a progress response (which
/// etcd sends after every fragment of what came before it) says the group is whole.
#[derive(Clone, Debug)]
pub struct Assembler {
    /// The revision the next new group must have.
    pub next_revision: i64,
    /// The newest head revision etcd reported.
    pub head_revision: i64,
    /// The last group received, possibly not whole yet.
    held: Option<EventGroup>,
    what: String,
    /// Rate window: when it started (ms) and etcd's head then.
    window: Option<(i64, i64)>,
    /// Revisions etcd made per second over the last whole window (its head's growth).
    rate: i64,
}

/// A group this many revisions or fewer behind etcd's head is live (received as it happened) even
/// on a slow cluster; more than a second of etcd's writes behind is catch-up.
const LIVE_LAG: i64 = 16;

impl Assembler {
    /// `what` names the watch in errors (endpoint and job).
    pub fn new(start_revision: i64, what: impl Into<String>) -> Self {
        Assembler {
            next_revision: start_revision,
            head_revision: start_revision - 1,
            held: None,
            what: what.into(),
            window: None,
            rate: 0,
        }
    }

    /// One response's events, as `(mod_revision, event)` in etcd's order, received at `at_ms`
    /// with etcd's head at `header_revision`. Every revision must follow the one before. Returns
    /// the groups known whole; the last one is held until [`Assembler::release`] or a later
    /// revision.
    pub fn response(&mut self, header_revision: i64, events: Vec<(i64, Event)>, at_ms: i64) -> Result<Vec<EventGroup>> {
        let mut whole: Vec<EventGroup> = Vec::new();
        for (rev, ev) in events {
            if let Some(g) = self.held.as_mut()
                && g.revision == rev
            {
                g.events.push(ev);
                continue;
            }
            if rev != self.next_revision {
                return Err(Error::integrity(format!(
                    "the watch of {} delivered revision {rev} where {} was expected ({}): not committed",
                    self.what,
                    self.next_revision,
                    if rev > self.next_revision { "a hole" } else { "a repeat or a step back" }
                ))
                .hint("the etcd member or a proxy in between filtered or reordered events; the watch restarts from the last committed revision, and a repeat means a bug to report"));
            }
            self.next_revision = rev + 1;
            whole.extend(self.held.replace(EventGroup {
                revision: rev,
                received_ms: at_ms,
                catch_up: false,
                events: vec![ev],
            }));
        }
        let head = header_revision.max(self.next_revision - 1);
        self.head_revision = self.head_revision.max(head);
        match self.window {
            Some((start, head_then)) if at_ms - start >= 1000 => {
                self.rate = (self.head_revision - head_then) * 1000 / (at_ms - start);
                self.window = Some((at_ms, self.head_revision));
            }
            Some(_) => {}
            None => self.window = Some((at_ms, self.head_revision)),
        }
        // A group further behind etcd's head than etcd writes in a second arrived while the watch
        // was catching up (after a start, a reconnect, a stall): its receive time may be well
        // after the change. Under a steady load etcd's head is always a few revisions ahead of a
        // live watch; that is not catch-up.
        let live = self.rate.max(LIVE_LAG);
        for g in whole.iter_mut().chain(self.held.as_mut()) {
            g.catch_up = self.head_revision - g.revision > live;
        }
        Ok(whole)
    }

    /// The held group, now known whole (a progress response came after it).
    pub fn release(&mut self) -> Option<EventGroup> {
        self.held.take()
    }

    /// How many revisions etcd's head is ahead of what was delivered.
    pub fn lag(&self) -> i64 {
        (self.head_revision - (self.next_revision - 1)).max(0)
    }
}

/// The first lease put in `g` that is not in `seen`.
pub fn first_new_lease(g: &EventGroup, seen: &HashSet<i64>) -> Option<i64> {
    g.events.iter().find_map(|e| match e {
        Event::Put { lease, .. } if *lease != 0 && !seen.contains(lease) => Some(*lease),
        _ => None,
    })
}

/// A watch of every key on one member.
pub struct EtcdWatch {
    client: Client,
    stream: WatchStream,
    member: EtcdV3Info,
    assembler: Assembler,
    leases: HashSet<i64>,
    /// Groups received and not returned yet.
    pending: VecDeque<EventGroup>,
    queue: VecDeque<WatchItem>,
}

impl EtcdWatch {
    /// Pick a healthy member (as a snapshot does) and watch every key from `start_revision`.
    /// `what` names the watch in errors.
    pub async fn start(opts: &EtcdOptions, start_revision: i64, what: &str) -> Result<EtcdWatch> {
        let selected = etcd_v3::select_member(opts).await?;
        let member = selected.info;
        // A connection of its own that fails rather than goes quiet when the member loses its
        // leader (a partitioned member would otherwise stop sending events with no error).
        let connect = opts.connect_options()?.with_require_leader(true);
        let timeout = Duration::from_secs(opts.connect_timeout_secs.unwrap_or(5));
        let client = tokio::time::timeout(timeout, Client::connect([member.endpoint.as_str()], Some(connect)))
            .await
            .map_err(|_| {
                Error::source_err(format!(
                    "etcd member {} did not answer within {}s",
                    member.endpoint,
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| Error::source_err(format!("cannot connect to etcd member {}: {}", member.endpoint, grpc_cause(&e))))?;
        let options = WatchOptions::new()
            .with_all_keys()
            .with_start_revision(start_revision)
            .with_progress_notify()
            .with_fragment();
        let stream = client
            .watch_client()
            .max_decoding_message_size(MAX_WATCH_MESSAGE_BYTES)
            .watch(vec![0u8], Some(options))
            .await
            .map_err(|e| Error::source_err(format!("etcd member {} refused the watch: {}", member.endpoint, grpc_cause(&e))))?;
        Ok(EtcdWatch {
            client,
            stream,
            assembler: Assembler::new(start_revision, format!("{what} on {}", member.endpoint)),
            member,
            leases: HashSet::new(),
            pending: VecDeque::new(),
            queue: VecDeque::new(),
        })
    }

    /// The member watched (its facts when the watch started).
    pub fn member(&self) -> &EtcdV3Info {
        &self.member
    }

    /// How many revisions etcd's head is ahead of what was delivered.
    pub fn lag(&self) -> i64 {
        self.assembler.lag()
    }

    /// Ask etcd for a progress response (answered once the watch has caught up).
    pub async fn request_progress(&mut self) -> Result<()> {
        self.stream.request_progress().await.map_err(|e| {
            Error::source_err(format!(
                "progress request to etcd member {} failed: {}",
                self.member.endpoint,
                grpc_cause(&e)
            ))
        })
    }

    /// The next item. A broken stream is a source error (the caller watches again from what it
    /// committed); a non-dense sequence an integrity error. Cancel-safe (it may be raced against
    /// a timer): a group received is kept until it is returned, a lease marked seen only once
    /// its record is returned.
    pub async fn next(&mut self) -> Result<WatchItem> {
        loop {
            if let Some(g) = self.pending.front() {
                if let Some(id) = first_new_lease(g, &self.leases) {
                    let lease = self.lease(id).await?;
                    self.leases.insert(id);
                    return Ok(WatchItem::Lease(lease));
                }
                let g = self.pending.pop_front().expect("front exists");
                return Ok(WatchItem::Group(g));
            }
            if let Some(item) = self.queue.pop_front() {
                return Ok(item);
            }
            let resp = self
                .stream
                .message()
                .await
                .map_err(|e| {
                    Error::source_err(format!(
                        "the watch on etcd member {} broke: {}",
                        self.member.endpoint,
                        grpc_cause(&e)
                    ))
                })?
                .ok_or_else(|| Error::source_err(format!("etcd member {} ended the watch", self.member.endpoint)))?;
            let at_ms = now_ms();
            let header_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.compact_revision() > 0 {
                return Ok(WatchItem::Compacted {
                    compact_revision: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(Error::source_err(format!(
                    "etcd member {} canceled the watch: {}",
                    self.member.endpoint,
                    if resp.cancel_reason().is_empty() {
                        "no reason given"
                    } else {
                        resp.cancel_reason()
                    }
                )));
            }
            if resp.events().is_empty() {
                if !resp.created() && header_revision > 0 {
                    let _ = self.assembler.response(header_revision, Vec::new(), at_ms)?;
                    // Every fragment before a progress response has arrived.
                    self.pending.extend(self.assembler.release());
                    self.queue.push_back(WatchItem::Progress {
                        revision: header_revision,
                        at_ms,
                    });
                }
                continue;
            }
            let events = resp.events().iter().filter_map(event_of).collect();
            self.pending.extend(self.assembler.response(header_revision, events, at_ms)?);
        }
    }

    /// The granted TTL of a lease, as etcd says now (-1 when it is gone already: revoked or
    /// expired before the watcher asked).
    async fn lease(&mut self, id: i64) -> Result<LeaseGrant> {
        let r = self.client.lease_time_to_live(id, None).await.map_err(|e| {
            Error::source_err(format!(
                "looking up lease {id:x} on etcd member {} failed: {}",
                self.member.endpoint,
                grpc_cause(&e)
            ))
        })?;
        Ok(LeaseGrant {
            id,
            granted_ttl_secs: r.granted_ttl(),
            remaining_ttl_secs: r.ttl(),
            observed_ms: now_ms(),
        })
    }
}

/// One watch event as `(mod_revision, event)`; `None` for an event without a key-value (etcd
/// always sends one; skipping it would make a hole, which the density check then reports).
pub fn event_of(e: &etcd_client::Event) -> Option<(i64, Event)> {
    let kv = e.kv()?;
    let event = match e.event_type() {
        EventType::Put => Event::Put {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            version: kv.version(),
            lease: kv.lease(),
        },
        EventType::Delete => Event::Delete { key: kv.key().to_vec() },
    };
    Some((kv.mod_revision(), event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, lease: i64) -> Event {
        Event::Put {
            key: key.into(),
            value: b"v".to_vec(),
            create_revision: 1,
            version: 1,
            lease,
        }
    }

    #[test]
    fn a_steady_load_is_live_and_a_backlog_is_catch_up() {
        // 500 revisions a second, etcd's head always 5 ahead: live, never catch-up.
        let mut a = Assembler::new(1, "test");
        for i in 1..=3_000i64 {
            let groups = a.response(i + 5, vec![(i, put("k", 0))], i * 2).unwrap();
            assert!(groups.iter().all(|g| !g.catch_up), "revision {i} is live");
        }
        assert_eq!(a.lag(), 5);
        // A watch started 100,000 revisions back delivers history fast: catch-up until close.
        let mut a = Assembler::new(1, "test");
        let mut seen = Vec::new();
        for i in 1..=100_000i64 {
            seen.extend(a.response(100_000, vec![(i, put("k", 0))], i / 50).unwrap());
        }
        assert!(seen[..90_000].iter().all(|g| g.catch_up), "far behind the head");
        assert!(!seen.last().unwrap().catch_up, "at the head");
    }

    #[test]
    fn a_revision_split_over_events_is_one_group_and_lag_marks_catch_up() {
        let mut a = Assembler::new(10, "test");
        let groups = a
            .response(
                112,
                vec![(10, put("a", 0)), (10, put("b", 0)), (11, Event::Delete { key: b"a".to_vec() })],
                5,
            )
            .unwrap();
        assert_eq!(groups.len(), 1, "11 is held: a fragment of it may follow");
        assert_eq!(groups[0].events.len(), 2, "a txn's events stay one group");
        assert!(groups[0].catch_up, "etcd's head (112) was far ahead");
        assert_eq!(a.lag(), 101);
        let groups = a.response(12, vec![(12, put("c", 0))], 6).unwrap();
        assert_eq!(groups[0].revision, 11);
        assert!(groups[0].catch_up, "the head seen is 112");
        assert!(a.release().unwrap().catch_up, "12 is 100 behind the head");
        let groups = a.response(112, vec![(13, put("d", 0)), (14, put("e", 0))], 7).unwrap();
        assert_eq!(groups.len(), 1);
        let live = a.response(114, (15..=112).map(|r| (r, put("f", 0))).collect(), 8).unwrap();
        assert!(!live.last().unwrap().catch_up, "111 is 3 behind the head");
        assert!(!a.release().unwrap().catch_up, "112 is 2 behind");
        assert_eq!(a.lag(), 2);
        assert_eq!(a.next_revision, 113);
    }

    #[test]
    fn a_revision_fragmented_over_responses_is_one_group_released_by_progress() {
        let mut a = Assembler::new(10, "test");
        // revision 10 whole, revision 11 split over two responses (fragments)
        let g = a.response(11, vec![(10, put("a", 0)), (11, put("b", 0))], 1).unwrap();
        assert_eq!(g.iter().map(|g| g.revision).collect::<Vec<_>>(), vec![10], "11 may go on");
        let g = a.response(11, vec![(11, put("c", 0)), (11, put("d", 0))], 2).unwrap();
        assert!(g.is_empty(), "still revision 11");
        let g = a.response(12, vec![(12, put("e", 0))], 3).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].revision, g[0].events.len()), (11, 3), "the fragments are one group");
        // the held 12 comes out with a progress response, and not before
        let held = a.release().unwrap();
        assert_eq!((held.revision, held.events.len(), held.catch_up), (12, 1, false));
        assert!(a.release().is_none());
    }

    #[test]
    fn holes_repeats_and_a_late_first_revision_are_refused() {
        let mut a = Assembler::new(10, "test");
        let e = a.response(11, vec![(11, put("a", 0))], 0).unwrap_err();
        assert!(e.to_string().contains("revision 11 where 10 was expected"), "{e}");
        let mut a = Assembler::new(10, "test");
        a.response(10, vec![(10, put("a", 0))], 0).unwrap();
        assert!(a.response(12, vec![(12, put("a", 0))], 0).is_err(), "a hole");
        // A revision sent again once it is known whole (a later one, or a progress response,
        // came after it); right after itself it cannot be told from a fragment.
        let mut a = Assembler::new(10, "test");
        a.response(10, vec![(10, put("a", 0)), (11, put("b", 0))], 0).unwrap();
        assert!(a.response(11, vec![(10, put("a", 0))], 0).is_err(), "a revision sent twice");
        let mut a = Assembler::new(10, "test");
        a.response(10, vec![(10, put("a", 0))], 0).unwrap();
        a.release().unwrap();
        assert!(
            a.response(10, vec![(10, put("a", 0))], 0).is_err(),
            "a revision sent again after progress"
        );
    }

    #[test]
    fn each_lease_is_new_once() {
        let mut seen = HashSet::new();
        let g = EventGroup {
            revision: 1,
            received_ms: 0,
            catch_up: false,
            events: vec![put("a", 5), put("b", 5), put("c", 0), put("d", 6)],
        };
        assert_eq!(first_new_lease(&g, &seen), Some(5));
        seen.insert(5);
        assert_eq!(first_new_lease(&g, &seen), Some(6));
        seen.insert(6);
        assert_eq!(first_new_lease(&g, &seen), None);
    }
}
