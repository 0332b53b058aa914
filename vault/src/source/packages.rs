//! The installed-package list of a host (the runbook's `rpm -qa | sort > packages.txt`), and what
//! to do on restore when packages are missing or at other versions than at backup time.
//!
//! [`capture`] asks rpm (RHEL/CentOS, the OKD 3.x hosts) or, failing that, dpkg. [`diff`] compares
//! a captured list with the host's current one and [`PackageDiff::fix_command`] prints the yum or
//! apt-get command that puts the backed-up versions back.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::profile::shell_join;
use crate::error::{Error, Result};

/// rpm's query format: name, `EPOCH:VERSION-RELEASE` (epoch 0 when unset), architecture.
pub const RPM_QUERY_FORMAT: &str = r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n";
/// dpkg-query's format: status (only `?i?`, installed, is kept), name, version, architecture.
pub const DPKG_QUERY_FORMAT: &str = r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n";

/// How long a package query may take: a stale rpm database lock can make rpm hang for ever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Rpm,
    Dpkg,
}

impl fmt::Display for PackageManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PackageManager::Rpm => "rpm",
            PackageManager::Dpkg => "dpkg",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    /// rpm: `EPOCH:VERSION-RELEASE` (`0:1.13.1-53.git774336d.el7`); dpkg: the Debian version.
    pub version: String,
    /// `x86_64`, `noarch`, `amd64`, `all`; rpm's `(none)` for gpg-pubkey entries.
    pub arch: String,
}

/// The packages installed on a host, sorted by name (then architecture and version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageList {
    pub manager: PackageManager,
    pub packages: Vec<Package>,
}

/// Capture the installed packages: with rpm when it is installed and its database lists packages,
/// else with dpkg-query; `None` when neither is available. An rpm that fails (say, a broken
/// database) is an error unless dpkg answers instead.
pub fn capture() -> Result<Option<PackageList>> {
    let rpm_failure = match query(PackageManager::Rpm) {
        Ok(Some(list)) if !list.packages.is_empty() => return Ok(Some(list)),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    match query(PackageManager::Dpkg) {
        Ok(Some(list)) if !list.packages.is_empty() => return Ok(Some(list)),
        Ok(_) => {}
        Err(e) if rpm_failure.is_none() => return Err(e),
        Err(_) => {}
    }
    match rpm_failure {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Ask one package manager; `None` if its query tool is not installed.
fn query(manager: PackageManager) -> Result<Option<PackageList>> {
    let argv: Vec<&str> = match manager {
        PackageManager::Rpm => vec!["rpm", "-qa", "--qf", RPM_QUERY_FORMAT],
        PackageManager::Dpkg => vec!["dpkg-query", "-W", "-f", DPKG_QUERY_FORMAT],
    };
    let Some(stdout) = run_query(&argv)? else { return Ok(None) };
    PackageList::from_query_output(manager, &stdout).map(Some)
}

/// Run a query with a time limit; `None` if the program does not exist.
fn run_query(argv: &[&str]) -> Result<Option<String>> {
    let shown = shell_join(argv);
    let mut child = match Command::new(argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot run `{shown}`")).with_source(e)),
    };
    let stdout = reader_thread(child.stdout.take());
    let stderr = reader_thread(child.stderr.take());
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io(format!(
                    "`{shown}` did not finish within {} s and was stopped",
                    QUERY_TIMEOUT.as_secs()
                ))
                .hint("a stale package database lock makes rpm hang: look for hung rpm or yum processes"));
            }
            Err(e) => return Err(Error::io(format!("cannot wait for `{shown}`")).with_source(e)),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        let detail: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.join(" / "))
        };
        return Err(
            Error::io(format!("`{shown}` failed ({status}){detail}")).hint("check the package database (for rpm: `rpm --rebuilddb`)")
        );
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn reader_thread<R: Read + Send + 'static>(source: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut source) = source {
            let _ = source.read_to_end(&mut buf);
        }
        buf
    })
}

