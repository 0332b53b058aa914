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
//! Layering: below [`crate::source`] (captures read host files through [`under_root`] and
//! [`etcd_conf`] too) and [`crate::ops`] and the front ends, which build plans out of these steps.

pub mod command;
pub mod diff;
pub mod dropin;
pub mod edit;
pub mod etcd_conf;
pub mod master_config;
pub mod restart;
pub mod service;
pub mod shell_conf;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::Result;
pub use dropin::DropIn;
pub use edit::FileEdit;
pub use service::{Host, ServiceControl, ServiceOp, ServiceState};

/// Map an absolute host path to where it is under `root` (the host tree's `/`: `/` itself, or a
/// `--root`). Only normal components are kept, so nothing can climb out of `root`.
pub fn under_root(root: &Path, host_path: &Path) -> PathBuf {
    let rel: PathBuf = host_path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    root.join(rel)
}

/// One step a plan takes on a host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAction {
    /// Start, stop or restart a service.
    Service(ServiceControl, ServiceOp),
    /// `systemctl daemon-reload`.
    DaemonReload,
    WriteDropIn(DropIn),
    RemoveDropIn(DropIn),
    /// Change one config file.
    Edit(FileEdit),
    /// Run a command (without a shell), e.g. `restorecon -R /var/lib/etcd`.
    Run(Vec<String>),
}

impl HostAction {
    /// One line for a numbered plan: what it does and the command it runs (an edit's diff is
    /// [`HostAction::diff`]).
    pub fn describe(&self, host: &Host) -> String {
        match self {
            HostAction::Service(control, op) => {
                let verb = match op {
                    ServiceOp::Start => "start",
                    ServiceOp::Stop => "stop",
                    ServiceOp::Restart => "restart",
                };
                format!("{verb} {}: {}", control.name(), control.commands(*op, host).join(" && "))
            }
            HostAction::DaemonReload => format!(
                "reload systemd's units: {}",
                command::shell_join(&host.systemctl(&["daemon-reload"]))
            ),
            HostAction::WriteDropIn(d) => format!("write the systemd drop-in {}", d.host_path().display()),
            HostAction::RemoveDropIn(d) => format!("remove the systemd drop-in {}", d.host_path().display()),
            HostAction::Edit(edit) => edit.describe(),
            HostAction::Run(argv) => format!("run: {}", command::shell_join(argv)),
        }
    }

    /// What the step changes in a file, as a unified diff (empty for steps that edit no file).
    pub fn diff(&self) -> String {
        match self {
            HostAction::Edit(edit) => edit.diff(),
            HostAction::WriteDropIn(d) => diff::unified(&d.host_path().display().to_string(), b"", d.content.as_bytes()),
            _ => String::new(),
        }
    }

    /// Do it. Steps that can tell they already took effect do nothing and say so.
    pub fn apply(&self, host: &Host) -> Result<Applied> {
        match self {
            HostAction::Service(control, op) => control.apply(*op, host),
            HostAction::DaemonReload => service::daemon_reload(host),
            HostAction::WriteDropIn(d) => d.write(host),
            HostAction::RemoveDropIn(d) => d.remove(host),
            HostAction::Edit(edit) => edit.apply(),
            HostAction::Run(argv) => {
                command::run_checked(argv)?;
                Ok(Applied::Done(format!("ran {}", command::shell_join(argv))))
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::service::tests::{calls, fake_systemctl};
    use std::path::{Path, PathBuf};

    fn plan_drop_in_path() -> PathBuf {
        PathBuf::from("/etc/systemd/system/etcd.service.d/90-vault-force-new-cluster.conf")
    }

    /// The runbook's force-new-cluster steps as a plan: described without touching the host, then
    /// applied in order, and applied again (a resumed plan) without doing anything twice that can
    /// tell it was done.
    #[test]
    fn a_plan_of_steps_describes_itself_and_applies_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let host = fake_systemctl(dir.path(), &[("etcd", "active")]);
        let unit_dir = dir.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&unit_dir).unwrap();
        std::fs::write(unit_dir.join("etcd.service"), "[Service]\nExecStart=/usr/bin/etcd\n").unwrap();
        std::fs::create_dir_all(dir.path().join("etc/etcd")).unwrap();
        std::fs::write(
            dir.path().join("etc/etcd/etcd.conf"),
            "ETCD_NAME=m0\nETCD_INITIAL_CLUSTER_STATE=new\n",
        )
        .unwrap();
        let drop_in = dropin::force_new_cluster(&host, "etcd").unwrap();
        let mut conf = shell_conf::ShellConf::load(&host.root, Path::new("/etc/etcd/etcd.conf")).unwrap();
        conf.set("ETCD_INITIAL_CLUSTER_STATE", "existing").unwrap();
        let plan = vec![
            HostAction::Service(ServiceControl::etcd_unit(), ServiceOp::Stop),
            HostAction::Edit(conf.edit()),
            HostAction::WriteDropIn(drop_in.clone()),
            HostAction::DaemonReload,
            HostAction::Service(ServiceControl::etcd_unit(), ServiceOp::Start),
            HostAction::RemoveDropIn(drop_in),
            HostAction::DaemonReload,
            HostAction::Run(vec!["true".into()]),
        ];
        let described: Vec<String> = plan.iter().map(|a| a.describe(&host)).collect();
        assert_eq!(described[0], format!("stop unit etcd: {} stop etcd", host.systemctl));
        assert!(
            described[1].starts_with("edit /etc/etcd/etcd.conf: set ETCD_INITIAL_CLUSTER_STATE=existing"),
            "{}",
            described[1]
        );
        assert_eq!(
            described[2],
            "write the systemd drop-in /etc/systemd/system/etcd.service.d/90-vault-force-new-cluster.conf"
        );
        assert!(
            plan[2].diff().contains("+ExecStart=/usr/bin/etcd --force-new-cluster\n"),
            "{}",
            plan[2].diff()
        );
        assert!(plan[1].diff().contains("+ETCD_INITIAL_CLUSTER_STATE=existing"));
        assert!(calls(dir.path()).is_empty(), "describing runs nothing");

        // each step applied, then applied again as a resume after a kill right after it would
        let mut repeated = Vec::new();
        for action in &plan {
            assert!(
                matches!(action.apply(&host).unwrap(), Applied::Done(_)),
                "{}",
                action.describe(&host)
            );
            repeated.push(action.apply(&host).unwrap());
        }
        let actions: Vec<String> = calls(dir.path())
            .into_iter()
            .filter(|c| !c.starts_with("show") && !c.starts_with("is-active"))
            .collect();
        assert_eq!(
            actions,
            [
                "stop etcd",
                "daemon-reload",
                "daemon-reload",
                "start etcd",
                "daemon-reload",
                "daemon-reload"
            ],
            "the service was stopped once and started once"
        );
        let already: Vec<usize> = (0..repeated.len())
            .filter(|&i| matches!(repeated[i], Applied::AlreadyDone(_)))
            .collect();
        assert_eq!(already, [0, 1, 2, 4, 5], "{repeated:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/etcd/etcd.conf")).unwrap(),
            "ETCD_NAME=m0\nETCD_INITIAL_CLUSTER_STATE=existing\n"
        );
        assert!(!host.path(&plan_drop_in_path()).exists());
    }
}
