//! Running the real `vaultctl` binary: locate it, run it with arguments and environment,
//! capture exit code and output, parse `--json` output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// Path of the built `vaultctl` next to this test binary:
/// `target/<profile>/deps/<test>-<hash>` -> `target/<profile>/vaultctl`.
/// Panics if it is missing or older than the sources it is built from (`cargo test -p vault-e2e`
/// does not rebuild it, and testing a stale binary would be misleading).
pub fn vaultctl() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| fresh_binary("vaultctl", &["vault/src", "vaultctl/src"])).clone()
}

/// The built binary `name` of this workspace, checked to be newer than every source file it was
/// built from: those cargo's dep-info file (`target/<profile>/<name>.d`) lists, or without one
/// every `.rs` file under `sources` (directories relative to the workspace root). The dep-info
/// leaves out test-only modules, which do not make the binary stale.
pub(crate) fn fresh_binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let bin = profile_dir.join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} does not exist: run cargo build --workspace first (the end-to-end tests run the real binary)",
            bin.display()
        )
    });
    let files = match std::fs::read_to_string(profile_dir.join(format!("{name}.d"))) {
        Ok(dep_info) => dep_info_sources(&dep_info),
        Err(_) => {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
            let mut files = Vec::new();
            for dir in sources {
                collect_files(&workspace.join(dir), &mut files);
            }
            files
        }
    };
    for src in files {
        if std::fs::metadata(&src).and_then(|m| m.modified()).is_ok_and(|t| t > built) {
            panic!(
                "{} is older than {}: run cargo build --workspace first",
                bin.display(),
                src.display()
            );
        }
    }
    bin
}

/// The prerequisites of the first rule of a make-style dep-info file (`target: a b\ c`).
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some((_, deps)) = text.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current = String::new();
    for word in deps.split(' ') {
        if let Some(escaped) = word.strip_suffix('\\') {
            current += escaped;
            current.push(' ');
            continue;
        }
        current += word;
        if !current.is_empty() {
            out.push(PathBuf::from(std::mem::take(&mut current)));
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The result of one vaultctl run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(args: Vec<String>, o: Output) -> Run {
        Run {
            args,
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// stdout and stderr together, for message checks.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panic with the whole output unless the exit code is 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "vaultctl {:?} failed:\n{self}", self.args);
        self
    }

    /// Panic unless it failed (non-zero exit, not a crash by signal).
    pub fn failed(self) -> Run {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "vaultctl {:?} was expected to fail:\n{self}",
            self.args
        );
        assert!(
            !self.stderr.contains("panicked"),
            "vaultctl {:?} panicked instead of failing cleanly:\n{self}",
            self.args
        );
        self
    }

    /// Assert the exit code.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "vaultctl {:?}: unexpected exit code:\n{self}", self.args);
        self
    }

    /// Assert the output (stdout or stderr) contains every needle.
    pub fn mentions(self, needles: &[&str]) -> Run {
        let text = self.text();
        for n in needles {
            assert!(text.contains(n), "vaultctl {:?}: output does not mention {n:?}:\n{self}", self.args);
        }
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("vaultctl {:?}: stdout is not JSON ({e}):\n{self}", self.args))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Arguments of `vaultctl etcd restore ID` for a one-member cluster `name` with peer URL `peer`.
pub fn single_member_restore_args(id: &str, data_dir: &Path, name: &str, peer: &str) -> Vec<String> {
    member_restore_args(&[id], data_dir, name, peer)
}

/// Arguments of `vaultctl etcd restore TARGET...` (an ID, or `--revision REV`, `--at TIME`, ...)
/// for a one-member cluster `name` with peer URL `peer`.
pub fn member_restore_args(target: &[&str], data_dir: &Path, name: &str, peer: &str) -> Vec<String> {
    let mut args: Vec<String> = ["etcd", "restore"].iter().chain(target).map(|s| s.to_string()).collect();
    args.extend(
        [
            "--data-dir",
            &data_dir.display().to_string(),
            "--name",
            name,
            "--initial-cluster",
            &format!("{name}={peer}"),
            "--initial-cluster-token",
            "restored",
            "--initial-advertise-peer-urls",
            peer,
        ]
        .map(String::from),
    );
    args
}

/// A vaultctl "session": one vault URL, its keys, its environment, and a scratch directory that
/// holds the keys and the catalog cache (`XDG_CACHE_HOME`).
#[derive(Clone, Debug)]
pub struct Ctl {
    pub dir: PathBuf,
    pub repo: String,
    pub env: Vec<(String, String)>,
    pub writer_key: PathBuf,
    pub identity: PathBuf,
    pub recipient: String,
}

impl Ctl {
    /// A session for `repo` with keys under `dir`. Nothing is created yet.
    pub fn new(dir: &Path, repo: &str, env: Vec<(String, String)>) -> Ctl {
        std::fs::create_dir_all(dir).expect("create ctl dir");
        Ctl {
            dir: dir.to_path_buf(),
            repo: repo.to_string(),
            env,
            writer_key: dir.join("writer.key"),
            identity: dir.join("identity.txt"),
            recipient: String::new(),
        }
    }

    /// A `Command` for vaultctl with a clean, explicit environment (no `VAULT_*` or `AWS_*`
    /// settings leak in from the caller) and the catalog cache inside the scratch directory.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(vaultctl());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("VAULT_") || k.starts_with("AWS_") {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.env("XDG_CACHE_HOME", self.dir.join("cache"));
        cmd.env("XDG_CONFIG_HOME", self.dir.join("config"));
        cmd.env("VAULT_LOG", "warn");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(args);
        cmd
    }

    /// Run with exactly these arguments.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let out = self
            .command(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run vaultctl {args:?}: {e}"));
        Run::from_output(args, out)
    }

    fn with<S: AsRef<str>>(&self, pre: &[&str], args: &[S]) -> Run {
        let mut all: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        self.run(&all)
    }

    /// `--repo R` and the arguments (no key).
    pub fn repo<S: AsRef<str>>(&self, args: &[S]) -> Run {
        self.with(&["--repo", &self.repo], args)
    }

    /// `--repo R --writer-key W` and the arguments.
    pub fn writer<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let wk = self.writer_key.display().to_string();
        self.with(&["--repo", &self.repo, "--writer-key", &wk], args)
    }

    /// `--repo R --identity I` and the arguments.
    pub fn restorer<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let id = self.identity.display().to_string();
        self.with(&["--repo", &self.repo, "--identity", &id], args)
    }

    /// `vaultctl keygen --out <dir>/<file> --json`; returns (identity path, recipient).
    pub fn keygen(&self, file: &str) -> (PathBuf, String) {
        let path = self.dir.join(file);
        let r = self.run(&["keygen", "--json", "--out", &path.display().to_string()]).ok();
        let v = r.json();
        let recipient = v["recipient"].as_str().expect("keygen --json prints the recipient").to_string();
        assert!(recipient.starts_with("age1"), "recipient {recipient:?}");
        assert!(path.is_file(), "keygen wrote no identity file");
        (path, recipient)
    }

    /// keygen (the session's identity) and init the vault; extra init arguments may be given.
    pub fn setup(&mut self, init_args: &[&str]) -> Value {
        let (identity, recipient) = self.keygen("identity.txt");
        self.identity = identity;
        self.recipient = recipient.clone();
        let wk = self.writer_key.display().to_string();
        let mut args = vec!["init", "--json", "--recipient", recipient.as_str(), "--writer-key-out", wk.as_str()];
        args.extend_from_slice(init_args);
        let v = self.repo(&args).ok().json();
        assert!(crate::data::is_hex(v["vault_id"].as_str().unwrap_or(""), 32), "init --json: {v}");
        assert_eq!(v["recipients"][0].as_str(), Some(recipient.as_str()), "init --json: {v}");
        assert!(self.writer_key.is_file(), "init wrote no writer key");
        v
    }

    /// `backup etcd --endpoints E --json` with the writer key; returns the report.
    pub fn backup(&self, endpoints: &str, extra: &[&str]) -> Value {
        let mut args = vec!["backup", "etcd", "--json", "--endpoints", endpoints];
        args.extend_from_slice(extra);
        self.writer(&args).ok().json()
    }

    /// `snapshots --json` with the writer key.
    pub fn snapshots(&self) -> Vec<Value> {
        let v = self.writer(&["snapshots", "--json"]).ok().json();
        v.as_array()
            .unwrap_or_else(|| panic!("snapshots --json is not an array: {v}"))
            .clone()
    }
}

