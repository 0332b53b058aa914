//! etcd v2 as a capture source: the whole keyspace (directories, keys, values, TTLs) read through
//! the v2 HTTP API (`/v2/keys/?recursive=true&sorted=true`), with the same TLS files as
//! [`EtcdOptions`]; and the writes a restore makes through the same API.
//!
//! The v2 API never lists hidden nodes (a name starting with `_`): they are read only when named.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::format::{EtcdV2Info, V2Keyspace, V2Node};
use crate::source::etcd_v3::EtcdOptions;

/// A v2 API client bound to the first endpoint that answered.
pub struct V2Client {
    http: reqwest::Client,
    pub endpoint: String,
    pub version: String,
}

#[derive(Deserialize)]
struct ApiNode {
    key: Option<String>,
    #[serde(default)]
    dir: bool,
    value: Option<String>,
    ttl: Option<i64>,
    expiration: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    nodes: Vec<ApiNode>,
}

#[derive(Deserialize)]
struct ApiAnswer {
    node: ApiNode,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "errorCode")]
    error_code: u32,
    message: String,
}

#[derive(Deserialize)]
struct VersionAnswer {
    etcdserver: String,
}

/// v2 error codes a restore tells apart.
pub const KEY_NOT_FOUND: u32 = 100;
pub const NOT_A_FILE: u32 = 102;
pub const NODE_EXISTS: u32 = 105;

/// A refused v2 write: etcd's error code and message.
#[derive(Debug)]
pub struct Refused {
    pub code: u32,
    pub message: String,
}

/// What a key or directory is in a live cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Live {
    Dir,
    Key(String),
}

fn http_client(opts: &EtcdOptions) -> Result<reqwest::Client> {
    let timeout = Duration::from_secs(opts.connect_timeout_secs.unwrap_or(5));
    let mut b = reqwest::Client::builder().connect_timeout(timeout).timeout(timeout * 6);
    let read = |p: &std::path::PathBuf, what: &str| {
        std::fs::read(p).context(ErrorKind::Usage, || format!("cannot read etcd {what} {}", p.display()))
    };
    if let Some(ca) = &opts.cacert {
        let cert = reqwest::Certificate::from_pem(&read(ca, "CA certificate (--cacert)")?)
            .map_err(|e| Error::usage(format!("etcd CA certificate {} is not PEM", ca.display())).with_source(e))?;
        b = b.tls_certs_only([cert]);
    }
    match (&opts.cert, &opts.key) {
        (Some(c), Some(k)) => {
            let mut pem = read(c, "client certificate (--cert)")?;
            pem.push(b'\n');
            pem.extend(read(k, "client key (--key)")?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::usage(format!(
                    "etcd client certificate {} and key {} do not load",
                    c.display(),
                    k.display()
                ))
                .with_source(e)
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err(Error::usage("--cert and --key must be given together")),
    }
    b.build()
        .map_err(|e| Error::usage("cannot set up the HTTP client for the etcd v2 API").with_source(e))
}

/// A short cause for an HTTP failure (reqwest's own text nests every layer).
fn http_cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    for (needle, short) in [
        ("Connection refused", "connection refused"),
        ("CertificateRequired", "the server requires a client certificate (--cert/--key)"),
        ("certificate required", "the server requires a client certificate (--cert/--key)"),
        ("UnknownIssuer", "the server certificate is not signed by --cacert"),
        ("InvalidCertificate", "certificate rejected"),
        ("timed out", "timed out"),
    ] {
        if text.contains(needle) {
            return short.to_string();
        }
    }
    text
}

fn keys_url(endpoint: &str, key: &str) -> Result<url::Url> {
    let mut u = url::Url::parse(endpoint).map_err(|e| Error::usage(format!("etcd endpoint {endpoint:?} is not a URL")).with_source(e))?;
    {
        let mut seg = u
            .path_segments_mut()
            .map_err(|_| Error::usage(format!("etcd endpoint {endpoint:?} cannot take a path")))?;
        seg.pop_if_empty().push("v2").push("keys");
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            seg.push("");
        } else {
            seg.extend(parts);
        }
    }
    Ok(u)
}

