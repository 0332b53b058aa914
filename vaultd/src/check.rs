//! `vaultd check-config`: every problem of a config file, each with its key path and line.
//!
//! Three groups, so that each can be tested alone: [`static_problems`] (the text itself: cron
//! expressions, kinds, names, job settings, patterns, listen address or socket path),
//! [`file_problems`] (files named by the config exist, are readable, and secrets are mode 0600; the
//! API socket's directory exists) and [`vault_problems`] (the vault is reachable and the writer key
//! is its key).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use vault::repo::Vault;
use vault::source::selection::SelectionField;
use vault::store::Store;

use crate::config::{self, DaemonConfig, JobKind, Locator, Problem, Scope};
use crate::listen::Endpoint;

/// A job name: used in metrics labels, URLs and snapshot manifests.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parse a job's cron schedule (seconds field required).
pub fn schedule(text: &str) -> Result<cron::Schedule, String> {
    let fields = text.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "cron expression {text:?} has {fields} field(s); vaultd needs 6 or 7: sec min hour day-of-month month day-of-week [year], e.g. \"0 */15 * * * *\""
        ));
    }
    let s = cron::Schedule::from_str(text).map_err(|e| format!("cron expression {text:?} is invalid: {e}"))?;
    if s.upcoming(chrono::Utc).next().is_none() {
        return Err(format!("cron expression {text:?} never fires again"));
    }
    Ok(s)
}

