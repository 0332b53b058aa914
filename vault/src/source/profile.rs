//! Capture profiles: which host files make up the backup of an OKD master, node or etcd host (the
//! runbook's lists, `config/profiles/*.toml`), and what must be restarted after they are restored.
//!
//! A profile is a TOML file (one struct serves the config file and the library):
//!
//! ```toml
//! description = "..."
//! paths = ["/etc/origin", "/etc/sysconfig/atomic-*"]
//! exclude = ["/etc/origin/**/*.bak"]
//! packages = true
//! [[restart]]
//! paths = ["/etc/origin/master/**"]
//! services = ["atomic-openshift-master-api", "atomic-openshift-master-controllers"]
//! [[restart]]
//! paths = ["/etc/pki/ca-trust/source/anchors/**"]
//! commands = [["update-ca-trust"]]
//! ```
//!
//! Patterns ([`PathPattern`]) are absolute paths on the captured host. `*` matches any run of
//! characters within one component (dot files included), `?` one character, and a component that is
//! exactly `**` any number of components, zero included. A pattern *covers* a path when it matches
//! the path or one of its parent directories: naming a directory takes everything below it, for
//! capture, exclusion and restart rules alike.
//!
//! The built-in profiles are compiled into the binary so that it works on a bare host; a file
//! `NAME.toml` in one of the profile directories (normally [`SYSTEM_PROFILE_DIR`]) replaces the
//! built-in profile of that name.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::service::check_service_name;

/// Where operators put their own profiles; a file here replaces the built-in profile of its name.
pub const SYSTEM_PROFILE_DIR: &str = "/etc/vault/profiles";

/// The built-in profiles, `(name, TOML text)`, from `config/profiles/`.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("etcd", include_str!("../../../config/profiles/etcd.toml")),
    ("master", include_str!("../../../config/profiles/master.toml")),
    ("node", include_str!("../../../config/profiles/node.toml")),
];

/// A capture profile: what to capture from a host and what to restart after restoring it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    /// What to capture. Patterns that match nothing are reported, not fatal.
    pub paths: Vec<PathPattern>,
    /// What not to capture, even below a captured directory.
    #[serde(default)]
    pub exclude: Vec<PathPattern>,
    /// Also record the list of installed packages (see [`super::packages`]).
    #[serde(default)]
    pub packages: bool,
    /// What to restart or run after restoring files, in order.
    #[serde(default)]
    pub restart: Vec<RestartRule>,
    /// The profile's name: the built-in name, or the file name without `.toml`.
    #[serde(skip)]
    pub name: String,
    /// Where the profile was loaded from.
    #[serde(skip)]
    pub origin: ProfileOrigin,
}

/// One `[[restart]]` table: when a restored path is covered by one of `paths`, run `commands`
/// and restart `services`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRule {
    pub paths: Vec<PathPattern>,
    /// systemd units, restarted with `systemctl restart NAME`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Commands as argument vectors, run without a shell: `[["update-ca-trust"]]`.
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
}

/// Where a profile came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProfileOrigin {
    #[default]
    BuiltIn,
    File(PathBuf),
}

impl fmt::Display for ProfileOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileOrigin::BuiltIn => write!(f, "built in"),
            ProfileOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A profile that [`Profile::load`] would find by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileEntry {
    pub name: String,
    pub origin: ProfileOrigin,
}

impl Profile {
    /// Load a profile by name or path. A value ending in `.toml` is a file path. A name is looked
    /// up as `DIR/NAME.toml` in `extra_dirs` in order (normally `[SYSTEM_PROFILE_DIR]`; missing
    /// directories are skipped), then among the built-in profiles.
    pub fn load(name_or_path: &str, extra_dirs: &[PathBuf]) -> Result<Profile> {
        if name_or_path.ends_with(".toml") {
            return Profile::from_file(Path::new(name_or_path));
        }
        let name = name_or_path;
        if !is_profile_name(name) {
            return Err(Error::usage(format!("{name:?} is not a profile name"))
                .hint("give a profile name such as master, node or etcd, or a path to a profile file ending in .toml"));
        }
        for dir in extra_dirs {
            let file = dir.join(format!("{name}.toml"));
            match std::fs::metadata(&file) {
                Ok(_) => return Profile::from_file(&file),
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(Error::io(format!("cannot read profile file {}", file.display())).with_source(e)),
            }
        }
        if let Some(profile) = Profile::builtin(name) {
            return profile;
        }
        let available: Vec<String> = Profile::available(extra_dirs)
            .into_iter()
            .map(|e| match e.origin {
                ProfileOrigin::BuiltIn => e.name,
                ProfileOrigin::File(p) => format!("{} ({})", e.name, p.display()),
            })
            .collect();
        let searched: Vec<String> = extra_dirs.iter().map(|d| d.display().to_string()).collect();
        let mut hint = String::from("give one of the available profiles, or a path to a profile file ending in .toml");
        if !searched.is_empty() {
            hint.push_str(&format!("; profile files NAME.toml are looked up in {}", searched.join(", ")));
        }
        Err(Error::usage(format!("unknown profile {name:?}; available: {}", available.join(", "))).hint(hint))
    }