impl V2Client {
    /// Connect to the first endpoint whose v2 API answers.
    pub async fn connect(opts: &EtcdOptions) -> Result<V2Client> {
        opts.check()?;
        let http = http_client(opts)?;
        let mut skipped = Vec::new();
        for ep in &opts.endpoints {
            match probe(&http, ep).await {
                Ok(version) => {
                    return Ok(V2Client {
                        http,
                        endpoint: ep.clone(),
                        version,
                    });
                }
                Err(why) => skipped.push(format!("{ep}: {why}")),
            }
        }
        let v2_off = skipped.iter().any(|s| s.contains("v2 API is not enabled"));
        let hint = if v2_off {
            "start etcd with --enable-v2=true (ETCD_ENABLE_V2=true in etcd.conf); etcd 3.4 turns the v2 API off by default"
        } else {
            "check that etcd is running and reachable, and for TLS that --cacert/--cert/--key match the cluster"
        };
        Err(Error::source_err(format!(
            "no etcd member with a working v2 API among {} endpoint(s): {}",
            opts.endpoints.len(),
            skipped.join("; ")
        ))
        .hint(hint))
    }

    /// GET a node; `None` when it does not exist. Returns the node and the `X-Etcd-Index` and
    /// `X-Etcd-Cluster-Id` headers.
    async fn get(&self, key: &str, recursive: bool) -> Result<Option<(ApiNode, u64, String)>> {
        let mut url = keys_url(&self.endpoint, key)?;
        if recursive {
            url.query_pairs_mut().append_pair("recursive", "true").append_pair("sorted", "true");
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::source_err(format!("cannot read {key} from {}: {}", self.endpoint, http_cause(&e))))?;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let index = header("x-etcd-index").parse().unwrap_or(0);
        let cluster = header("x-etcd-cluster-id");
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::source_err(format!("reading {key} from {} broke off: {}", self.endpoint, http_cause(&e))))?;
        if status.is_success() {
            let a: ApiAnswer = serde_json::from_slice(&body).map_err(|e| {
                Error::source_err(format!("{} answered GET {key} with something that is not a v2 node", self.endpoint)).with_source(e)
            })?;
            return Ok(Some((a.node, index, cluster)));
        }
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) if e.error_code == KEY_NOT_FOUND => Ok(None),
            Ok(e) => Err(Error::source_err(format!(
                "{} refused GET {key}: {} (code {})",
                self.endpoint, e.message, e.error_code
            ))),
            Err(_) => Err(Error::source_err(format!(
                "{} answered GET {key} with HTTP {status}",
                self.endpoint
            ))),
        }
    }

    /// Read every node under the root, plus the named hidden nodes (and what is under them).
    pub async fn read_keyspace(&self, hidden: &[String]) -> Result<(V2Keyspace, EtcdV2Info)> {
        let read_at = chrono::Utc::now();
        let (root, etcd_index, cluster_id) = self
            .get("/", true)
            .await?
            .ok_or_else(|| Error::source_err(format!("{} has no v2 root directory", self.endpoint)))?;
        let mut nodes = Vec::new();
        flatten(root, &mut nodes);
        let mut info = EtcdV2Info {
            endpoint: self.endpoint.clone(),
            cluster_id,
            etcd_index,
            read_at,
            version: self.version.clone(),
            ..Default::default()
        };
        for h in hidden {
            let key = normalize_key(h);
            match self.get(&key, true).await? {
                Some((n, _, _)) => {
                    flatten(n, &mut nodes);
                    info.hidden.push(key);
                }
                None => info.hidden_missing.push(key),
            }
        }
        nodes.sort_by(|a, b| a.key.cmp(&b.key));
        nodes.dedup_by(|a, b| a.key == b.key);
        info.dirs = nodes.iter().filter(|n| n.dir).count() as u64;
        info.keys = nodes.iter().filter(|n| !n.dir).count() as u64;
        info.with_ttl = nodes.iter().filter(|n| n.ttl.is_some()).count() as u64;
        let keyspace = V2Keyspace {
            etcd_index,
            read_at,
            nodes,
        };
        Ok((keyspace, info))
    }

    /// What is at `prefix` and under it now (hidden nodes only when named in `also`).
    pub async fn live_nodes(&self, prefix: &str, also: &[String]) -> Result<std::collections::BTreeMap<String, Live>> {
        let mut out = std::collections::BTreeMap::new();
        let mut found = Vec::new();
        if let Some((n, _, _)) = self.get(prefix, true).await? {
            flatten(n, &mut found);
        }
        for k in also {
            if !found.iter().any(|n: &V2Node| &n.key == k)
                && let Some((n, _, _)) = self.get(k, false).await?
            {
                found.push(to_v2(&n, k));
            }
        }
        for n in found {
            let live = if n.dir { Live::Dir } else { Live::Key(n.value.unwrap_or_default()) };
            out.insert(n.key, live);
        }
        Ok(out)
    }

    /// Create or set one node. `must_not_exist` makes etcd refuse if it appeared meanwhile.
    /// The outer error is a transport failure; the inner one etcd's refusal.
    pub async fn put(&self, node: &V2Node, ttl: Option<i64>, must_not_exist: bool) -> Result<std::result::Result<(), Refused>> {
        let url = keys_url(&self.endpoint, &node.key)?;
        let mut form: Vec<(&str, String)> = Vec::new();
        if node.dir {
            form.push(("dir", "true".into()));
        } else {
            form.push(("value", node.value.clone().unwrap_or_default()));
        }
        if let Some(t) = ttl {
            form.push(("ttl", t.to_string()));
        }
        if must_not_exist {
            form.push(("prevExist", "false".into()));
        }
        let resp = self
            .http
            .put(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish())
            .send()
            .await
            .map_err(|e| Error::source_err(format!("cannot write {} to {}: {}", node.key, self.endpoint, http_cause(&e))))?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Ok(()));
        }
        Ok(Err(match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => Refused {
                code: e.error_code,
                message: e.message,
            },
            Err(_) => Refused {
                code: 0,
                message: format!("HTTP {status}"),
            },
        }))
    }
}

