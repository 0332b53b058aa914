//! The audit as CSV rows and as one self-contained HTML page (inline CSS, no scripts, no
//! external URLs) an auditor can file.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use super::AuditReport;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One CSV: a `record` column says what each row is (`slot` or `control`).
pub fn csv(r: &AuditReport) -> String {
    let mut out = String::from("record,job,group,time,status,snapshot,host,delay_secs,control,detail\n");
    for j in &r.jobs {
        for g in &j.groups {
            for s in &g.slots {
                let row = [
                    "slot".to_string(),
                    j.job.clone(),
                    g.group.clone(),
                    rfc(s.slot),
                    s.status.as_str().to_string(),
                    s.snapshot.clone().unwrap_or_default(),
                    s.host.clone().unwrap_or_default(),
                    s.delay_secs.map(|d| d.to_string()).unwrap_or_default(),
                    String::new(),
                    String::new(),
                ];
                out += &row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
                out.push('\n');
            }
        }
    }
    for c in &r.controls {
        let row = [
            "control",
            "",
            &c.resource,
            &rfc(r.generated),
            c.status.as_str(),
            "",
            "",
            "",
            c.control,
            &c.detail,
        ];
        out += &row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o += "&amp;",
            '<' => o += "&lt;",
            '>' => o += "&gt;",
            '"' => o += "&quot;",
            '\'' => o += "&#39;",
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "
body{font-family:sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.compliant{background:#c8f0c8}.non-compliant{background:#f6b8b8}.insufficient-data{background:#eee}
.cal td{width:14px;height:14px;padding:0;border:1px solid #fff}
.taken{background:#2e9e44}.late{background:#e8b400}.covered{background:#4a7fd6}.missed{background:#d62f2f}
.none{background:#f4f4f4}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.verdict{font-size:18px;padding:8px;display:inline-block}
";

/// One self-contained HTML page: verdict, controls, per job the recorded policies and a calendar
/// of slots per group (one row a day, one cell a slot, coloured by status), retention rules,
/// verification coverage, and the deletion log section.
pub fn html(r: &AuditReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>vault retention audit {}</title><style>{STYLE}</style></head><body>",
        esc(&rfc(r.generated))
    );
    let _ = write!(
        h,
        "<h1>vault retention audit</h1><p>Generated {} for the window from {} (UTC).</p>",
        esc(&rfc(r.generated)),
        esc(&rfc(r.since))
    );
    let (class, text) = if r.compliant {
        ("compliant", "All controls compliant")
    } else {
        ("non-compliant", "At least one control is NON-COMPLIANT")
    };
    let _ = write!(h, "<p class=\"verdict {class}\">{text}</p>");
    h += "<h2>Controls</h2><table><tr><th>control</th><th>resource</th><th>status</th><th>detail</th></tr>";
    for c in &r.controls {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(c.control),
            esc(&c.resource),
            c.status.as_str(),
            c.status.as_str(),
            esc(&c.detail)
        );
    }
    h += "</table>";
    h += "<p class=\"legend\">Slots:<span class=\"taken\"></span>taken<span class=\"late\"></span>late<span class=\"covered\"></span>covered<span class=\"missed\"></span>missed</p>";
    for j in &r.jobs {
        let _ = write!(h, "<h2>Job {} ({}, scope {})</h2>", esc(&j.job), esc(&j.kind), esc(&j.scope));
        h += "<h3>Recorded policies</h3><table><tr><th>in force from</th><th>recorded by</th><th>schedule</th><th>retention</th></tr>";
        for p in &j.policies {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&rfc(p.since)),
                esc(&p.host),
                esc(&p.schedule),
                p.timezone.as_deref().map(|z| format!(" ({})", esc(z))).unwrap_or_default(),
                esc(&p.retention)
            );
        }
        h += "</table>";
        for g in &j.groups {
            let c = &g.counts;
            let _ = write!(
                h,
                "<h3>Group {}</h3><p>{} slot(s) expected: {} taken, {} late, {} covered, {} missed{}.</p>",
                esc(&g.group),
                c.expected,
                c.taken,
                c.late,
                c.covered,
                c.missed,
                if g.truncated { " (slot list truncated)" } else { "" }
            );
            calendar(&mut h, &g.slots);
            if !g.retention.is_empty() {
                h += "<p>Retention: what the policy in force now promises (the buckets or slots the recorded schedule expected, newest first) against the snapshots the vault holds; a shortfall is a missed slot or a removed snapshot.</p>";
                h += "<table><tr><th>retention rule</th><th>promised</th><th>held</th><th>status</th><th>shortfall</th></tr>";
                for rc in &g.retention {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                        esc(&rc.rule),
                        rc.promised,
                        rc.held,
                        rc.status.as_str(),
                        rc.status.as_str(),
                        esc(&rc.shortfall.join(", "))
                    );
                }
                h += "</table>";
            }
            h += "<table><tr><th>snapshot</th><th>time</th><th>host</th><th>last structural check</th><th>last data check</th></tr>";
            for s in g.snapshots.iter().rev().take(200) {
                let v = |x: &Option<crate::catalog::VerifiedAt>| match x {
                    None => "never".to_string(),
                    Some(v) => format!("{} {}", rfc(v.time), if v.ok { "ok" } else { "FAILED" }),
                };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.id[..12.min(s.id.len())]),
                    esc(&rfc(s.time)),
                    esc(&s.host),
                    esc(&v(&s.coverage.structure)),
                    esc(&v(&s.coverage.data))
                );
            }
            h += "</table>";
        }
    }
    deletion_log(&mut h, &r.deletion_log);
    if !r.warnings.is_empty() {
        h += "<h2>Warnings</h2><ul>";
        for w in &r.warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h += "</ul>";
    }
    h += "</body></html>\n";
    h
}

