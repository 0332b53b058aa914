//! Shell-style `KEY=VALUE` files (`/etc/etcd/etcd.conf`, `/etc/sysconfig/flanneld`): read as
//! systemd's `EnvironmentFile=` reads them, and edited byte-exactly: a change replaces only the
//! value's characters (inside its quotes, if it has them), so comments, order, quoting style and
//! commented-out defaults (`#ETCD_INITIAL_CLUSTER_STATE="new"`) stay as they are. A key with no
//! active line is added at the end, quoted like most values of the file.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::edit::{FileEdit, line_end, read_for_edit};
use crate::error::{Error, Result};

/// Where flannel reads its etcd endpoints on an OKD 3.x host.
pub const FLANNELD: &str = "/etc/sysconfig/flanneld";
/// flanneld's list of etcd client URLs, comma-separated.
pub const FLANNEL_ETCD_ENDPOINTS: &str = "FLANNEL_ETCD_ENDPOINTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// One active `KEY=VALUE` line.
#[derive(Clone, Debug)]
struct Assignment {
    key: String,
    /// The value as the service sees it (quotes removed, escapes resolved).
    value: String,
    /// Byte range of the value's text in the file: inside the quotes when quoted.
    span: Range<usize>,
    quote: Quote,
    /// 1-based line number, for messages.
    line: usize,
    /// False for a value that goes on over the next line (an unclosed quote or a trailing `\`).
    editable: bool,
}

/// A shell-style config file, as loaded and as edited so far.
#[derive(Clone, Debug)]
pub struct ShellConf {
    host_path: PathBuf,
    file: PathBuf,
    original: Vec<u8>,
    text: String,
    assignments: Vec<Assignment>,
    changes: Vec<String>,
}

impl ShellConf {
    /// Read the file at `host_path` on the host whose `/` is at `root`.
    pub fn load(root: &Path, host_path: &Path) -> Result<ShellConf> {
        let (file, bytes) = read_for_edit(root, host_path)?;
        ShellConf::parse(host_path, &file, bytes)
    }

    /// Parse `bytes`, the content of `file` (known to the operator as `host_path`).
    pub fn parse(host_path: &Path, file: &Path, bytes: Vec<u8>) -> Result<ShellConf> {
        let text = String::from_utf8(bytes.clone()).map_err(|_| {
            Error::usage(format!("{} is not UTF-8 text", host_path.display())).hint("check the file; vault edits only text files")
        })?;
        let assignments = parse_assignments(&text);
        Ok(ShellConf {
            host_path: host_path.to_path_buf(),
            file: file.to_path_buf(),
            original: bytes,
            text,
            assignments,
            changes: Vec::new(),
        })
    }

