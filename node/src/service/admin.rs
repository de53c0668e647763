//! State, the log, roles, replication status, snapshots and restores.

use valori_api as api;
use valori_kernel::Hash;

use super::{Access, Service};
use crate::error::{Doing, NodeError};
use crate::limits::{MAX_LOG_PAGE, MAX_LOG_WAIT_MS, MAX_SNAPSHOT_UPLOAD_BYTES};
use crate::replication::leader::valid_follower_name;
use crate::store::{Entry, SnapshotFile};

/// What a request says of its sender in the follower headers ([`api::FOLLOWER_HEADER`],
/// [`api::EPOCH_HEADER`], [`api::CHAIN_HEADER`]), over HTTP or as gRPC metadata: a follower
/// reading the log names itself, the highest epoch it has seen, and its chain hash before the
/// first entry it asks for; a node checking a leader names the epoch it has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// The follower's name.
    pub follower: Option<String>,
    /// The highest epoch the sender has seen.
    pub epoch: Option<u64>,
    /// The sender's chain hash (hex) at the sequence number before the `from` it asks for.
    pub chain: Option<String>,
    /// The arbiter the sender is, when it names itself ([`api::ARBITER_HEADER`]): an epoch it
    /// raises a node to, or gives a role at, is claimed for it there.
    pub arbiter: Option<String>,
}

impl Heard {
    /// Reads the follower headers, given a lookup by lower-case name. An epoch that is not a
    /// number is refused, whoever sends it.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Heard, NodeError> {
        let epoch = header(api::EPOCH_HEADER)
            .map(|e| {
                e.trim().parse::<u64>().map_err(|_| {
                    NodeError::BadRequest(format!(
                        "{} must be an unsigned 64-bit number, not {e:?}",
                        api::EPOCH_HEADER
                    ))
                })
            })
            .transpose()?;
        Ok(Heard {
            follower: header(api::FOLLOWER_HEADER).map(String::from),
            epoch,
            chain: header(api::CHAIN_HEADER).map(String::from),
            arbiter: header(api::ARBITER_HEADER)
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from),
        })
    }

    /// The epoch to heed: only from a request that may write. A read-only key must not be
    /// able to fence a leader by naming a high epoch.
    fn epoch_heeded(&self, access: Access) -> Option<u64> {
        self.epoch.filter(|_| access == Access::Write)
    }
}

/// A page of the retained log.
pub struct LogPageOut {
    /// Entries from the first asked for on, in order.
    pub entries: Vec<Entry>,
    /// The first sequence number still retained, if the log holds any.
    pub first_retained: Option<u64>,
    /// The node's sequence number.
    pub head: u64,
    /// The epoch of the node's role.
    pub epoch: u64,
    /// The node's history generation.
    pub history: u64,
}

/// Sequence number and hashes, at the current state or a past sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateAt {
    /// The sequence number.
    pub seq: u64,
    /// Chain hash at `seq`.
    pub chain_hash: Hash,
    /// State hash: only for the current state.
    pub state_hash: Option<Hash>,
    /// The epoch of the node's role.
    pub epoch: u64,
}

/// What a restore installed, and the state it left.
pub struct Restored {
    /// The installed snapshot.
    pub snapshot: SnapshotFile,
    /// The node's state after it.
    pub state: StateAt,
}

impl Service {
    /// The node's role. A request that may write and names a higher epoch than this node has
    /// seen ([`Heard::epoch`]) is heard first: a leader below it is fenced.
    pub async fn role(&self, access: Access, heard: Heard) -> Result<api::RoleInfo, NodeError> {
        if let Some(epoch) = heard.epoch_heeded(access) {
            // Ordered with commits: the sequence number below is a fenced leader's last.
            self.engine.observe_epoch(epoch, heard.arbiter).await?;
        }
        self.role_info()
    }

    fn role_info(&self) -> Result<api::RoleInfo, NodeError> {
        let role = self.engine.role();
        Ok(api::RoleInfo {
            role: role.assignment.role,
            epoch: role.assignment.epoch,
            leader_url: role.assignment.leader_url.clone(),
            seq: self.engine.seq()?,
            seen_epoch: role.seen_epoch,
            writable: role.writable(),
            last_epoch: self.engine.last_epoch()?,
            diverged: matches!(
                self.engine.failure(),
                Some(crate::error::Failure::Diverged { .. })
            ),
            heal: role.assignment.heal,
        })
    }

