//! `etcdClientInfo.urls` in an OKD 3.x `master-config.yaml`: read, and edited without round-tripping
//! the YAML through a serializer. Only the list's item values change: an unchanged item keeps its
//! line as it was, a changed one keeps its indentation, dash, quotes and trailing comment, new
//! items are written like the last one, and every other byte of the file stays. Block lists
//! (`urls:` then `- URL` lines) and flow lists (`urls: [A, B]` on one line) are both understood.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::edit::{FileEdit, line_end, read_for_edit};
use crate::error::{Error, Result};

/// Where OKD 3.x keeps the master's config.
pub const MASTER_CONFIG: &str = "/etc/origin/master/master-config.yaml";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    Plain,
    Single,
    Double,
}

/// One list item's value: where its text is and how it is quoted.
#[derive(Clone, Debug)]
struct Item {
    value: String,
    /// The value's text, inside its quotes.
    span: Range<usize>,
    quote: Quote,
    /// Its whole line, newline included (block lists only).
    line: Range<usize>,
}

#[derive(Debug)]
enum UrlList {
    /// `- URL` lines; `after` is where a first item goes when there are none.
    Block { items: Vec<Item>, after: usize, indent: String },
    /// `[A, B]`: the text between the brackets.
    Flow { items: Vec<Item>, inner: Range<usize> },
}

/// A `master-config.yaml`, as loaded.
pub struct MasterConfig {
    host_path: PathBuf,
    file: PathBuf,
    text: String,
}

