//! The daemon's config file (`/etc/vault/vaultd.toml`; `config/vaultd.toml` documents every key):
//! its types, and parsing that keeps going after a problem so that `check-config` can report every
//! problem with its key path and line.
//!
//! Parsing works on toml's spanned document (`DeTable`): the top-level keys and each `[[job]]` are
//! deserialized separately, so a bad job does not hide the problems of the next one, and every
//! error's span is a byte range of the file itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use vault::ops::retention::RetentionPolicy;
use vault::source::etcd_v3::EtcdOptions;
use vault::source::selection::FilesSelection;
use vault::store::S3Options;

use crate::webhook::WebhookConfig;

pub const DEFAULT_CONFIG: &str = "/etc/vault/vaultd.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
pub const DEFAULT_GRACE_SECS: u64 = 30;
pub const DEFAULT_CLAIM_LEASE_SECS: u64 = 60;
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_BACKOFF_SECS: u64 = 30;

/// Everything but the jobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Vault URL: /path, file:///path or s3://bucket/prefix.
    pub repo: String,
    /// Writer key file (mode 0600).
    pub writer_key: PathBuf,
    /// Catalog path; default ~/.cache/vault/<vault id>.sqlite.
    pub catalog: Option<PathBuf>,
    /// The name this host records in snapshots and slot claims; default the system hostname.
    pub host: Option<String>,
    /// The vault's fingerprint as `vaultctl init` printed it: the daemon refuses a vault whose
    /// recipients or writer key do not match it (docs/FORMAT.md section 2a).
    pub fingerprint: Option<String>,
    /// Where the daemon remembers the vaults it has opened; default `known_vaults.json` beside the
    /// catalog, else ~/.config/vault/known_vaults.json.
    pub known_vaults: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Options,
    #[serde(default)]
    pub http: HttpConfig,
    /// POST a JSON event here when a run fails and when a job recovers.
    pub webhook: Option<WebhookConfig>,
    /// At SIGTERM, give running captures this long to finish before abandoning them.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// The lease of a cluster-wide slot's claim: renewed while the run goes on; after it runs out
    /// with no snapshot, another daemon takes the slot over (docs/FORMAT.md section 3a).
    #[serde(default = "default_claim_lease")]
    pub claim_lease_secs: u64,
}

impl Global {
    /// The known-vaults file: as configured, else beside the catalog (the daemon's state
    /// directory, writable under the unit's ProtectSystem=strict), else the user's default.
    pub fn known_vaults_path(&self) -> PathBuf {
        self.known_vaults
            .clone()
            .or_else(|| {
                let dir = self.catalog.as_deref()?.parent()?;
                (!dir.as_os_str().is_empty()).then(|| dir.join("known_vaults.json"))
            })
            .unwrap_or_else(vault::trust::default_known_vaults)
    }

    /// The keys and trust the daemon opens the vault with.
    pub fn key_source(&self) -> vault::repo::KeySource {
        vault::repo::KeySource {
            writer_key: Some(self.writer_key.clone()),
            identity: None,
            trust: vault::trust::TrustOptions {
                fingerprint: self.fingerprint.clone(),
                known_vaults: Some(self.known_vaults_path()),
            },
        }
    }
}

fn default_grace() -> u64 {
    DEFAULT_GRACE_SECS
}

fn default_claim_lease() -> u64 {
    DEFAULT_CLAIM_LEASE_SECS
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token file (mode 0600) for everything but /healthz.
    pub token_file: Option<PathBuf>,
    /// Serve /metrics without the token.
    #[serde(default)]
    pub metrics_public: bool,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            token_file: None,
            metrics_public: false,
        }
    }
}

/// What a job captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    EtcdV3,
    Files,
    /// Verify the vault's snapshots (structure; with `read_data_percent`, stored objects too).
    Verify,
    /// The etcd v2 keyspace through the v2 API.
    EtcdV2,
    /// This host's etcd member data dir (v2 WAL and snap, v3 database).
    EtcdDatadir,
}

impl JobKind {
    pub const NAMES: &[&str] = &["etcd-v3", "files", "verify", "etcd-v2", "etcd-datadir"];

    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "etcd-v3" => Some(JobKind::EtcdV3),
            "files" => Some(JobKind::Files),
            "verify" => Some(JobKind::Verify),
            "etcd-v2" => Some(JobKind::EtcdV2),
            "etcd-datadir" => Some(JobKind::EtcdDatadir),
            _ => None,
        }
    }
}