    /// A built-in profile by name (`None` if there is none of that name).
    pub fn builtin(name: &str) -> Option<Result<Profile>> {
        BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| Profile::parse(text, n, ProfileOrigin::BuiltIn))
    }

    /// Load a profile file; its name is the file name without `.toml`.
    pub fn from_file(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read profile file {}", path.display())).with_source(e))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Profile::parse(&text, &name, ProfileOrigin::File(path.to_path_buf()))
    }

    /// Parse and check a profile's TOML text.
    pub fn parse(text: &str, name: &str, origin: ProfileOrigin) -> Result<Profile> {
        let what = match &origin {
            ProfileOrigin::BuiltIn => format!("built-in profile {name:?}"),
            ProfileOrigin::File(p) => format!("profile file {}", p.display()),
        };
        let mut profile: Profile =
            toml::from_str(text).map_err(|e| Error::usage(format!("{what} is invalid: {}", e.to_string().trim())))?;
        profile.check().map_err(|e| Error {
            what: format!("{what}: {}", e.what),
            ..e
        })?;
        profile.name = name.to_string();
        profile.origin = origin;
        Ok(profile)
    }

    /// The profiles [`Profile::load`] finds by name, sorted by name, each with the origin that wins.
    /// Unreadable directories are skipped.
    pub fn available(extra_dirs: &[PathBuf]) -> Vec<ProfileEntry> {
        let mut entries: Vec<ProfileEntry> = Vec::new();
        for dir in extra_dirs {
            let Ok(listing) = std::fs::read_dir(dir) else { continue };
            let mut files: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for file in files {
                let Some(name) = file.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".toml")) else {
                    continue;
                };
                if is_profile_name(name) && !entries.iter().any(|e| e.name == name) {
                    entries.push(ProfileEntry {
                        name: name.to_string(),
                        origin: ProfileOrigin::File(file.clone()),
                    });
                }
            }
        }
        for (name, _) in BUILTIN_PROFILES {
            if !entries.iter().any(|e| e.name == *name) {
                entries.push(ProfileEntry {
                    name: name.to_string(),
                    origin: ProfileOrigin::BuiltIn,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// Check what serde cannot: at least one path, and restart rules that do something.
    fn check(&self) -> Result<()> {
        if self.paths.is_empty() {
            return Err(Error::usage("lists no paths to capture").hint("add paths = [\"/etc/...\"]"));
        }
        for (i, rule) in self.restart.iter().enumerate() {
            let which = format!("restart rule {}", i + 1);
            if rule.paths.is_empty() {
                return Err(Error::usage(format!("{which} has no paths")));
            }
            if rule.services.is_empty() && rule.commands.is_empty() {
                return Err(Error::usage(format!("{which} has neither services nor commands")));
            }
            for service in &rule.services {
                check_service_name(service).map_err(|why| Error::usage(format!("{which}: service {service:?} {why}")))?;
            }
            for argv in &rule.commands {
                if argv.first().is_none_or(|program| program.trim().is_empty()) {
                    return Err(Error::usage(format!("{which} has an empty command"))
                        .hint("write each command as a list of words, like commands = [[\"update-ca-trust\"]]"));
                }
            }
        }
        Ok(())
    }

    /// Find what to capture on the host whose `/` is at `root` (`/` normally, or a mounted disk with
    /// `--root`). Returns the existing paths as in-host absolute paths (`/etc/origin`; read them at
    /// [`under_root`]`(root, path)`), sorted, without excluded paths and without paths that lie
    /// below another returned path (directories are walked by the caller, who checks
    /// [`Profile::is_excluded`] for each entry), and the patterns that matched nothing.
    pub fn expand(&self, root: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
        let mut found = BTreeSet::new();
        let mut missing = Vec::new();
        for pattern in &self.paths {
            let hits = pattern.expand(root)?;
            if hits.is_empty() {
                missing.push(pattern.to_string());
            }
            found.extend(hits.into_iter().filter(|p| !self.is_excluded(p)));
        }
        let roots = found
            .iter()
            .filter(|p| !p.ancestors().skip(1).any(|a| found.contains(a)))
            .cloned()
            .collect();
        Ok((roots, missing))
    }

    /// Whether an in-host absolute path is excluded (an exclude pattern covers it).
    pub fn is_excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.covers(path))
    }

    /// What to run and restart after restoring `paths` (in-host absolute paths).
    pub fn restarts_for(&self, paths: &[PathBuf]) -> RestartPlan {
        let mut plan = RestartPlan::default();
        for rule in &self.restart {
            let hits: Vec<&PathBuf> = paths.iter().filter(|p| rule.paths.iter().any(|pat| pat.covers(p))).collect();
            if hits.is_empty() {
                continue;
            }
            for argv in &rule.commands {
                let i = match plan.commands.iter().position(|c| &c.argv == argv) {
                    Some(i) => i,
                    None => {
                        plan.commands.push(PlannedCommand {
                            argv: argv.clone(),
                            triggered_by: Vec::new(),
                        });
                        plan.commands.len() - 1
                    }
                };
                add_unique(&mut plan.commands[i].triggered_by, &hits);
            }
            for service in &rule.services {
                let i = match plan.services.iter().position(|s| &s.service == service) {
                    Some(i) => i,
                    None => {
                        plan.services.push(PlannedService {
                            service: service.clone(),
                            triggered_by: Vec::new(),
                        });
                        plan.services.len() - 1
                    }
                };
                add_unique(&mut plan.services[i].triggered_by, &hits);
            }
        }
        plan
    }
}

fn add_unique(list: &mut Vec<PathBuf>, items: &[&PathBuf]) {
    for item in items {
        if !list.contains(item) {
            list.push((*item).clone());
        }
    }
}

/// Plain names only: letters, digits, `.`, `_`, `-`, not starting with `.`.
fn is_profile_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Where an in-host absolute path lives when the host's `/` is at `root` (one implementation, in
/// `source::files`): `under_root("/mnt/x", "/etc/origin")` is `/mnt/x/etc/origin`.
pub use super::files::under_root;

// ---------------------------------------------------------------------------------------------
// Path patterns

/// An absolute path pattern with `*`, `?` and `**` (see the module documentation). Parsed and
/// checked on construction; (de)serialized as its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// A plain name.
    Literal(String),
    /// A name with `*` or `?`.
    Wild(String),
    /// `**`: any number of components.
    AnyDepth,
}

