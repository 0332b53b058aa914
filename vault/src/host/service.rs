//! Starting, stopping, restarting and querying a service, in the three ways OKD 3.x hosts run
//! etcd: a systemd unit (`etcd` by default), a static pod whose manifest the kubelet runs while it
//! lies in `/etc/origin/node/pods` (OKD 3.10+; stopped by moving the manifest out, as the OKD
//! docs do), or commands of the operator's own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Applied;
use super::command::{argv, run_captured, run_checked, shell_join};
use crate::error::{Error, Result};
use crate::source::files::under_root;

/// Where OKD 3.10+ keeps static pod manifests, and where vault parks one to stop its pod.
pub const STATIC_POD_DIR: &str = "/etc/origin/node/pods";
pub const STOPPED_POD_DIR: &str = "/etc/origin/node/pods-stopped";

/// The host steps run on: its `/` (`--root`, for tests and mounted disks) and the `systemctl` to
/// call (normally found on PATH).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Host {
    pub root: PathBuf,
    pub systemctl: String,
}

impl Host {
    /// This host: `/`, `systemctl` from PATH.
    pub fn local() -> Host {
        Host::under(Path::new("/"))
    }

    /// The host tree under `root`, `systemctl` from PATH.
    pub fn under(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
            systemctl: "systemctl".to_string(),
        }
    }

    /// Where an in-host path of this host really is.
    pub fn path(&self, host_path: &Path) -> PathBuf {
        under_root(&self.root, host_path)
    }

    pub(crate) fn systemctl(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![self.systemctl.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }
}

/// How a service is run on the host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceControl {
    /// A systemd unit, by name (`etcd`).
    Systemd { unit: String },
    /// A static pod: running while `manifest` (in-host path, normally in [`STATIC_POD_DIR`]) is
    /// there, stopped while it is parked in `stopped_dir`. A restart waits `settle` between the two
    /// so the kubelet notices (it looks at the directory every 20 s by default). A stop returns once
    /// the manifest is parked, before the kubelet has stopped the pod: a flow waits until the member
    /// is down (its ports free) before it touches the data.
    StaticPod {
        manifest: PathBuf,
        stopped_dir: PathBuf,
        settle: Duration,
    },
    /// Commands of the operator's own. Without `restart`, a restart is stop then start; without
    /// `status` (exit 0: running), the state is unknown and start and stop always run.
    Commands {
        start: Vec<String>,
        stop: Vec<String>,
        restart: Option<Vec<String>>,
        status: Option<Vec<String>>,
    },
}

/// What to do with a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceOp {
    Start,
    Stop,
    Restart,
}

/// What a service is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Stopped,
    /// The host does not have it (no such unit, no manifest in either place).
    NotInstalled,
    /// It cannot be told (commands without a status command).
    Unknown,
}

impl ServiceControl {
    /// The systemd unit `etcd`, the default.
    pub fn etcd_unit() -> ServiceControl {
        ServiceControl::Systemd { unit: "etcd".to_string() }
    }

    /// The OKD 3.10+ etcd static pod (`/etc/origin/node/pods/etcd.yaml`).
    pub fn etcd_static_pod() -> ServiceControl {
        ServiceControl::StaticPod {
            manifest: Path::new(STATIC_POD_DIR).join("etcd.yaml"),
            stopped_dir: PathBuf::from(STOPPED_POD_DIR),
            settle: Duration::from_secs(30),
        }
    }

    /// A short name for messages: `unit etcd`, `static pod /etc/origin/node/pods/etcd.yaml`, ...
    pub fn name(&self) -> String {
        match self {
            ServiceControl::Systemd { unit } => format!("unit {unit}"),
            ServiceControl::StaticPod { manifest, .. } => format!("static pod {}", manifest.display()),
            ServiceControl::Commands { start, .. } => format!("the service started with `{}`", shell_join(start)),
        }
    }