/// Who runs a job's schedule slots when several daemons share the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One daemon per slot, whichever claims the slot in the vault first (the etcd snapshot).
    Cluster,
    /// Every daemon runs every slot (the host's own files).
    Host,
}

/// One `[[job]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    /// "etcd-v3" or "files" (checked by [`JobConfig::kind`] so that an unknown one is reported
    /// like any other problem).
    pub kind: String,
    /// Cron expression with a seconds field: "sec min hour day-of-month month day-of-week [year]".
    pub schedule: String,
    /// Each run starts up to this many seconds (chosen at random) after its slot.
    #[serde(default)]
    pub jitter_secs: u64,
    /// A run still going after this many seconds is aborted (a write under way may still land;
    /// the run record says what the vault holds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// A run that fails with a transient error (store, source, I/O) is tried again this many times.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    #[serde(default = "default_backoff")]
    pub retry_backoff_secs: u64,
    /// "cluster" (one daemon per slot; the default for etcd-v3) or "host" (every daemon; the
    /// default for files).
    pub scope: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// etcd-v3: how to reach etcd.
    pub etcd: Option<EtcdOptions>,
    /// files: a capture profile (master, node, etcd, a name in /etc/vault/profiles, a .toml path).
    pub profile: Option<String>,
    /// files: extra absolute path patterns.
    pub paths: Option<Vec<String>>,
    /// files: patterns to leave out.
    pub exclude: Option<Vec<String>>,
    /// files: read the host's files under this directory (default /).
    pub root: Option<PathBuf>,
    /// verify: also download and check this percentage of the packs (a random sample each run).
    pub read_data_percent: Option<f64>,
    /// etcd-v2: hidden keys or directories (names starting with `_`) to capture too.
    pub hidden: Option<Vec<String>>,
    /// etcd-datadir: the member's data dir (default: ETCD_DATA_DIR of etcd.conf under `root`).
    pub data_dir: Option<PathBuf>,
    /// etcd-datadir: the etcd.conf to read (default: /etc/etcd/etcd.conf under `root`).
    pub etcd_conf: Option<PathBuf>,
    /// etcd-datadir: etcdutl or etcdctl to run (default: from PATH).
    pub etcd_tool: Option<PathBuf>,
    /// etcd-v3: continuous capture (docs/FORMAT.md section 8e): commit the watched changes as a
    /// delta segment this often (seconds after a segment's first change); absent or 0: off.
    pub deltas_every_secs: Option<u64>,
    /// etcd-v3 with deltas: ... or once a segment's encoded changes reach this many bytes
    /// (default 32 MiB).
    pub deltas_max_bytes: Option<u64>,
    /// etcd-v3 with deltas: the lease of the job's watcher lock (default 30 s): a standby daemon
    /// takes over within about this long after the watching one died.
    pub deltas_lease_secs: Option<u64>,
    /// `[job.retention]`: which snapshots of the job's groups to keep (the fields of
    /// `vault::ops::retention::RetentionPolicy`); recorded in the vault with the schedule.
    pub retention: Option<RetentionPolicy>,
    /// The job's position among the file's `[[job]]` entries (for key paths like `job[2]`).
    #[serde(skip)]
    pub index: usize,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

fn default_backoff() -> u64 {
    DEFAULT_BACKOFF_SECS
}

impl JobConfig {
    pub fn kind(&self) -> Option<JobKind> {
        JobKind::parse(&self.kind)
    }

    /// The job's scope as written, or its kind's default; `None` when the value is unknown.
    pub fn scope(&self) -> Option<Scope> {
        match self.scope.as_deref() {
            Some("cluster") => Some(Scope::Cluster),
            Some("host") => Some(Scope::Host),
            Some(_) => None,
            None => Some(match self.kind() {
                Some(JobKind::EtcdV3 | JobKind::EtcdV2 | JobKind::Verify) => Scope::Cluster,
                _ => Scope::Host,
            }),
        }
    }