impl PackageList {
    /// Parse the output of the capture queries ([`RPM_QUERY_FORMAT`], [`DPKG_QUERY_FORMAT`]).
    pub fn from_query_output(manager: PackageManager, text: &str) -> Result<PackageList> {
        let mut packages = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let bad = || Error::io(format!("line {} of the {manager} package query is malformed: {line:?}", i + 1));
            let (name, version, arch) = match (manager, fields.as_slice()) {
                (PackageManager::Rpm, [name, version, arch]) => (name, version, arch),
                (PackageManager::Dpkg, [status, name, version, arch]) => {
                    if status.chars().nth(1) != Some('i') {
                        continue; // removed with its config files left, half-installed, ...
                    }
                    (name, version, arch)
                }
                _ => return Err(bad()),
            };
            if name.is_empty() || version.is_empty() {
                return Err(bad());
            }
            packages.push(Package {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
            });
        }
        let mut list = PackageList { manager, packages };
        list.sort();
        Ok(list)
    }

    /// Sort by name, then architecture, then version, and drop duplicates.
    pub fn sort(&mut self) {
        self.packages
            .sort_by(|a, b| (&a.name, &a.arch, &a.version).cmp(&(&b.name, &b.arch, &b.version)));
        self.packages.dedup();
    }

    /// `packages.txt` for operators, one package per line in `LC_ALL=C sort` order. rpm lists look
    /// like `rpm -qa` (`name-version-release.arch`, no epoch), so that
    /// `diff <(rpm -qa | LC_ALL=C sort) packages.txt` shows what changed; dpkg lists are
    /// `name<TAB>version<TAB>arch` like `dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n'`.
    pub fn render_text(&self) -> String {
        let mut lines: Vec<String> = self
            .packages
            .iter()
            .map(|p| match self.manager {
                PackageManager::Rpm => rpm_label(p),
                PackageManager::Dpkg => format!("{}\t{}\t{}", p.name, p.version, p.arch),
            })
            .collect();
        lines.sort();
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }
}

/// How the packages of a backup differ from the host's now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageDiff {
    pub manager: PackageManager,
    /// In the backup, not installed now.
    pub missing: Vec<Package>,
    /// Installed at another version: (in the backup, now).
    pub different: Vec<(Package, Package)>,
    /// Installed now, not in the backup. Never removed by the fix command.
    pub extra: Vec<Package>,
}

/// Compare a backed-up list with the current one. Packages are told apart by name and
/// architecture; a name installed at several versions at once (kernels) counts as "different" only
/// when exactly one version was replaced by exactly one other, else as missing and extra versions.
pub fn diff(backup: &PackageList, now: &PackageList) -> Result<PackageDiff> {
    if backup.manager != now.manager {
        return Err(Error::usage(format!(
            "the backed-up package list comes from {} but this host uses {}",
            backup.manager, now.manager
        ))
        .hint("compare package lists on a host of the same distribution"));
    }
    let (before, after) = (versions_by_package(backup), versions_by_package(now));
    let keys: BTreeSet<&(&str, &str)> = before.keys().chain(after.keys()).collect();
    let empty = BTreeSet::new();
    let mut result = PackageDiff {
        manager: backup.manager,
        missing: Vec::new(),
        different: Vec::new(),
        extra: Vec::new(),
    };
    for &(name, arch) in keys {
        let was = before.get(&(name, arch)).unwrap_or(&empty);
        let is = after.get(&(name, arch)).unwrap_or(&empty);
        let gone: Vec<&str> = was.difference(is).copied().collect();
        let new: Vec<&str> = is.difference(was).copied().collect();
        let package = |version: &str| Package {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
        };
        if let ([old], [current]) = (gone.as_slice(), new.as_slice()) {
            result.different.push((package(old), package(current)));
        } else {
            result.missing.extend(gone.iter().map(|v| package(v)));
            result.extra.extend(new.iter().map(|v| package(v)));
        }
    }
    Ok(result)
}