/// Problems found in the text alone.
pub fn static_problems(cfg: &DaemonConfig, loc: &Locator, profile_dirs: &[PathBuf]) -> Vec<Problem> {
    let mut out = Vec::new();
    let g = &cfg.global;
    if g.repo.trim().is_empty() {
        out.push(loc.problem("repo", "is empty: set the vault URL (/path, file:///path or s3://bucket/prefix)"));
    } else if let Err(e) = Store::open(&g.repo, &g.s3) {
        out.push(loc.problem("repo", e));
    }
    if let Some(Err(e)) = g.fingerprint.as_deref().map(vault::trust::Fingerprint::parse) {
        out.push(loc.problem("fingerprint", e));
    }
    if g.host
        .as_ref()
        .is_some_and(|h| h.trim().is_empty() || h.chars().any(char::is_control))
    {
        out.push(loc.problem(
            "host",
            "must be a non-empty name without control characters (or left out: the system hostname)",
        ));
    }
    match Endpoint::parse(&g.http.listen) {
        Err(e) => out.push(loc.problem("http.listen", e)),
        Ok(Endpoint::Tcp(addr)) if g.http.token_file.is_none() && !addr.ip().is_loopback() => out.push(loc.problem(
            "http.listen",
            format!("{addr} is not a loopback address and no http.token_file is set: the API would be open to the network"),
        )),
        // A unix socket is created 0600: only the daemon's user reaches it.
        Ok(_) => {}
    }
    if !(1..=86_400).contains(&g.claim_lease_secs) {
        out.push(loc.problem("claim_lease_secs", "must be between 1 second and a day"));
    }
    if let Some(w) = &g.webhook {
        match reqwest::Url::parse(&w.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            // The URL itself is not repeated: it may hold a secret.
            _ => out.push(loc.problem("webhook.url", "is not an http:// or https:// URL with a host")),
        }
        if w.timeout_secs == 0 {
            out.push(loc.problem("webhook.timeout_secs", "must be at least 1 second"));
        }
    }
    // Jobs that did not parse are left out of `cfg.jobs` and reported on their own.
    if cfg.jobs.is_empty() && loc.line("job").is_none() {
        out.push(loc.problem("", "no [[job]] entries: the daemon would have nothing to do"));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for job in &cfg.jobs {
        let i = job.index;
        let key = |k: &str| format!("job[{i}].{k}");
        if !valid_name(&job.name) {
            out.push(loc.problem(
                key("name"),
                format!("{:?} is not a valid job name: use 1-64 letters, digits, '-', '_' or '.'", job.name),
            ));
        }
        if let Some(first) = seen.insert(&job.name, i) {
            let first_line = loc
                .line(&format!("job[{first}].name"))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            out.push(loc.problem(
                key("name"),
                format!("job name {:?} is used twice: job[{first}]{first_line} has it too", job.name),
            ));
        }
        if let Err(e) = schedule(&job.schedule) {
            out.push(loc.problem(key("schedule"), e));
        }
        if job.scope().is_none() {
            out.push(loc.problem(
                key("scope"),
                format!(
                    "unknown scope {:?}: expected \"cluster\" (one daemon per slot) or \"host\" (every daemon)",
                    job.scope.as_deref().unwrap_or_default()
                ),
            ));
        }
        if job.timeout_secs == 0 {
            out.push(loc.problem(key("timeout_secs"), "must be at least 1 second"));
        }
        if let Some(r) = &job.retention {
            if job.kind() == Some(JobKind::Verify) {
                out.push(loc.problem(
                    key("retention"),
                    "a verify job takes no snapshots and so no retention policy: put [job.retention] under the capture jobs",
                ));
            } else if let Err(e) = r.check() {
                out.push(loc.problem(key("retention"), e));
            }
        }
        for k in job.tags.keys() {
            if k.is_empty() {
                out.push(loc.problem(key("tags"), "a tag has an empty name"));
            }
        }
        let files_keys = [
            ("profile", job.profile.is_some()),
            ("paths", job.paths.is_some()),
            ("exclude", job.exclude.is_some()),
            ("root", job.root.is_some()),
        ];
        let datadir_keys = [
            ("hidden", false),
            ("data_dir", job.data_dir.is_some()),
            ("etcd_conf", job.etcd_conf.is_some()),
            ("etcd_tool", job.etcd_tool.is_some()),
        ];
        if job.hidden.is_some() && job.kind() != Some(JobKind::EtcdV2) {
            out.push(loc.problem(key("hidden"), "applies to etcd-v2 jobs only"));
        }
        if job.kind() != Some(JobKind::EtcdDatadir) {
            for (k, set) in &datadir_keys[1..] {
                if *set {
                    out.push(loc.problem(key(k), "applies to etcd-datadir jobs only"));
                }
            }
        }
        let deltas_keys = [
            ("deltas_every_secs", job.deltas_every_secs.is_some()),
            ("deltas_max_bytes", job.deltas_max_bytes.is_some()),
            ("deltas_lease_secs", job.deltas_lease_secs.is_some()),
        ];
        if job.kind().is_some_and(|k| k != JobKind::EtcdV3) {
            for (k, set) in deltas_keys {
                if set {
                    out.push(loc.problem(key(k), "applies to etcd-v3 jobs only (continuous capture of etcd's changes)"));
                }
            }
        }
        if job.deltas_max_bytes.is_some_and(|b| b < 64 << 10) {
            out.push(loc.problem(key("deltas_max_bytes"), "must be at least 65536 (64 KiB)"));
        }
        if let Some(l) = job.deltas_lease_secs
            && !(3..=3600).contains(&l)
        {
            out.push(loc.problem(key("deltas_lease_secs"), "must be between 3 and 3600 seconds"));
        }
        if (job.deltas_max_bytes.is_some() || job.deltas_lease_secs.is_some()) && job.deltas_every_secs.unwrap_or(0) == 0 {
            out.push(loc.problem(
                key("deltas_every_secs"),
                "continuous capture is off (deltas_every_secs absent or 0), so deltas_max_bytes and deltas_lease_secs do nothing: set deltas_every_secs (e.g. 20) or remove them",
            ));
        }
        if job.read_data_percent.is_some() && job.kind().is_some_and(|k| k != JobKind::Verify) {
            out.push(loc.problem(key("read_data_percent"), "applies to verify jobs only"));
        }
        match job.kind() {
            None => out.push(loc.problem(
                key("kind"),
                format!(
                    "unknown kind {:?}: expected one of {}",
                    job.kind,
                    JobKind::NAMES.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
                ),
            )),
            Some(JobKind::EtcdV3) => {
                for (k, set) in files_keys {
                    if set {
                        out.push(loc.problem(key(k), "applies to files jobs only, and this job's kind is \"etcd-v3\""));
                    }
                }
                match &job.etcd {
                    None => out.push(loc.problem(
                        key("kind"),
                        "an etcd-v3 job needs a [job.etcd] table with endpoints (and cacert, cert, key for TLS)",
                    )),
                    Some(e) => {
                        if e.endpoints.is_empty() {
                            out.push(loc.problem(key("etcd.endpoints"), "is empty: list the etcd client URLs"));
                        }
                        for (n, ep) in e.endpoints.iter().enumerate() {
                            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                                out.push(loc.problem(
                                    format!("job[{i}].etcd.endpoints[{n}]"),
                                    format!("{ep:?} is not a client URL like https://10.0.0.1:2379"),
                                ));
                            }
                        }
                        if e.cert.is_some() != e.key.is_some() {
                            out.push(loc.problem(key("etcd"), "cert and key go together: set both or neither"));
                        }
                    }
                }
            }
            Some(JobKind::EtcdV2) => {
                for (k, set) in files_keys.into_iter().chain(datadir_keys) {
                    if set {
                        out.push(loc.problem(key(k), "does not apply to etcd-v2 jobs"));
                    }
                }
                match &job.etcd {
                    None => out.push(loc.problem(
                        key("kind"),
                        "an etcd-v2 job needs a [job.etcd] table with endpoints (and cacert, cert, key for TLS)",
                    )),
                    Some(e) => out.extend(etcd_access_problems(loc, i, e)),
                }
            }
            Some(JobKind::EtcdDatadir) => {
                for (k, set) in files_keys
                    .into_iter()
                    .filter(|(k, _)| *k != "root")
                    .chain([("hidden", job.hidden.is_some())])
                {
                    if set {
                        out.push(loc.problem(key(k), "does not apply to etcd-datadir jobs"));
                    }
                }
                if let Some(e) = &job.etcd {
                    out.extend(etcd_access_problems(loc, i, e));
                }
            }
            Some(JobKind::Verify) => {
                for (k, set) in files_keys.into_iter().chain([("etcd", job.etcd.is_some())]) {
                    if set {
                        out.push(loc.problem(
                            key(k),
                            format!(
                                "does not apply to verify jobs (it is a setting of {} jobs)",
                                if k == "etcd" { "etcd-v3" } else { "files" }
                            ),
                        ));
                    }
                }
                if let Some(p) = job.read_data_percent
                    && !(p > 0.0 && p <= 100.0)
                {
                    out.push(loc.problem(key("read_data_percent"), format!("{p} is not a percentage in (0, 100]")));
                }
            }
            Some(JobKind::Files) => {
                if job.etcd.is_some() {
                    out.push(loc.problem(key("etcd"), "applies to etcd-v3 jobs only, and this job's kind is \"files\""));
                }
                for (field, e) in job.selection().problems(profile_dirs, false) {
                    let k = match field {
                        SelectionField::Profile if job.profile.is_none() => key("kind"),
                        SelectionField::Profile => key("profile"),
                        SelectionField::Path(n) => format!("job[{i}].paths[{n}]"),
                        SelectionField::Exclude(n) => format!("job[{i}].exclude[{n}]"),
                        SelectionField::Root => key("root"),
                    };
                    out.push(loc.problem(k, e));
                }
            }
        }
    }
    out
}