/// A vaultctl process running in the background (for tests that interrupt it). Output goes to
/// files; dropping it kills the process if it is still running.
pub struct Spawned {
    child: std::process::Child,
    pub out: PathBuf,
    pub err: PathBuf,
    pub started: std::time::Instant,
    status: Option<std::process::ExitStatus>,
}

impl Ctl {
    /// Start vaultctl with exactly these arguments; stdout/stderr go to `<dir>/<label>.out|.err`.
    pub fn spawn<S: AsRef<str>>(&self, label: &str, args: &[S]) -> Spawned {
        let out = self.dir.join(format!("{label}.out"));
        let err = self.dir.join(format!("{label}.err"));
        let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
        let child = self
            .command(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create stdout file"))
            .stderr(std::fs::File::create(&err).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start vaultctl {args:?}: {e}"));
        Spawned {
            child,
            out,
            err,
            started: std::time::Instant::now(),
            status: None,
        }
    }
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Poll `cond` until it holds while the process is still running. Panics if the process
    /// exits first (the test would not interrupt anything: `what` says what to change) or
    /// after `timeout`.
    pub fn while_running_until(&mut self, timeout: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
        loop {
            if let Some(st) = self.exited() {
                panic!(
                    "vaultctl finished ({st}) after {:?}, before it could be interrupted: {what}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.started.elapsed(),
                    self.stdout(),
                    self.stderr()
                );
            }
            if cond() {
                return;
            }
            assert!(self.started.elapsed() < timeout, "condition not reached within {timeout:?}: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap; returns the exit status (which says whether the kill did it).
    pub fn kill(&mut self) -> std::process::ExitStatus {
        if let Some(st) = self.exited() {
            return st;
        }
        let _ = self.child.kill();
        let st = self.child.wait().expect("reap vaultctl");
        self.status = Some(st);
        st
    }

    /// Wait up to `timeout` for it to exit on its own; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