/// (name, arch) -> installed versions.
fn versions_by_package(list: &PackageList) -> BTreeMap<(&str, &str), BTreeSet<&str>> {
    let mut map: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for p in &list.packages {
        map.entry((p.name.as_str(), p.arch.as_str()))
            .or_default()
            .insert(p.version.as_str());
    }
    map
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.different.is_empty() && self.extra.is_empty()
    }

    /// The commands (argument vectors) that install the missing packages and put the different ones
    /// back at their backed-up versions. Extra packages are left alone. rpm: `yum install -y` for
    /// missing and newer-in-backup, `yum downgrade -y` for older-in-backup, `yum reinstall -y` for
    /// versions rpm considers equal; gpg-pubkey entries are skipped (import keys with
    /// `rpm --import`). dpkg: one `apt-get install -y [--allow-downgrades] name:arch=version ...`.
    pub fn fix_commands(&self) -> Vec<Vec<String>> {
        let mut commands = Vec::new();
        let command = |words: &[&str], specs: Vec<String>| -> Option<Vec<String>> {
            (!specs.is_empty()).then(|| words.iter().map(|w| w.to_string()).chain(specs).collect())
        };
        match self.manager {
            PackageManager::Rpm => {
                let wanted = |p: &&Package| p.name != "gpg-pubkey";
                let mut install: Vec<String> = self.missing.iter().filter(wanted).map(yum_spec).collect();
                let (mut downgrade, mut reinstall) = (Vec::new(), Vec::new());
                for (old, current) in self.different.iter().filter(|(old, _)| wanted(&old)) {
                    match rpm_evr_cmp(&old.version, &current.version) {
                        Ordering::Greater => install.push(yum_spec(old)),
                        Ordering::Less => downgrade.push(yum_spec(old)),
                        Ordering::Equal => reinstall.push(yum_spec(old)),
                    }
                }
                install.sort();
                downgrade.sort();
                reinstall.sort();
                commands.extend(command(&["yum", "install", "-y"], install));
                commands.extend(command(&["yum", "downgrade", "-y"], downgrade));
                commands.extend(command(&["yum", "reinstall", "-y"], reinstall));
            }
            PackageManager::Dpkg => {
                let mut specs: Vec<String> = self
                    .missing
                    .iter()
                    .chain(self.different.iter().map(|(old, _)| old))
                    .map(apt_spec)
                    .collect();
                specs.sort();
                let words: &[&str] = if self.different.is_empty() {
                    &["apt-get", "install", "-y"]
                } else {
                    &["apt-get", "install", "-y", "--allow-downgrades"]
                };
                commands.extend(command(words, specs));
            }
        }
        commands
    }

    /// [`PackageDiff::fix_commands`] as one shell line (commands joined with `&&`), or `None` when
    /// nothing needs installing.
    pub fn fix_command(&self) -> Option<String> {
        let commands = self.fix_commands();
        (!commands.is_empty()).then(|| commands.iter().map(|argv| shell_join(argv)).collect::<Vec<_>>().join(" && "))
    }

    fn label(&self, p: &Package) -> String {
        match self.manager {
            PackageManager::Rpm => rpm_label(p),
            PackageManager::Dpkg => format!("{}:{} {}", p.name, p.arch, p.version),
        }
    }
}

impl fmt::Display for PackageDiff {
    /// One line per package: `missing: ...`, `different: ... in the backup, ... now`, `extra: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.missing {
            writeln!(f, "missing: {}", self.label(p))?;
        }
        for (old, current) in &self.different {
            writeln!(f, "different: {} in the backup, {} now", self.label(old), self.label(current))?;
        }
        for p in &self.extra {
            writeln!(f, "extra: {}", self.label(p))?;
        }
        Ok(())
    }
}