    /// The service's state now.
    pub fn status(&self, host: &Host) -> Result<ServiceState> {
        match self {
            ServiceControl::Systemd { unit } => {
                if !unit_is_known(host, unit)? {
                    return Ok(ServiceState::NotInstalled);
                }
                let output = run_captured(&host.systemctl(&["is-active", unit]))?;
                let state = String::from_utf8_lossy(&output.stdout).trim().to_string();
                Ok(match state.as_str() {
                    "active" | "activating" | "reloading" => ServiceState::Running,
                    _ => ServiceState::Stopped,
                })
            }
            ServiceControl::StaticPod { manifest, stopped_dir, .. } => {
                if exists(&host.path(manifest))? {
                    Ok(ServiceState::Running)
                } else if exists(&host.path(&parked(manifest, stopped_dir)))? {
                    Ok(ServiceState::Stopped)
                } else {
                    Ok(ServiceState::NotInstalled)
                }
            }
            ServiceControl::Commands { status: None, .. } => Ok(ServiceState::Unknown),
            ServiceControl::Commands { status: Some(status), .. } => {
                let output = run_captured(status)?;
                Ok(if output.status.success() {
                    ServiceState::Running
                } else {
                    ServiceState::Stopped
                })
            }
        }
    }

    /// What `op` runs, as an operator would type it (one line per command).
    pub fn commands(&self, op: ServiceOp, host: &Host) -> Vec<String> {
        match (self, op) {
            (ServiceControl::Systemd { unit }, op) => vec![shell_join(&host.systemctl(&[op_word(op), unit]))],
            (
                ServiceControl::StaticPod {
                    manifest,
                    stopped_dir,
                    settle,
                },
                op,
            ) => {
                let park = parked(manifest, stopped_dir);
                let stop = shell_join(&argv(&["mv", &manifest.to_string_lossy(), &park.to_string_lossy()]));
                let start = shell_join(&argv(&["mv", &park.to_string_lossy(), &manifest.to_string_lossy()]));
                match op {
                    ServiceOp::Stop => vec![format!("mkdir -p {}", stopped_dir.display()), stop],
                    ServiceOp::Start => vec![start],
                    ServiceOp::Restart => vec![stop, format!("sleep {}", settle.as_secs()), start],
                }
            }
            (ServiceControl::Commands { start, stop, restart, .. }, op) => match (op, restart) {
                (ServiceOp::Start, _) => vec![shell_join(start)],
                (ServiceOp::Stop, _) => vec![shell_join(stop)],
                (ServiceOp::Restart, Some(restart)) => vec![shell_join(restart)],
                (ServiceOp::Restart, None) => vec![shell_join(stop), shell_join(start)],
            },
        }
    }

    /// Do `op`. Start and stop do nothing (and say so) when the service already is in that state.
    pub fn apply(&self, op: ServiceOp, host: &Host) -> Result<Applied> {
        let name = self.name();
        let state = self.status(host)?;
        if state == ServiceState::NotInstalled {
            return Err(Error::not_found(format!("this host has no {name}"))
                .hint("say how the service runs here (systemd unit, static pod or commands of your own)"));
        }
        match (op, &state) {
            (ServiceOp::Start, ServiceState::Running) => return Ok(Applied::AlreadyDone(format!("{name} is running"))),
            (ServiceOp::Stop, ServiceState::Stopped) => return Ok(Applied::AlreadyDone(format!("{name} is stopped"))),
            _ => {}
        }
        match self {
            ServiceControl::Systemd { unit } => {
                run_checked(&host.systemctl(&[op_word(op), unit]))
                    .map_err(|e| e.hint(format!("see `systemctl status {unit}` and `journalctl -u {unit}`")))?;
            }
            ServiceControl::StaticPod {
                manifest,
                stopped_dir,
                settle,
            } => {
                let (live, park) = (host.path(manifest), host.path(&parked(manifest, stopped_dir)));
                // a restart of a stopped pod only starts it, as systemd does
                if op == ServiceOp::Stop || (op == ServiceOp::Restart && state == ServiceState::Running) {
                    fs::create_dir_all(host.path(stopped_dir))
                        .map_err(|e| Error::io(format!("cannot create {}", stopped_dir.display())).with_source(e))?;
                    move_noreplace(&live, &park)?;
                    if op == ServiceOp::Restart {
                        std::thread::sleep(*settle);
                    }
                }
                if op != ServiceOp::Stop {
                    move_noreplace(&park, &live)?;
                }
            }
            ServiceControl::Commands { start, stop, restart, .. } => match (op, restart) {
                (ServiceOp::Start, _) => drop(run_checked(start)?),
                (ServiceOp::Stop, _) => drop(run_checked(stop)?),
                (ServiceOp::Restart, Some(restart)) => drop(run_checked(restart)?),
                (ServiceOp::Restart, None) => {
                    run_checked(stop)?;
                    run_checked(start)?;
                }
            },
        }
        let done = match op {
            ServiceOp::Start => "started",
            ServiceOp::Stop => "stopped",
            ServiceOp::Restart => "restarted",
        };
        Ok(Applied::Done(format!("{done} {name}")))
    }
}

