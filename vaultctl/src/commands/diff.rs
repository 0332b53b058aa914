//! `vaultctl diff ID [ID2] [--root DIR]`: what changed between two files snapshots, or between a
//! snapshot and the live files (default).

use std::path::PathBuf;

use vault::Result;
use vault::format::PayloadKind;
use vault::ops::files::{diff_trees, live_entries, load_tree};

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The older snapshot.
    id: String,
    /// The newer snapshot; default: the live files.
    id2: Option<String>,
    /// Where the live files are (default /).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

pub async fn run(c: &Common, a: Args) -> Result<i32> {
    let (vault, catalog) = c.restorer("diff").await?;
    let old = load_tree(&vault, &catalog, &catalog.resolve_kind(&a.id, &PayloadKind::Files)?).await?;
    let (new_entries, against) = match &a.id2 {
        Some(id2) => (
            load_tree(&vault, &catalog, &catalog.resolve_kind(id2, &PayloadKind::Files)?)
                .await?
                .entries,
            format!("snapshot {id2}"),
        ),
        None => {
            let root = a.root.clone();
            let tree = old.clone();
            let live = tokio::task::spawn_blocking(move || live_entries(&root, &tree))
                .await
                .map_err(|e| vault::Error::io("diff thread failed").with_source(e))??;
            (live, format!("the live files under {}", a.root.display()))
        }
    };
    let changes = diff_trees(&old.entries, &new_entries);
    if c.json {
        output::json(&changes);
    } else {
        for ch in &changes {
            let sign = match ch.change.as_str() {
                "added" => "+",
                "removed" => "-",
                _ => "M",
            };
            if ch.what.is_empty() {
                println!("{sign} {}", ch.path);
            } else {
                println!("{sign} {}  ({})", ch.path, ch.what.join(", "));
            }
        }
        println!("{} difference(s) between snapshot {} and {against}", changes.len(), a.id);
    }
    Ok(0)
}