/// `name-version-release.arch` as `rpm -qa` prints it (no epoch; no arch for gpg-pubkey).
fn rpm_label(p: &Package) -> String {
    let (_, version_release) = split_epoch(&p.version);
    if p.arch.is_empty() || p.arch == "(none)" {
        format!("{}-{}", p.name, version_release)
    } else {
        format!("{}-{}.{}", p.name, version_release, p.arch)
    }
}

/// yum's `name-[epoch:]version-release.arch`, with the epoch only when it is not 0.
fn yum_spec(p: &Package) -> String {
    let (epoch, version_release) = split_epoch(&p.version);
    let evr = match epoch {
        Some(e) if !significant_digits(e).is_empty() => format!("{e}:{version_release}"),
        _ => version_release.to_string(),
    };
    if p.arch.is_empty() || p.arch == "(none)" {
        format!("{}-{evr}", p.name)
    } else {
        format!("{}-{evr}.{}", p.name, p.arch)
    }
}

/// apt's `name:arch=version` (no `:arch` for `all` packages).
fn apt_spec(p: &Package) -> String {
    if p.arch.is_empty() || p.arch == "all" {
        format!("{}={}", p.name, p.version)
    } else {
        format!("{}:{}={}", p.name, p.arch, p.version)
    }
}

/// `("1", "2.0-3")` from `1:2.0-3`; no epoch when there is no all-digit prefix before a `:`.
fn split_epoch(evr: &str) -> (Option<&str>, &str) {
    match evr.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => (Some(epoch), rest),
        _ => (None, evr),
    }
}

fn significant_digits(number: &str) -> &str {
    number.trim_start_matches('0')
}

/// Compare two rpm `[EPOCH:]VERSION[-RELEASE]` strings the way rpm does: epoch numerically, then
/// version and release with [`rpm_vercmp`].
pub fn rpm_evr_cmp(a: &str, b: &str) -> Ordering {
    let (ea, a) = split_epoch(a);
    let (eb, b) = split_epoch(b);
    let (ea, eb) = (significant_digits(ea.unwrap_or("")), significant_digits(eb.unwrap_or("")));
    let by_epoch = ea.len().cmp(&eb.len()).then_with(|| ea.cmp(eb));
    let (va, ra) = a.rsplit_once('-').map_or((a, None), |(v, r)| (v, Some(r)));
    let (vb, rb) = b.rsplit_once('-').map_or((b, None), |(v, r)| (v, Some(r)));
    by_epoch.then_with(|| rpm_vercmp(va, vb)).then_with(|| match (ra, rb) {
        (Some(ra), Some(rb)) => rpm_vercmp(ra, rb),
        _ => Ordering::Equal,
    })
}

