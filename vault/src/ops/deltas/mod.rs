//! Continuous etcd capture and point-in-time restore (docs/FORMAT.md section 8e): delta segments
//! of watch events after a base etcd-v3 snapshot, chained by link objects.

pub mod chain;
pub mod history;
pub mod replay;
pub mod restore;
pub mod segment;
pub mod segment_read;
pub mod target;
pub mod verify;
pub mod watcher;
