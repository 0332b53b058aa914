//! vault: an encrypted, deduplicated backup vault for etcd-backed clusters.
//!
//! Layers, bottom-up: [`store`] (object backends) -> [`format`], [`crypto`], [`chunker`], [`pack`]
//! (the vault format, docs/FORMAT.md) -> [`repo`] (a vault opened with its keys) -> [`catalog`]
//! (SQLite cache) -> [`source`] (what is captured) and [`host`] (services and config files on a
//! host) -> [`ops`] (backup, verify, restore) -> front ends
//! (`vaultctl`, `vaultd`).

pub mod catalog;
pub mod chunker;
pub mod claim;
pub mod config;
pub mod crypto;
pub mod delta_stream;
pub mod error;
pub mod format;
pub mod host;
pub mod ops;
pub mod pack;
pub mod repo;
pub mod source;
pub mod store;
pub mod trust;

pub use error::{Error, ErrorKind, Result};