/// `systemctl daemon-reload`, after a drop-in was written or removed.
pub fn daemon_reload(host: &Host) -> Result<Applied> {
    run_checked(&host.systemctl(&["daemon-reload"]))?;
    Ok(Applied::Done("systemd reloaded its units".to_string()))
}

fn op_word(op: ServiceOp) -> &'static str {
    match op {
        ServiceOp::Start => "start",
        ServiceOp::Stop => "stop",
        ServiceOp::Restart => "restart",
    }
}

fn parked(manifest: &Path, stopped_dir: &Path) -> PathBuf {
    stopped_dir.join(manifest.file_name().unwrap_or_default())
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("cannot look at {}", path.display())).with_source(e)),
    }
}

/// Move a file to `to`, never replacing what is there (link then unlink, which every kernel has;
/// both places are in one directory tree). The parent directories are fsynced.
fn move_noreplace(from: &Path, to: &Path) -> Result<()> {
    let fail = |e: io::Error| Error::io(format!("cannot move {} to {}", from.display(), to.display())).with_source(e);
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from).map_err(fail)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::new(
                crate::ErrorKind::AlreadyExists,
                format!("both {} and {} exist", from.display(), to.display()),
            )
            .hint("keep the one that should run, move the other away, and run this again"));
        }
        Err(e) => return Err(fail(e)),
    }
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

/// Whether systemd knows the unit (`LoadState` other than `not-found`). Works with systemd 219
/// (RHEL 7), which lacks `systemctl show --value`.
pub fn unit_is_known(host: &Host, unit: &str) -> Result<bool> {
    let output = run_checked(&host.systemctl(&["show", "-p", "LoadState", unit]))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(!text.lines().any(|l| l.trim() == "LoadState=not-found"))
}

/// A unit name systemd and the command line accept: not empty, no leading `-`, no whitespace or `/`.
pub fn check_service_name(service: &str) -> std::result::Result<(), &'static str> {
    if service.is_empty() {
        Err("is empty")
    } else if service.starts_with('-') {
        Err("starts with '-'")
    } else if service.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        Err("contains whitespace or '/'")
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in `systemctl` in `dir` that appends each call to `dir/calls`, knows the units
    /// listed in `dir/units` (one `NAME STATE` a line), and changes their state on start/stop.
    pub(crate) fn fake_systemctl(dir: &Path, units: &[(&str, &str)]) -> Host {
        let script = dir.join("systemctl");
        let text = r#"#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls"
case "$1" in
  show) grep -q "^$4 " "$d/units" && echo LoadState=loaded || echo LoadState=not-found ;;
  is-active) s=$(grep "^$2 " "$d/units" | cut -d' ' -f2); echo "${s:-inactive}"; [ "$s" = active ] ;;
  start|restart) grep -q "^$2 " "$d/units" || { echo "Unit $2.service not found." >&2; exit 5; }
     sed -i "s/^$2 .*/$2 active/" "$d/units" ;;
  stop) sed -i "s/^$2 .*/$2 inactive/" "$d/units" ;;
  daemon-reload) ;;
  *) exit 1 ;;