/// Check that a file exists and can be read; `secret` files must also be mode 0600 (or stricter).
fn file_problem(loc: &Locator, key: &str, path: &Path, what: &str, secret: bool) -> Option<Problem> {
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(loc.problem(key, format!("cannot use {what} {}: {e}", path.display()))),
    };
    if !md.is_file() {
        return Some(loc.problem(key, format!("{what} {} is not a regular file", path.display())));
    }
    if let Err(e) = std::fs::File::open(path) {
        return Some(loc.problem(key, format!("cannot read {what} {}: {e}", path.display())));
    }
    let mode = md.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Some(loc.problem(
            key,
            format!(
                "{what} {} is mode {mode:04o}: a secret must be readable by its owner only (chmod 600 {})",
                path.display(),
                path.display()
            ),
        ));
    }
    None
}

/// A unix socket for the API needs an existing directory, and nothing but a (stale) socket where
/// it goes: the daemon replaces only that.
fn socket_problem(loc: &Locator, sock: &Path) -> Option<Problem> {
    let dir = sock.parent()?;
    if !dir.is_dir() {
        return Some(loc.problem(
            "http.listen",
            format!(
                "the socket's directory {} does not exist: create it (mkdir -m 700 {}); under systemd, RuntimeDirectory=vaultd creates /run/vaultd when the service starts",
                dir.display(),
                dir.display()
            ),
        ));
    }
    let md = std::fs::symlink_metadata(sock).ok()?;
    (!md.file_type().is_socket()).then(|| {
        loc.problem(
            "http.listen",
            format!(
                "{} exists and is not a socket: vaultd replaces only a stale socket; remove it or choose another path",
                sock.display()
            ),
        )
    })
}

