//! `vaultctl keygen --out FILE`

use std::path::PathBuf;

use crate::context::Common;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the new identity (created 0600; never overwritten).
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(c: &Common, a: Args) -> vault::Result<i32> {
    let (text, recipient) = vault::crypto::generate_identity();
    super::write_secret_file(&a.out, &text)?;
    if c.json {
        output::json(&serde_json::json!({ "identity_file": a.out, "recipient": recipient }));
    } else {
        println!("{recipient}");
        eprintln!(
            "identity written to {} (keep it offline; it decrypts every backup made to this recipient)",
            a.out.display()
        );
    }
    Ok(0)
}