/// The deletion log: what its checks found, then every record and the snapshots it lists.
fn deletion_log(h: &mut String, d: &super::DeletionLogSection) {
    *h += "<h2>Deletion log</h2>";
    let _ = write!(h, "<p>{}</p>", esc(&d.note));
    if !d.findings.is_empty() {
        *h += "<table><tr><th>finding</th><th>detail</th></tr>";
        for f in &d.findings {
            let _ = write!(
                h,
                "<tr><td class=\"non-compliant\">{}</td><td>{}</td></tr>",
                esc(f.kind),
                esc(&f.detail)
            );
        }
        *h += "</table>";
    }
    if d.records.is_empty() {
        if d.available {
            *h += "<p>The log is empty: nothing was ever forgotten or pruned.</p>";
        }
        return;
    }
    *h += "<table><tr><th>#</th><th>time</th><th>action</th><th>by</th><th>host</th><th>snapshot</th><th>taken</th><th>group</th><th>why</th></tr>";
    for s in &d.records {
        let Some(rec) = &s.record else {
            let _ = write!(
                h,
                "<tr><td>{}</td><td colspan=\"8\" class=\"non-compliant\">UNREADABLE {}: {}</td></tr>",
                s.seq,
                esc(&s.name),
                esc(s.unreadable.as_deref().unwrap_or(""))
            );
            continue;
        };
        let action = format!("{:?}", rec.action).to_lowercase();
        for (i, e) in rec.entries.iter().enumerate() {
            let head = if i == 0 {
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    rec.seq,
                    esc(&rfc(rec.time)),
                    esc(&action),
                    esc(&rec.command),
                    esc(&rec.host)
                )
            } else {
                "<td></td><td></td><td></td><td></td><td></td>".to_string()
            };
            let _ = write!(
                h,
                "<tr>{head}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.snapshot.short()),
                esc(&rfc(e.time)),
                esc(&e.group),
                esc(&e.reasons.join("; "))
            );
        }
    }
    *h += "</table>";
}

/// One row per UTC day (newest first, at most 120), one cell per slot, titled with the slot.
fn calendar(h: &mut String, slots: &[super::SlotResult]) {
    use std::collections::BTreeMap;
    let mut days: BTreeMap<String, Vec<&super::SlotResult>> = BTreeMap::new();
    for s in slots {
        days.entry(s.slot.format("%Y-%m-%d").to_string()).or_default().push(s);
    }
    if days.is_empty() {
        *h += "<p>No slot expected in the window.</p>";
        return;
    }
    *h += "<table class=\"cal\">";
    for (day, ss) in days.iter().rev().take(120) {
        let _ = write!(h, "<tr><th>{}</th>", esc(day));
        for s in ss.iter().take(300) {
            let title = format!(
                "{} {}{}",
                rfc(s.slot),
                s.status.as_str(),
                s.host.as_deref().map(|x| format!(" by {x}")).unwrap_or_default()
            );
            let _ = write!(h, "<td class=\"{}\" title=\"{}\"></td>", s.status.as_str(), esc(&title));
        }
        if ss.len() > 300 {
            let _ = write!(h, "<td class=\"none\">+{}</td>", ss.len() - 300);
        }
        *h += "</tr>";
    }
    *h += "</table>";
}