    /// The value the service sees for `key` (its last active line), if it is set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.last(key).map(|a| a.value.as_str())
    }

    /// Every active key and its value, in file order (a key set twice appears twice).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.assignments.iter().map(|a| (a.key.as_str(), a.value.as_str()))
    }

    /// Set `key` to `value`: its last active line gets the new value in the same quoting style
    /// (an unquoted value that needs quotes gets double quotes); a key with no active line is added
    /// at the end. Setting a key to the value it has changes nothing.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !is_key(key) {
            return Err(Error::usage(format!("{key:?} is not a variable name")));
        }
        if value.contains('\n') || value.contains('\0') {
            return Err(Error::usage(format!("the value for {key} has a newline or NUL byte")));
        }
        if self.get(key) == Some(value) {
            return Ok(());
        }
        match self.last(key).cloned() {
            Some(a) if !a.editable => {
                return Err(Error::usage(format!(
                    "{} line {}: the value of {key} goes on over several lines, which vault does not edit",
                    self.host_path.display(),
                    a.line
                ))
                .hint(format!("put {key}=... on one line, then run this again")));
            }
            Some(a) => {
                let encoded = encode(value, a.quote).ok_or_else(|| {
                    Error::usage(format!(
                        "{} line {}: the new value of {key} has a single quote, which its single-quoted value cannot hold",
                        self.host_path.display(),
                        a.line
                    ))
                    .hint(format!(
                        "change {key}'s quotes to double quotes in {}, then run this again",
                        self.host_path.display()
                    ))
                })?;
                self.text.replace_range(a.span.clone(), &encoded);
            }
            None => {
                let style = self.usual_quote();
                let encoded = encode(value, style).expect("double or no quotes hold any value");
                let encoded = match style {
                    Quote::Double => format!("\"{encoded}\""),
                    _ => encoded,
                };
                let eol = line_end(&self.text);
                if !self.text.is_empty() && !self.text.ends_with('\n') {
                    self.text.push_str(eol);
                }
                self.text.push_str(&format!("{key}={encoded}{eol}"));
            }
        }
        self.assignments = parse_assignments(&self.text);
        debug_assert_eq!(self.get(key), Some(value));
        self.changes.push(format!("set {key}={value}"));
        Ok(())
    }

    /// The edit that makes the file say what the `set` calls asked for (a no-op edit if nothing changed).
    pub fn edit(&self) -> FileEdit {
        let summary = if self.changes.is_empty() {
            "no change".to_string()
        } else {
            self.changes.join(", ")
        };
        FileEdit {
            host_path: self.host_path.clone(),
            file: self.file.clone(),
            summary,
            old: self.original.clone(),
            new: self.text.clone().into_bytes(),
        }
    }

    fn last(&self, key: &str) -> Option<&Assignment> {
        self.assignments.iter().rev().find(|a| a.key == key)
    }

    /// Double quotes if most values of the file have them, otherwise none.
    fn usual_quote(&self) -> Quote {
        let double = self.assignments.iter().filter(|a| a.quote == Quote::Double).count();
        let none = self.assignments.iter().filter(|a| a.quote == Quote::None).count();
        if double > none { Quote::Double } else { Quote::None }
    }
}

/// The edit setting `FLANNEL_ETCD_ENDPOINTS` in `/etc/sysconfig/flanneld` to `urls`.
pub fn flannel_endpoints_edit(root: &Path, urls: &[String]) -> Result<FileEdit> {
    let mut conf = ShellConf::load(root, Path::new(FLANNELD))?;
    conf.set(FLANNEL_ETCD_ENDPOINTS, &urls.join(","))?;
    Ok(conf.edit())
}

fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_assignments(text: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let body = line.trim_start_matches([' ', '\t']);
        if body.starts_with('#') || body.starts_with(';') {
            continue;
        }
        let body = body.strip_prefix("export ").map(|b| b.trim_start()).unwrap_or(body);
        let Some((key, value_text)) = body.split_once('=') else { continue };
        if !is_key(key) {
            continue;
        }
        let value_start = line_start + (line.len() - value_text.len());
        let (value, span, quote, editable) = parse_value(value_text, value_start);
        out.push(Assignment {
            key: key.to_string(),
            value,
            span,
            quote,
            line: n + 1,
            editable,
        });
    }
    out
}

