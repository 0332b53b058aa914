//! The etcd cluster as the recovery flows see it: connect with the member's own TLS files, list,
//! add, update and remove members, and tell whether a member is healthy and caught up.

use std::time::Duration;

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::etcd_v3::{EtcdOptions, grpc_cause, hex_id};

/// One member as the cluster lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// Empty while an added member has not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl Member {
    pub fn id_hex(&self) -> String {
        hex_id(self.id)
    }

    /// Added but never started: it has no name and no client URLs yet.
    pub fn is_unstarted(&self) -> bool {
        self.name.is_empty()
    }
}

/// Whether two lists hold the same URLs, in any order (a member's peer URLs as the cluster lists
/// them against those in etcd.conf).
pub fn same_urls(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// The smallest number of members that makes a quorum of `n`.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// A client of the cluster through `opts.endpoints` (any member will do).
pub async fn connect(opts: &EtcdOptions) -> Result<Client> {
    opts.check()?;
    let connect = opts.connect_options()?;
    let timeout = Duration::from_secs(opts.connect_timeout_secs.unwrap_or(5));
    let eps = opts.endpoints.join(",");
    tokio::time::timeout(timeout, Client::connect(&opts.endpoints, Some(connect)))
        .await
        .map_err(|_| Error::source_err(format!("etcd at {eps} did not answer within {}s", timeout.as_secs())))?
        .map_err(|e| Error::source_err(format!("cannot connect to etcd at {eps}: {}", grpc_cause(&e))))
        .map_err(|e| e.hint("check that etcd is running there and that the TLS files (--cacert/--cert/--key) fit the cluster"))
}

fn call_failed(what: &str, e: etcd_client::Error) -> Error {
    Error::source_err(format!("etcd {what} failed: {}", grpc_cause(&e)))
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r.map_err(|e| call_failed(what, e)),
        Err(_) => Err(Error::source_err(format!("etcd {what} did not answer within 10s"))),
    }
}

pub async fn members(client: &mut Client) -> Result<Vec<Member>> {
    let list = timed("member list", client.member_list()).await?;
    Ok(list.members().iter().map(to_member).collect())
}

fn to_member(m: &etcd_client::Member) -> Member {
    Member {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
    }
}

/// Add a member by its peer URLs; returns it and the member list after the add.
pub async fn add(client: &mut Client, peer_urls: &[String]) -> Result<(Member, Vec<Member>)> {
    let r = timed("member add", client.member_add(peer_urls, None)).await?;
    let added = r
        .member()
        .map(to_member)
        .ok_or_else(|| Error::source_err("etcd member add returned no member"))?;
    Ok((added, r.member_list().iter().map(to_member).collect()))
}

pub async fn update_peer_urls(client: &mut Client, id: u64, peer_urls: &[String]) -> Result<()> {
    timed("member update", client.member_update(id, peer_urls.to_vec())).await?;
    Ok(())
}

pub async fn remove(client: &mut Client, id: u64) -> Result<()> {
    timed("member remove", client.member_remove(id)).await?;
    Ok(())
}

/// What one member says about itself.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub revision: i64,
    pub db_size: u64,
    pub version: String,
    pub errors: Vec<String>,
}

/// Ask the member at `endpoint` for its status (with the TLS files of `opts`).
pub async fn status(endpoint: &str, opts: &EtcdOptions) -> Result<MemberStatus> {
    let one = EtcdOptions {
        endpoints: vec![endpoint.to_string()],
        connect_timeout_secs: Some(opts.connect_timeout_secs.unwrap_or(2)),
        ..opts.clone()
    };
    let mut client = connect(&one).await?;
    let s = timed("status", client.status()).await?;
    let header = s.header().ok_or_else(|| Error::source_err("etcd status has no header"))?;
    Ok(MemberStatus {
        member_id: header.member_id(),
        leader: s.leader(),
        raft_index: s.raft_index(),
        raft_applied_index: s.raft_applied_index(),
        revision: header.revision(),
        db_size: s.db_size().max(0) as u64,
        version: s.version().to_string(),
        errors: s.errors().to_vec(),
    })
}

/// Whether the member at `endpoint` is healthy: it answers, has a leader, reports no errors and
/// serves a linearizable read (which needs a quorum). `Err` says why not.
pub async fn healthy(endpoint: &str, opts: &EtcdOptions) -> std::result::Result<MemberStatus, String> {
    let st = status(endpoint, opts).await.map_err(|e| e.to_string())?;
    if st.leader == 0 {
        return Err("it has no leader".into());
    }
    if !st.errors.is_empty() {
        return Err(format!("it reports {}", st.errors.join("; ")));
    }
    let one = EtcdOptions {
        endpoints: vec![endpoint.to_string()],
        connect_timeout_secs: Some(2),
        ..opts.clone()
    };
    let mut client = connect(&one).await.map_err(|e| e.to_string())?;
    timed("get", client.get("health", None)).await.map_err(|e| e.to_string())?;
    Ok(st)
}

/// Wait until `endpoint` is healthy, up to `timeout`; the error names the last reason.
pub async fn wait_healthy(endpoint: &str, opts: &EtcdOptions, timeout: Duration) -> Result<MemberStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match healthy(endpoint, opts).await {
            Ok(st) => return Ok(st),
            Err(why) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::source_err(format!(
                    "etcd at {endpoint} is not healthy after {}s: {why}",
                    timeout.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3]);
    }
}
