//! What the recovery flow commands share: the host and etcd flags (`FlowArgs`), and showing,
//! executing and resuming a plan through the journal.

use std::path::PathBuf;
use std::time::Duration;

use vault::ops::recovery::{Check, CheckStatus, FlowContext, FlowOptions, JOURNAL, Journal, Plan, Progress, preflight};
use vault::{Error, ErrorKind, Result};

use crate::context::Common;
use crate::output;

#[derive(clap::Args, Clone)]
pub struct FlowArgs {
    /// Run the plan (without it, the plan and the pre-flight checks are printed and nothing changes).
    #[arg(long, conflicts_with = "resume")]
    pub execute: bool,
    /// Continue the interrupted flow recorded in the journal, from the step that did not finish.
    #[arg(long)]
    pub resume: bool,
    /// Go ahead although a pre-flight check that may be overridden failed (another cluster's snapshot, live members).
    #[arg(long)]
    pub force: bool,
    /// The host's files are under this directory (a host tree, a mounted disk).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// etcd.conf to read (default: /etc/etcd/etcd.conf under --root).
    #[arg(long)]
    pub etcd_conf: Option<PathBuf>,
    /// The journal file (default: /var/lib/vault/recovery/journal.json under --root).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// systemctl to run (default: from PATH).
    #[arg(long)]
    pub systemctl: Option<String>,
    /// etcd's systemd unit (default: etcd).
    #[arg(long, conflicts_with = "static_pod")]
    pub service_unit: Option<String>,
    /// etcd runs as this OKD static pod manifest (e.g. /etc/origin/node/pods/etcd.yaml).
    #[arg(long, conflicts_with = "start_command")]
    pub static_pod: Option<PathBuf>,
    /// etcd is started with this shell command of your own (with --stop-command).
    #[arg(long, requires = "stop_command", conflicts_with = "service_unit")]
    pub start_command: Option<String>,
    /// etcd is stopped with this shell command.
    #[arg(long, requires = "start_command")]
    pub stop_command: Option<String>,
    /// Exits 0 while etcd runs (with --start-command; without it start and stop always run).
    #[arg(long, requires = "start_command")]
    pub status_command: Option<String>,
    /// The etcd binary (default: the one the unit's ExecStart runs).
    #[arg(long)]
    pub etcd_binary: Option<PathBuf>,
    /// This member's name (default: ETCD_NAME of etcd.conf).
    #[arg(long)]
    pub name: Option<String>,
    /// This member's data dir (default: ETCD_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This member's peer URL (default: ETCD_INITIAL_ADVERTISE_PEER_URLS).
    #[arg(long = "peer-url", value_delimiter = ',')]
    pub peer_urls: Vec<String>,
    /// CA certificate to reach etcd with (default with https: ETCD_TRUSTED_CA_FILE).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (default with https: ETCD_PEER_CERT_FILE).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key (default with https: ETCD_PEER_KEY_FILE).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Owner of the restored data dir (default: etcd when it exists and running as root).
    #[arg(long)]
    pub owner: Option<String>,
    /// Seconds to wait for etcd to stop, become healthy or catch up.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl FlowArgs {
    pub fn options(&self) -> FlowOptions {
        let sh = |cmd: &str| vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
        let service = match (&self.service_unit, &self.static_pod, &self.start_command) {
            (Some(unit), _, _) => Some(vault::host::ServiceControl::Systemd { unit: unit.clone() }),
            (None, Some(manifest), _) => Some(vault::host::ServiceControl::StaticPod {
                manifest: manifest.clone(),
                stopped_dir: PathBuf::from(vault::host::service::STOPPED_POD_DIR),
                settle: Duration::from_secs(30),
            }),
            (None, None, Some(start)) => Some(vault::host::ServiceControl::Commands {
                start: sh(start),
                stop: sh(self.stop_command.as_deref().unwrap_or_default()),
                restart: None,
                status: self.status_command.as_deref().map(sh),
            }),
            (None, None, None) => None,
        };
        FlowOptions {
            root: self.root.clone(),
            etcd_conf: self.etcd_conf.clone(),
            systemctl: self.systemctl.clone(),
            service,
            etcd_binary: self.etcd_binary.clone(),
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            peer_urls: self.peer_urls.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            owner: self.owner.clone(),
            timeout_secs: Some(self.timeout),
            force: self.force,
        }
    }

    /// Where the journal really is.
    pub fn journal_path(&self) -> PathBuf {
        match &self.journal {
            Some(p) => p.clone(),
            None => vault::host::under_root(&self.options().root(), std::path::Path::new(JOURNAL)),
        }
    }
}

/// The unfinished journal of `flow`, for `--resume`.
pub fn resume_journal(args: &FlowArgs, flow: &str) -> Result<Journal> {
    let path = args.journal_path();
    let journal = Journal::open_unfinished(&path)?.ok_or_else(|| {
        Error::not_found(format!("there is no unfinished recovery journal at {}", path.display()))
            .hint("run the flow without --resume to see its plan")
    })?;
    if journal.record.plan.flow != flow {
        return Err(Error::usage(format!(
            "the journal {} is of `vaultctl {}`, not `vaultctl {flow}`",
            path.display(),
            journal.record.plan.flow
        ))
        .hint(format!("run `vaultctl {} --resume`", journal.record.plan.flow)));
    }
    Ok(journal)
}