    /// The continuous capture settings of an etcd-v3 job that turned it on.
    pub fn deltas(&self) -> Option<Deltas> {
        let every = self.deltas_every_secs.filter(|&s| s > 0)?;
        (self.kind() == Some(JobKind::EtcdV3)).then(|| Deltas {
            every: std::time::Duration::from_secs(every),
            max_bytes: self.deltas_max_bytes.unwrap_or(vault::ops::deltas::watcher::DEFAULT_MAX_BYTES),
            lease: std::time::Duration::from_secs(self.deltas_lease_secs.unwrap_or(vault::ops::deltas::watcher::DEFAULT_LEASE_SECS)),
        })
    }

    /// The files selection of a files job.
    pub fn selection(&self) -> FilesSelection {
        FilesSelection {
            profile: self.profile.clone(),
            paths: self.paths.clone().unwrap_or_default(),
            exclude: self.exclude.clone().unwrap_or_default(),
            root: self.root.clone().unwrap_or_else(|| PathBuf::from("/")),
        }
    }
}

/// An etcd-v3 job's continuous capture, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Deltas {
    pub every: std::time::Duration,
    pub max_bytes: u64,
    pub lease: std::time::Duration,
}

/// The trimmed content of a one-line secret file the config names (`what`: "token file", ...).
pub fn read_token(path: &Path, what: &str) -> vault::Result<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| vault::Error::usage(format!("cannot read {what} {}", path.display())).with_source(e))?
        .trim()
        .to_string())
}

/// The whole config file.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub global: Global,
    pub jobs: Vec<JobConfig>,
}

/// One problem found in the config file, located by key path and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `job[1].schedule` (jobs counted from 0 in file order); empty for the file.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// `FILE:LINE: KEY: MESSAGE`, as compilers print it.
    pub fn render(&self, file: &Path) -> String {
        let mut s = file.display().to_string();
        if let Some(l) = self.line {
            s += &format!(":{l}");
        }
        if !self.key.is_empty() {
            s += &format!(": {}", self.key);
        }
        s + &format!(": {}", self.message)
    }
}

/// Where each key of the document is: key path -> byte range of the key (or of the array element).
#[derive(Clone, Debug, Default)]
pub struct Locator {
    spans: HashMap<String, Range<usize>>,
    line_starts: Vec<usize>,
}

impl Locator {
    fn new(text: &str, root: &DeTable<'_>) -> Locator {
        let mut l = Locator {
            spans: HashMap::new(),
            line_starts: std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect(),
        };
        l.walk_table("", root);
        l
    }

    fn walk_table(&mut self, prefix: &str, t: &DeTable<'_>) {
        for (k, v) in t.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            self.spans.insert(path.clone(), k.span());
            self.walk_value(&path, v);
        }
    }

    fn walk_value(&mut self, path: &str, v: &Spanned<DeValue<'_>>) {
        match v.get_ref() {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.spans.entry(p.clone()).or_insert(item.span());
                    self.walk_value(&p, item);
                }
            }
            _ => {}
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    /// The line of `key`, or of its nearest enclosing key that is in the file.
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(r) = self.spans.get(k) {
                return Some(self.line_of(r.start));
            }
            let cut = k.rfind(['.', '['])?;
            k = &k[..cut];
        }
    }

    pub fn problem(&self, key: impl Into<String>, message: impl fmt::Display) -> Problem {
        let key = key.into();
        Problem {
            line: self.line(&key),
            key,
            message: message.to_string(),
        }
    }
}

/// A parsed config, with every structural problem found and where each key is. `config` is `None`
/// when the text or the top-level keys do not parse; with other problems it holds what did parse
/// (unknown keys left out, jobs that do not parse left out) so that its other problems can be
/// found too. Use it to run the daemon only when `problems` is empty.
pub struct Parsed {
    pub config: Option<DaemonConfig>,
    pub problems: Vec<Problem>,
    pub locator: Locator,
}

fn de_problem(locator: &Locator, key: &str, e: &toml::de::Error) -> Problem {
    Problem {
        key: key.to_string(),
        line: e.span().map(|s| locator.line_of(s.start)).or_else(|| locator.line(key)),
        message: e.message().trim().to_string(),
    }
}

fn subtable<'a, 'i>(t: &'a mut DeTable<'i>, key: &str) -> Option<&'a mut DeTable<'i>> {
    match t.get_mut(key).map(|v| v.get_mut()) {
        Some(DeValue::Table(t)) => Some(t),
        _ => None,
    }
}

