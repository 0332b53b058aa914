//! A stand-in `systemctl` for host-control tests: a shell script put first on a child's PATH that
//! records every call (arguments and exit code) and really starts and stops the units of a host
//! tree (`ROOT/{etc,run,usr/lib,lib}/systemd/system/UNIT.service`) from their `ExecStart`, with
//! drop-ins (`UNIT.service.d/*.conf`, by file name, an empty `ExecStart=` clears) and
//! `EnvironmentFile`/`Environment`, read as systemd does: when first used and again after
//! `daemon-reload` (a drop-in written without a reload is not seen, as on a real host).
//!
//! In-host paths in the env files stay as they are, except in the variables named with
//! [`Systemctl::root_paths`] (`ETCD_DATA_DIR`, `ETCD_CERT_FILE`, ...): an absolute value there gets the
//! tree's `/` put in front, as if the unit ran chrooted into the tree. The started command also gets
//! `HOST_ROOT` (the tree's `/`). Note that etcd 3.4 refuses a command-line flag that shadows an
//! `ETCD_*` variable, so a test unit passes settings either way, not both (RHEL's unit passes
//! `--name`, `--data-dir` and `--listen-client-urls` as flags *and* has them in etcd.conf).
//! Each started unit runs in its own session; `stop` signals that process group (SIGTERM, then
//! SIGKILL after 10 s), and dropping the [`Systemctl`] kills every unit still running, by PID.
//! `fail(verb, unit)` makes the next such call fail (exit 1), for error-path tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const SCRIPT: &str = r#"#!/bin/bash
# Stand-in systemctl written by the vault test harness (tests/harness/systemctl.rs).
ROOT=@ROOT@
STATE=@STATE@
ARGS="$*"
mkdir -p "$STATE"
trap 'rc=$?; printf "%s => %s\n" "$ARGS" "$rc" >> "$STATE/calls.log"' EXIT
DIRS="etc/systemd/system run/systemd/system usr/lib/systemd/system lib/systemd/system"

unit_name() { case "$1" in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
unit_file() {
  local u d; u=$(unit_name "$1")
  for d in $DIRS; do [ -f "$ROOT/$d/$u" ] && { echo "$ROOT/$d/$u"; return 0; }; done
  return 1
}
alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
main_pid() { local p="$STATE/$(unit_name "$1").pid"; [ -f "$p" ] && alive "$(cat "$p")" && cat "$p"; }
injected() {
  local f="$STATE/fail-$1-$(unit_name "$2")"
  if [ -f "$f" ]; then rm -f "$f"; echo "injected failure of $1 $2" >&2; exit 1; fi
}

# Read the unit and its drop-ins into $STATE/UNIT.loaded (until the next daemon-reload).
load() {
  local u f c d line section loaded; u=$(unit_name "$1"); loaded="$STATE/$u.loaded"
  [ -f "$loaded" ] && return 0
  f=$(unit_file "$1") || return 1
  local files=("$f")
  while IFS= read -r c; do [ -n "$c" ] && files+=("$c"); done < <(
    for d in $DIRS; do for c in "$ROOT/$d/$u.d/"*.conf; do [ -f "$c" ] && printf '%s\t%s\n' "$(basename "$c")" "$c"; done; done | sort -s -t$'\t' -k1,1 | cut -f2)
  : > "$loaded.tmp"
  for c in "${files[@]}"; do
    section=""
    while IFS= read -r line || [ -n "$line" ]; do
      while [[ "$line" == *\\ ]] && IFS= read -r next; do line="${line%\\} $next"; done
      line="${line#"${line%%[![:space:]]*}"}"
      case "$line" in
        \[*\]) section="$line" ;;
        ExecStart=*) [ "$section" = "[Service]" ] && echo "exec ${line#ExecStart=}" >> "$loaded.tmp" ;;
        EnvironmentFile=*) [ "$section" = "[Service]" ] && echo "envfile ${line#EnvironmentFile=}" >> "$loaded.tmp" ;;
        Environment=*) [ "$section" = "[Service]" ] && echo "env ${line#Environment=}" >> "$loaded.tmp" ;;
      esac
    done < "$c"
  done
  mv "$loaded.tmp" "$loaded"
}