    /// Gives the node a role (see [`crate::role::RoleState::decide`]), from the arbiter that
    /// names itself in `heard`, if it does.
    pub async fn set_role(
        &self,
        req: api::SetRole,
        heard: Heard,
    ) -> Result<api::RoleInfo, NodeError> {
        self.engine
            .set_role(
                crate::role::Assignment {
                    role: req.role,
                    epoch: req.epoch,
                    leader_url: req.leader_url.map(|u| u.trim_end_matches('/').to_string()),
                    heal: req.heal.unwrap_or(true),
                },
                heard.arbiter,
            )
            .await?;
        self.role_info()
    }

    /// A follower reading the log from `from` says who it is: its confirmation is recorded
    /// (proven when its chain hash matches ours there), and an epoch it heard of, higher than
    /// this node has seen, fences this node when it leads. Nothing when it names no follower.
    pub async fn hello(&self, access: Access, heard: Heard, from: u64) -> Result<(), NodeError> {
        let Some(name) = heard.follower.clone() else {
            return Ok(());
        };
        if !valid_follower_name(&name) {
            return Err(NodeError::BadRequest(format!(
                "{} must be 1 to {} characters of A-Z a-z 0-9 . _ : -",
                api::FOLLOWER_HEADER,
                crate::limits::MAX_FOLLOWER_NAME_BYTES
            )));
        }
        if let Some(epoch) = heard.epoch_heeded(access) {
            self.engine.observe_epoch(epoch, None).await?;
        }
        let chain = heard.chain;
        let proven = self
            .off_thread(move |s| {
                let before = from.saturating_sub(1);
                Ok(chain
                    .map(|theirs| s.engine.chain_at(before).ok().map(hex::encode) == Some(theirs)))
            })
            .await?;
        let proof = crate::replication::leader::Proof {
            chain: proven,
            credentialed: access == Access::Write,
        };
        self.followers
            .asked(&name, from, proof, self.generation(), self.engine.metrics());
        Ok(())
    }

    /// A page of the log for a reader: hears a follower ([`Service::hello`]), waits up to
    /// `wait_ms` for entries from `from` (a long poll), then reads at most `limit` of them.
    pub async fn read_log(
        &self,
        access: Access,
        heard: Heard,
        query: api::LogQuery,
    ) -> Result<LogPageOut, NodeError> {
        check_log_limit(query.limit)?;
        if query.wait_ms > MAX_LOG_WAIT_MS {
            return Err(NodeError::Limit {
                what: "wait_ms, the long poll's wait in milliseconds",
                value: query.wait_ms.into(),
                max: MAX_LOG_WAIT_MS.into(),
            });
        }
        self.hello(access, heard, query.from).await?;
        self.wait_for_entries(query.from, query.wait_ms).await;
        self.off_thread(move |s| s.log_page_blocking(query.from, query.limit))
            .await
    }

    /// Waits up to `wait_ms` for the node's sequence number to reach `from` (a long poll).
    async fn wait_for_entries(&self, from: u64, wait_ms: u32) {
        if wait_ms == 0 {
            return;
        }
        let mut seq = self.engine.seq_watch();
        debug_assert!(wait_ms <= MAX_LOG_WAIT_MS, "checked by read_log");
        let wait = std::time::Duration::from_millis(u64::from(wait_ms));
        let _ = tokio::time::timeout(wait, seq.wait_for(|&s| s >= from)).await;
    }

    /// The node's sequence number: where a stream of the log that begins now ends.
    pub fn log_head(&self) -> Result<u64, NodeError> {
        self.engine.seq()
    }

    /// At most `limit` retained log entries from `from` on, with the node's head, epoch and
    /// history generation. Reads storage: run it off the async threads.
    pub fn log_page_blocking(&self, from: u64, limit: u32) -> Result<LogPageOut, NodeError> {
        check_log_limit(limit)?;
        let role = self.engine.role();
        Ok(LogPageOut {
            first_retained: self.engine.first_retained()?,
            entries: self
                .engine
                .entries(from, limit as usize, self.settings.max_log_page_bytes)?,
            head: self.engine.seq()?,
            epoch: role.assignment.epoch,
            history: role.history,
        })
    }