/// Problems with the files the config names. `config_path` is the config file itself: it must be
/// private too when it holds an S3 secret.
pub fn file_problems(cfg: &DaemonConfig, loc: &Locator, config_path: Option<&Path>) -> Vec<Problem> {
    let g = &cfg.global;
    let mut out: Vec<Problem> = Vec::new();
    out.extend(file_problem(loc, "writer_key", &g.writer_key, "writer key", true));
    if let Some(t) = &g.http.token_file {
        match file_problem(loc, "http.token_file", t, "token file", true) {
            Some(p) => out.push(p),
            None => {
                if std::fs::read_to_string(t).map(|s| s.trim().is_empty()).unwrap_or(true) {
                    out.push(loc.problem("http.token_file", format!("token file {} is empty", t.display())));
                }
            }
        }
    }
    if let Some(t) = g.webhook.as_ref().and_then(|w| w.token_file.as_ref()) {
        out.extend(file_problem(loc, "webhook.token_file", t, "webhook token file", true));
    }
    if let Ok(Endpoint::Unix(sock)) = Endpoint::parse(&g.http.listen) {
        out.extend(socket_problem(loc, &sock));
    }
    if let Some(c) = &g.catalog {
        let parent = c.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            out.push(loc.problem("catalog", format!("the catalog's directory {} does not exist", parent.display())));
        }
    }
    if let (Some(_), Some(p)) = (&g.s3.secret_access_key, config_path)
        && let Ok(md) = std::fs::metadata(p)
        && md.permissions().mode() & 0o077 != 0
    {
        out.push(loc.problem(
            "s3.secret_access_key",
            format!(
                "the config file holds an S3 secret but is mode {:04o}: chmod 600 {}",
                md.permissions().mode() & 0o777,
                p.display()
            ),
        ));
    }
    for job in &cfg.jobs {
        let i = job.index;
        match job.kind() {
            Some(JobKind::EtcdV3 | JobKind::EtcdV2) => {
                if let Some(e) = &job.etcd {
                    let files = [
                        ("cacert", &e.cacert, "etcd CA certificate", false),
                        ("cert", &e.cert, "etcd client certificate", false),
                        ("key", &e.key, "etcd client key", true),
                    ];
                    for (k, path, what, secret) in files {
                        if let Some(p) = path {
                            out.extend(file_problem(loc, &format!("job[{i}].etcd.{k}"), p, what, secret));
                        }
                    }
                }
            }
            Some(JobKind::Files) => {
                let sel = job.selection();
                if !sel.root.is_dir() {
                    out.push(loc.problem(
                        format!("job[{i}].root"),
                        format!("capture root {} is not a directory", sel.root.display()),
                    ));
                }
            }
            Some(JobKind::EtcdDatadir) => {
                let opts = job_datadir_options(job);
                if let Err(e) = vault::source::etcd_datadir::resolve(&opts) {
                    out.push(loc.problem(format!("job[{i}].data_dir"), e.to_string()));
                }
            }
            Some(JobKind::Verify) | None => {}
        }
    }
    out
}

