//! Human and JSON output, progress bars.

use std::io::IsTerminal;

use serde::Serialize;
use vault::Error;

pub fn json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialize output"));
}

pub fn error(as_json: bool, e: &Error) {
    if as_json {
        let v = serde_json::json!({
            "error": e.what,
            "kind": format!("{:?}", e.kind),
            "detail": e.to_string(),
            "hint": e.hint,
            "exit_code": e.kind.exit_code(),
        });
        eprintln!("{}", serde_json::to_string_pretty(&v).expect("serialize error"));
    } else {
        eprintln!("vaultctl: error: {e}");
    }
}

/// A byte progress bar on stderr when it is a terminal and output is not JSON.
pub fn progress(as_json: bool, total: Option<u64>, msg: &str) -> Option<indicatif::ProgressBar> {
    if as_json || !std::io::stderr().is_terminal() {
        return None;
    }
    let (pb, template) = match total {
        Some(t) => (
            indicatif::ProgressBar::new(t),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::no_length(),
            "{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}",
        ),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    Some(pb)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A progress callback that moves the bar, if there is one.
pub fn progress_fn(pb: &Option<indicatif::ProgressBar>) -> Option<vault::ops::backup::ProgressFn> {
    pb.clone()
        .map(|pb| std::sync::Arc::new(move |n: u64| pb.set_position(n)) as vault::ops::backup::ProgressFn)
}

/// Clear a progress bar, if there is one.
pub fn finish(pb: Option<indicatif::ProgressBar>) {
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
}
