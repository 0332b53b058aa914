//! The daemon's ID: random, created once next to its catalog (`<catalog>.daemon-id`, mode 0600)
//! and kept across restarts. Slot claims carry it (docs/FORMAT.md section 3a): a restarted daemon
//! finds its own claim by it, and two daemons given the same host name are still two claimants.

use std::io::{ErrorKind as IoKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vault::{Error, Result};

/// Where the ID of the daemon whose catalog is `catalog` lives.
pub fn path_for(catalog: &Path) -> PathBuf {
    let mut p = catalog.as_os_str().to_owned();
    p.push(".daemon-id");
    PathBuf::from(p)
}

fn valid(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Read the ID at `path`, creating it (16 random hex digits, mode 0600) if there is none.
pub fn load_or_create(path: &Path) -> Result<String> {
    let fresh = hex::encode(vault::crypto::random_bytes::<8>());
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(format!("{fresh}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(format!("cannot write the daemon ID file {}", path.display())).with_source(e))?;
            return Ok(fresh);
        }
        Err(e) if e.kind() == IoKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(format!("cannot create the daemon ID file {}", path.display()))
                .with_source(e)
                .hint("the directory of the catalog must be writable by vaultd"));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read the daemon ID file {}", path.display())).with_source(e))?;
    let id = text.trim();
    if !valid(id) {
        return Err(Error::usage(format!(
            "the daemon ID file {} does not hold a daemon ID (16 hex digits)",
            path.display()
        ))
        .hint(
            "remove it: vaultd creates a new one (a slot this daemon claimed before is then another daemon's until its lease runs out)",
        ));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_id_is_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(&dir.path().join("c.sqlite"));
        assert!(p.ends_with("c.sqlite.daemon-id"));
        let id = load_or_create(&p).unwrap();
        assert!(valid(&id), "{id}");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), id);
        std::fs::write(&p, "not an id\n").unwrap();
        let e = load_or_create(&p).unwrap_err();
        assert!(e.to_string().contains("daemon ID"), "{e}");
    }
}
