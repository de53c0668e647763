//! The node's error type and how each error reaches a client.

use valori_kernel::{FixedError, SnapshotError};

/// Every way a request to the node can fail. `status()` sorts them into the caller's mistakes
/// (4xx) and the server's trouble (5xx); `code()` is a stable machine-readable name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The kernel refused the event or query (bad input or unknown names).
    #[error("{0}")]
    Kernel(#[from] valori_kernel::Error),
    /// A vector component that is NaN, infinite or outside the Q16.16 range.
    #[error("vector component {index}: {error}")]
    Value {
        /// Position of the component.
        index: usize,
        /// What is wrong with it.
        error: FixedError,
    },
    /// A request that is malformed or breaks a documented limit.
    #[error("{0}")]
    BadRequest(String),
    /// A request body above the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Something named in the path does not exist (a snapshot, a retained log entry).
    #[error("{0}")]
    NotFound(String),
    /// No API key, or a wrong one.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// A read-only key used for a write or admin route.
    #[error("this API key may not perform writes or admin operations")]
    Forbidden,
    /// A snapshot that does not verify.
    #[error("snapshot rejected: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A request above one of the node's limits (records in a batch, log entries in a page).
    #[error("{what} is {value}, the limit is {max}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        value: u64,
        /// The most allowed.
        max: u64,
    },
    /// The node failed earlier (see [`Failure`]) and refuses writes until it is healed or
    /// restarted.
    #[error("node is in a failed state: {0}")]
    Failed(Failure),
    /// A storage error while serving this request, with its source.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// A follower could not reach its leader, or the leader's answer made no sense.
    #[error("leader unreachable: {0}")]
    LeaderUnreachable(String),
    /// A fault inside the node that is no one's input (a worker task that died, an event whose
    /// result has the wrong shape).
    #[error("internal error: {0}")]
    Internal(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node is already doing this and does one at a time; try again later.
    #[error("busy: {0}")]
    Busy(String),
    /// A role request whose epoch is below the highest the node has seen, or equal to its
    /// current assignment's with another role or leader.
    #[error("epoch {asked} is stale: this node has seen epoch {current}; roles change only with a higher epoch")]
    StaleEpoch {
        /// The epoch asked for.
        asked: u64,
        /// The highest the node has seen.
        current: u64,
    },
    /// An epoch another arbiter claimed on this node: two arbiters that chose the same epoch
    /// at once must not both act with it; the later one gives up.
    #[error(
        "epoch {epoch} is claimed on this node by another arbiter ({by}); choose a higher one"
    )]
    EpochClaimed {
        /// The epoch.
        epoch: u64,
        /// The arbiter that claimed it.
        by: String,
    },
    /// A write sent to a leader that a newer epoch has fenced.
    #[error("this leader (epoch {epoch}) is fenced: epoch {seen} exists, so a newer leader does; send writes to it")]
    Fenced {
        /// The leader's epoch.
        epoch: u64,
        /// The newer epoch it heard of.
        seen: u64,
    },
    /// A synchronous write that too few followers confirmed in time. It is durable on the
    /// leader and may still replicate: its outcome is unknown, not failed.
    #[error("outcome unknown: the write is durable on the leader at sequence number {seq} but only {confirmed} of the {needed} followers required confirmed it within {timeout_ms} ms; it may still replicate")]
    ReplicationTimeout {
        /// The write's sequence number.
        seq: u64,
        /// Followers that confirmed it.
        confirmed: u32,
        /// Followers required (`--sync-replicas`).
        needed: u32,
        /// How long the leader waited.
        timeout_ms: u64,
    },
    /// A write refused because fewer followers than `--min-replicas-to-write` confirmed within
    /// `--min-replicas-max-lag-ms`: retry, or send it to the leader that replaced this one.
    #[error("not enough replicas: {confirmed} of the {needed} followers required confirmed within {max_lag_ms} ms; the write is refused (nothing changed) so that an isolated leader cannot acknowledge what a failover would lose")]
    NotEnoughReplicas {
        /// Followers in touch.
        confirmed: u32,
        /// Followers required.
        needed: u32,
        /// How recently each must have confirmed.
        max_lag_ms: u64,
    },
    /// The backup destination refused or failed (unreachable, credentials refused, damaged
    /// objects).
    #[error("backup failed: {0}")]
    Backup(String),
    /// A backup asked of a node started without `--backup-to`.
    #[error("this node has no backup destination (start it with --backup-to)")]
    BackupNotConfigured,
    /// A write sent to a follower.
    #[error("this node is a read-only follower; send writes to the leader at {leader}")]
    ReadOnlyFollower {
        /// The leader's URL.
        leader: String,
    },
}

