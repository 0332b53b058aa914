//! vaultd, the unattended daemon (issue 4): its config file, `check-config`, and `run` (the
//! scheduler, the HTTP API and metrics, SIGHUP reload, systemd readiness). Logic another front end
//! would need lives in the `vault` library (e.g. `vault::source::selection` for files jobs).

pub mod api;
pub mod audit;
pub mod check;
pub mod config;
pub mod daemon_id;
pub mod deltas;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod policy_record;
pub mod retention;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod webhook;

#[cfg(test)]
mod check_tests;
