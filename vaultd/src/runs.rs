//! The daemon's recent runs, for GET /v1/runs/{id} and the webhook: what started a run, which
//! schedule slot it was for, how it ended. Kept in memory (the last [`KEPT_RUNS`]); the vault and
//! the log are the durable record.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many finished runs are remembered.
pub const KEPT_RUNS: usize = 500;

/// Why a run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The job's cron schedule.
    Schedule,
    /// At start-up, for a slot missed while the daemon was down.
    CatchUp,
    /// POST /v1/jobs/{name}/run (`vaultctl run`).
    Api,
    /// A cluster-wide slot whose claimant's lease ran out with no snapshot: taken over.
    Takeover,
    /// The job's delta chain broke at etcd's compaction: a full snapshot at once, to start a new
    /// chain (no slot).
    Compacted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    /// A snapshot was committed.
    Success,
    Failure,
    /// Aborted at the job's timeout. A write in flight then is not cancelled: the record's
    /// `snapshot` says whether the vault held a snapshot of the run shortly after.
    Timeout,
    /// A cluster-wide slot another daemon holds (or that was closed as missed): not run here.
    Skipped,
    /// Still running when the daemon stopped (nothing committed unless its manifest write was
    /// under way).
    Abandoned,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failure => "failure",
            RunState::Timeout => "timeout",
            RunState::Skipped => "skipped",
            RunState::Abandoned => "abandoned",
        }
    }

    /// The outcomes a finished run can have, as counted in metrics.
    pub const FINISHED: [RunState; 5] = [
        RunState::Success,
        RunState::Failure,
        RunState::Timeout,
        RunState::Skipped,
        RunState::Abandoned,
    ];
}

/// One run of a job.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub job: String,
    pub trigger: Trigger,
    /// The schedule slot the run is for (none for API runs).
    pub slot: Option<DateTime<Utc>>,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub state: RunState,
    /// Attempts made (more than one after transient errors).
    pub attempts: u32,
    /// The committed snapshot's ID.
    pub snapshot: Option<String>,
    /// A files snapshot with entries that could not be read.
    pub incomplete: bool,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub error: Option<String>,
    /// For a skipped run: the host that claimed the slot.
    pub claimed_by: Option<String>,
    /// For a skipped run: the ID of the daemon that claimed the slot.
    pub claimed_by_daemon: Option<String>,
}

/// The registry: run IDs are `<daemon instance>-<sequence>`, unique across restarts.
pub struct Runs {
    instance: String,
    inner: Mutex<(u64, VecDeque<RunRecord>)>,
}

impl Runs {
    pub fn new(instance: &str) -> Runs {
        Runs {
            instance: instance.to_string(),
            inner: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Record a new running run and return its ID.
    pub fn begin(&self, job: &str, trigger: Trigger, slot: Option<DateTime<Utc>>) -> String {
        let mut g = self.inner.lock().expect("runs lock");
        g.0 += 1;
        let id = format!("{}-{}", self.instance, g.0);
        g.1.push_back(RunRecord {
            id: id.clone(),
            job: job.to_string(),
            trigger,
            slot,
            started: Utc::now(),
            finished: None,
            state: RunState::Running,
            attempts: 0,
            snapshot: None,
            incomplete: false,
            bytes_read: 0,
            bytes_new: 0,
            bytes_stored: 0,
            error: None,
            claimed_by: None,
            claimed_by_daemon: None,
        });
        // Forget the oldest finished runs beyond the limit (running ones are kept).
        while g.1.len() > KEPT_RUNS {
            match g.1.iter().position(|r| r.state != RunState::Running) {
                Some(i) => {
                    g.1.remove(i);
                }
                None => break,
            }
        }
        id
    }

    /// Change a run's record; returns the record after the change.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut RunRecord)) -> Option<RunRecord> {
        let mut g = self.inner.lock().expect("runs lock");
        let r = g.1.iter_mut().find(|r| r.id == id)?;
        f(r);
        Some(r.clone())
    }

    pub fn get(&self, id: &str) -> Option<RunRecord> {
        self.inner.lock().expect("runs lock").1.iter().find(|r| r.id == id).cloned()
    }

    /// The most recent runs, newest first, optionally of one job.
    pub fn recent(&self, job: Option<&str>, limit: usize) -> Vec<RunRecord> {
        let g = self.inner.lock().expect("runs lock");
        g.1.iter()
            .rev()
            .filter(|r| job.is_none_or(|j| r.job == j))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn any_running(&self) -> bool {
        self.inner.lock().expect("runs lock").1.iter().any(|r| r.state == RunState::Running)
    }

    /// Mark every running run abandoned (the daemon is stopping); returns them.
    pub fn abandon_running(&self) -> Vec<RunRecord> {
        let mut g = self.inner.lock().expect("runs lock");
        let now = Utc::now();
        g.1.iter_mut()
            .filter(|r| r.state == RunState::Running)
            .map(|r| {
                r.state = RunState::Abandoned;
                r.finished = Some(now);
                r.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_get_unique_ids_and_old_finished_ones_are_forgotten() {
        let runs = Runs::new("abc");
        let first = runs.begin("etcd", Trigger::Api, None);
        assert_eq!(first, "abc-1");
        assert_eq!(runs.get(&first).unwrap().state, RunState::Running);
        for _ in 0..KEPT_RUNS + 10 {
            let id = runs.begin("files", Trigger::Schedule, Some(Utc::now()));
            runs.update(&id, |r| r.state = RunState::Success);
        }
        // The running one is kept; the oldest finished ones went.
        assert!(runs.get(&first).is_some());
        assert!(runs.get("abc-2").is_none());
        assert_eq!(runs.recent(None, usize::MAX).len(), KEPT_RUNS);
        assert_eq!(runs.recent(Some("etcd"), 10).len(), 1);
        let abandoned = runs.abandon_running();
        assert_eq!(abandoned.len(), 1);
        assert_eq!(runs.get(&first).unwrap().state, RunState::Abandoned);
    }
}
