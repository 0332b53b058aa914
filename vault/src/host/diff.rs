//! A unified diff of two texts, so a plan can show each config edit before anything is written.

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Beyond this many line pairs the diff is one hunk from the first to the last differing line
/// (config files are far smaller).
const MAX_CELLS: usize = 4_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same,
    Del,
    Add,
}

/// `diff -u`-style text of `old` against `new` (`--- label.old`, `+++ label`), or an empty string
/// when they are equal. Lines are compared as bytes; non-UTF-8 bytes are shown lossily.
pub fn unified(label: &str, old: &[u8], new: &[u8]) -> String {
    if old == new {
        return String::new();
    }
    let a = split_lines(old);
    let b = split_lines(new);
    let ops = line_ops(&a, &b);
    let mut out = format!("--- {label}\n+++ {label} (new)\n");
    // positions in a and b at each op
    let mut pos = Vec::with_capacity(ops.len());
    let (mut i, mut j) = (0, 0);
    for op in &ops {
        pos.push((i, j));
        match op {
            Op::Same => {
                i += 1;
                j += 1;
            }
            Op::Del => i += 1,
            Op::Add => j += 1,
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k] != Op::Same).collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * CONTEXT + 1 {
            k += 1;
            end = changed[k];
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let (a0, b0) = pos[start];
        let a_len = ops[start..end].iter().filter(|o| **o != Op::Add).count();
        let b_len = ops[start..end].iter().filter(|o| **o != Op::Del).count();
        out.push_str(&format!("@@ -{} +{} @@\n", range(a0, a_len), range(b0, b_len)));
        for n in start..end {
            let (ai, bi) = pos[n];
            let (mark, line) = match ops[n] {
                Op::Same => (' ', a[ai]),
                Op::Del => ('-', a[ai]),
                Op::Add => ('+', b[bi]),
            };
            out.push(mark);
            out.push_str(&String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)));
            out.push('\n');
            if !line.ends_with(b"\n") {
                out.push_str("\\ No newline at end of file\n");
            }
        }
        k += 1;
    }
    out
}

fn range(start: usize, len: usize) -> String {
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{len}", start + 1),
    }
}

fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|&c| c == b'\n').collect()
}

/// The edit script: longest common subsequence on the lines between the common head and tail.
fn line_ops(a: &[&[u8]], b: &[&[u8]]) -> Vec<Op> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops = vec![Op::Same; head];
    if (am.len() + 1) * (bm.len() + 1) > MAX_CELLS {
        ops.extend(std::iter::repeat_n(Op::Del, am.len()));
        ops.extend(std::iter::repeat_n(Op::Add, bm.len()));
    } else {
        // lcs[i][j]: length of the LCS of am[i..] and bm[j..]
        let w = bm.len() + 1;
        let mut lcs = vec![0u32; (am.len() + 1) * w];
        for i in (0..am.len()).rev() {
            for j in (0..bm.len()).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < am.len() || j < bm.len() {
            if i < am.len() && j < bm.len() && am[i] == bm[j] {
                ops.push(Op::Same);
                i += 1;
                j += 1;
            } else if j < bm.len() && (i == am.len() || lcs[i * w + j + 1] >= lcs[(i + 1) * w + j]) {
                ops.push(Op::Add);
                j += 1;
            } else {
                ops.push(Op::Del);
                i += 1;
            }
        }
        // show deletions before additions within a change, as diff -u does
        let mut k = 0;
        while k < ops.len() {
            if ops[k] == Op::Same {
                k += 1;
                continue;
            }
            let mut e = k;
            while e < ops.len() && ops[e] != Op::Same {
                e += 1;
            }
            ops[k..e].sort_by_key(|o| *o != Op::Del);
            k = e;
        }
    }
    ops.extend(std::iter::repeat_n(Op::Same, tail));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_line_shows_with_three_lines_of_context() {
        let old = b"a\nb\nc\nd\nKEY=1\ne\nf\ng\nh\n";
        let new = b"a\nb\nc\nd\nKEY=2\ne\nf\ng\nh\n";
        assert_eq!(
            unified("/etc/x", old, new),
            "--- /etc/x\n+++ /etc/x (new)\n@@ -2,7 +2,7 @@\n b\n c\n d\n-KEY=1\n+KEY=2\n e\n f\n g\n"
        );
        assert_eq!(unified("/etc/x", old, old), "");
    }

    #[test]
    fn far_apart_changes_make_two_hunks_and_additions_at_the_end_show() {
        let old: Vec<u8> = (1..=20).map(|n| format!("{n}\n")).collect::<String>().into_bytes();
        let new: String = (1..=20)
            .map(|n| match n {
                2 => "two\n".to_string(),
                18 => "eighteen\n".to_string(),
                n => format!("{n}\n"),
            })
            .collect::<String>()
            + "NEW=1\n";
        let d = unified("f", &old, new.as_bytes());
        assert_eq!(d.matches("@@ ").count(), 2, "{d}");
        assert!(
            d.contains("-2\n+two\n") && d.contains("-18\n+eighteen\n") && d.contains("+NEW=1\n"),
            "{d}"
        );
        let d = unified("f", b"A=1", b"A=2");
        assert!(d.contains("-A=1\n\\ No newline at end of file\n+A=2\n\\ No newline"), "{d}");
    }
}