impl PathPattern {
    pub fn new(text: &str) -> Result<PathPattern> {
        let bad = |why: &str| Error::usage(format!("path pattern {text:?} {why}"));
        if !text.starts_with('/') {
            return Err(bad("is not absolute").hint("patterns are absolute paths on the captured host, like /etc/origin"));
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\')) {
            return Err(bad(&format!("contains {c:?}, which patterns do not support"))
                .hint("use * and ?, and write alternatives as separate patterns"));
        }
        let mut parts = Vec::new();
        for component in text.split('/').filter(|c| !c.is_empty()) {
            let part = match component {
                "." | ".." => return Err(bad("contains a . or .. component")),
                "**" if parts.last() == Some(&Part::AnyDepth) => continue,
                "**" => Part::AnyDepth,
                c if c.contains("**") => {
                    return Err(bad("has ** inside a name").hint("** must be a whole component, as in /etc/origin/**; use * within a name"));
                }
                c if c.contains(['*', '?']) => Part::Wild(c.to_string()),
                c => Part::Literal(c.to_string()),
            };
            parts.push(part);
        }
        if parts.is_empty() || parts == [Part::AnyDepth] {
            return Err(bad("names the whole file system"));
        }
        Ok(PathPattern {
            text: text.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches exactly this absolute path.
    pub fn matches(&self, path: &Path) -> bool {
        path_names(path).is_some_and(|names| match_parts(&self.parts, &names, false))
    }

    /// Whether the pattern matches this absolute path or one of its parent directories.
    pub fn covers(&self, path: &Path) -> bool {
        path_names(path).is_some_and(|names| match_parts(&self.parts, &names, true))
    }

    /// The existing in-host paths that this pattern matches on the host whose `/` is at `root`,
    /// sorted. Symbolic links are not followed by `**`; a dangling link still counts as existing.
    pub fn expand(&self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut current = vec![PathBuf::from("/")];
        for (i, part) in self.parts.iter().enumerate() {
            let last = i + 1 == self.parts.len();
            let mut next = Vec::new();
            for dir in &current {
                match part {
                    Part::Literal(name) => next.push(dir.join(name)),
                    Part::Wild(pattern) => {
                        for name in self.list_dir(root, dir)? {
                            if wildcard_match(pattern, &name.to_string_lossy()) {
                                next.push(dir.join(name));
                            }
                        }
                    }
                    Part::AnyDepth => {
                        next.push(dir.clone());
                        self.descendants(root, dir, last, &mut next)?;
                    }
                }
            }
            current = next;
        }
        let mut found = Vec::new();
        for path in current {
            match std::fs::symlink_metadata(under_root(root, &path)) {
                Ok(_) => found.push(path),
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(self.io_error("cannot look at", root, &path, e)),
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Names in an in-host directory; none if it does not exist or is not a directory.
    fn list_dir(&self, root: &Path, dir: &Path) -> Result<Vec<OsString>> {
        let listing = match std::fs::read_dir(under_root(root, dir)) {
            Ok(l) => l,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.io_error("cannot list", root, dir, e)),
        };
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| self.io_error("cannot list", root, dir, e))?;
            names.push(entry.file_name());
        }
        names.sort();
        Ok(names)
    }

    /// Everything below an in-host directory (only directories unless `with_files`), without
    /// following symbolic links.
    fn descendants(&self, root: &Path, dir: &Path, with_files: bool, out: &mut Vec<PathBuf>) -> Result<()> {
        for name in self.list_dir(root, dir)? {
            let path = dir.join(name);
            let is_dir = match std::fs::symlink_metadata(under_root(root, &path)) {
                Ok(m) => m.is_dir(),
                Err(e) if is_absent(&e) => continue, // vanished meanwhile
                Err(e) => return Err(self.io_error("cannot look at", root, &path, e)),
            };
            if is_dir || with_files {
                out.push(path.clone());
            }
            if is_dir {
                self.descendants(root, &path, with_files, out)?;
            }
        }
        Ok(())
    }

    fn io_error(&self, doing: &str, root: &Path, path: &Path, e: io::Error) -> Error {
        let denied = e.kind() == io::ErrorKind::PermissionDenied;
        let err = Error::io(format!("{doing} {} (for pattern {})", under_root(root, path).display(), self.text)).with_source(e);
        if denied {
            err.hint("host files are captured as root: run with sudo")
        } else {
            err
        }
    }
}

impl TryFrom<String> for PathPattern {
    type Error = Error;
    fn try_from(text: String) -> Result<PathPattern> {
        PathPattern::new(&text)
    }
}

impl From<PathPattern> for String {
    fn from(p: PathPattern) -> String {
        p.text
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.text)
    }
}

/// The names of an absolute path's components; `None` for relative paths and paths with `..`.
fn path_names(path: &Path) -> Option<Vec<Cow<'_, str>>> {
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return None;
    }
    let mut names = Vec::new();
    for c in components {
        match c {
            Component::Normal(name) => names.push(name.to_string_lossy()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(names)
}

/// Match pattern parts against path names; with `prefix_ok`, names may be left over (the pattern
/// matched a parent directory).
fn match_parts(parts: &[Part], names: &[Cow<'_, str>], prefix_ok: bool) -> bool {
    match parts.split_first() {
        None => names.is_empty() || prefix_ok,
        Some((Part::AnyDepth, rest)) => (0..=names.len()).any(|skip| match_parts(rest, &names[skip..], prefix_ok)),
        Some((part, rest)) => match names.split_first() {
            None => false,
            Some((name, tail)) => {
                let hit = match part {
                    Part::Literal(lit) => lit == name,
                    Part::Wild(pattern) => wildcard_match(pattern, name),
                    Part::AnyDepth => unreachable!("handled above"),
                };
                hit && match_parts(rest, tail, prefix_ok)
            }
        },
    }
}

/// `*` and `?` within one name.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None; // (index of the last '*', name index it resumes at)
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if let Some((star, resume)) = backtrack {
            pi = star + 1;
            ni = resume + 1;
            backtrack = Some((star, resume + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------------
// Restart plans: made here from the profile's rules, run by the host layer.

pub use crate::host::command::shell_join;
pub use crate::host::restart::{ActionOutcome, ActionStatus, PlannedCommand, PlannedService, RestartPlan};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn pat(text: &str) -> PathPattern {
        PathPattern::new(text).unwrap()
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn wildcards_match_within_one_name() {
        assert!(wildcard_match("atomic-*", "atomic-openshift-node"));
        assert!(wildcard_match("atomic-*", "atomic-"));
        assert!(!wildcard_match("atomic-*", "atomic"));
        assert!(wildcard_match("docker-*", "docker-storage-setup.rpmnew"));
        assert!(wildcard_match("*.conf", ".hidden.conf"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("*a*a*", "banana"));
        assert!(wildcard_match("?.crt", "a.crt"));
        assert!(!wildcard_match("?.crt", "ab.crt"));
        assert!(wildcard_match("***", ""));
        assert!(wildcard_match("ca-?ey", "ca-key"));
        assert!(wildcard_match("système*", "système.conf"));
    }

    #[test]
    fn patterns_match_whole_paths() {
        let p = pat("/etc/sysconfig/atomic-openshift-*");
        assert!(p.matches(Path::new("/etc/sysconfig/atomic-openshift-node")));
        assert!(!p.matches(Path::new("/etc/sysconfig/atomic-openshift-node/x")));
        assert!(!p.matches(Path::new("/etc/sysconfig/iptables")));
        assert!(
            !p.matches(Path::new("etc/sysconfig/atomic-openshift-node")),
            "relative paths never match"
        );
        assert!(!p.matches(Path::new("/etc/sysconfig/../sysconfig/atomic-openshift-node")));
        assert!(pat("/etc//origin/").matches(Path::new("/etc/origin")));
        assert!(pat("/etc/origin").matches(Path::new("/etc/./origin")));
    }

    #[test]
    fn double_star_spans_any_number_of_directories() {
        let p = pat("/etc/origin/master/**");
        assert!(p.matches(Path::new("/etc/origin/master")));
        assert!(p.matches(Path::new("/etc/origin/master/master-config.yaml")));
        assert!(p.matches(Path::new("/etc/origin/master/a/b/c")));
        assert!(!p.matches(Path::new("/etc/origin/node/node-config.yaml")));
        assert!(!p.matches(Path::new("/etc/origin")));

        let p = pat("/etc/**/*.conf");
        assert!(p.matches(Path::new("/etc/dnsmasq.conf")));
        assert!(p.matches(Path::new("/etc/dnsmasq.d/origin-dns.conf")));
        assert!(p.matches(Path::new("/etc/origin/node/node-dnsmasq.conf")));
        assert!(!p.matches(Path::new("/etc/origin/node/node-config.yaml")));
        assert!(!p.matches(Path::new("/var/x.conf")));

        assert!(pat("/etc/**/**/x").matches(Path::new("/etc/x")));
        assert!(pat("/**/ca.crt").matches(Path::new("/etc/origin/node/ca.crt")));
    }

    #[test]
    fn covering_includes_everything_below_a_match() {
        let p = pat("/etc/dnsmasq*");
        assert!(p.covers(Path::new("/etc/dnsmasq.conf")));
        assert!(p.covers(Path::new("/etc/dnsmasq.d/origin-dns.conf")));
        assert!(!p.covers(Path::new("/etc")), "a parent of a match is not covered");
        assert!(!p.covers(Path::new("/etc/dns")));
        assert!(pat("/etc/origin").covers(Path::new("/etc/origin/master/ca.key")));
        assert!(!pat("/etc/origin").covers(Path::new("/etc/origin-old/x")));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        for (text, why) in [
            ("etc/origin", "not absolute"),
            ("/etc/sysconfig/{iptables,flanneld}", "'{'"),
            ("/etc/[ab]", "'['"),
            ("/etc/../root", ".."),
            ("/etc/a**", "** inside a name"),
            ("/", "whole file system"),
            ("/**", "whole file system"),
            ("", "not absolute"),
        ] {
            let e = PathPattern::new(text).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn the_builtin_profiles_parse_and_follow_the_runbook() {
        let names: Vec<String> = Profile::available(&[]).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["etcd", "master", "node"]);
        for (name, _) in BUILTIN_PROFILES {
            let p = Profile::builtin(name).unwrap().unwrap();
            assert_eq!(p.name, *name);
            assert_eq!(p.origin, ProfileOrigin::BuiltIn);
            assert!(p.packages, "{name}: the runbook records the package list");
            assert!(!p.description.is_empty() && !p.restart.is_empty());
        }
        let master = Profile::builtin("master").unwrap().unwrap();
        let texts: Vec<&str> = master.paths.iter().map(PathPattern::as_str).collect();
        assert_eq!(
            texts,
            [
                "/etc/origin",
                "/etc/sysconfig/atomic-*",
                "/etc/sysconfig/iptables",
                "/etc/sysconfig/docker-*",
                "/etc/sysconfig/flanneld",
                "/etc/dnsmasq*",
                "/etc/cni",
                "/etc/pki/ca-trust/source/anchors"
            ]
        );
        let node = Profile::builtin("node").unwrap().unwrap();
        assert!(node.paths.iter().any(|p| p.as_str() == "/etc/sysconfig/atomic-openshift-node"));
        assert!(!node.paths.iter().any(|p| p.as_str().contains("atomic-*")));
        let etcd = Profile::builtin("etcd").unwrap().unwrap();
        assert_eq!(etcd.paths, [pat("/etc/etcd")]);
    }

    /// Every file in the runbook's listings of a master's and a node's backup is captured and
    /// triggers the restarts the runbook names.
    #[test]
    fn the_runbook_file_lists_are_covered() {
        let master = Profile::builtin("master").unwrap().unwrap();
        for file in [
            "/etc/sysconfig/atomic-openshift-master",
            "/etc/sysconfig/atomic-openshift-master-api",
            "/etc/sysconfig/atomic-openshift-master-controllers",
            "/etc/sysconfig/atomic-openshift-node",
            "/etc/sysconfig/flanneld",
            "/etc/sysconfig/iptables",
            "/etc/sysconfig/docker-network",
            "/etc/sysconfig/docker-storage-setup.rpmnew",
            "/etc/origin/master/ca.key",
            "/etc/origin/master/master-config.yaml",
            "/etc/origin/generated-configs/master-master-1.example.com/master.server.crt",
            "/etc/origin/cloudprovider/openstack.conf",
            "/etc/origin/node/system:node:master-0.example.com.crt",
            "/etc/pki/ca-trust/source/anchors/registry-ca.crt",
            "/etc/dnsmasq.conf",
            "/etc/dnsmasq.d/origin-dns.conf",
            "/etc/cni/net.d/80-openshift-network.conf",
        ] {
            assert!(master.paths.iter().any(|p| p.covers(Path::new(file))), "master misses {file}");
        }
        let node = Profile::builtin("node").unwrap().unwrap();
        for file in [
            "/etc/sysconfig/atomic-openshift-node",
            "/etc/sysconfig/docker-storage",
            "/etc/origin/node/node-config.yaml",
            "/etc/origin/cloudprovider/openstack.conf",
            "/etc/pki/ca-trust/source/anchors/openshift-ca.crt",
            "/etc/dnsmasq.d/node-dnsmasq.conf",
        ] {
            assert!(node.paths.iter().any(|p| p.covers(Path::new(file))), "node misses {file}");
        }
        assert!(
            !node
                .paths
                .iter()
                .any(|p| p.covers(Path::new("/etc/sysconfig/atomic-openshift-master-api")))
        );

        let plan = master.restarts_for(&paths(&["/etc/origin/master/master-config.yaml"]));
        let services: Vec<&str> = plan.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            services,
            [
                "atomic-openshift-master-api",
                "atomic-openshift-master-controllers",
                "atomic-openshift-master"
            ]
        );
        let plan = node.restarts_for(&paths(&["/etc/origin/node/node-config.yaml"]));
        assert_eq!(plan.services.len(), 1);
        assert_eq!(plan.services[0].service, "atomic-openshift-node");
        let etcd = Profile::builtin("etcd").unwrap().unwrap();
        let plan = etcd.restarts_for(&paths(&["/etc/etcd/etcd.conf"]));
        assert_eq!(plan.commands[0].argv, ["restorecon", "-R", "/etc/etcd"]);
        assert_eq!(plan.services[0].service, "etcd");
    }

    #[test]
    fn a_restart_plan_lists_each_action_once_with_its_triggers() {
        let master = Profile::builtin("master").unwrap().unwrap();
        let restored = paths(&[
            "/etc/dnsmasq.d/origin-dns.conf",
            "/etc/origin/master/master-config.yaml",
            "/etc/origin/master/ca.crt",
            "/etc/pki/ca-trust/source/anchors/registry-ca.crt",
            "/etc/origin/node/node-config.yaml",
            "/etc/sysconfig/atomic-openshift-master-api",
            "/etc/origin/generated-configs/x/y.crt",
        ]);
        let plan = master.restarts_for(&restored);
        let services: Vec<&str> = plan.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            services,
            [
                "atomic-openshift-master-api",
                "atomic-openshift-master-controllers",
                "atomic-openshift-master",
                "atomic-openshift-node",
                "dnsmasq"
            ],
            "unique, in rule order"
        );
        assert_eq!(
            plan.services[0].triggered_by,
            paths(&[
                "/etc/origin/master/master-config.yaml",
                "/etc/origin/master/ca.crt",
                "/etc/sysconfig/atomic-openshift-master-api"
            ])
        );
        assert_eq!(
            plan.services[1].triggered_by,
            paths(&["/etc/origin/master/master-config.yaml", "/etc/origin/master/ca.crt"])
        );
        assert_eq!(plan.commands.len(), 1);
        assert_eq!(plan.commands[0].argv, ["update-ca-trust"]);
        assert_eq!(
            plan.commands[0].triggered_by,
            paths(&["/etc/pki/ca-trust/source/anchors/registry-ca.crt"])
        );

        let steps = plan.steps();
        assert_eq!(steps[0].0, ["update-ca-trust"], "commands run before services");
        assert_eq!(steps[1].0, ["systemctl", "restart", "atomic-openshift-master-api"]);
        let text = plan.to_string();
        assert!(
            text.starts_with("update-ca-trust  # for /etc/pki/ca-trust/source/anchors/registry-ca.crt\n"),
            "{text}"
        );
        assert!(
            text.contains("systemctl restart dnsmasq  # for /etc/dnsmasq.d/origin-dns.conf\n"),
            "{text}"
        );

        assert!(master.restarts_for(&paths(&["/etc/origin/generated-configs/a.crt"])).is_empty());
        assert!(master.restarts_for(&[]).is_empty());
    }

    #[test]
    fn a_dry_run_runs_nothing() {
        let master = Profile::builtin("master").unwrap().unwrap();
        let plan = master.restarts_for(&paths(&["/etc/sysconfig/flanneld", "/etc/pki/ca-trust/source/anchors/a.crt"]));
        let outcomes = plan.execute(true);
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|o| matches!(o.status, ActionStatus::DryRun) && o.is_ok()));
        assert_eq!(outcomes[0].to_string(), "would run: update-ca-trust");
        assert_eq!(outcomes[1].to_string(), "would run: systemctl restart flanneld");
    }

    #[test]
    fn executed_commands_report_success_failure_and_absence() {
        let profile = Profile::parse(
            r#"
            paths = ["/x"]
            [[restart]]
            paths = ["/x/**"]
            commands = [["true"], ["sh", "-c", "echo broken >&2; exit 3"], ["/nonexistent/vault-test-command"]]
            "#,
            "test",
            ProfileOrigin::BuiltIn,
        )
        .unwrap();
        let outcomes = profile.restarts_for(&paths(&["/x/y"])).execute(false);
        assert_eq!(outcomes.len(), 3);
        assert!(matches!(outcomes[0].status, ActionStatus::Done), "{}", outcomes[0]);
        let ActionStatus::Failed(e) = &outcomes[1].status else {
            panic!("{}", outcomes[1])
        };
        assert!(e.what.contains("exit status: 3") && e.what.contains("broken"), "{e}");
        assert!(e.what.contains("'echo broken >&2; exit 3'"), "the command is shown as typed: {e}");
        let ActionStatus::Failed(e) = &outcomes[2].status else {
            panic!("{}", outcomes[2])
        };
        assert!(e.to_string().contains("was not found"), "{e}");
        assert!(!outcomes[2].is_ok());
    }

    #[test]
    fn profiles_in_extra_dirs_override_builtins_and_paths_load_directly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("master.toml"),
            "description = \"mine\"\npaths = [\"/etc/origin/master\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("infra.toml"), "paths = [\"/etc/haproxy\"]\npackages = true\n").unwrap();
        std::fs::write(dir.path().join("README"), "not a profile").unwrap();
        let dirs = vec![PathBuf::from("/nonexistent/vault-profiles"), dir.path().to_path_buf()];

        let master = Profile::load("master", &dirs).unwrap();
        assert_eq!(master.description, "mine");
        assert_eq!(master.origin, ProfileOrigin::File(dir.path().join("master.toml")));
        assert!(!master.packages, "packages defaults to false");
        assert_eq!(Profile::load("node", &dirs).unwrap().origin, ProfileOrigin::BuiltIn);

        let file = dir.path().join("infra.toml");
        let infra = Profile::load(file.to_str().unwrap(), &[]).unwrap();
        assert_eq!((infra.name.as_str(), infra.packages), ("infra", true));

        let listed: Vec<(String, bool)> = Profile::available(&dirs)
            .into_iter()
            .map(|e| (e.name, e.origin == ProfileOrigin::BuiltIn))
            .collect();
        assert_eq!(
            listed,
            [
                ("etcd".into(), true),
                ("infra".into(), false),
                ("master".into(), false),
                ("node".into(), true)
            ]
        );
    }

    #[test]
    fn unknown_and_invalid_profiles_say_what_is_wrong() {
        let e = Profile::load("mastr", &[PathBuf::from(SYSTEM_PROFILE_DIR)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        let text = e.to_string();
        assert!(
            text.contains("unknown profile \"mastr\"") && text.contains("etcd, master, node"),
            "{text}"
        );
        assert!(text.contains(SYSTEM_PROFILE_DIR), "{text}");

        let e = Profile::load("../etc/passwd", &[]).unwrap_err();
        assert!(e.to_string().contains("not a profile name"), "{e}");
        let e = Profile::load("/nonexistent/p.toml", &[]).unwrap_err();
        assert!(e.to_string().contains("cannot read profile file /nonexistent/p.toml"), "{e}");

        for (toml, why) in [
            ("paths = [\"/etc\"]\nbogus = 1\n", "bogus"),
            ("paths = [\"etc/origin\"]\n", "not absolute"),
            ("paths = []\n", "no paths"),
            (
                "paths = [\"/etc\"]\n[[restart]]\npaths = [\"/etc/**\"]\n",
                "neither services nor commands",
            ),
            (
                "paths = [\"/etc\"]\n[[restart]]\npaths = [\"/etc/**\"]\nservices = [\"-x\"]\n",
                "starts with '-'",
            ),
            (
                "paths = [\"/etc\"]\n[[restart]]\npaths = [\"/etc/**\"]\ncommands = [[]]\n",
                "empty command",
            ),
            (
                "paths = [\"/etc\"]\n[[restart]]\npaths = [\"/etc/**\"]\nservice = [\"x\"]\n",
                "service",
            ),
        ] {
            let e = Profile::parse(toml, "t", ProfileOrigin::File("/etc/vault/profiles/t.toml".into())).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage);
            let text = e.to_string();
            assert!(
                text.contains("profile file /etc/vault/profiles/t.toml") && text.contains(why),
                "{toml}: {text}"
            );
        }
    }

    #[test]
    fn expansion_under_another_root_returns_in_host_paths() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in [
            "etc/origin/master",
            "etc/origin/node",
            "etc/sysconfig",
            "etc/dnsmasq.d",
            "etc/pki/ca-trust/source/anchors",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        for file in [
            "etc/origin/master/master-config.yaml",
            "etc/origin/master/master-config.yaml.bak",
            "etc/origin/node/node-config.yaml",
            "etc/sysconfig/atomic-openshift-node",
            "etc/sysconfig/atomic-openshift-master-api",
            "etc/sysconfig/docker-storage",
            "etc/dnsmasq.conf",
            "etc/dnsmasq.d/origin-dns.conf",
            "etc/pki/ca-trust/source/anchors/registry-ca.crt",
        ] {
            std::fs::write(r.join(file), "x").unwrap();
        }
        std::os::unix::fs::symlink("/nonexistent/target", r.join("etc/sysconfig/docker-network")).unwrap();

        let mut master = Profile::builtin("master").unwrap().unwrap();
        master.exclude = vec![pat("/etc/origin/**/*.bak")];
        master.paths.push(pat("/etc/origin/node/*.yaml")); // below /etc/origin: folded into it
        let (found, missing) = master.expand(r).unwrap();
        assert_eq!(
            found,
            paths(&[
                "/etc/dnsmasq.conf",
                "/etc/dnsmasq.d",
                "/etc/origin",
                "/etc/pki/ca-trust/source/anchors",
                "/etc/sysconfig/atomic-openshift-master-api",
                "/etc/sysconfig/atomic-openshift-node",
                "/etc/sysconfig/docker-network",
                "/etc/sysconfig/docker-storage",
            ])
        );
        assert_eq!(missing, ["/etc/sysconfig/iptables", "/etc/sysconfig/flanneld", "/etc/cni"]);
        assert!(master.is_excluded(Path::new("/etc/origin/master/master-config.yaml.bak")));
        assert!(!master.is_excluded(Path::new("/etc/origin/master/master-config.yaml")));
        assert!(std::fs::symlink_metadata(under_root(r, &found[0])).unwrap().is_file());

        let deep = pat("/etc/**/*.yaml").expand(r).unwrap();
        assert_eq!(
            deep,
            paths(&["/etc/origin/master/master-config.yaml", "/etc/origin/node/node-config.yaml"])
        );
        let all = pat("/etc/origin/**").expand(r).unwrap();
        assert_eq!(all.len(), 6, "{all:?}"); // origin, master, 2 files there, node, its file

        let only_backups = Profile {
            paths: vec![pat("/etc/origin/master/*.bak")],
            exclude: master.exclude.clone(),
            ..Profile::default()
        };
        assert_eq!(
            only_backups.expand(r).unwrap(),
            (vec![], vec![]),
            "excluded is neither found nor missing"
        );
    }
}