impl NodeError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            NodeError::Kernel(e) if e.is_not_found() => 404,
            NodeError::Kernel(
                valori_kernel::Error::CollectionExists { .. }
                | valori_kernel::Error::KeyExists { .. }
                | valori_kernel::Error::PayloadIndexExists { .. },
            ) => 409,
            NodeError::Kernel(_)
            | NodeError::Value { .. }
            | NodeError::BadRequest(_)
            | NodeError::Limit { .. } => 400,
            NodeError::Snapshot(_) => 400,
            NodeError::PayloadTooLarge { .. } => 413,
            NodeError::NotFound(_) => 404,
            NodeError::Unauthorized => 401,
            NodeError::Forbidden => 403,
            NodeError::Failed(_) | NodeError::ShuttingDown | NodeError::Busy(_) => 503,
            NodeError::ReadOnlyFollower { .. } => 403,
            NodeError::StaleEpoch { .. } | NodeError::EpochClaimed { .. } => 409,
            NodeError::Fenced { .. }
            | NodeError::ReplicationTimeout { .. }
            | NodeError::NotEnoughReplicas { .. } => 503,
            NodeError::LeaderUnreachable(_) | NodeError::Backup(_) => 502,
            NodeError::BackupNotConfigured => 409,
            NodeError::Storage(_) | NodeError::Internal(_) => 500,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::Kernel(e) => e.code(),
            NodeError::Value {
                error: FixedError::NotFinite,
                ..
            } => "not_finite",
            NodeError::Value { .. } => "out_of_range",
            NodeError::BadRequest(_) => "bad_request",
            NodeError::PayloadTooLarge { .. } => "payload_too_large",
            NodeError::NotFound(_) => "not_found",
            NodeError::Unauthorized => "unauthorized",
            NodeError::Forbidden => "forbidden",
            NodeError::Snapshot(_) => "invalid_snapshot",
            NodeError::Failed(_) => "node_failed",
            NodeError::Storage(_) => "storage_error",
            NodeError::Limit { .. } => "limit_exceeded",
            NodeError::LeaderUnreachable(_) => "leader_unreachable",
            NodeError::Internal(_) => "internal_error",
            NodeError::ShuttingDown => "shutting_down",
            NodeError::Busy(_) => "busy",
            NodeError::ReadOnlyFollower { .. } => "read_only_follower",
            NodeError::StaleEpoch { .. } => "stale_epoch",
            NodeError::EpochClaimed { .. } => "epoch_claimed",
            NodeError::Fenced { .. } => "fenced",
            NodeError::ReplicationTimeout { .. } => "replication_timeout",
            NodeError::NotEnoughReplicas { .. } => "not_enough_replicas",
            NodeError::Backup(_) => "backup_failed",
            NodeError::BackupNotConfigured => "backup_not_configured",
        }
    }
}

/// Why an engine is in its failed state: it refuses writes and replication, and serves reads
/// of what is durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Writing to storage failed: memory was rebuilt from the disk; a restart is needed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A follower's history differs from its leader's from `seq` on (a chain hash, a state
    /// hash, or an event that does not apply): healing re-bootstraps from the leader.
    #[error("diverged from the leader at sequence number {seq}: {why}")]
    Diverged {
        /// The first sequence number known to differ.
        seq: u64,
        /// How it differs.
        why: String,
    },
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// RocksDB or the file system failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A log entry that does not decode, does not apply, or whose chain hash differs from the
    /// recomputed one. Recovery stops here rather than skip it.
    #[error("event log is corrupt at sequence number {seq}: {why}")]
    CorruptLog {
        /// The first bad sequence number.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// The log does not continue from the newest usable snapshot.
    #[error("event log has a gap: expected sequence number {expected}, found {found}")]
    Gap {
        /// The sequence number needed next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// Snapshots exist but none verifies, and the log does not begin at sequence number 1: the
    /// state cannot be rebuilt, and starting empty would lose it (and let retention delete the
    /// damaged files for good). Nothing is changed.
    #[error("no snapshot verifies and the event log does not begin at sequence number 1, so the state cannot be recovered; refusing to start empty. Unusable snapshots: {files}. Restore a good snapshot with --restore-from into an empty data directory, or move these files away to start a new, empty node")]
    NoUsableSnapshot {
        /// The files and why each was refused.
        files: String,
    },
    /// A restore from a backup was interrupted (a crash, a kill) and left part of a history:
    /// starting on it would serve a state that is neither the backup's nor empty.
    #[error("an interrupted restore from a backup left this data directory incomplete; run the restore again (valori-node restore, or --restore-from-backup), which starts over")]
    InterruptedBackupRestore,
    /// A snapshot given to start from does not verify.
    #[error("snapshot {path}: {error}")]
    Snapshot {
        /// The file.
        path: String,
        /// Why.
        error: SnapshotError,
    },
}

/// A failed storage operation: what the node was doing, and the error of RocksDB or of the
/// file system that stopped it (kept as the error's source, not flattened into a string).
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct StorageError {
    /// What the node was doing ("appending events 5..=9", "reading snapshot 12").
    pub doing: String,
    /// What failed.
    #[source]
    pub source: StorageSource,
}

/// The layer a storage error comes from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageSource {
    /// RocksDB (the log, the role and the markers).
    #[error(transparent)]
    Db(#[from] rocksdb::Error),
    /// The file system (snapshots, uploads, downloads).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Stored bytes that do not decode (a persisted role, a marker, an epoch range).
    #[error("{0}")]
    Malformed(String),
}

impl StorageError {
    /// A storage error while `doing`, caused by `source`.
    pub fn new(doing: impl Into<String>, source: impl Into<StorageSource>) -> StorageError {
        StorageError {
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// Stored bytes that do not decode, found while `doing`.
    pub fn malformed(doing: impl Into<String>, why: impl Into<String>) -> StorageError {
        StorageError::new(doing, StorageSource::Malformed(why.into()))
    }
}

/// Names what a failed storage call was doing: `store.append(..).doing(|| "appending")?`.
pub trait Doing<T> {
    /// The error, if any, as a [`StorageError`] while doing what `doing` says.
    fn doing<D: Into<String>>(self, doing: impl FnOnce() -> D) -> Result<T, StorageError>;
}

impl<T, E: Into<StorageSource>> Doing<T> for Result<T, E> {
    fn doing<D: Into<String>>(self, doing: impl FnOnce() -> D) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::new(doing(), e))
    }
}