    /// Each follower's confirmed sequence number and lag (on a leader).
    pub fn replication_status(&self) -> Result<api::ReplicationStatus, NodeError> {
        Ok(self
            .followers
            .status(self.engine.seq()?, self.engine.metrics()))
    }

    /// Takes a snapshot now (ordered with writes).
    pub async fn create_snapshot(&self) -> Result<SnapshotFile, NodeError> {
        self.engine.snapshot().await
    }

    /// [`Service::create_snapshot`] for callers outside an async runtime.
    pub fn create_snapshot_blocking(&self) -> Result<SnapshotFile, NodeError> {
        self.engine.snapshot_blocking()
    }

    /// Takes a snapshot and uploads it to the backup destination (on the leader).
    pub async fn create_backup(&self) -> Result<api::BackupInfo, NodeError> {
        let backup = self.backup.as_ref().ok_or(NodeError::BackupNotConfigured)?;
        Ok(backup_info(backup.backup_now().await?))
    }

    /// What the backup destination holds, and how backing up goes.
    pub async fn backups(&self) -> Result<api::BackupList, NodeError> {
        let backup = self.backup.as_ref().ok_or(NodeError::BackupNotConfigured)?;
        let listing = backup.list().await?;
        let status = backup.status();
        let interval = backup.settings().ship_interval;
        let head = self.engine.seq()?;
        Ok(api::BackupList {
            destination: backup.destination().url().to_string(),
            reaches: listing.reaches(),
            backups: listing.snapshots.into_iter().map(backup_info).collect(),
            shipping: api::LogShipping {
                enabled: interval.is_some(),
                interval_s: interval.map_or(0, |d| d.as_secs()),
                shipped_through: status.shipped_through,
                lag_events: status.shipped_through.map(|s| head.saturating_sub(s)),
                shipped_at: status.shipped_at.map(crate::backup::rfc3339),
                error: status.ship_error,
            },
            last_error: status.backup_error,
        })
    }

