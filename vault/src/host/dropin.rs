//! systemd drop-ins vault writes and removes: `/etc/systemd/system/UNIT.service.d/NN-vault-*.conf`.
//! The force-new-cluster drop-in is the runbook's `temp.conf`: the unit's own `ExecStart` with
//! `--force-new-cluster` added, so etcd starts once as a new one-member cluster.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Applied;
use super::edit::{keep_original, write_atomically};
use super::service::Host;
use crate::error::{Error, Result};

/// Where unit files are looked up, in systemd's order of precedence.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The name of vault's force-new-cluster drop-in (late, so it wins over the operator's own).
pub const FORCE_NEW_CLUSTER: &str = "90-vault-force-new-cluster";

/// One drop-in file for one unit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropIn {
    /// The unit, `etcd` or `etcd.service`.
    pub unit: String,
    /// The file name without `.conf`, `NN-vault-WHAT`.
    pub name: String,
    pub content: String,
}

impl DropIn {
    /// Its in-host path: `/etc/systemd/system/etcd.service.d/90-vault-....conf`.
    pub fn host_path(&self) -> PathBuf {
        Path::new("/etc/systemd/system")
            .join(format!("{}.d", unit_file_name(&self.unit)))
            .join(format!("{}.conf", self.name))
    }

    /// Write it (mode 0644, atomically). Already there with this content: nothing to do. There
    /// with other content: that is kept as `.old` first.
    pub fn write(&self, host: &Host) -> Result<Applied> {
        let shown = self.host_path();
        let file = host.path(&shown);
        let fail = |e: io::Error| Error::io(format!("cannot write the drop-in {}", shown.display())).with_source(e);
        match fs::read(&file) {
            Ok(current) if current == self.content.as_bytes() => {
                return Ok(Applied::AlreadyDone(format!("drop-in {} is in place", shown.display())));
            }
            Ok(current) => drop(keep_original(&file, &current).map_err(fail)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(file.parent().expect("a drop-in path has a parent")).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        }
        write_atomically(&file, self.content.as_bytes(), 0o644).map_err(fail)?;
        Ok(Applied::Done(format!("wrote drop-in {}", shown.display())))
    }

    /// Remove it. Already gone: nothing to do. Changed since vault wrote it: left alone, an error.
    pub fn remove(&self, host: &Host) -> Result<Applied> {
        let shown = self.host_path();
        let file = host.path(&shown);
        match fs::read(&file) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Applied::AlreadyDone(format!("drop-in {} is gone", shown.display()))),
            Err(e) => Err(Error::io(format!("cannot read the drop-in {}", shown.display())).with_source(e)),
            Ok(current) if current != self.content.as_bytes() => Err(Error::io(format!(
                "the drop-in {} is not what vault wrote; it was left in place",
                shown.display()
            ))
            .hint("look at it, remove it yourself if it should go, then run `systemctl daemon-reload`")),
            Ok(_) => {
                fs::remove_file(&file).map_err(|e| Error::io(format!("cannot remove {}", shown.display())).with_source(e))?;
                Ok(Applied::Done(format!("removed drop-in {}", shown.display())))
            }
        }
    }
}

/// The drop-in that makes `unit` start etcd with `--force-new-cluster`: `ExecStart=` (clearing the
/// unit's) and the unit's effective `ExecStart` with the flag added (inside the closing quote of a
/// `bash -c "..."` line, as the runbook's sed does). Vault's own drop-ins are not read.
pub fn force_new_cluster(host: &Host, unit: &str) -> Result<DropIn> {
    let exec = effective_exec_start(host, unit)?;
    let exec = match exec.strip_suffix('"') {
        Some(head) => format!("{head} --force-new-cluster\""),
        None => format!("{exec} --force-new-cluster"),
    };
    Ok(DropIn {
        unit: unit.to_string(),
        name: FORCE_NEW_CLUSTER.to_string(),
        content: format!(
            "# Written by vault for a recovery: etcd starts once as a new one-member cluster.\n\
             # vault removes this file when the member is up; if it is still here, remove it and\n\
             # run `systemctl daemon-reload`.\n[Service]\nExecStart=\nExecStart={exec}\n"
        ),
    })
}