/// rpm's `rpmvercmp`: alternating numeric and alphabetic segments, separators ignored, numeric
/// segments newer than alphabetic ones, `~` older than anything (pre-releases) and `^` newer than
/// the end of the string but older than anything else (snapshots).
pub fn rpm_vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && separator(a[i]) {
            i += 1;
        }
        while j < b.len() && separator(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            match (ca, cb) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), _) if x != b'^' => return Ordering::Greater,
                (_, Some(y)) if y != b'^' => return Ordering::Less,
                _ => {}
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(first), Some(_)) = (ca, cb) else { break };
        let numeric = first.is_ascii_digit();
        let in_segment = |c: u8| if numeric { c.is_ascii_digit() } else { c.is_ascii_alphabetic() };
        let (start_a, start_b) = (i, j);
        while i < a.len() && in_segment(a[i]) {
            i += 1;
        }
        while j < b.len() && in_segment(b[j]) {
            j += 1;
        }
        let (mut seg_a, mut seg_b) = (&a[start_a..i], &b[start_b..j]);
        if seg_b.is_empty() {
            // Segments of different kinds: numeric is newer.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        if numeric {
            while seg_a.first() == Some(&b'0') {
                seg_a = &seg_a[1..];
            }
            while seg_b.first() == Some(&b'0') {
                seg_b = &seg_b[1..];
            }
            match seg_a.len().cmp(&seg_b.len()) {
                Ordering::Equal => {}
                longer_is_newer => return longer_is_newer,
            }
        }
        match seg_a.cmp(seg_b) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, arch: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
        }
    }

    fn rpm_list(packages: &[(&str, &str, &str)]) -> PackageList {
        let mut list = PackageList {
            manager: PackageManager::Rpm,
            packages: packages.iter().map(|(n, v, a)| pkg(n, v, a)).collect(),
        };
        list.sort();
        list
    }

    const RPM_OUTPUT: &str = "bash\t0:4.2.46-31.el7\tx86_64\n\
        atomic-openshift-node\t0:3.9.41-1.git.0.67432b0.el7\tx86_64\n\
        gpg-pubkey\t0:f4a80eb5-53a7ff4b\t(none)\n\
        docker\t2:1.13.1-53.git774336d.el7\tx86_64\n\
        ansible\t0:2.4.0.0-5.el7\tnoarch\n\
        glibc\t0:2.17-222.el7\ti686\n\
        glibc\t0:2.17-222.el7\tx86_64\n";

    #[test]
    fn rpm_output_parses_sorted_and_renders_like_rpm_qa() {
        let list = PackageList::from_query_output(PackageManager::Rpm, RPM_OUTPUT).unwrap();
        let names: Vec<&str> = list.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["ansible", "atomic-openshift-node", "bash", "docker", "glibc", "glibc", "gpg-pubkey"]
        );
        assert_eq!(list.packages[3], pkg("docker", "2:1.13.1-53.git774336d.el7", "x86_64"));
        assert_eq!(
            list.render_text(),
            "ansible-2.4.0.0-5.el7.noarch\n\
             atomic-openshift-node-3.9.41-1.git.0.67432b0.el7.x86_64\n\
             bash-4.2.46-31.el7.x86_64\n\
             docker-1.13.1-53.git774336d.el7.x86_64\n\
             glibc-2.17-222.el7.i686\n\
             glibc-2.17-222.el7.x86_64\n\
             gpg-pubkey-f4a80eb5-53a7ff4b\n"
        );
        let json = serde_json::to_string(&list).unwrap();
        assert!(
            json.starts_with(r#"{"manager":"rpm","packages":[{"name":"ansible","version":"0:2.4.0.0-5.el7","arch":"noarch"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<PackageList>(&json).unwrap(), list);
    }

    #[test]
    fn dpkg_output_keeps_only_installed_packages() {
        let out = "ii \tbash\t5.2.15-2+b2\tamd64\nrc \told-thing\t1.0-1\tamd64\nii \ttzdata\t2024a-0+deb12u1\tall\n\
                   ii \tlibc6\t2.36-9\ti386\n";
        let list = PackageList::from_query_output(PackageManager::Dpkg, out).unwrap();
        assert_eq!(
            list.packages,
            [
                pkg("bash", "5.2.15-2+b2", "amd64"),
                pkg("libc6", "2.36-9", "i386"),
                pkg("tzdata", "2024a-0+deb12u1", "all")
            ]
        );
        assert_eq!(
            list.render_text(),
            "bash\t5.2.15-2+b2\tamd64\nlibc6\t2.36-9\ti386\ntzdata\t2024a-0+deb12u1\tall\n"
        );
    }

    #[test]
    fn malformed_query_output_names_the_line() {
        let e = PackageList::from_query_output(PackageManager::Rpm, "bash\t0:4.2-1\tx86_64\nnonsense\n").unwrap_err();
        assert!(
            e.to_string().contains("line 2 of the rpm package query is malformed: \"nonsense\""),
            "{e}"
        );
        let e = PackageList::from_query_output(PackageManager::Dpkg, "ii \tbash\t\tamd64\n").unwrap_err();
        assert!(e.to_string().contains("line 1 of the dpkg"), "{e}");
    }

    #[test]
    fn diff_finds_missing_different_and_extra_packages() {
        let backup = rpm_list(&[
            ("ansible", "0:2.4.0.0-5.el7", "noarch"),
            ("docker", "2:1.13.1-53.git774336d.el7", "x86_64"),
            ("bash", "0:4.2.46-31.el7", "x86_64"),
            ("atomic-openshift-node", "0:3.9.41-1.el7", "x86_64"),
            ("kernel", "0:3.10.0-862.el7", "x86_64"),
            ("kernel", "0:3.10.0-957.el7", "x86_64"),
            ("gpg-pubkey", "0:f4a80eb5-53a7ff4b", "(none)"),
        ]);
        let now = rpm_list(&[
            ("docker", "2:1.13.1-58.git87f2fab.el7", "x86_64"),
            ("bash", "0:4.2.46-31.el7", "x86_64"),
            ("atomic-openshift-node", "0:3.9.30-1.el7", "x86_64"),
            ("kernel", "0:3.10.0-957.el7", "x86_64"),
            ("kernel", "0:3.10.0-1062.el7", "x86_64"),
            ("kernel", "0:3.10.0-1160.el7", "x86_64"),
            ("vim-enhanced", "2:7.4.160-4.el7", "x86_64"),
        ]);
        let d = diff(&backup, &now).unwrap();
        assert_eq!(
            d.missing,
            [
                pkg("ansible", "0:2.4.0.0-5.el7", "noarch"),
                pkg("gpg-pubkey", "0:f4a80eb5-53a7ff4b", "(none)"),
                pkg("kernel", "0:3.10.0-862.el7", "x86_64")
            ]
        );
        assert_eq!(
            d.different,
            [
                (
                    pkg("atomic-openshift-node", "0:3.9.41-1.el7", "x86_64"),
                    pkg("atomic-openshift-node", "0:3.9.30-1.el7", "x86_64")
                ),
                (
                    pkg("docker", "2:1.13.1-53.git774336d.el7", "x86_64"),
                    pkg("docker", "2:1.13.1-58.git87f2fab.el7", "x86_64")
                ),
            ]
        );
        assert_eq!(
            d.extra,
            [
                pkg("kernel", "0:3.10.0-1062.el7", "x86_64"),
                pkg("kernel", "0:3.10.0-1160.el7", "x86_64"),
                pkg("vim-enhanced", "2:7.4.160-4.el7", "x86_64")
            ]
        );
        assert_eq!(
            d.fix_command().unwrap(),
            "yum install -y ansible-2.4.0.0-5.el7.noarch atomic-openshift-node-3.9.41-1.el7.x86_64 kernel-3.10.0-862.el7.x86_64 \
             && yum downgrade -y docker-2:1.13.1-53.git774336d.el7.x86_64"
        );
        let text = d.to_string();
        assert!(text.contains("missing: ansible-2.4.0.0-5.el7.noarch\n"), "{text}");
        assert!(
            text.contains("different: docker-1.13.1-53.git774336d.el7.x86_64 in the backup, docker-1.13.1-58.git87f2fab.el7.x86_64 now\n"),
            "{text}"
        );
        assert!(text.contains("extra: vim-enhanced-7.4.160-4.el7.x86_64\n"), "{text}");

        let same = diff(&backup, &backup).unwrap();
        assert!(same.is_empty() && same.fix_command().is_none());
        let only_extra = diff(&rpm_list(&[]), &now).unwrap();
        assert!(
            !only_extra.is_empty() && only_extra.fix_command().is_none(),
            "extra packages are never removed"
        );
    }

    #[test]
    fn rpm_versions_that_compare_equal_are_reinstalled() {
        let d = diff(
            &rpm_list(&[("foo", "0:1.01-1", "x86_64")]),
            &rpm_list(&[("foo", "0:1.1-1", "x86_64")]),
        )
        .unwrap();
        assert_eq!(d.fix_commands(), [["yum", "reinstall", "-y", "foo-1.01-1.x86_64"]]);
    }

    #[test]
    fn dpkg_fix_command_pins_versions() {
        let dpkg = |packages: &[(&str, &str, &str)]| PackageList {
            manager: PackageManager::Dpkg,
            packages: packages.iter().map(|(n, v, a)| pkg(n, v, a)).collect(),
        };
        let backup = dpkg(&[
            ("bash", "5.2.15-2+b2", "amd64"),
            ("tzdata", "2024a-0+deb12u1", "all"),
            ("curl", "7.88.1-10", "amd64"),
        ]);
        let now = dpkg(&[("bash", "5.2.15-2+b7", "amd64"), ("curl", "7.88.1-10", "amd64")]);
        let d = diff(&backup, &now).unwrap();
        assert_eq!(
            d.fix_command().unwrap(),
            "apt-get install -y --allow-downgrades bash:amd64=5.2.15-2+b2 tzdata=2024a-0+deb12u1"
        );
        let d = diff(&backup, &dpkg(&[("bash", "5.2.15-2+b2", "amd64"), ("curl", "7.88.1-10", "amd64")])).unwrap();
        assert_eq!(d.fix_command().unwrap(), "apt-get install -y tzdata=2024a-0+deb12u1");
        assert_eq!(d.to_string(), "missing: tzdata:all 2024a-0+deb12u1\n");
    }

    #[test]
    fn lists_from_different_package_managers_are_not_compared() {
        let dpkg = PackageList {
            manager: PackageManager::Dpkg,
            packages: vec![],
        };
        let e = diff(&rpm_list(&[]), &dpkg).unwrap_err();
        assert!(e.to_string().contains("comes from rpm but this host uses dpkg"), "{e}");
    }

    #[test]
    fn rpm_version_comparison_matches_rpmvercmp() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0", "2.0.1", Less),
            ("1.01", "1.1", Equal),
            ("10", "9", Greater),
            ("5.5p1", "5.5p10", Less),
            ("1.0a", "1.0", Greater),
            ("a", "1", Less),
            ("1", "a", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("1_0", "1.0", Equal),
            ("2.0b", "2.0a", Greater),
            ("1.13.1", "1.13.01", Equal),
        ] {
            assert_eq!(rpm_vercmp(a, b), want, "rpmvercmp({a:?}, {b:?})");
            assert_eq!(rpm_vercmp(b, a), want.reverse(), "rpmvercmp({b:?}, {a:?})");
        }
        assert_eq!(rpm_evr_cmp("1:1.0-1", "0:9.0-1"), Greater, "epoch first");
        assert_eq!(rpm_evr_cmp("0:1.0-1", "1.0-1"), Equal, "epoch 0 is no epoch");
        assert_eq!(rpm_evr_cmp("0:3.9.41-1.el7", "0:3.9.30-1.el7"), Greater);
        assert_eq!(rpm_evr_cmp("0:1.0-10.el7", "0:1.0-9.el7"), Greater, "release compared last");
        assert_eq!(rpm_evr_cmp("0:1.0-1.el7_4", "0:1.0-1.el7"), Greater);
    }

    #[test]
    fn capture_on_this_debian_machine_lists_bash() {
        let list = capture().unwrap().expect("dpkg is installed here");
        assert_eq!(list.manager, PackageManager::Dpkg);
        assert!(
            list.packages.iter().any(|p| p.name == "bash"),
            "no bash in {} packages",
            list.packages.len()
        );
        assert!(list.packages.windows(2).all(|w| w[0].name <= w[1].name), "sorted by name");
    }
}
