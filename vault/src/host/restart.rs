//! The restart plan after a host-files restore: commands first (they regenerate state that services
//! read, like the CA trust bundle), then `systemctl restart` of each service, each once, in the
//! order the profile's rules name them. [`crate::source::profile::Profile::restarts_for`] makes it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::command::{run_captured, shell_join, stderr_tail};
use super::service::{Host, check_service_name, unit_is_known};
use crate::error::Error;

/// What to do after restoring files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestartPlan {
    pub commands: Vec<PlannedCommand>,
    pub services: Vec<PlannedService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedCommand {
    pub argv: Vec<String>,
    /// The restored paths that call for it.
    pub triggered_by: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedService {
    pub service: String,
    /// The restored paths that call for it.
    pub triggered_by: Vec<PathBuf>,
}

/// What happened to one step of a [`RestartPlan`].
#[derive(Debug)]
pub struct ActionOutcome {
    /// The command line, e.g. `["systemctl", "restart", "etcd"]`.
    pub argv: Vec<String>,
    pub status: ActionStatus,
}

#[derive(Debug)]
pub enum ActionStatus {
    /// Dry run: nothing was run.
    DryRun,
    /// Ran and succeeded.
    Done,
    /// Not run, with the reason (a service that is not installed on this host).
    Skipped(String),
    Failed(Error),
}

impl ActionOutcome {
    /// True unless the step failed.
    pub fn is_ok(&self) -> bool {
        !matches!(self.status, ActionStatus::Failed(_))
    }
}

impl fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cmd = shell_join(&self.argv);
        match &self.status {
            ActionStatus::DryRun => write!(f, "would run: {cmd}"),
            ActionStatus::Done => write!(f, "ran: {cmd}"),
            ActionStatus::Skipped(why) => write!(f, "skipped: {cmd} ({why})"),
            ActionStatus::Failed(e) => write!(f, "FAILED: {e}"),
        }
    }
}

impl RestartPlan {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.services.is_empty()
    }

    /// The command lines in execution order, each with the paths that call for it.
    pub fn steps(&self) -> Vec<(Vec<String>, &[PathBuf])> {
        let host = Host::local();
        let commands = self.commands.iter().map(|c| (c.argv.clone(), c.triggered_by.as_slice()));
        let services = self
            .services
            .iter()
            .map(|s| (host.systemctl(&["restart", &s.service]), s.triggered_by.as_slice()));
        commands.chain(services).collect()
    }

    /// Run the plan on this host (see [`RestartPlan::execute_on`]).
    pub fn execute(&self, dry_run: bool) -> Vec<ActionOutcome> {
        self.execute_on(&Host::local(), dry_run)
    }

    /// Run the plan: each command, then `systemctl restart SERVICE` for each service with the
    /// host's `systemctl` (a service whose unit systemd does not know is skipped). A failure does
    /// not stop the rest. With `dry_run` nothing at all is run. Only meaningful when the files were
    /// restored to the host's own `/`, not under another root.
    pub fn execute_on(&self, host: &Host, dry_run: bool) -> Vec<ActionOutcome> {
        let mut outcomes = Vec::new();
        for command in &self.commands {
            let status = if dry_run {
                ActionStatus::DryRun
            } else {
                run_step(&command.argv, None)
            };
            outcomes.push(ActionOutcome {
                argv: command.argv.clone(),
                status,
            });
        }
        for service in &self.services {
            let argv = host.systemctl(&["restart", &service.service]);
            let status = if dry_run {
                ActionStatus::DryRun
            } else if let Err(why) = check_service_name(&service.service) {
                ActionStatus::Failed(Error::usage(format!("service name {:?} {why}", service.service)))
            } else {
                match unit_is_known(host, &service.service) {
                    Ok(true) => run_step(&argv, Some(&service.service)),
                    Ok(false) => ActionStatus::Skipped(format!("systemd has no unit {} on this host", service.service)),
                    Err(e) => ActionStatus::Failed(e),
                }
            };
            outcomes.push(ActionOutcome { argv, status });
        }
        outcomes
    }
}

/// How many restored paths to name per step in the printout.
const PATHS_SHOWN: usize = 3;

impl fmt::Display for RestartPlan {
    /// One line per step: the command line and the restored paths that call for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (argv, paths) in self.steps() {
            let shown: Vec<String> = paths.iter().take(PATHS_SHOWN).map(|p| p.display().to_string()).collect();
            write!(f, "{}  # for {}", shell_join(&argv), shown.join(", "))?;
            if paths.len() > PATHS_SHOWN {
                write!(f, " and {} more", paths.len() - PATHS_SHOWN)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn run_step(argv: &[String], service: Option<&str>) -> ActionStatus {
    match run_captured(argv) {
        Ok(output) if output.status.success() => ActionStatus::Done,
        Ok(output) => {
            let mut err = Error::io(format!("`{}` failed ({}){}", shell_join(argv), output.status, stderr_tail(&output)));
            if let Some(service) = service {
                err = err.hint(format!("see `systemctl status {service}` and `journalctl -u {service}`"));
            }
            ActionStatus::Failed(err)
        }
        Err(e) => ActionStatus::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::service::tests::{calls, fake_systemctl};

    fn service(name: &str) -> PlannedService {
        PlannedService {
            service: name.to_string(),
            triggered_by: vec![PathBuf::from("/etc/x")],
        }
    }

    #[test]
    fn services_are_restarted_through_the_hosts_systemctl_and_unknown_units_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let host = fake_systemctl(dir.path(), &[("flanneld", "active")]);
        let plan = RestartPlan {
            commands: vec![PlannedCommand {
                argv: vec!["true".into()],
                triggered_by: vec![],
            }],
            services: vec![service("flanneld"), service("atomic-openshift-node"), service("-bad")],
        };
        let outcomes = plan.execute_on(&host, false);
        assert!(matches!(outcomes[0].status, ActionStatus::Done), "{}", outcomes[0]);
        assert!(matches!(outcomes[1].status, ActionStatus::Done), "{}", outcomes[1]);
        assert!(
            matches!(&outcomes[2].status, ActionStatus::Skipped(why) if why.contains("no unit atomic-openshift-node")),
            "{}",
            outcomes[2]
        );
        assert!(!outcomes[3].is_ok());
        assert_eq!(
            calls(dir.path()),
            [
                "show -p LoadState flanneld",
                "restart flanneld",
                "show -p LoadState atomic-openshift-node"
            ],
            "a bad name never reaches systemctl"
        );
        assert!(
            plan.execute_on(&host, true)
                .iter()
                .all(|o| matches!(o.status, ActionStatus::DryRun))
        );
        assert_eq!(calls(dir.path()).len(), 3, "a dry run calls nothing");
    }
}
