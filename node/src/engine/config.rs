//! How an engine stores and maintains its data, and the two hooks tests use to stop it at a
//! chosen moment.

use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{DEFAULT_MAX_QUEUED_WRITES, MAX_GROUP_BYTES};

/// How an engine stores and maintains its data.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Directory for the database and snapshots.
    pub data_dir: PathBuf,
    /// Take a snapshot after every this many events (0: only on request).
    pub snapshot_every: u64,
    /// Snapshots to keep (at least 1).
    pub snapshot_keep: usize,
    /// Delete log entries up to the oldest kept snapshot (otherwise the whole log is kept).
    pub prune_log: bool,
    /// When set, the log is never pruned past this sequence number, whatever `prune_log` says:
    /// the position up to which backups have shipped the log (entries after it are still to be
    /// shipped).
    pub log_hold: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Threads used to build the index for large inserts.
    pub index_threads: usize,
    /// Niceness of the writer and index threads (0: unchanged).
    pub index_nice: i32,
    /// Full-precision vectors in memory-mapped files under `vectors/` instead of the heap
    /// (`--vectors-on-disk`, [`super::vectors`]).
    pub vectors_on_disk: bool,
    /// The two copies share the graph's layer-0 lists too (`--share-graph-lists`,
    /// [`valori_kernel::Share::Lists`]), each holding apart only the lists it wrote over a
    /// shared chunk lately.
    pub share_graph_lists: bool,
    /// The leader to follow when no role is persisted (a follower's flags); `None`: a leader.
    pub follow: Option<String>,
    /// Most client writes waiting for the writer; more are refused with 503 `busy`.
    pub max_queued_writes: usize,
    /// A group commit takes no further event once its events reach this many bytes
    /// ([`MAX_GROUP_BYTES`]; one larger event is committed alone).
    pub max_group_bytes: usize,
    /// A test hook: while this file exists, each commit waits after applying its events and
    /// before appending them (a commit made slow on purpose); the writer creates the file's
    /// name with `.waiting` appended while it waits. `None` in production.
    pub commit_gate: Option<PathBuf>,
    /// A test hook: the step of a restore at which the process aborts, as in a power cut.
    /// `None` in production.
    pub crash_at: Option<RestoreStep>,
}

impl EngineConfig {
    /// Defaults for a data directory: snapshot every 100,000 events, keep 2, index with every
    /// core.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            snapshot_every: 100_000,
            snapshot_keep: 2,
            prune_log: true,
            log_hold: None,
            index_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            index_nice: 0,
            vectors_on_disk: false,
            share_graph_lists: false,
            follow: None,
            max_queued_writes: DEFAULT_MAX_QUEUED_WRITES,
            max_group_bytes: MAX_GROUP_BYTES,
            commit_gate: None,
            crash_at: None,
        }
    }
}

/// The steps of a restore, in order, each durable before the next begins (see
/// [`super::restore`]). A crash before [`RestoreStep::Decided`] leaves the old state; one at
/// or after it is finished when the node next opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// The verified snapshot is renamed to the staged name.
    Staged,
    /// The marker that decides the restore is written.
    Decided,
    /// The log is cleared.
    LogCleared,
    /// Every other snapshot is removed.
    OldRemoved,
    /// The staged file is renamed to its snapshot name.
    Installed,
    /// The history generation is bumped (followers re-check theirs).
    HistoryBumped,
}

impl RestoreStep {
    /// Every step, in order.
    pub const ALL: [RestoreStep; 6] = [
        RestoreStep::Staged,
        RestoreStep::Decided,
        RestoreStep::LogCleared,
        RestoreStep::OldRemoved,
        RestoreStep::Installed,
        RestoreStep::HistoryBumped,
    ];

    /// The step's name, as `VALORI_TEST_CRASH_AT` gives it.
    pub fn name(self) -> &'static str {
        match self {
            RestoreStep::Staged => "restore-staged",
            RestoreStep::Decided => "restore-decided",
            RestoreStep::LogCleared => "restore-log-cleared",
            RestoreStep::OldRemoved => "restore-old-removed",
            RestoreStep::Installed => "restore-installed",
            RestoreStep::HistoryBumped => "restore-history-bumped",
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Result<RestoreStep, String> {
        RestoreStep::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = RestoreStep::ALL.iter().map(|s| s.name()).collect();
                format!("unknown restore step {name:?}: one of {}", names.join(", "))
            })
    }
}

/// The test hook [`EngineConfig::crash_at`]: the process dies here, as in a power cut.
pub(super) fn crash_point(config: &EngineConfig, step: RestoreStep) {
    if config.crash_at == Some(step) {
        tracing::warn!(step = step.name(), "crashing on purpose (test hook)");
        std::process::abort();
    }
}

/// The test hook [`EngineConfig::commit_gate`]: waits while the gate file exists.
pub(super) fn wait_at_gate(config: &EngineConfig) {
    let Some(gate) = &config.commit_gate else {
        return;
    };
    if !gate.exists() {
        return;
    }
    let mut waiting = gate.clone().into_os_string();
    waiting.push(".waiting");
    let _ = std::fs::write(&waiting, b"");
    while gate.exists() {
        std::thread::sleep(GATE_POLL);
    }
    let _ = std::fs::remove_file(&waiting);
}

/// How often a commit held at the test gate looks for the gate file to be gone.
const GATE_POLL: Duration = Duration::from_millis(5);

#[cfg(test)]
mod tests {
    use super::RestoreStep;

    #[test]
    fn restore_steps_parse_by_name() {
        for step in RestoreStep::ALL {
            assert_eq!(RestoreStep::parse(step.name()), Ok(step));
        }
        let err = RestoreStep::parse("restore-later").unwrap_err();
        assert!(err.contains("restore-staged"), "{err}");
    }
}