impl MasterConfig {
    /// Read `host_path` (normally [`MASTER_CONFIG`]) on the host whose `/` is at `root`.
    pub fn load(root: &Path, host_path: &Path) -> Result<MasterConfig> {
        let (file, bytes) = read_for_edit(root, host_path)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::usage(format!("{} is not UTF-8 text", host_path.display())))?;
        Ok(MasterConfig {
            host_path: host_path.to_path_buf(),
            file,
            text,
        })
    }

    /// The etcd client URLs the master uses.
    pub fn etcd_client_urls(&self) -> Result<Vec<String>> {
        Ok(match self.find()? {
            UrlList::Block { items, .. } | UrlList::Flow { items, .. } => items.into_iter().map(|i| i.value).collect(),
        })
    }

    /// The edit that makes `etcdClientInfo.urls` list exactly `urls` (a no-op edit if it does).
    pub fn etcd_urls_edit(&self, urls: &[String]) -> Result<FileEdit> {
        if urls.is_empty() {
            return Err(Error::usage(format!(
                "refusing to leave etcdClientInfo.urls in {} empty",
                self.host_path.display()
            ))
            .hint("the master needs at least one etcd URL"));
        }
        let mut replacements = match self.find()? {
            UrlList::Flow { items, inner } => {
                let quote = items.first().map_or(Quote::Plain, |i| i.quote);
                let same = items.len() == urls.len() && items.iter().zip(urls).all(|(i, u)| &i.value == u);
                let text: Vec<String> = urls.iter().map(|u| encode(u, quote, true)).collect();
                if same { vec![] } else { vec![(inner, text.join(", "))] }
            }
            UrlList::Block { items, after, indent } => self.block_replacements(&items, after, &indent, urls),
        };
        let mut new = self.text.clone();
        // from the end, and at one offset a removal before an insertion
        replacements.sort_by_key(|(r, _)| std::cmp::Reverse((r.start, r.end)));
        for (range, text) in replacements {
            new.replace_range(range, &text);
        }
        Ok(FileEdit {
            host_path: self.host_path.clone(),
            file: self.file.clone(),
            summary: format!("set etcdClientInfo.urls to {}", urls.join(", ")),
            old: self.text.clone().into_bytes(),
            new: new.into_bytes(),
        })
    }

    /// The replacements turning the block list `items` into `urls`: items that stay keep their
    /// lines (matched by value, in order), a changed item is rewritten in place, a removed item's
    /// line goes, and new items are written after their predecessor like the nearest item.
    fn block_replacements(&self, items: &[Item], after: usize, indent: &str, urls: &[String]) -> Vec<(Range<usize>, String)> {
        let mut out = Vec::new();
        let kept = common_subsequence(items, urls);
        let (mut oi, mut nj) = (0, 0);
        for (ok, nk) in kept.into_iter().chain(std::iter::once((items.len(), urls.len()))) {
            let (old_gap, new_gap) = (&items[oi..ok], &urls[nj..nk]);
            for (item, url) in old_gap.iter().zip(new_gap) {
                out.push((item.span.clone(), encode_in_place(url, item.quote)));
            }
            for extra in old_gap.iter().skip(new_gap.len()) {
                out.push((extra.line.clone(), String::new()));
            }
            if new_gap.len() > old_gap.len() {
                // after the last item before the new ones (replaced or kept), else before the first
                let before = if oi + old_gap.len().min(new_gap.len()) > 0 {
                    Some(&items[oi + old_gap.len().min(new_gap.len()) - 1])
                } else {
                    None
                };
                let model = before.or(items.first());
                let at = match (before, items.first()) {
                    (Some(b), _) => b.line.end,
                    (None, Some(first)) => first.line.start,
                    (None, None) => after,
                };
                let (prefix, quote) = match model {
                    Some(m) => {
                        let value_start = m.span.start - usize::from(m.quote != Quote::Plain);
                        (self.text[m.line.start..value_start].to_string(), m.quote)
                    }
                    None => (format!("{indent}- "), Quote::Plain),
                };
                let eol = line_end(&self.text);
                let mut lines = String::new();
                if !self.text[..at].ends_with('\n') {
                    lines.push_str(eol);
                }
                for url in &new_gap[old_gap.len()..] {
                    lines.push_str(&format!("{prefix}{}{eol}", encode(url, quote, false)));
                }
                out.push((at..at, lines));
            }
            (oi, nj) = (ok + 1, nk + 1);
        }
        out
    }

    /// Locate the top-level `etcdClientInfo:` block's `urls:` list.
    fn find(&self) -> Result<UrlList> {
        let lines = lines_with_offsets(&self.text);
        let not_found = |what: &str| {
            Error::usage(format!("{} has {what}", self.host_path.display())).hint(
                "vault edits etcdClientInfo.urls written as a block (`urls:` then `- URL` lines) or a one-line flow list (`urls: [A, B]`)",
            )
        };
        let starts: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, (_, l, _))| key_of(l).is_some_and(|(indent, key, rest)| indent == 0 && key == "etcdClientInfo" && rest.is_empty()))
            .map(|(n, _)| n)
            .collect();
        let [start] = starts[..] else {
            return Err(not_found(if starts.is_empty() {
                "no etcdClientInfo: block"
            } else {
                "more than one etcdClientInfo: block"
            }));
        };
        let mut child_indent = None;
        for n in start + 1..lines.len() {
            let (offset, line, next) = lines[n];
            if is_blank_or_comment(line) {
                continue;
            }
            let indent = indent_of(line);
            if indent == 0 {
                break;
            }
            let child = *child_indent.get_or_insert(indent);
            let Some((key_indent, "urls", rest)) = key_of(line) else { continue };
            if key_indent != child {
                continue;
            }
            let rest_at = offset + line.len() - rest.len();
            if rest.starts_with('[') {
                return self
                    .flow_list(rest_at, rest)
                    .ok_or_else(|| not_found("an etcdClientInfo.urls flow list vault cannot read"));
            }
            if !rest.is_empty() {
                return Err(not_found("an etcdClientInfo.urls that is not a list"));
            }
            return Ok(self.block_list(&lines[n + 1..], key_indent, next));
        }
        Err(not_found("no urls: list in its etcdClientInfo: block"))
    }

    fn block_list(&self, lines: &[(usize, &str, usize)], key_indent: usize, after: usize) -> UrlList {
        let mut items = Vec::new();
        let mut item_indent = None;
        for &(offset, line, next) in lines {
            if is_blank_or_comment(line) {
                continue;
            }
            let indent = indent_of(line);
            let body = &line[indent..];
            let is_item = body == "-" || body.starts_with("- ");
            if !is_item || indent < key_indent || item_indent.is_some_and(|i| i != indent) {
                break;
            }
            item_indent = Some(indent);
            let value_text = body[1..].trim_start();
            let value_at = offset + line.len() - value_text.len();
            let (value, span, quote) = scalar(value_text, value_at);
            items.push(Item {
                value,
                span,
                quote,
                line: offset..next,
            });
        }
        UrlList::Block {
            items,
            after: after.min(self.text.len()),
            indent: " ".repeat(key_indent),
        }
    }

    /// `[A, "B", 'C']  # comment` starting at `at`.
    fn flow_list(&self, at: usize, rest: &str) -> Option<UrlList> {
        let close = rest.find(']')?;
        let inner_text = &rest[1..close];
        let mut items = Vec::new();
        let mut pos = 0;
        while pos < inner_text.len() {
            let piece = &inner_text[pos..];
            let lead = piece.len() - piece.trim_start().len();
            let piece = piece.trim_start();
            if piece.is_empty() {
                break;
            }
            let (value, span, quote, used) = match piece.as_bytes()[0] {
                b'"' | b'\'' => {
                    let (value, span, quote) = scalar(piece, at + 1 + pos + lead);
                    let used = span.end - (at + 1 + pos + lead) + 1;
                    (value, span, quote, used)
                }
                _ => {
                    let end = piece.find(',').unwrap_or(piece.len());
                    let text = piece[..end].trim_end();
                    let start = at + 1 + pos + lead;
                    (text.to_string(), start..start + text.len(), Quote::Plain, text.len())
                }
            };
            items.push(Item {
                value,
                span,
                quote,
                line: 0..0,
            });
            let after = &inner_text[pos + lead + used..];
            let skip = after.len() - after.trim_start().len();
            pos += lead + used + skip;
            if inner_text[pos..].starts_with(',') {
                pos += 1;
            } else if pos < inner_text.len() {
                return None;
            }
        }
        Some(UrlList::Flow {
            items,
            inner: at + 1..at + close,
        })
    }
}