/// Show the plan and its checks; with `--execute` (and no check blocking) run it through a new
/// journal. Exit code 2 when only shown and a check would block.
pub async fn show_or_execute(c: &Common, args: &FlowArgs, plan: Plan, checks: Vec<Check>, cx: &FlowContext<'_>) -> Result<i32> {
    let blocked = show(c.json, &plan, &checks, args.force, None);
    if !args.execute {
        if !c.json {
            println!("\nnothing was changed; run again with --execute to do it");
        }
        return Ok(if blocked { 2 } else { 0 });
    }
    refuse(&checks, args.force)?;
    let mut journal = Journal::begin(&args.journal_path(), plan)?;
    if !c.json {
        println!("\nexecuting (journal: {}):", journal.path.display());
    }
    run(c.json, &mut journal, cx).await?;
    Ok(0)
}

/// `--resume` of a flow whose remaining steps need nothing but the host and the cluster.
pub async fn resume(c: &Common, args: &FlowArgs, flow: &str) -> Result<i32> {
    let mut journal = resume_journal(args, flow)?;
    show(c.json, &journal.record.plan, &[], args.force, Some(&journal));
    run(c.json, &mut journal, &FlowContext::default()).await?;
    Ok(0)
}

/// Print the plan and the checks (text or JSON). Returns whether a check blocks `--execute`.
pub fn show(json: bool, plan: &Plan, checks: &[Check], force: bool, journal: Option<&Journal>) -> bool {
    let blocking = !preflight::blocking(checks, force).is_empty();
    if json {
        let steps: Vec<serde_json::Value> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v =
                    serde_json::json!({"number": i + 1, "describe": s.describe(plan), "diff": s.diff(), "changes_host": s.changes_host()});
                if let Some(j) = journal {
                    v["state"] = serde_json::to_value(j.record.steps[i].state).unwrap_or_default();
                }
                v
            })
            .collect();
        output::json(&serde_json::json!({
            "flow": plan.flow,
            "id": plan.id,
            "snapshot": plan.snapshot,
            "summary": plan.summary,
            "checks": checks,
            "blocked": blocking,
            "steps": steps,
            "next": plan.next,
        }));
        return blocking;
    }
    println!("vaultctl {}: plan {}", plan.flow, plan.id);
    for line in &plan.summary {
        println!("  {line}");
    }
    if !checks.is_empty() {
        println!("\npre-flight checks:");
        for c in checks {
            let mark = match (c.status, force && c.forcible) {
                (CheckStatus::Pass, _) => "ok  ",
                (CheckStatus::Warn, _) => "WARN",
                (CheckStatus::Fail, true) => "FORCED",
                (CheckStatus::Fail, false) => "FAIL",
            };
            println!("  [{mark}] {}: {}", c.name, c.detail);
            if c.status == CheckStatus::Fail
                && let Some(h) = &c.hint
            {
                println!("         what to do: {h}");
            }
        }
    }
    println!("\nsteps:");
    for (i, step) in plan.steps.iter().enumerate() {
        let state = journal
            .map(|j| format!(" [{:?}]", j.record.steps[i].state).to_lowercase())
            .unwrap_or_default();
        println!("  {:>2}. {}{state}", i + 1, step.describe(plan));
        let diff = step.diff();
        if !diff.is_empty() {
            for line in diff.lines() {
                println!("        {line}");
            }
        }
    }
    if !plan.next.is_empty() {
        println!("\nthen:");
        for n in &plan.next {
            println!("  {n}");
        }
    }
    blocking
}

/// Refuse to go on when a check blocks, naming the checks and what to do.
pub fn refuse(checks: &[Check], force: bool) -> Result<()> {
    let blocking = preflight::blocking(checks, force);
    if blocking.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = blocking.iter().map(|c| format!("{}: {}", c.name, c.detail)).collect();
    let hints: Vec<String> = blocking.iter().filter_map(|c| c.hint.clone()).collect();
    let forcible = blocking.iter().all(|c| c.forcible);
    Err(Error::new(
        ErrorKind::Usage,
        format!("pre-flight check failed, nothing was changed: {}", names.join("; ")),
    )
    .hint(if forcible && !hints.iter().any(|h| h.contains("--force")) {
        format!("{} (or pass --force)", hints.join("; "))
    } else {
        hints.join("; ")
    }))
}

/// Run the journal's steps, printing each.
pub async fn run(json: bool, journal: &mut Journal, cx: &FlowContext<'_>) -> Result<PathBuf> {
    let total = journal.record.plan.steps.len();
    let result = journal
        .run(cx, |p| {
            if json {
                return;
            }
            match p {
                Progress::Skipped(n, what) => println!("  {n:>2}/{total} done before: {what}"),
                Progress::Started(n, what) => println!("  {n:>2}/{total} {what}"),
                Progress::Finished(_, applied) => println!("        -> {applied}"),
            }
        })
        .await;
    let kept = result?;
    let plan = &journal.record.plan;
    if json {
        output::json(&serde_json::json!({
            "flow": plan.flow,
            "id": plan.id,
            "finished": true,
            "journal": kept,
            "steps": journal.record.steps,
            "next": plan.next,
        }));
    } else {
        println!(
            "\ndone: every step of plan {} finished; the journal is kept at {}",
            plan.id,
            kept.display()
        );
        if !plan.next.is_empty() {
            println!("next:");
            for n in &plan.next {
                println!("  {n}");
            }
        }
    }
    Ok(kept)
}