esac
"#;
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let list: String = units.iter().map(|(u, s)| format!("{u} {s}\n")).collect();
        fs::write(dir.join("units"), list).unwrap();
        Host {
            root: dir.to_path_buf(),
            systemctl: script.to_string_lossy().into_owned(),
        }
    }

    pub(crate) fn calls(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_systemd_unit_is_stopped_once_and_started_once() {
        let dir = tempfile::tempdir().unwrap();
        let host = fake_systemctl(dir.path(), &[("etcd", "active")]);
        let etcd = ServiceControl::etcd_unit();
        assert_eq!(etcd.status(&host).unwrap(), ServiceState::Running);
        assert_eq!(etcd.commands(ServiceOp::Stop, &host), [format!("{} stop etcd", host.systemctl)]);
        assert!(matches!(etcd.apply(ServiceOp::Stop, &host).unwrap(), Applied::Done(_)));
        assert_eq!(etcd.status(&host).unwrap(), ServiceState::Stopped);
        assert!(
            matches!(etcd.apply(ServiceOp::Stop, &host).unwrap(), Applied::AlreadyDone(_)),
            "stopping twice"
        );
        assert!(matches!(etcd.apply(ServiceOp::Start, &host).unwrap(), Applied::Done(_)));
        let actions: Vec<String> = calls(dir.path())
            .into_iter()
            .filter(|c| !c.starts_with("show") && !c.starts_with("is-active"))
            .collect();
        assert_eq!(actions, ["stop etcd", "start etcd"]);

        let missing = ServiceControl::Systemd { unit: "etcd-nope".into() };
        assert_eq!(missing.status(&host).unwrap(), ServiceState::NotInstalled);
        let e = missing.apply(ServiceOp::Start, &host).unwrap_err();
        assert!(e.to_string().contains("this host has no unit etcd-nope") && e.hint.is_some(), "{e}");
    }

    #[test]
    fn a_static_pod_stops_by_parking_its_manifest_and_never_overwrites_one() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::under(root.path());
        let pods = root.path().join("etc/origin/node/pods");
        fs::create_dir_all(&pods).unwrap();
        fs::write(pods.join("etcd.yaml"), "kind: Pod\n").unwrap();
        let pod = ServiceControl::StaticPod {
            manifest: Path::new(STATIC_POD_DIR).join("etcd.yaml"),
            stopped_dir: PathBuf::from(STOPPED_POD_DIR),
            settle: Duration::from_millis(10),
        };
        assert_eq!(
            pod.commands(ServiceOp::Stop, &host),
            [
                "mkdir -p /etc/origin/node/pods-stopped",
                "mv /etc/origin/node/pods/etcd.yaml /etc/origin/node/pods-stopped/etcd.yaml"
            ]
        );
        assert_eq!(pod.status(&host).unwrap(), ServiceState::Running);
        pod.apply(ServiceOp::Stop, &host).unwrap();
        let parked = root.path().join("etc/origin/node/pods-stopped/etcd.yaml");
        assert!(!pods.join("etcd.yaml").exists() && fs::read(&parked).unwrap() == b"kind: Pod\n");
        assert!(matches!(pod.apply(ServiceOp::Stop, &host).unwrap(), Applied::AlreadyDone(_)));
        pod.apply(ServiceOp::Restart, &host).unwrap(); // stopped: a restart starts it
        assert_eq!(pod.status(&host).unwrap(), ServiceState::Running);
        assert!(matches!(pod.apply(ServiceOp::Start, &host).unwrap(), Applied::AlreadyDone(_)));
        pod.apply(ServiceOp::Restart, &host).unwrap();
        assert_eq!(fs::read(pods.join("etcd.yaml")).unwrap(), b"kind: Pod\n");

        fs::write(&parked, "an older manifest\n").unwrap();
        let e = pod.apply(ServiceOp::Stop, &host).unwrap_err();
        assert!(e.to_string().contains("both") && e.hint.is_some(), "{e}");
        assert_eq!(fs::read(&parked).unwrap(), b"an older manifest\n", "never replaced");
        assert!(pods.join("etcd.yaml").exists());
    }

    #[test]
    fn commands_of_ones_own_run_and_report_failure() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("running");
        let f = flag.to_string_lossy().into_owned();
        let own = ServiceControl::Commands {
            start: argv(&["touch", &f]),
            stop: argv(&["rm", "-f", &f]),
            restart: None,
            status: Some(argv(&["test", "-e", &f])),
        };
        let host = Host::local();
        assert_eq!(own.status(&host).unwrap(), ServiceState::Stopped);
        own.apply(ServiceOp::Start, &host).unwrap();
        assert!(flag.exists());
        assert!(matches!(own.apply(ServiceOp::Start, &host).unwrap(), Applied::AlreadyDone(_)));
        assert_eq!(own.commands(ServiceOp::Restart, &host).len(), 2);
        let failing = ServiceControl::Commands {
            start: argv(&["sh", "-c", "echo no etcd here >&2; exit 1"]),
            stop: argv(&["true"]),
            restart: None,
            status: None,
        };
        let e = failing.apply(ServiceOp::Start, &host).unwrap_err();
        assert!(e.to_string().contains("no etcd here"), "{e}");
    }
}