fn unit_file_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// The unit's `ExecStart` after its drop-ins (other than vault's): the last assignment wins, an
/// empty one clears. Continuation lines (`\` at the end) are joined.
pub(crate) fn effective_exec_start(host: &Host, unit: &str) -> Result<String> {
    let name = unit_file_name(unit);
    let unit_file = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(&name))
        .find(|p| host.path(p).is_file())
        .ok_or_else(|| {
            Error::not_found(format!("no unit file {name} in {}", UNIT_DIRS.join(", ")))
                .hint("start etcd with --force-new-cluster yourself, or say how etcd runs on this host")
        })?;
    let mut files = vec![unit_file.clone()];
    for dir in UNIT_DIRS {
        let d = Path::new(dir).join(format!("{name}.d"));
        let mut confs: Vec<PathBuf> = fs::read_dir(host.path(&d))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".conf") && !n.to_string_lossy().contains("-vault-"))
            .map(|n| d.join(n))
            .collect();
        confs.sort();
        files.extend(confs);
    }
    let mut exec: Option<String> = None;
    for file in &files {
        let text = fs::read_to_string(host.path(file)).map_err(|e| Error::io(format!("cannot read {}", file.display())).with_source(e))?;
        let joined = text.replace("\\\n", " ");
        let mut in_service = false;
        for line in joined.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
            } else if let (true, Some(value)) = (in_service, line.strip_prefix("ExecStart=")) {
                exec = (!value.trim().is_empty()).then(|| value.trim().to_string());
            }
        }
    }
    exec.ok_or_else(|| Error::not_found(format!("{} has no ExecStart", unit_file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit file of RHEL 7's etcd package.
    const RHEL_UNIT: &str = "[Unit]\nDescription=Etcd Server\nAfter=network.target\n\n[Service]\nType=notify\nWorkingDirectory=/var/lib/etcd/\nEnvironmentFile=-/etc/etcd/etcd.conf\nUser=etcd\n# set GOMAXPROCS to number of processors\nExecStart=/bin/bash -c \"GOMAXPROCS=$(nproc) /usr/bin/etcd --name=\\\"${ETCD_NAME}\\\" --data-dir=\\\"${ETCD_DATA_DIR}\\\" --listen-client-urls=\\\"${ETCD_LISTEN_CLIENT_URLS}\\\"\"\nRestart=on-failure\nLimitNOFILE=65536\n\n[Install]\nWantedBy=multi-user.target\n";

    #[test]
    fn the_force_new_cluster_drop_in_adds_the_flag_inside_the_quotes_and_goes_away_again() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::under(root.path());
        let e = force_new_cluster(&host, "etcd").unwrap_err();
        assert!(e.to_string().contains("no unit file etcd.service"), "{e}");
        fs::create_dir_all(root.path().join("usr/lib/systemd/system")).unwrap();
        fs::write(root.path().join("usr/lib/systemd/system/etcd.service"), RHEL_UNIT).unwrap();

        let drop_in = force_new_cluster(&host, "etcd").unwrap();
        assert_eq!(
            drop_in.host_path(),
            Path::new("/etc/systemd/system/etcd.service.d/90-vault-force-new-cluster.conf")
        );
        assert!(
            drop_in.content.ends_with(
                "[Service]\nExecStart=\nExecStart=/bin/bash -c \"GOMAXPROCS=$(nproc) /usr/bin/etcd --name=\\\"${ETCD_NAME}\\\" --data-dir=\\\"${ETCD_DATA_DIR}\\\" --listen-client-urls=\\\"${ETCD_LISTEN_CLIENT_URLS}\\\" --force-new-cluster\"\n"
            ),
            "{}",
            drop_in.content
        );
        let file = host.path(&drop_in.host_path());
        assert!(matches!(drop_in.write(&host).unwrap(), Applied::Done(_)));
        assert_eq!(fs::read_to_string(&file).unwrap(), drop_in.content);
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&file).unwrap().permissions()) & 0o777,
            0o644
        );
        assert!(matches!(drop_in.write(&host).unwrap(), Applied::AlreadyDone(_)));
        assert_eq!(
            force_new_cluster(&host, "etcd").unwrap(),
            drop_in,
            "vault's own drop-in is not read back"
        );

        // an operator's drop-in that changes ExecStart is what the flag is added to
        fs::write(
            file.with_file_name("10-local.conf"),
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/etcd \\\n  --debug\n",
        )
        .unwrap();
        assert!(
            force_new_cluster(&host, "etcd")
                .unwrap()
                .content
                .ends_with("ExecStart=/usr/local/bin/etcd    --debug --force-new-cluster\n")
        );

        assert!(matches!(drop_in.remove(&host).unwrap(), Applied::Done(_)));
        assert!(!file.exists());
        assert!(matches!(drop_in.remove(&host).unwrap(), Applied::AlreadyDone(_)));
        fs::write(&file, "[Service]\nEnvironment=X=1\n").unwrap();
        let e = drop_in.remove(&host).unwrap_err();
        assert!(e.to_string().contains("not what vault wrote"), "{e}");
        assert!(file.exists(), "left in place");
    }
}
