//! Retention: which snapshots a policy keeps, and why (plan-then-apply, like `repair.rs`): the
//! plan says what goes and why, applying it appends a forget record to the deletion log.
//!
//! [`policy`] the `RetentionPolicy` (CLI flags, vaultd config and library alike), [`group`] the
//! group a snapshot is counted in (cluster + job for etcd, host + job for host jobs), [`plan`]
//! `plan_retention`: every snapshot with its decision and every reason, floors included, [`holds`]
//! the hold and release events stored in the vault and the holds they give, [`log`] the
//! hash-chained deletion log that holds the tombstones.

pub mod forget;
pub mod group;
pub mod holds;
pub mod log;
pub mod plan;
pub mod policy;
#[cfg(test)]
mod tests;

pub use group::{Group, Scope, Source};
pub use plan::{Decision, GroupPlan, Hold, Reason, RetentionPlan, SnapshotDecision, plan_retention};
pub use policy::{RetentionPolicy, Span, Unit};
