//! Free loopback ports: bind 127.0.0.1:0, note the port, release it.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago and that this process has not handed out before
/// (tests run in parallel threads of one process).
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seen = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// A loopback port that nothing listens on (for "unreachable" tests).
pub fn closed_port() -> u16 {
    free_port()
}