/// The capture options of an etcd-datadir job.
pub fn job_datadir_options(job: &config::JobConfig) -> vault::source::etcd_datadir::DatadirOptions {
    vault::source::etcd_datadir::DatadirOptions {
        data_dir: job.data_dir.clone(),
        root: job.root.clone(),
        conf: job.etcd_conf.clone(),
        etcd: job.etcd.clone().unwrap_or_default(),
        tool: job.etcd_tool.clone(),
    }
}

/// Problems of a job's `[job.etcd]` table that need no file access.
fn etcd_access_problems(loc: &Locator, i: usize, e: &vault::source::etcd_v3::EtcdOptions) -> Vec<Problem> {
    let mut out = Vec::new();
    for (n, ep) in e.endpoints.iter().enumerate() {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            out.push(loc.problem(
                format!("job[{i}].etcd.endpoints[{n}]"),
                format!("{ep:?} is not a client URL like https://10.0.0.1:2379"),
            ));
        }
    }
    if e.cert.is_some() != e.key.is_some() {
        out.push(loc.problem(format!("job[{i}].etcd"), "cert and key go together: set both or neither"));
    }
    out
}

/// Whether the vault can be opened with the writer key.
pub async fn vault_problems(cfg: &DaemonConfig, loc: &Locator) -> Vec<Problem> {
    let g = &cfg.global;
    let store = match Store::open(&g.repo, &g.s3) {
        Ok(s) => s,
        Err(e) => return vec![loc.problem("repo", e)],
    };
    let keys = g.key_source();
    match Vault::open(store, &keys).await {
        Ok(v) if !v.config.store.conditional_create => cfg
            .jobs
            .iter()
            .filter(|j| j.scope() == Some(Scope::Cluster))
            .map(|j| {
                loc.problem(
                    format!("job[{}].scope", j.index),
                    "is \"cluster\", but the vault's store did not honour conditional create at init, so daemons cannot claim slots safely: set scope = \"host\" or move the vault to a store with conditional writes",
                )
            })
            .collect(),
        Ok(_) => Vec::new(),
        Err(e) if e.kind == vault::ErrorKind::Key && e.what.contains("fingerprint") => vec![loc.problem("fingerprint", e)],
        Err(e) if e.kind == vault::ErrorKind::Key => vec![loc.problem("writer_key", e)],
        Err(e) => vec![loc.problem("repo", e)],
    }
}

/// Everything `check-config` reports, rendered as `FILE:LINE: KEY: MESSAGE`. `live` adds the
/// checks that touch the vault.
pub async fn check_config(path: &Path, profile_dirs: &[PathBuf], live: bool) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("cannot read config file {}: {e}", path.display())],
    };
    let parsed = config::parse(&text);
    let mut problems = parsed.problems;
    if let Some(cfg) = &parsed.config {
        let loc = &parsed.locator;
        problems.extend(static_problems(cfg, loc, profile_dirs));
        let files = file_problems(cfg, loc, Some(path));
        let key_ok = !files.iter().any(|p| p.key == "writer_key");
        problems.extend(files);
        let repo_ok = !problems.iter().any(|p| p.key == "repo");
        if live && key_ok && repo_ok {
            problems.extend(vault_problems(cfg, loc).await);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    problems.iter().map(|p| p.render(path)).collect()
}

/// Load a config for running: structure, static and file checks (not the vault, which the daemon
/// opens itself). Every problem, rendered, when there is any.
pub fn load_checked(path: &Path, profile_dirs: &[PathBuf]) -> Result<DaemonConfig, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read config file {}: {e}", path.display())])?;
    let parsed = config::parse(&text);
    let mut problems = parsed.problems;
    if let Some(cfg) = &parsed.config {
        problems.extend(static_problems(cfg, &parsed.locator, profile_dirs));
        problems.extend(file_problems(cfg, &parsed.locator, Some(path)));
    }
    match parsed.config {
        Some(cfg) if problems.is_empty() => Ok(cfg),
        _ => {
            problems.sort_by_key(|p| p.line.unwrap_or(0));
            Err(problems.iter().map(|p| p.render(path)).collect())
        }
    }
}