    /// The retained snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>, NodeError> {
        self.engine.snapshots()
    }

    /// Opens snapshot `id` for streaming, with its length. The open file stays readable even
    /// if retention removes its name meanwhile.
    pub async fn open_snapshot(&self, id: u64) -> Result<(tokio::fs::File, u64), NodeError> {
        let file = self
            .engine
            .snapshots()?
            .into_iter()
            .find(|s| s.seq == id)
            .ok_or_else(|| NodeError::NotFound(format!("no snapshot {id}")))?;
        let reading = || format!("reading snapshot {id}");
        let f = tokio::fs::File::open(&file.path).await.doing(reading)?;
        let len = f.metadata().await.doing(reading)?.len();
        Ok((f, len))
    }

    /// Replaces the whole state with a snapshot that arrives as a stream of chunks (an HTTP
    /// body, a gRPC client stream). The chunks go to a file in the snapshot directory, which
    /// is then mapped, verified and renamed into place: the upload is never held in the heap,
    /// only the state decoded from it. More than [`MAX_SNAPSHOT_UPLOAD_BYTES`] is refused, and
    /// a refused or failed upload leaves nothing behind. Answers with the state it left,
    /// hashed off the async threads.
    pub async fn restore<B: AsRef<[u8]>>(
        &self,
        chunks: impl futures_util::Stream<Item = Result<B, NodeError>>,
    ) -> Result<Restored, NodeError> {
        self.writable()?;
        // One upload at a time: each may be 8 GiB on the disk before it is verified.
        let _one = UPLOADS.try_acquire().map_err(|_| {
            NodeError::Busy("another snapshot upload is in progress; retry when it is done".into())
        })?;
        // Removed however this ends: refused, failed, or dropped with a client that went away
        // (after a successful install the file has been renamed into place).
        let upload = RemoveOnDrop(self.engine.upload_path());
        receive(chunks, &upload.0).await?;
        let snapshot = self
            .engine
            .install_file(&upload.0, crate::engine::InstallMode::Normal, None)
            .await?;
        let state = self.state(None).await?;
        Ok(Restored { snapshot, state })
    }

    /// Replaces the whole state with the snapshot file at `path` (a user's file, left as it
    /// is). For embedded callers: the state it answers with is hashed on the caller's thread.
    pub async fn restore_file(&self, path: &std::path::Path) -> Result<Restored, NodeError> {
        self.engine.check_writable()?;
        let snapshot = self.engine.install_copy(path).await?;
        let state = self.state_blocking(None)?;
        Ok(Restored { snapshot, state })
    }

    /// [`Service::state_blocking`] off the async threads.
    pub async fn state(&self, seq: Option<u64>) -> Result<StateAt, NodeError> {
        self.off_thread(move |s| s.state_blocking(seq)).await
    }

    /// [`Service::state`], with the state hash of a past sequence number too when
    /// `state_hash` is set: the state is replayed in memory ([`Service::state_at`]).
    pub async fn state_with(
        &self,
        seq: Option<u64>,
        state_hash: bool,
    ) -> Result<StateAt, NodeError> {
        self.off_thread(move |s| {
            let mut at = s.state_blocking(seq)?;
            if state_hash && at.state_hash.is_none() {
                let past = s.state_at(at.seq)?;
                if past.chain_hash() != at.chain_hash {
                    return Err(NodeError::Internal(format!(
                        "the state replayed to seq {} has another chain hash than the log's",
                        at.seq
                    )));
                }
                at.state_hash = Some(past.state_hash());
            }
            Ok(at)
        })
        .await
    }

    /// The sequence number and chain hash at `seq` (the current one when `None`), and the
    /// state hash when that is the current state. A past sequence number is answered from the
    /// retained log or a snapshot taken there, without hashing the whole state; a future one
    /// is not found.
    pub fn state_blocking(&self, seq: Option<u64>) -> Result<StateAt, NodeError> {
        let epoch = self.engine.role().assignment.epoch;
        let past = |seq| {
            Ok(StateAt {
                seq,
                chain_hash: self.engine.chain_at(seq)?,
                state_hash: None,
                epoch,
            })
        };
        if let Some(seq) = seq {
            if seq < self.engine.seq()? {
                return past(seq);
            }
        }
        let now = self.engine.state()?;
        match seq {
            Some(seq) if seq > now.seq => Err(NodeError::NotFound(format!(
                "sequence number {seq} is in the future (current is {})",
                now.seq
            ))),
            // Moved on since the check above.
            Some(seq) if seq < now.seq => past(seq),
            _ => Ok(StateAt {
                seq: now.seq,
                chain_hash: now.chain_hash,
                state_hash: Some(now.state_hash),
                epoch,
            }),
        }
    }
}

/// Refuses a page size of 0 or above [`MAX_LOG_PAGE`].
fn check_log_limit(limit: u32) -> Result<(), NodeError> {
    if limit == 0 {
        return Err(NodeError::BadRequest("limit must be at least 1".into()));
    }
    if limit > MAX_LOG_PAGE {
        return Err(NodeError::Limit {
            what: "log entries in a page",
            value: limit.into(),
            max: MAX_LOG_PAGE.into(),
        });
    }
    Ok(())
}

/// Snapshot uploads in progress in this process (one at a time).
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A temporary file removed when this is dropped (if it still exists).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a stream of chunks to a new file at `path`, refusing more than
/// [`MAX_SNAPSHOT_UPLOAD_BYTES`].
async fn receive<B: AsRef<[u8]>>(
    chunks: impl futures_util::Stream<Item = Result<B, NodeError>>,
    path: &std::path::Path,
) -> Result<(), NodeError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let receiving = || "receiving a snapshot upload";
    let mut file = tokio::fs::File::create(path).await.doing(receiving)?;
    let mut total = 0usize;
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let data = chunk.as_ref();
        total += data.len();
        if total > MAX_SNAPSHOT_UPLOAD_BYTES {
            return Err(NodeError::PayloadTooLarge {
                limit: MAX_SNAPSHOT_UPLOAD_BYTES,
            });
        }
        file.write_all(data).await.doing(receiving)?;
    }
    Ok(file.flush().await.doing(receiving)?)
}

/// A backed-up snapshot as the API gives it.
fn backup_info(m: crate::backup::SnapshotManifest) -> api::BackupInfo {
    api::BackupInfo {
        seq: m.seq,
        chain_hash: m.chain_hash,
        state_hash: m.state_hash,
        bytes: m.bytes,
        started: m.started,
        finished: m.finished,
    }
}