/// The edit setting `etcdClientInfo.urls` of the master config at `host_path` under `root`.
pub fn etcd_urls_edit(root: &Path, host_path: &Path, urls: &[String]) -> Result<FileEdit> {
    MasterConfig::load(root, host_path)?.etcd_urls_edit(urls)
}

/// Index pairs of the longest common subsequence of the items' values and `urls`, in order.
fn common_subsequence(items: &[Item], urls: &[String]) -> Vec<(usize, usize)> {
    let (n, m) = (items.len(), urls.len());
    let mut len = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            len[i][j] = if items[i].value == urls[j] {
                len[i + 1][j + 1] + 1
            } else {
                len[i + 1][j].max(len[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if items[i].value == urls[j] {
            out.push((i, j));
            i += 1;
            j += 1;
        } else if len[i + 1][j] >= len[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Each line: (where it starts, its text without the line end, where the next line starts).
fn lines_with_offsets(text: &str) -> Vec<(usize, &str, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        out.push((offset, line.strip_suffix('\r').unwrap_or(line), offset + raw.len()));
        offset += raw.len();
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// `(indent, key, rest)` of a `key: rest` line, the rest without a trailing comment.
fn key_of(line: &str) -> Option<(usize, &str, &str)> {
    let indent = indent_of(line);
    let body = &line[indent..];
    let colon = body.find(':')?;
    let key = &body[..colon];
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let rest = &body[colon + 1..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    let rest = if rest.starts_with('#') { "" } else { rest };
    Some((indent, key, rest))
}

/// A scalar at the start of `text` (which starts at byte `at`): its value, the span of its text
/// inside any quotes, and its quoting. A plain scalar ends at ` #` or the end.
fn scalar(text: &str, at: usize) -> (String, Range<usize>, Quote) {
    match text.chars().next() {
        Some('"') => {
            let mut value = String::new();
            let mut chars = text[1..].char_indices();
            let mut end = text.len() - 1;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = i;
                        break;
                    }
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    c => value.push(c),
                }
            }
            (value, at + 1..at + 1 + end, Quote::Double)
        }
        Some('\'') => {
            let body = &text[1..];
            let mut end = body.len();
            let mut i = 0;
            while let Some(q) = body[i..].find('\'') {
                if body[i + q + 1..].starts_with('\'') {
                    i += q + 2;
                } else {
                    end = i + q;
                    break;
                }
            }
            (body[..end].replace("''", "'"), at + 1..at + 1 + end, Quote::Single)
        }
        _ => {
            let end = text.find(" #").unwrap_or(text.len());
            let value = text[..end].trim_end();
            (value.to_string(), at..at + value.len(), Quote::Plain)
        }
    }
}

/// The text for `value` in the item's place: inside its quotes, or plain if it can be (double-quoted
/// otherwise).
fn encode_in_place(value: &str, quote: Quote) -> String {
    match quote {
        Quote::Plain => encode(value, Quote::Plain, false),
        Quote::Single => value.replace('\'', "''"),
        Quote::Double => value.replace('\\', "\\\\").replace('"', "\\\""),
    }
}

/// `value` as a whole YAML scalar in the given style.
fn encode(value: &str, quote: Quote, in_flow: bool) -> String {
    match quote {
        Quote::Single => format!("'{}'", value.replace('\'', "''")),
        Quote::Double => format!("\"{}\"", encode_in_place(value, Quote::Double)),
        Quote::Plain => {
            let first_ok = value.chars().next().is_some_and(|c| !"-?:,[]{}#&*!|>'\"%@` \t".contains(c));
            let needs_quotes = value.ends_with([' ', ':'])
                || value.contains(": ")
                || value.contains(" #")
                || (in_flow && value.contains([',', '[', ']', '{', '}']));
            let plain = first_ok && !needs_quotes;
            if plain {
                value.to_string()
            } else {
                encode(value, Quote::Double, in_flow)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = include_str!("testdata/master-config.yaml");
    const FLOW: &str = include_str!("testdata/master-config-flow.yaml");

    fn config(text: &str) -> MasterConfig {
        MasterConfig {
            host_path: PathBuf::from(MASTER_CONFIG),
            file: PathBuf::from("/nonexistent"),
            text: text.to_string(),
        }
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn new_text(text: &str, list: &[&str]) -> String {
        String::from_utf8(config(text).etcd_urls_edit(&urls(list)).unwrap().new).unwrap()
    }

    #[test]
    fn the_block_list_is_read() {
        assert_eq!(
            config(BLOCK).etcd_client_urls().unwrap(),
            urls(&[
                "https://master-0.example.com:2379",
                "https://master-1.example.com:2379",
                "https://master-2.example.com:2379"
            ])
        );
        assert_eq!(
            config(FLOW).etcd_client_urls().unwrap(),
            urls(&["https://etcd-0.example.com:2379", "https://etcd-1.example.com:2379"])
        );
    }

    #[test]
    fn removing_a_member_drops_only_its_line() {
        let new = new_text(BLOCK, &["https://master-0.example.com:2379", "https://master-2.example.com:2379"]);
        assert_eq!(new, BLOCK.replace("  - https://master-1.example.com:2379   # rack B\n", ""));
    }

    #[test]
    fn adding_a_member_writes_a_line_like_the_last_one_and_a_changed_item_keeps_its_comment() {
        let new = new_text(
            BLOCK,
            &[
                "https://master-0.example.com:2379",
                "https://etcd-9.example.com:2379",
                "https://master-2.example.com:2379",
                "https://etcd0.example.com:2379",
            ],
        );
        let expected = BLOCK
            .replace(
                "https://master-1.example.com:2379   # rack B",
                "https://etcd-9.example.com:2379   # rack B",
            )
            .replace(
                "  - https://master-2.example.com:2379\n",
                "  - https://master-2.example.com:2379\n  - https://etcd0.example.com:2379\n",
            );
        assert_eq!(new, expected);
        let edit = config(BLOCK).etcd_urls_edit(&config(BLOCK).etcd_client_urls().unwrap()).unwrap();
        assert!(edit.is_noop(), "the same list: nothing to change");
    }

    #[test]
    fn a_flow_list_keeps_its_quotes_and_comment() {
        let new = new_text(
            FLOW,
            &[
                "https://etcd-1.example.com:2379",
                "https://etcd-2.example.com:2379",
                "https://etcd-3.example.com:2379",
            ],
        );
        assert_eq!(
            new,
            FLOW.replace(
                "[\"https://etcd-0.example.com:2379\", \"https://etcd-1.example.com:2379\"]",
                "[\"https://etcd-1.example.com:2379\", \"https://etcd-2.example.com:2379\", \"https://etcd-3.example.com:2379\"]"
            )
        );
        assert_eq!(
            new_text(
                "etcdClientInfo:\n  urls: [ https://a:2379 , 'https://b:2379' ]\n",
                &["https://c:2379"]
            ),
            "etcdClientInfo:\n  urls: [https://c:2379]\n"
        );
    }

    #[test]
    fn only_the_top_level_etcd_client_info_counts_and_unreadable_shapes_are_refused() {
        let text = "other:\n  urls:\n  - https://x:1\netcdClientInfo:\n  ca: ca.crt\n  urls:\n    - 'https://a:2379'\n    # spare\n    - \"https://b:2379\"\nnext: 1\n";
        assert_eq!(
            config(text).etcd_client_urls().unwrap(),
            urls(&["https://a:2379", "https://b:2379"])
        );
        assert_eq!(
            new_text(text, &["https://a:2379", "https://c:2379", "https://d:2379"]),
            text.replace("\"https://b:2379\"\n", "\"https://c:2379\"\n    - \"https://d:2379\"\n")
        );
        for (bad, why) in [
            ("apiVersion: v1\n", "no etcdClientInfo"),
            ("etcdClientInfo:\n  ca: x\n", "no urls"),
            ("etcdClientInfo:\n  urls: https://a:2379\n", "not a list"),
            (
                "etcdClientInfo:\n  urls: [https://a:2379,\n    https://b:2379]\n",
                "flow list vault cannot read",
            ),
        ] {
            let e = config(bad).etcd_client_urls().unwrap_err();
            assert!(e.to_string().contains(why) && e.hint.is_some(), "{bad}: {e}");
        }
        let crlf = "etcdClientInfo:\r\n  urls:\r\n  - https://a:2379 # one\r\nnext: 1\r\n";
        assert_eq!(config(crlf).etcd_client_urls().unwrap(), urls(&["https://a:2379"]));
        assert_eq!(
            new_text(crlf, &["https://a:2379", "https://b:2379"]),
            crlf.replace("# one\r\n", "# one\r\n  - https://b:2379\r\n")
        );
        let e = config(BLOCK).etcd_urls_edit(&[]).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn the_edit_is_applied_in_a_host_tree_and_keeps_the_original() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/origin/master");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("master-config.yaml"), BLOCK).unwrap();
        let list = urls(&["https://master-0.example.com:2379", "https://master-2.example.com:2379"]);
        let edit = etcd_urls_edit(root.path(), Path::new(MASTER_CONFIG), &list).unwrap();
        assert!(
            edit.diff().contains("-  - https://master-1.example.com:2379   # rack B\n"),
            "{}",
            edit.diff()
        );
        edit.apply().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("master-config.yaml.old")).unwrap(), BLOCK);
        assert_eq!(
            MasterConfig::load(root.path(), Path::new(MASTER_CONFIG))
                .unwrap()
                .etcd_client_urls()
                .unwrap(),
            list
        );
    }
}
