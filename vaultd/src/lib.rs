//! vaultd, the unattended daemon (issue 4): its config file and `check-config`. The scheduler,
//! HTTP API and metrics are to come. Logic another front end would need lives in the `vault`
//! library (e.g. `vault::source::selection` for files jobs).

pub mod check;
pub mod config;

#[cfg(test)]
mod check_tests;