/// Report and remove the keys of `t` that are not in `fields`.
fn strip_unknown(loc: &Locator, t: &mut DeTable<'_>, prefix: &str, fields: &[&str], problems: &mut Vec<Problem>) {
    let unknown: Vec<(String, Range<usize>)> = t
        .keys()
        .filter(|k| !fields.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (name, span) in unknown {
        t.remove(name.as_str());
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        problems.push(Problem {
            key,
            line: Some(loc.line_of(span.start)),
            message: format!("unknown key {name:?}; expected one of: {}", fields.join(", ")),
        });
    }
}

/// The field names of a struct, as its `Deserialize` impl knows them (so they never drift from
/// the library's option structs).
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::Visitor;

    #[derive(Debug)]
    struct Done;
    impl fmt::Display for Done {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Done {}
    impl serde::de::Error for Done {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Done
        }
    }
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Done;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Done> {
            *self.0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Parse the config text: every syntax error, or every structural problem (unknown or missing
/// keys, wrong types) of the top level and of each job.
pub fn parse(text: &str) -> Parsed {
    let (doc, errors) = DeTable::parse_recoverable(text);
    let locator = Locator::new(text, doc.get_ref());
    if !errors.is_empty() {
        let mut problems: Vec<Problem> = errors.iter().map(|e| de_problem(&locator, "", e)).collect();
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        return Parsed {
            config: None,
            problems,
            locator,
        };
    }
    let span = doc.span();
    let mut table = doc.into_inner();
    let mut problems = Vec::new();
    // Unknown keys first, all of them; they are then left out so that the problems behind them
    // (missing keys, wrong types) are found too.
    let top_fields: Vec<&str> = fields_of::<Global>().iter().copied().chain(["job"]).collect();
    strip_unknown(&locator, &mut table, "", &top_fields, &mut problems);
    if let Some(t) = subtable(&mut table, "s3") {
        strip_unknown(&locator, t, "s3", fields_of::<S3Options>(), &mut problems);
    }
    if let Some(t) = subtable(&mut table, "http") {
        strip_unknown(&locator, t, "http", fields_of::<HttpConfig>(), &mut problems);
    }
    if let Some(t) = subtable(&mut table, "webhook") {
        strip_unknown(&locator, t, "webhook", fields_of::<WebhookConfig>(), &mut problems);
    }
    if let Some(DeValue::Array(items)) = table.get_mut("job").map(|v| v.get_mut()) {
        for (i, item) in items.iter_mut().enumerate() {
            if let DeValue::Table(t) = item.get_mut() {
                let prefix = format!("job[{i}]");
                strip_unknown(&locator, t, &prefix, fields_of::<JobConfig>(), &mut problems);
                if let Some(e) = subtable(t, "etcd") {
                    strip_unknown(&locator, e, &format!("{prefix}.etcd"), fields_of::<EtcdOptions>(), &mut problems);
                }
                if let Some(r) = subtable(t, "retention") {
                    strip_unknown(
                        &locator,
                        r,
                        &format!("{prefix}.retention"),
                        fields_of::<RetentionPolicy>(),
                        &mut problems,
                    );
                }
            }
        }
    }
    let mut rest = DeTable::default();
    let mut job_value = None;
    for (k, v) in table {
        if k.get_ref() == "job" {
            job_value = Some(v);
        } else {
            rest.insert(k, v);
        }
    }
    let global = match Global::deserialize(ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(rest)))) {
        Ok(g) => Some(g),
        Err(e) => {
            problems.push(de_problem(&locator, "", &e));
            None
        }
    };
    let mut jobs = Vec::new();
    match job_value {
        None => {}
        Some(v) => match v.into_inner() {
            DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("job[{i}]");
                    match JobConfig::deserialize(ValueDeserializer::from(item)) {
                        Ok(j) => jobs.push(JobConfig { index: i, ..j }),
                        Err(e) => problems.push(de_problem(&locator, &key, &e)),
                    }
                }
            }
            _ => problems.push(locator.problem("job", "must be an array of tables: write each job as a [[job]] section")),
        },
    }
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    let config = global.map(|global| DaemonConfig { global, jobs });
    Parsed { config, problems, locator }
}