/// The value after `=`: (value, byte span of its text in the file, quoting, one line only).
fn parse_value(text: &str, start: usize) -> (String, Range<usize>, Quote, bool) {
    match text.chars().next() {
        Some('"') => {
            let mut value = String::new();
            let mut chars = text[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return (value, start + 1..start + 1 + i, Quote::Double, true),
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            (value, start + 1..start + text.len(), Quote::Double, false)
        }
        Some('\'') => match text[1..].find('\'') {
            Some(end) => (text[1..1 + end].to_string(), start + 1..start + 1 + end, Quote::Single, true),
            None => (text[1..].to_string(), start + 1..start + text.len(), Quote::Single, false),
        },
        _ => {
            let value = text.trim_end_matches([' ', '\t']);
            let editable = !value.ends_with('\\');
            (value.to_string(), start..start + value.len(), Quote::None, editable)
        }
    }
}

/// The text for `value` inside the given quotes (for `None`: bare if it can be, else double-quoted
/// with its quotes). `None` if it cannot be written so (a single quote inside single quotes).
fn encode(value: &str, quote: Quote) -> Option<String> {
    let escape_double = |v: &str| {
        let mut s = String::with_capacity(v.len());
        for c in v.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                s.push('\\');
            }
            s.push(c);
        }
        s
    };
    match quote {
        Quote::Single => (!value.contains('\'')).then(|| value.to_string()),
        Quote::Double => Some(escape_double(value)),
        Quote::None => {
            let bare = value
                .chars()
                .all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | '$' | '`' | '#' | ';' | '&' | '|' | '<' | '>' | '(' | ')'));
            Some(if bare {
                value.to_string()
            } else {
                format!("\"{}\"", escape_double(value))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD_CONF: &str = include_str!("testdata/etcd.conf");
    const ETCD_QUOTED: &str = include_str!("testdata/etcd-quoted.conf");
    const FLANNELD_SAMPLE: &str = include_str!("testdata/flanneld");

    fn conf(text: &str) -> ShellConf {
        ShellConf::parse(
            Path::new("/etc/etcd/etcd.conf"),
            Path::new("/nonexistent"),
            text.as_bytes().to_vec(),
        )
        .unwrap()
    }

    /// `new` is `old` with exactly `from` replaced by `to` once.
    fn assert_only_change(old: &[u8], new: &[u8], from: &str, to: &str) {
        let old = String::from_utf8(old.to_vec()).unwrap();
        assert_eq!(old.matches(from).count(), 1, "{from:?} must occur once in the sample");
        assert_eq!(String::from_utf8(new.to_vec()).unwrap(), old.replacen(from, to, 1));
    }

    #[test]
    fn values_read_as_systemd_reads_them() {
        let c = conf(ETCD_CONF);
        assert_eq!(c.get("ETCD_NAME"), Some("master-0.example.com"));
        assert_eq!(c.get("ETCD_CLIENT_CERT_AUTH"), Some("true"));
        assert_eq!(c.get("ETCD_INITIAL_CLUSTER_STATE"), Some("new"));
        assert_eq!(c.get("ETCD_WAL_DIR"), None, "commented out");
        let q = conf(ETCD_QUOTED);
        assert_eq!(q.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"), Some("https://10.0.0.11:2380"));
        assert_eq!(
            q.get("ETCD_LISTEN_CLIENT_URLS"),
            Some("https://10.0.0.11:2379"),
            "text after the quotes is not the value"
        );
        assert_eq!(conf("export A=\"x \\\"y\\\" \\$z\"\n  B=2  \n").get("A"), Some("x \"y\" $z"));
        assert_eq!(conf("A=1\nA=2\n").get("A"), Some("2"), "the last line wins");
    }

    #[test]
    fn an_unquoted_value_changes_and_every_other_byte_stays() {
        let mut c = conf(ETCD_CONF);
        c.set("ETCD_INITIAL_CLUSTER_STATE", "existing").unwrap();
        let edit = c.edit();
        assert_only_change(
            &edit.old,
            &edit.new,
            "ETCD_INITIAL_CLUSTER_STATE=new\n",
            "ETCD_INITIAL_CLUSTER_STATE=existing\n",
        );
        assert_eq!(edit.summary, "set ETCD_INITIAL_CLUSTER_STATE=existing");
        let diff = edit.diff();
        assert!(
            diff.contains("-ETCD_INITIAL_CLUSTER_STATE=new\n+ETCD_INITIAL_CLUSTER_STATE=existing\n"),
            "{diff}"
        );
        assert_eq!(
            diff.lines().filter(|l| l.starts_with('-') || l.starts_with('+')).count(),
            4,
            "{diff}"
        );

        let two = "master-0.example.com=https://192.168.55.8:2380,master-1.example.com=https://192.168.55.12:2380";
        let mut c = conf(ETCD_CONF);
        c.set("ETCD_INITIAL_CLUSTER", two).unwrap();
        let edit = c.edit();
        assert_only_change(&edit.old, &edit.new, ",master-2.example.com=https://192.168.55.13:2380\n", "\n");
    }

    #[test]
    fn quoted_values_keep_their_quotes_and_what_follows_them() {
        let mut c = conf(ETCD_QUOTED);
        c.set("ETCD_LISTEN_CLIENT_URLS", "https://10.0.0.11:2379,https://127.0.0.1:2379")
            .unwrap();
        c.set("ETCD_INITIAL_ADVERTISE_PEER_URLS", "https://10.0.0.99:2380").unwrap();
        let edit = c.edit();
        let expected = ETCD_QUOTED
            .replace(
                "\"https://10.0.0.11:2379\"   # clients",
                "\"https://10.0.0.11:2379,https://127.0.0.1:2379\"   # clients",
            )
            .replace("'https://10.0.0.11:2380'", "'https://10.0.0.99:2380'");
        assert_eq!(String::from_utf8(edit.new).unwrap(), expected);
        let e = conf(ETCD_QUOTED).set("ETCD_INITIAL_ADVERTISE_PEER_URLS", "it's").unwrap_err();
        assert!(e.to_string().contains("single quote") && e.hint.is_some(), "{e}");
        let mut c = conf("A=1\n");
        c.set("A", "two words $HOME").unwrap();
        assert_eq!(c.edit().new, b"A=\"two words \\$HOME\"\n");
    }

    #[test]
    fn a_missing_key_is_added_at_the_end_in_the_files_style_and_the_commented_default_stays() {
        let mut c = conf(ETCD_QUOTED);
        c.set("ETCD_INITIAL_CLUSTER_STATE", "existing").unwrap();
        let new = String::from_utf8(c.edit().new).unwrap();
        assert_eq!(new, format!("{ETCD_QUOTED}ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"));
        assert_eq!(c.get("ETCD_INITIAL_CLUSTER_STATE"), Some("existing"));

        let mut c = conf("A=\"1\"\r\nB=2\r\n");
        c.set("A", "3").unwrap();
        c.set("C", "4").unwrap();
        assert_eq!(c.edit().new, b"A=\"3\"\r\nB=2\r\nC=4\r\n", "CRLF lines stay CRLF");

        let mut c = conf("# no newline at the end\nA=1");
        c.set("B", "2").unwrap();
        assert_eq!(c.edit().new, b"# no newline at the end\nA=1\nB=2\n");
    }

    #[test]
    fn setting_the_value_a_key_has_is_a_noop_edit() {
        let mut c = conf(ETCD_CONF);
        c.set("ETCD_NAME", "master-0.example.com").unwrap();
        let edit = c.edit();
        assert!(edit.is_noop() && edit.diff().is_empty());
        assert!(edit.describe().contains("already so"), "{}", edit.describe());
        let e = conf("A=\"one\ntwo\"\n").set("A", "x").unwrap_err();
        assert!(e.to_string().contains("several lines"), "{e}");
    }

    #[test]
    fn flannel_endpoints_are_rewritten_in_a_host_tree_with_the_original_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/sysconfig")).unwrap();
        let file = root.path().join("etc/sysconfig/flanneld");
        std::fs::write(&file, FLANNELD_SAMPLE).unwrap();
        let urls = vec![
            "https://master-0.example.com:2379".to_string(),
            "https://master-2.example.com:2379".to_string(),
        ];
        let edit = flannel_endpoints_edit(root.path(), &urls).unwrap();
        assert!(
            edit.describe()
                .starts_with("edit /etc/sysconfig/flanneld: set FLANNEL_ETCD_ENDPOINTS="),
            "{}",
            edit.describe()
        );
        assert_eq!(std::fs::read(&file).unwrap(), FLANNELD_SAMPLE.as_bytes(), "planning writes nothing");
        edit.apply().unwrap();
        assert_only_change(
            FLANNELD_SAMPLE.as_bytes(),
            &std::fs::read(&file).unwrap(),
            "https://master-1.example.com:2379,",
            "",
        );
        assert_eq!(
            std::fs::read(root.path().join("etc/sysconfig/flanneld.old")).unwrap(),
            FLANNELD_SAMPLE.as_bytes()
        );
        let again = flannel_endpoints_edit(root.path(), &urls).unwrap();
        assert!(again.is_noop(), "planned again after applying: nothing to do");

        let e = flannel_endpoints_edit(&root.path().join("nope"), &urls).unwrap_err();
        assert!(
            e.to_string().contains("cannot read /etc/sysconfig/flanneld") && e.to_string().contains("--root"),
            "{e}"
        );
    }
}