async fn probe(http: &reqwest::Client, endpoint: &str) -> std::result::Result<String, String> {
    let base = endpoint.trim_end_matches('/');
    let version = http
        .get(format!("{base}/version"))
        .send()
        .await
        .map_err(|e| format!("cannot connect: {}", http_cause(&e)))?;
    if !version.status().is_success() {
        return Err(format!("GET /version answered HTTP {}", version.status()));
    }
    let v: VersionAnswer = version
        .json()
        .await
        .map_err(|_| "GET /version did not answer like etcd".to_string())?;
    let keys = http
        .get(format!("{base}/v2/keys/"))
        .send()
        .await
        .map_err(|e| format!("cannot connect: {}", http_cause(&e)))?;
    if keys.status() == reqwest::StatusCode::NOT_FOUND {
        let body = keys.text().await.unwrap_or_default();
        if serde_json::from_str::<ApiError>(&body).is_err() {
            return Err(format!("the v2 API is not enabled on this member (etcd {})", v.etcdserver));
        }
    } else if !keys.status().is_success() {
        return Err(format!("GET /v2/keys/ answered HTTP {}", keys.status()));
    }
    Ok(v.etcdserver)
}

/// `/a/b` form: one leading slash, none trailing.
pub fn normalize_key(k: &str) -> String {
    let parts: Vec<&str> = k.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Whether a key's own name or any directory above it is hidden (starts with `_`).
pub fn is_hidden(key: &str) -> bool {
    key.split('/').any(|p| p.starts_with('_'))
}

fn to_v2(n: &ApiNode, key: &str) -> V2Node {
    V2Node {
        key: n.key.clone().unwrap_or_else(|| key.to_string()),
        dir: n.dir,
        value: if n.dir { None } else { n.value.clone() },
        ttl: n.ttl,
        expiration: n.expiration,
    }
}

/// Pre-order list of a node and everything under it; the root itself (no key) is left out.
fn flatten(n: ApiNode, out: &mut Vec<V2Node>) {
    if let Some(k) = &n.key {
        out.push(to_v2(&n, k));
    }
    for c in n.nodes {
        flatten(c, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalized_and_urls_escaped() {
        assert_eq!(normalize_key("coreos.com/network/"), "/coreos.com/network");
        assert_eq!(normalize_key("/"), "/");
        let u = keys_url("http://127.0.0.1:2379", "/coreos.com/network/subnets/10.1.5.0-24").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:2379/v2/keys/coreos.com/network/subnets/10.1.5.0-24");
        assert_eq!(keys_url("https://h:2379/", "/").unwrap().as_str(), "https://h:2379/v2/keys/");
        assert_eq!(
            keys_url("http://h:2379", "/a b/%").unwrap().as_str(),
            "http://h:2379/v2/keys/a%20b/%25"
        );
        assert!(is_hidden("/a/_b/c") && !is_hidden("/a/b_c"));
    }

    #[test]
    fn a_recursive_answer_flattens_parents_first() {
        let json = r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","dir":true,"nodes":[
            {"key":"/a/b","value":"x","expiration":"2026-11-29T22:56:17.146698203Z","ttl":100,"modifiedIndex":6,"createdIndex":6}],
            "modifiedIndex":4,"createdIndex":4},{"key":"/c","value":"y"}]}}"#;
        let a: ApiAnswer = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        flatten(a.node, &mut out);
        let keys: Vec<&str> = out.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["/a", "/a/b", "/c"]);
        assert!(out[0].dir && out[0].value.is_none());
        assert_eq!(out[1].ttl, Some(100));
        assert!(out[1].expiration.is_some());
    }
}
