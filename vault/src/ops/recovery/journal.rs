//! The journal a flow keeps on the host: the whole plan and each step's state, written (atomically,
//! fsynced) before and after every step. `--resume` reads it and continues with the first step
//! that did not finish; that step runs again, which is safe because every step can tell when it
//! already took effect. A finished journal is kept beside it as `journal.<time>.json`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::plan::{FlowContext, Plan};
use crate::error::{Error, Result};
use crate::host::Applied;
use crate::host::edit::write_atomically;

/// Where the journal lives on a host, under its root.
pub const JOURNAL: &str = "/var/lib/vault/recovery/journal.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    /// Started and not known to have finished (the flow was killed, or is running now).
    Running,
    Done,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub state: StepState,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    /// What the step did, or why it failed.
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalRecord {
    pub plan: Plan,
    pub hostname: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub steps: Vec<StepRecord>,
}

/// A journal file and what it says.
pub struct Journal {
    /// Where it really is (under the host's root).
    pub path: PathBuf,
    pub record: JournalRecord,
}

/// Something the runner reports as it goes.
pub enum Progress<'a> {
    /// Step `n` (from 1) was done before; not run again.
    Skipped(usize, &'a str),
    Started(usize, &'a str),
    Finished(usize, &'a Applied),
}

impl Journal {
    /// The unfinished journal at `path`, if there is one.
    pub fn open_unfinished(path: &Path) -> Result<Option<Journal>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot read the recovery journal {}", path.display())).with_source(e)),
        };
        let record: JournalRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!("the recovery journal {} is not readable: {e}", path.display()))
                .hint("move it away if it is not from a recovery in progress")
        })?;
        Ok((record.finished.is_none()).then(|| Journal {
            path: path.to_path_buf(),
            record,
        }))
    }

    /// Start a journal for `plan` at `path`. An unfinished journal there is refused (it is a flow
    /// in progress: `--resume` it), unless none of its steps changed anything: then it is kept as
    /// `journal.<time>.json` and replaced.
    pub fn begin(path: &Path, plan: Plan) -> Result<Journal> {
        if let Some(old) = Journal::open_unfinished(path)? {
            let changed = old
                .record
                .plan
                .steps
                .iter()
                .zip(&old.record.steps)
                .any(|(step, rec)| step.changes_host() && rec.state != StepState::Pending);
            if changed {
                let next = old.next_step().map(|n| n + 1).unwrap_or(old.record.steps.len());
                return Err(Error::new(
                    crate::ErrorKind::AlreadyExists,
                    format!(
                        "`vaultctl {}` (started {}) is not finished: step {next} of {} did not complete ({})",
                        old.record.plan.flow,
                        old.record.started.format("%Y-%m-%d %H:%M:%S UTC"),
                        old.record.steps.len(),
                        path.display()
                    ),
                )
                .hint(format!(
                    "finish it with `vaultctl {} --resume`, or, after checking the host by hand, move {} away",
                    old.record.plan.flow,
                    path.display()
                )));
            }
            old.archive()?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display())).with_source(e))?;
            let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        let steps = plan
            .steps
            .iter()
            .map(|_| StepRecord {
                state: StepState::Pending,
                started: None,
                finished: None,
                outcome: None,
            })
            .collect();
        let journal = Journal {
            path: path.to_path_buf(),
            record: JournalRecord {
                plan,
                hostname: crate::ops::backup::hostname(),
                started: Utc::now(),
                finished: None,
                steps,
            },
        };
        journal.save()?;
        Ok(journal)
    }

    /// The index of the first step not done, if any.
    pub fn next_step(&self) -> Option<usize> {
        self.record.steps.iter().position(|s| s.state != StepState::Done)
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.record).expect("a journal serializes");
        write_atomically(&self.path, &bytes, 0o600)
            .map_err(|e| Error::io(format!("cannot write the recovery journal {}", self.path.display())).with_source(e))
    }

    /// Keep it as `journal.<time>.json` beside where it was.
    fn archive(&self) -> Result<PathBuf> {
        let stamp = self.record.started.format("%Y%m%dT%H%M%SZ");
        let to = self.path.with_file_name(format!("journal.{stamp}.json"));
        std::fs::rename(&self.path, &to).map_err(|e| Error::io(format!("cannot keep the journal as {}", to.display())).with_source(e))?;
        Ok(to)
    }

    /// Run every step not done yet, in order, recording each before and after. Stops at the first
    /// failure (recorded, and the error says how to resume). Returns where the finished journal is kept.
    pub async fn run(&mut self, cx: &FlowContext<'_>, mut progress: impl FnMut(Progress<'_>)) -> Result<PathBuf> {
        let plan = self.record.plan.clone();
        for (i, step) in plan.steps.iter().enumerate() {
            let what = step.describe(&plan);
            if self.record.steps[i].state == StepState::Done {
                progress(Progress::Skipped(i + 1, &what));
                continue;
            }
            progress(Progress::Started(i + 1, &what));
            self.record.steps[i].state = StepState::Running;
            self.record.steps[i].started = Some(Utc::now());
            self.save()?;
            let result = step.apply(&plan, cx).await;
            let rec = &mut self.record.steps[i];
            rec.finished = Some(Utc::now());
            match result {
                Ok(applied) => {
                    rec.state = StepState::Done;
                    rec.outcome = Some(applied.to_string());
                    self.save()?;
                    progress(Progress::Finished(i + 1, &applied));
                }
                Err(e) => {
                    rec.state = StepState::Failed;
                    rec.outcome = Some(e.to_string());
                    self.save()?;
                    let resume = format!(
                        "step {} of {} failed; steps before it are done and recorded in {}. Fix the cause, then run `vaultctl {} --resume`",
                        i + 1,
                        plan.steps.len(),
                        self.path.display(),
                        plan.flow
                    );
                    let hint = match &e.hint {
                        Some(h) => format!("{h}; {resume}"),
                        None => resume,
                    };
                    return Err(e.hint(hint));
                }
            }
        }
        self.record.finished = Some(Utc::now());
        self.save()?;
        self.archive()
    }
}
