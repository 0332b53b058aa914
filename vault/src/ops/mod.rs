//! Operations: what vaultctl commands and vaultd jobs do, over the vault, catalog and sources.

pub mod audit;
pub mod backup;
pub mod deltas;
pub mod etcd_datadir;
pub mod etcd_restore;
pub mod etcd_v2;
pub mod files;
pub mod lease_lock;
pub mod pack_health;
pub mod packing;
pub mod prune;
pub mod read;
pub mod recovery;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod safe_fs;
pub mod verify;
pub mod verify_records;

/// Run CPU- or SQLite-bound work from async code without stalling the runtime's other tasks (the
/// daemon's API, other jobs): on a multi-threaded runtime the worker hands its tasks over first.
/// On a current-thread runtime (tests) it simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