start() {
  local u exec="" line f opt; u=$(unit_name "$1")
  injected start "$1"
  main_pid "$1" > /dev/null && return 0
  load "$1" || { echo "Failed to start $u: Unit $u not found." >&2; exit 5; }
  local envfiles=() envs=()
  while IFS= read -r line; do
    case "$line" in
      "exec "*) exec="${line#exec }"; exec="${exec#[-@+!]}" ;;
      "envfile "*) envfiles+=("${line#envfile }") ;;
      "env "*) envs+=("${line#env }") ;;
    esac
  done < "$STATE/$u.loaded"
  [ -n "$exec" ] || { echo "Failed to start $u: no ExecStart" >&2; exit 1; }
  for f in "${envfiles[@]}"; do
    case "$f" in -*) continue ;; esac
    [ -f "$ROOT$f" ] || { echo "Failed to start $u: $f not found" >&2; exit 1; }
  done
  (
    set -a
    for f in "${envfiles[@]}"; do f="${f#-}"; [ -f "$ROOT$f" ] && . "$ROOT$f"; done
    for e in "${envs[@]}"; do e="${e%\"}"; e="${e#\"}"; export "$e"; done
    if [ -f "$STATE/rooted-vars" ]; then
      for v in $(cat "$STATE/rooted-vars"); do
        case "${!v}" in /*) export "$v=$ROOT${!v}" ;; esac
      done
    fi
    HOST_ROOT="$ROOT"
    set +a
    cd "$ROOT" && exec setsid bash -c "exec $exec" < /dev/null >> "$STATE/$u.log" 2>&1
  ) &
  echo $! > "$STATE/$u.pid"
  sleep 0.3
  if ! alive "$(cat "$STATE/$u.pid")"; then
    echo "Job for $u failed; its output ends:" >&2; tail -n 5 "$STATE/$u.log" >&2
    rm -f "$STATE/$u.pid"; exit 1
  fi
}

stop() {
  local u pid i; u=$(unit_name "$1")
  injected stop "$1"
  pid=$(main_pid "$1") || { rm -f "$STATE/$u.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$STATE/$u.pid"
}

verb="$1"; shift
case "$verb" in
  start) for u in "$@"; do start "$u"; done ;;
  stop) for u in "$@"; do stop "$u"; done ;;
  restart) for u in "$@"; do injected restart "$u"; unit_file "$u" > /dev/null || { echo "Failed to restart $(unit_name "$u"): Unit not found." >&2; exit 5; }; stop "$u"; start "$u"; done ;;
  is-active)
    if main_pid "$1" > /dev/null; then echo active
    elif [ -f "$STATE/$(unit_name "$1").pid" ]; then echo failed; exit 3
    elif unit_file "$1" > /dev/null; then echo inactive; exit 3
    else echo unknown; exit 3; fi ;;
  status)
    u=$(unit_name "$1")
    if pid=$(main_pid "$1"); then echo "* $u - stand-in"; echo "   Active: active (running)"; echo " Main PID: $pid"
    else echo "* $u - stand-in"; echo "   Active: inactive (dead)"; exit 3; fi ;;
  show)
    unit="${!#}"; props=""
    while [ $# -gt 1 ]; do [ "$1" = -p ] && { props="$props ${2//,/ }"; shift; }; shift; done
    for p in ${props:-LoadState ActiveState MainPID}; do
      case "$p" in
        LoadState) unit_file "$unit" > /dev/null && echo LoadState=loaded || echo LoadState=not-found ;;
        ActiveState) main_pid "$unit" > /dev/null && echo ActiveState=active || echo ActiveState=inactive ;;
        MainPID) echo "MainPID=$(main_pid "$unit" || echo 0)" ;;
        *) echo "$p=" ;;
      esac
    done ;;
  daemon-reload) injected daemon-reload all; rm -f "$STATE"/*.loaded ;;
  enable|disable|reset-failed|is-enabled|mask|unmask) ;;
  *) echo "stand-in systemctl: unknown command $verb" >&2; exit 1 ;;
esac
"#;

/// The stand-in installed for one host tree.
pub struct Systemctl {
    /// The directory holding `systemctl`: put it first on PATH.
    pub bin_dir: PathBuf,
    /// Call log, pid files, unit output (`UNIT.log`).
    pub state: PathBuf,
    pub root: PathBuf,
}

impl Systemctl {
    /// Write the stand-in into `dir/bin/systemctl` for the host tree at `root`; state in `dir/state`.
    pub fn install(root: &Path, dir: &Path) -> Systemctl {
        let bin_dir = dir.join("bin");
        let state = dir.join("state");
        fs::create_dir_all(&bin_dir).expect("create stand-in bin dir");
        fs::create_dir_all(&state).expect("create stand-in state dir");
        let script = SCRIPT
            .replace("@ROOT@", &quote(&root.display().to_string()))
            .replace("@STATE@", &quote(&state.display().to_string()));
        let program = bin_dir.join("systemctl");
        fs::write(&program, script).expect("write stand-in systemctl");
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).expect("chmod stand-in systemctl");
        Systemctl {
            bin_dir,
            state,
            root: root.to_path_buf(),
        }
    }

    /// The stand-in's path.
    pub fn program(&self) -> PathBuf {
        self.bin_dir.join("systemctl")
    }

    /// `("PATH", "<bin dir>:<this process's PATH>")`, for a child's environment.
    pub fn path_env(&self) -> (String, String) {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        ("PATH".into(), format!("{}:{path}", self.bin_dir.display()))
    }

    /// Write a unit file `ROOT/usr/lib/systemd/system/NAME.service`.
    pub fn add_unit(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.root.join("usr/lib/systemd/system");
        fs::create_dir_all(&dir).expect("create unit dir");
        let file = dir.join(format!("{name}.service"));
        fs::write(&file, text).expect("write unit file");
        file
    }

    /// Give the started units these variables with the tree's `/` in front of an absolute value
    /// (read at each start).
    pub fn root_paths(&self, vars: &[&str]) {
        fs::write(self.state.join("rooted-vars"), vars.join("\n") + "\n").expect("write rooted-vars");
    }

    /// Every call so far, `ARGS => EXIT CODE`, in order.
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The calls other than queries (`show`, `is-active`, `status`).
    pub fn actions(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !(c.starts_with("show ") || c.starts_with("is-active ") || c.starts_with("status ")))
            .collect()
    }

    /// The PID of the unit's running process, if it runs.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.state.join(format!("{}.pid", unit_name(unit))))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next())?;
        (!matches!(state, Some('Z' | 'X'))).then_some(pid)
    }

    /// The running unit's command line, words joined by spaces.
    pub fn cmdline(&self, unit: &str) -> Option<String> {
        let pid = self.main_pid(unit)?;
        let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(
            raw.split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// What the unit's process wrote.
    pub fn unit_log(&self, unit: &str) -> String {
        fs::read_to_string(self.state.join(format!("{}.log", unit_name(unit)))).unwrap_or_default()
    }

    /// Make the next `verb` of `unit` fail (`daemon-reload`: unit `all`).
    pub fn fail(&self, verb: &str, unit: &str) {
        fs::write(self.state.join(format!("fail-{verb}-{}", unit_name(unit))), b"").expect("write failure flag");
    }

    /// Kill every unit still running (their process groups, by PID).
    pub fn kill_all(&self) {
        let Ok(entries) = fs::read_dir(&self.state) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(unit) = name.strip_suffix(".pid") else { continue };
            if let Some(pid) = self.main_pid(unit) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = fs::remove_file(entry.path());
        }
    }
}

impl Drop for Systemctl {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn unit_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
