//! The etcd recovery flows: the runbook's disaster paths, one command per host. Each flow makes a
//! [`plan::Plan`] of numbered steps without changing anything, runs pre-flight checks
//! ([`preflight`]), and with `--execute` applies the steps one at a time through a journal on the
//! host ([`journal`]), so an interrupted flow continues with `--resume`.
//!
//! - [`recover`]: flow 1, the first member back from a snapshot as a one-member cluster;
//! - [`join`]: flow 2, every other member joins it;
//! - [`member`]: flows 3 and 4, `member remove` of a failed member and `member add` of a new one
//!   (with [`certs`], its certificates from the cluster's CA);
//!
//! Layering: over [`crate::host`] (services, drop-ins, config edits) and the etcd restore
//! operations; the front ends only parse options and print.

pub mod certs;
pub mod cluster;
pub mod join;
pub mod journal;
pub mod member;
pub mod options;
pub mod plan;
pub mod preflight;
pub mod recover;

pub use journal::{JOURNAL, Journal, Progress};
pub use options::{FlowOptions, LocalMember};
pub use plan::{FlowContext, Plan, Step};
pub use preflight::{Check, CheckStatus};
