//! Host control: what the recovery flows and the host-files restore change on a host besides
//! data: services started, stopped and restarted (systemd, an OKD static pod, or commands of the
//! operator's own), systemd drop-ins, and config files edited byte-exactly.
//!
//! Everything is plan-then-apply: a [`HostAction`] is made without touching the host, can
//! [`describe`](HostAction::describe) itself (the command it runs, or the edit it makes) and show
//! its [`diff`](HostAction::diff), and [`apply`](HostAction::apply) is idempotent where it can be: a
//! step that already took effect (a file that already says so, a service already stopped) does
//! nothing and says so, so an interrupted plan can be run again from any step.
//!
//! Layering: beside [`crate::source`] (it reads host files the same way, under a `--root`), below
//! [`crate::ops`] and the front ends, which build plans out of these steps.

pub mod command;
pub mod diff;
pub mod edit;
pub mod etcd_conf;
pub mod master_config;
pub mod shell_conf;

use std::fmt;

/// What applying a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It changed the host; the text says how.
    Done(String),
    /// The host already was as the step would make it; nothing was changed.
    AlreadyDone(String),
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Done(what) => write!(f, "{what}"),
            Applied::AlreadyDone(what) => write!(f, "{what} (already done)"),
        }
    }
}
