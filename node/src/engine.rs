//! The engine: one kernel, its durable log, and the single writer thread that changes both.
//!
//! Two copies of the state: the **published** one, immutable, which every reader shares (an
//! `Arc` taken in an instant, never a lock held across a commit), and the writer's private
//! **back** copy, equal to it between commits.
//!
//! Write path: a request's event goes to the writer thread over a channel. The writer takes
//! every request waiting (group commit) and applies each event in order to the back copy,
//! recording how to repeat it cheaply ([`Kernel::apply_recorded`]: an insert's index build is
//! recorded as the lists it wrote); refused events change nothing. It appends the accepted
//! events to the log in one synced RocksDB write, then publishes the back copy in place of the
//! old one and answers. The old copy, once its last reader lets go, replays the group's records
//! ([`Kernel::replay`]: no distance is computed) and is the next back copy; if a reader holds
//! it longer than [`RECLAIM_WAIT`], the writer copies the published state instead. Readers
//! therefore never wait for validation, index builds or the sync, and never see an event that
//! is not durable: a state is published only after its events are on disk, whole, with the
//! sequence number it reports. The price is memory: two copies of the state.
//!
//! If the append fails, the back copy is ahead of the disk: the engine latches into a failed
//! state that refuses every later write, rebuilds the state from what is durable (the same
//! recovery as at start), and keeps serving reads from that: read-only until restarted. If even
//! that rebuild fails, reads are refused too.
//!
//! Recovery: the newest snapshot that verifies, then every log entry after it, each decoded,
//! applied and its chain hash compared with the stored one. A gap, an undecodable entry or a
//! chain mismatch stops the node with an error naming the sequence number.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use valori_kernel::exec::Threads;
use valori_kernel::{Applied, Event, Hash, Kernel, Replay, GENESIS_CHAIN};

use tokio::sync::watch;
use valori_api::Role;

use crate::error::{Failure, NodeError, OpenError};
use crate::limits::{MAX_GROUP_BYTES, MAX_GROUP_EVENTS};
use crate::metrics::Metrics;
use crate::role::{Assignment, Change, RoleState};
use crate::store::{Entry, SnapshotFile, Store};

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
    /// Threads used to build the index for large inserts.
    pub index_threads: usize,
    /// Niceness of the writer and index threads (0: unchanged).
    pub index_nice: i32,
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
    /// A test hook: the name of a step of a restore at which the process aborts, as in a power
    /// cut (`restore-staged`, `restore-decided`, `restore-log-cleared`, `restore-old-removed`,
    /// `restore-installed`, `restore-history-bumped`). `None` in production.
    pub crash_at: Option<String>,
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
            index_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            index_nice: 0,
            follow: None,
            max_queued_writes: crate::limits::DEFAULT_MAX_QUEUED_WRITES,
            max_group_bytes: MAX_GROUP_BYTES,
            commit_gate: None,
            crash_at: None,
        }
    }
}

/// A committed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The event's sequence number.
    pub seq: u64,
    /// What it produced.
    pub applied: Applied,
}

/// Sequence number and hashes of the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateInfo {
    /// Events applied.
    pub seq: u64,
    /// Chain hash at `seq`.
    pub chain_hash: Hash,
    /// State hash.
    pub state_hash: Hash,
}

enum Job {
    Event(Event, oneshot::Sender<Result<Committed, NodeError>>),
    Replicate(Vec<Entry>, oneshot::Sender<Result<u64, NodeError>>),
    Snapshot(oneshot::Sender<Result<SnapshotFile, NodeError>>),
    /// The state to install, the verified snapshot file it came from (renamed into place),
    /// and whether to install even when failed (healing a follower).
    Restore(
        Box<Kernel>,
        PathBuf,
        bool,
        oneshot::Sender<Result<SnapshotFile, NodeError>>,
    ),
    /// A new role: ordered with writes, so a write either commits before it or is refused.
    SetRole(Assignment, oneshot::Sender<Result<RoleState, NodeError>>),
    /// Makes the writer panic (tests of what the node does when its writer dies).
    #[cfg(test)]
    Panic,
}

struct Shared {
    /// Client writes queued for the writer and not yet taken by it.
    queued: std::sync::atomic::AtomicUsize,
    /// The published state: readers clone the `Arc` (the lock is held for that alone); the
    /// writer replaces it after each durable commit.
    published: Mutex<Arc<Kernel>>,
    /// The state hash of a published state, computed once however many ask (cross-checks ask
    /// every pod each interval). Keyed by the published `Arc`'s allocation, which the `Weak`
    /// keeps from being reused while it is cached; every publication is a new allocation.
    state_hash: Mutex<Option<(std::sync::Weak<Kernel>, Hash)>>,
    store: Store,
    failed: Mutex<Option<Failure>>,
    /// False when memory may hold events the disk does not (a failed rebuild after a failed
    /// append): reads are refused then.
    readable: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    config: EngineConfig,
    /// The role; changed by the writer (assignments) or by [`Engine::observe_epoch`].
    role: Mutex<RoleState>,
    /// Announces role changes (the replication supervisor follows them).
    role_tx: watch::Sender<RoleState>,
    /// Announces the sequence number after each commit (long-polling log readers wait on it).
    seq_tx: watch::Sender<u64>,
}

/// A running engine. Cheap to clone; the writer thread finishes its queue and stops when
/// [`Engine::shutdown`] is called or the last clone is dropped, which waits for it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

/// The way to the writer thread, shared by an engine's clones.
struct WriterHandle {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Stops accepting work, lets the writer finish what it has, and joins it.
    fn stop(&self) {
        self.tx.lock().expect("sender lock").take();
        if let Some(w) = self.thread.lock().expect("writer lock").take() {
            // (Never the writer waiting for itself.)
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for WriterHandle {
    /// The last clone waits for the writer: the database closes before the caller goes on (a
    /// process that exits meanwhile would tear down the storage engine under the writer).
    fn drop(&mut self) {
        self.stop();
    }
}

impl Engine {
    /// Opens the data directory, recovers the state, and starts the writer.
    pub fn open(config: EngineConfig, metrics: Arc<Metrics>) -> Result<Engine, OpenError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.data_dir)?;
        if let Some((file, _)) = finish_restore(&store, &config).map_err(OpenError::Storage)? {
            tracing::warn!(path = %file.path.display(), "finished a restore a crash interrupted");
        }
        let kernel = recover(&store, &config)?;
        metrics.seq.set(kernel.seq() as i64);
        // A persisted role wins over the flags: it came from the arbiter or from a fencing.
        let role = match store.get_meta(ROLE_KEY)? {
            Some(bytes) => RoleState::decode(&bytes).map_err(OpenError::Storage)?,
            None => RoleState::initial(config.follow.clone()),
        };
        set_role_metrics(&metrics, &role);
        let (role_tx, _) = watch::channel(role.clone());
        let (seq_tx, _) = watch::channel(kernel.seq());
        tracing::info!(
            seq = kernel.seq(),
            chain = %hex::encode(kernel.chain_hash()),
            "recovered state"
        );
        let shared = Arc::new(Shared {
            queued: std::sync::atomic::AtomicUsize::new(0),
            published: Mutex::new(Arc::new(kernel.clone())),
            state_hash: Mutex::new(None),
            store,
            failed: Mutex::new(None),
            readable: std::sync::atomic::AtomicBool::new(true),
            metrics,
            config,
            role: Mutex::new(role),
            role_tx,
            seq_tx,
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("valori-writer".into())
            .spawn(move || writer_loop(&writer_shared, kernel, rx))?;
        Ok(Engine {
            shared,
            writer: Arc::new(WriterHandle {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(writer)),
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), NodeError> {
        if let Some(why) = self.writer_stopped() {
            return Err(NodeError::Internal(why));
        }
        let tx = self.writer.tx.lock().expect("sender lock");
        tx.as_ref()
            .ok_or(NodeError::ShuttingDown)?
            .send(job)
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Why writes cannot be served, if the writer thread ended while the node still runs (it
    /// panicked: a bug). The node is then not ready and refuses writes; a restart recovers
    /// from the durable log.
    fn writer_stopped(&self) -> Option<String> {
        let running = self.writer.tx.lock().expect("sender lock").is_some();
        let finished = self
            .writer
            .thread
            .lock()
            .expect("writer lock")
            .as_ref()
            .is_some_and(|h| h.is_finished());
        (running && finished)
            .then(|| "the writer thread stopped unexpectedly: restart the node".to_string())
    }

    /// Submits an event; resolves once it is durable and applied (or refused).
    pub async fn submit(&self, event: Event) -> Result<Committed, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(event, reply)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// [`Engine::submit`] for callers outside an async runtime.
    pub fn submit_blocking(&self, event: Event) -> Result<Committed, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(event, reply)?;
        rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
    }

    /// Queues a client write for the writer, unless [`EngineConfig::max_queued_writes`] are
    /// already waiting (the queue is bounded; role changes and snapshots are not counted).
    fn enqueue(
        &self,
        event: Event,
        reply: oneshot::Sender<Result<Committed, NodeError>>,
    ) -> Result<(), NodeError> {
        use std::sync::atomic::Ordering;
        let max = self.shared.config.max_queued_writes;
        let queued = &self.shared.queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= max {
            queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.writes_refused_busy.inc();
            return Err(NodeError::Busy(format!(
                "{max} writes are already waiting for the disk; retry shortly"
            )));
        }
        self.send(Job::Event(event, reply)).inspect_err(|_| {
            queued.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Applies entries streamed from a leader: each must be the next sequence number, decode,
    /// apply, and produce exactly the leader's chain hash; then they are appended durably with
    /// that chain. Entries already applied are skipped (resuming is idempotent). On the first
    /// mismatch the entries before it are kept, the engine latches into its failed state
    /// (read-only, serving the durable state) and the error names the sequence number.
    /// Returns the sequence number reached.
    pub async fn replicate(&self, entries: Vec<Entry>) -> Result<u64, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Replicate(entries, reply))?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// The current sequence number (cheap: no hashing).
    pub fn seq(&self) -> Result<u64, NodeError> {
        Ok(self.read()?.seq())
    }

    /// Takes a snapshot now (ordered with writes).
    pub async fn snapshot(&self) -> Result<SnapshotFile, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Snapshot(reply))?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// [`Engine::snapshot`] for callers outside an async runtime.
    pub fn snapshot_blocking(&self) -> Result<SnapshotFile, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Snapshot(reply))?;
        rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
    }

    /// Replaces the whole state with the snapshot file at `path`, verified first: the log
    /// restarts after the snapshot's sequence number and other snapshots are removed. With
    /// `heal`, also over a failed (diverged) state, clearing the failure: how a follower heals
    /// by re-bootstrapping.
    ///
    /// The file must be complete, in the snapshot directory ([`Engine::download_path`],
    /// [`Engine::upload_path`]), and not written again. It is mapped, not read into the heap,
    /// and becomes the installed snapshot file by a rename instead of being copied; when the
    /// install fails it is removed. Either way it is gone afterwards.
    pub async fn install_file(&self, path: &Path, heal: bool) -> Result<SnapshotFile, NodeError> {
        let installed = self.install_in_place(path, heal).await;
        if installed.is_err() {
            let _ = std::fs::remove_file(path);
        }
        installed
    }

    /// [`Engine::install_file`] from a snapshot file anywhere (a user's): copied into the
    /// snapshot directory first, so the user's file is left as it is.
    pub async fn install_copy(&self, from: &Path) -> Result<SnapshotFile, NodeError> {
        let upload = self.upload_path();
        if let Err(e) = std::fs::copy(from, &upload) {
            let _ = std::fs::remove_file(&upload);
            let what = format!("cannot read snapshot {}: {e}", from.display());
            return Err(if e.kind() == std::io::ErrorKind::NotFound {
                NodeError::NotFound(what)
            } else {
                NodeError::Storage(what)
            });
        }
        self.install_file(&upload, false).await
    }

    async fn install_in_place(&self, path: &Path, heal: bool) -> Result<SnapshotFile, NodeError> {
        // Decoding and syncing take long for a large state: on a blocking thread, and before
        // the writer sees the job (it only renames and records).
        // A thread of its own, not the runtime's blocking pool: embedded callers have none.
        let file = path.to_path_buf();
        let (done, decoded) = oneshot::channel();
        std::thread::Builder::new()
            .name("valori-restore".into())
            .spawn(move || {
                let storage = |e: std::io::Error| {
                    NodeError::Storage(format!("reading snapshot {}: {e}", file.display()))
                };
                let kernel = (|| {
                    std::fs::File::open(&file)
                        .and_then(|f| f.sync_all())
                        .map_err(storage)?;
                    let map = crate::store::map_snapshot(&file).map_err(storage)?;
                    Ok::<_, NodeError>(Kernel::restore(&map)?)
                })();
                let _ = done.send(kernel);
            })
            .map_err(|e| NodeError::Internal(format!("starting the restore thread: {e}")))?;
        let kernel = decoded
            .await
            .map_err(|_| NodeError::Internal("the restore thread failed".into()))??;
        let (reply, rx) = oneshot::channel();
        self.send(Job::Restore(
            Box::new(kernel),
            path.to_path_buf(),
            heal,
            reply,
        ))?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// The node's role state.
    pub fn role(&self) -> RoleState {
        self.shared.role.lock().expect("role lock").clone()
    }

    /// Follows role changes.
    pub fn role_watch(&self) -> watch::Receiver<RoleState> {
        self.shared.role_tx.subscribe()
    }

    /// Follows the sequence number (it moves after each commit, replication or restore).
    pub fn seq_watch(&self) -> watch::Receiver<u64> {
        self.shared.seq_tx.subscribe()
    }

    /// Gives the node a role (see [`RoleState::decide`]): made durable, then in effect. Ordered
    /// with writes by the writer thread: a write submitted before either commits first or
    /// fails, and every write after a demotion is refused.
    pub async fn set_role(&self, want: Assignment) -> Result<RoleState, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::SetRole(want, reply))?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Records an epoch heard of (from a follower's request or a leader's log page). When it
    /// is higher than any seen, it is persisted and, on a leader, fences it at once: writes
    /// are refused from here on. Returns whether it was new.
    pub fn observe_epoch(&self, epoch: u64) -> Result<bool, NodeError> {
        let mut role = self.shared.role.lock().expect("role lock");
        if epoch <= role.seen_epoch {
            return Ok(false);
        }
        let mut next = role.clone();
        next.seen_epoch = epoch;
        self.shared
            .store
            .put_meta(ROLE_KEY, &next.encode())
            .map_err(|e| NodeError::Storage(format!("persisting the role: {e}")))?;
        if next.fenced() {
            tracing::warn!(
                epoch = next.assignment.epoch,
                seen = epoch,
                "a newer leader exists: this leader is fenced and refuses writes"
            );
        }
        set_role_metrics(&self.shared.metrics, &next);
        *role = next.clone();
        drop(role);
        self.shared.role_tx.send_replace(next);
        Ok(true)
    }

    /// Refuses writes unless this node is a leader no newer epoch has fenced.
    pub fn check_writable(&self) -> Result<(), NodeError> {
        let role = self.shared.role.lock().expect("role lock");
        not_writable(&role).map_or(Ok(()), Err)
    }

    /// Latches the failed state (read-only) with a reason, e.g. a divergence found by
    /// comparing chain hashes with the leader.
    pub fn mark_failed(&self, why: Failure) {
        fail(&self.shared, why);
    }

    /// The published state: immutable, durable, never behind a commit in progress (taking it
    /// waits for no writer). After a storage failure it is what is durable; reads are refused
    /// only if that could not be re-established.
    pub fn read(&self) -> Result<Arc<Kernel>, NodeError> {
        if !self
            .shared
            .readable
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.check_failed()?;
        }
        Ok(published(&self.shared))
    }

    fn check_failed(&self) -> Result<(), NodeError> {
        match &*self.shared.failed.lock().expect("failed lock") {
            Some(why) => Err(NodeError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether the engine is serving (recovered, not failed, not fenced, not shut down).
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the engine is not ready, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(f) = self.failure() {
            return Some(format!("node is in a failed state: {f}"));
        }
        if self.writer.tx.lock().expect("sender lock").is_none() {
            return Some("shutting down".into());
        }
        if let Some(why) = self.writer_stopped() {
            return Some(why);
        }
        let role = self.role();
        role.fenced().then(|| {
            format!(
                "fenced: this leader's epoch {} is older than epoch {}",
                role.assignment.epoch, role.seen_epoch
            )
        })
    }

    /// Why the engine failed, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.shared.failed.lock().expect("failed lock").clone()
    }

    /// Sequence number and hashes now.
    pub fn state(&self) -> Result<StateInfo, NodeError> {
        let kernel = self.read()?;
        Ok(StateInfo {
            seq: kernel.seq(),
            chain_hash: kernel.chain_hash(),
            state_hash: self.state_hash_of(&kernel),
        })
    }

    /// The state hash of a published state: from the cache when it is the one last hashed.
    fn state_hash_of(&self, kernel: &Arc<Kernel>) -> Hash {
        let cached = |cache: &Option<(std::sync::Weak<Kernel>, Hash)>| {
            cache
                .as_ref()
                .filter(|(of, _)| std::ptr::eq(of.as_ptr(), Arc::as_ptr(kernel)))
                .map(|(_, h)| *h)
        };
        if let Some(h) = cached(&self.shared.state_hash.lock().expect("state hash lock")) {
            return h;
        }
        // Hashed without the lock: a second reader of a new state may hash it too.
        let timer = self.shared.metrics.state_hash_seconds.start_timer();
        let hash = kernel.state_hash();
        timer.observe_duration();
        *self.shared.state_hash.lock().expect("state hash lock") =
            Some((Arc::downgrade(kernel), hash));
        hash
    }

    /// The chain hash at a sequence number: from the live state, the retained log, or a
    /// snapshot taken there.
    pub fn chain_at(&self, seq: u64) -> Result<Hash, NodeError> {
        let current = self.read()?;
        if seq == current.seq() {
            return Ok(current.chain_hash());
        }
        drop(current);
        if seq == 0 {
            return Ok(GENESIS_CHAIN);
        }
        let storage = |e: rocksdb::Error| NodeError::Storage(e.to_string());
        if let Some(e) = self.shared.store.entry(seq).map_err(storage)? {
            return Ok(e.chain);
        }
        for s in self.snapshots()? {
            if s.seq == seq {
                let bytes = crate::store::map_snapshot(&s.path)
                    .map_err(|e| NodeError::Storage(e.to_string()))?;
                // A retained snapshot that no longer verifies is this node's fault (its disk),
                // never the caller's.
                let (info, _) = valori_kernel::snapshot::verify(&bytes).map_err(|e| {
                    NodeError::Internal(format!(
                        "snapshot {} on this node does not verify: {e}",
                        s.path.display()
                    ))
                })?;
                return Ok(info.chain_hash);
            }
        }
        Err(NodeError::NotFound(format!(
            "sequence number {seq} is not retained (current is {})",
            self.read()?.seq()
        )))
    }

    /// Log entries (for replication and audits): at most `limit` entries from `from` on, and no more than `max_bytes` of events (but
    /// always the first, however large).
    pub fn entries(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.shared.store.entries_from(from).take(limit) {
            let e = e.map_err(|e| NodeError::Storage(e.to_string()))?;
            bytes = bytes.saturating_add(e.event.len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// The first sequence number still in the log, if any.
    pub fn first_retained(&self) -> Result<Option<u64>, NodeError> {
        self.shared
            .store
            .first_seq()
            .map_err(|e| NodeError::Storage(e.to_string()))
    }

    /// See [`Store::download_path`].
    pub fn download_path(&self) -> PathBuf {
        self.shared.store.download_path()
    }

    /// See [`Store::upload_path`].
    pub fn upload_path(&self) -> PathBuf {
        self.shared.store.upload_path()
    }

    /// Snapshot files, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>, NodeError> {
        self.shared
            .store
            .snapshots()
            .map_err(|e| NodeError::Storage(e.to_string()))
    }

    /// Approximate bytes on disk (log and snapshots).
    pub fn storage_bytes(&self) -> u64 {
        self.shared.store.disk_bytes()
            + self
                .snapshots()
                .map(|s| s.iter().map(|f| f.bytes).sum::<u64>())
                .unwrap_or(0)
    }

    /// The metrics this engine updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stops accepting work, lets the writer finish what it has, and joins it.
    pub fn shutdown(&self) {
        self.writer.stop();
    }
}

/// Where the role is persisted.
const ROLE_KEY: &str = "role";

fn set_role_metrics(metrics: &Metrics, role: &RoleState) {
    metrics
        .role_leader
        .set(i64::from(role.assignment.role == Role::Leader));
    metrics.epoch.set(role.assignment.epoch as i64);
    metrics.fenced.set(i64::from(role.fenced()));
}

/// Why a node with this role refuses a client write, if it does.
fn not_writable(role: &RoleState) -> Option<NodeError> {
    match role.assignment.role {
        Role::Follower => Some(NodeError::ReadOnlyFollower {
            leader: role.assignment.leader_url.clone().unwrap_or_default(),
        }),
        Role::Leader if role.fenced() => Some(NodeError::Fenced {
            epoch: role.assignment.epoch,
            seen: role.seen_epoch,
        }),
        Role::Leader => None,
    }
}

fn recover(store: &Store, config: &EngineConfig) -> Result<Kernel, OpenError> {
    let exec = Threads::new(config.index_threads);
    let mut kernel = Kernel::new();
    let mut unusable = Vec::new();
    for snap in store.snapshots()?.iter().rev() {
        let bytes = crate::store::map_snapshot(&snap.path)?;
        match Kernel::restore(&bytes) {
            Ok(k) => {
                tracing::info!(seq = k.seq(), path = %snap.path.display(), "loaded snapshot");
                kernel = k;
                break;
            }
            Err(e) => {
                tracing::warn!(path = %snap.path.display(), error = %e, "skipping snapshot that does not verify");
                unusable.push(format!("{} ({e})", snap.path.display()));
            }
        }
    }
    // No snapshot to start from: only a log that begins at 1 holds the whole state.
    if kernel.seq() == 0 && !unusable.is_empty() && store.first_seq()? != Some(1) {
        return Err(OpenError::NoUsableSnapshot {
            files: unusable.join(", "),
        });
    }
    // The snapshot must agree with the log where they overlap.
    if kernel.seq() > 0 {
        if let Some(e) = store.entry(kernel.seq())? {
            if e.chain != kernel.chain_hash() {
                return Err(OpenError::CorruptLog {
                    seq: e.seq,
                    why: "the snapshot's chain hash differs from the log's".into(),
                });
            }
        }
    }
    for entry in store.entries_from(kernel.seq() + 1) {
        let entry = entry?;
        let expected = kernel.seq() + 1;
        if entry.seq != expected {
            return Err(OpenError::Gap {
                expected,
                found: entry.seq,
            });
        }
        let corrupt = |why: String| OpenError::CorruptLog {
            seq: entry.seq,
            why,
        };
        let event =
            Event::decode(&entry.event).map_err(|e| corrupt(format!("does not decode: {e}")))?;
        kernel
            .apply_with(&event, &entry.event, &exec)
            .map_err(|e| corrupt(format!("does not apply: {e}")))?;
        if kernel.chain_hash() != entry.chain {
            return Err(corrupt(format!(
                "chain hash mismatch: stored {}, recomputed {}",
                hex::encode(entry.chain),
                hex::encode(kernel.chain_hash())
            )));
        }
    }
    if kernel.seq() == 0 {
        if let Some(first) = store.first_seq()? {
            return Err(OpenError::Gap {
                expected: 1,
                found: first,
            });
        }
    }
    Ok(kernel)
}

/// The length of an event's encoding, without encoding it.
fn encoded_len(e: &Event) -> usize {
    struct Count(usize);
    impl valori_kernel::codec::Sink for Count {
        fn put(&mut self, bytes: &[u8]) {
            self.0 += bytes.len();
        }
    }
    let mut c = Count(0);
    e.encode_into(&mut c);
    c.0
}

/// How long the writer waits for the last reader of the copy it has just replaced before it
/// copies the published state instead (a long reader then costs a copy, never a wait of the
/// writes behind it).
pub const RECLAIM_WAIT: Duration = Duration::from_millis(50);

fn published(shared: &Shared) -> Arc<Kernel> {
    Arc::clone(&shared.published.lock().expect("published lock"))
}

/// The writer's side of the state: its private back copy, equal to the published one between
/// commits.
struct Writer {
    back: Kernel,
    exec: Threads,
}

/// Events applied to the back copy and what repeats them on the other copy.
type Recorded = Vec<(Event, Replay)>;

impl Writer {
    /// Publishes the back copy (its events must be durable); returns the replaced copy and the
    /// published one, for [`reclaim`].
    fn swap(&mut self, shared: &Shared) -> (Arc<Kernel>, Arc<Kernel>) {
        let fresh = Arc::new(std::mem::take(&mut self.back));
        let seq = fresh.seq();
        let old = std::mem::replace(
            &mut *shared.published.lock().expect("published lock"),
            Arc::clone(&fresh),
        );
        shared.metrics.seq.set(seq as i64);
        shared.seq_tx.send_replace(seq);
        (old, fresh)
    }

    /// Replaces both copies with `state` (a restore or a rebuild from the disk).
    fn install(&mut self, shared: &Shared, state: Kernel) {
        let seq = state.seq();
        *shared.published.lock().expect("published lock") = Arc::new(state.clone());
        self.back = state;
        shared.metrics.seq.set(seq as i64);
        shared.seq_tx.send_replace(seq);
    }
}

/// The copy `old` brought up to `fresh`'s state: `done` replayed on it once its last reader has
/// let go (within [`RECLAIM_WAIT`]), else a copy of `fresh`.
fn reclaim(
    shared: &Shared,
    mut old: Arc<Kernel>,
    fresh: &Arc<Kernel>,
    done: &Recorded,
    encoded: &[&[u8]],
) -> Kernel {
    let deadline = Instant::now() + RECLAIM_WAIT;
    let mut kernel = loop {
        match Arc::try_unwrap(old) {
            Ok(k) => break Some(k),
            Err(still_shared) if Instant::now() < deadline => {
                old = still_shared;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(_) => break None,
        }
    };
    if let Some(k) = kernel.as_mut() {
        for ((event, replay), bytes) in done.iter().zip(encoded) {
            if let Err(e) = k.replay(event, bytes, replay) {
                // Cannot happen while the copies are equal; if it did, the copy is rebuilt.
                tracing::error!(error = %e, seq = k.seq(), "replaying on the second copy failed");
                kernel = None;
                break;
            }
        }
    }
    match kernel {
        Some(k) if k.seq() == fresh.seq() && k.chain_hash() == fresh.chain_hash() => k,
        _ => {
            shared.metrics.state_copies.inc();
            (**fresh).clone()
        }
    }
}

/// The test hook [`EngineConfig::commit_gate`]: waits while the gate file exists.
fn wait_at_gate(shared: &Shared) {
    let Some(gate) = &shared.config.commit_gate else {
        return;
    };
    if !gate.exists() {
        return;
    }
    let mut waiting = gate.clone().into_os_string();
    waiting.push(".waiting");
    let _ = std::fs::write(&waiting, b"");
    while gate.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_file(&waiting);
}

/// Lowers the calling thread's scheduling priority to `nice` (Linux: per thread). Failing is
/// harmless: the thread keeps the process's priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn writer_loop(shared: &Shared, state: Kernel, rx: mpsc::Receiver<Job>) {
    // Indexing yields the cores to requests: reads never wait for a core behind a batch.
    let nice = shared.config.index_nice;
    lower_priority(nice);
    let mut w = Writer {
        back: state,
        exec: Threads::with_start(shared.config.index_threads, move || lower_priority(nice)),
    };
    while let Ok(first) = rx.recv() {
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        // Group commit: everything already waiting joins this write, up to the limits in
        // events and bytes; a snapshot or restore ends the group so it sees the group's effects.
        while let Some(job) = next.take() {
            match job {
                Job::Event(e, reply) => {
                    shared
                        .queued
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    bytes = bytes.saturating_add(encoded_len(&e));
                    events.push((e, reply));
                    if events.len() < MAX_GROUP_EVENTS && bytes < shared.config.max_group_bytes {
                        next = rx.try_recv().ok();
                    }
                }
                other => {
                    commit(shared, &mut w, std::mem::take(&mut events));
                    admin(shared, &mut w, other);
                }
            }
        }
        commit(shared, &mut w, events);
        maybe_snapshot(shared, &w);
    }
}

fn fail(shared: &Shared, why: Failure) {
    tracing::error!(error = %why, "the node refuses writes until healed or restarted");
    shared.metrics.failed.set(1);
    *shared.failed.lock().expect("failed lock") = Some(why);
}

/// Latches the failed state and rebuilds both copies from what is durable (the back copy may be
/// ahead of the disk); reads then serve the durable state, or are refused if the rebuild fails.
fn latch(shared: &Shared, w: &mut Writer, why: Failure) {
    fail(shared, why);
    shared
        .readable
        .store(false, std::sync::atomic::Ordering::Release);
    match recover(&shared.store, &shared.config) {
        Ok(durable) => {
            tracing::warn!(seq = durable.seq(), "serving reads from the durable state");
            w.install(shared, durable);
            shared
                .readable
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Err(e) => tracing::error!(error = %e, "rebuilding the durable state failed"),
    }
}

fn replicate(shared: &Shared, w: &mut Writer, entries: Vec<Entry>) -> Result<u64, NodeError> {
    if let Some(why) = shared.failed.lock().expect("failed lock").clone() {
        return Err(NodeError::Failed(why));
    }
    if shared.role.lock().expect("role lock").assignment.role != Role::Follower {
        // Promoted meanwhile: the node writes its own history now.
        return Err(NodeError::Internal(
            "replicated entries refused: this node is no longer a follower".into(),
        ));
    }
    let kernel = &mut w.back;
    let mut accepted: Vec<Entry> = Vec::new();
    let mut done: Recorded = Vec::new();
    let mut divergence = None;
    for e in entries {
        if e.seq <= kernel.seq() {
            continue;
        }
        let expected = kernel.seq() + 1;
        let problem = if e.seq != expected {
            Some(format!("the leader sent sequence number {}", e.seq))
        } else {
            match Event::decode(&e.event) {
                Err(err) => Some(format!("the event does not decode: {err}")),
                Ok(event) => match kernel.apply_recorded(&event, &e.event, &w.exec) {
                    Err(err) => Some(format!("the event does not apply here: {err}")),
                    Ok(_) if kernel.chain_hash() != e.chain => Some(format!(
                        "leader chain {}, ours {}",
                        hex::encode(e.chain),
                        hex::encode(kernel.chain_hash())
                    )),
                    Ok((_, replay)) => {
                        done.push((event, replay));
                        None
                    }
                },
            }
        };
        match problem {
            None => accepted.push(e),
            Some(why) => {
                divergence = Some(Failure::Diverged { seq: expected, why });
                break;
            }
        }
    }
    if !accepted.is_empty() {
        if let Err(e) = shared.store.append(&accepted) {
            let why = format!("appending replicated events: {e}");
            latch(shared, w, Failure::Storage(why.clone()));
            return Err(NodeError::Storage(why));
        }
        shared
            .metrics
            .events_committed
            .inc_by(accepted.len() as u64);
    }
    if let Some(why) = divergence {
        shared.metrics.divergences.inc();
        // The back copy holds the refused event's effects: rebuild from the durable log.
        latch(shared, w, why.clone());
        return Err(NodeError::Failed(why));
    }
    if !accepted.is_empty() {
        let encoded: Vec<&[u8]> = accepted.iter().map(|e| e.event.as_slice()).collect();
        let (old, fresh) = w.swap(shared);
        w.back = reclaim(shared, old, &fresh, &done, &encoded);
    }
    Ok(w.back.seq())
}

type Pending = Vec<(Event, oneshot::Sender<Result<Committed, NodeError>>)>;

fn commit(shared: &Shared, w: &mut Writer, events: Pending) {
    if events.is_empty() {
        return;
    }
    if let Some(why) = shared.failed.lock().expect("failed lock").clone() {
        for (_, reply) in events {
            let _ = reply.send(Err(NodeError::Failed(why.clone())));
        }
        return;
    }
    let role = shared.role.lock().expect("role lock").clone();
    if not_writable(&role).is_some() {
        for (_, reply) in events {
            let _ = reply.send(Err(not_writable(&role).expect("checked above")));
        }
        return;
    }
    let epoch = role.assignment.epoch;
    let started = Instant::now();
    let _span = tracing::info_span!("commit", events = events.len()).entered();
    // Readers keep reading the published copy meanwhile: nothing here takes a lock they use.
    let kernel = &mut w.back;
    let mut entries = Vec::new();
    let mut done: Recorded = Vec::new();
    let mut results = Vec::with_capacity(events.len());
    for (event, reply) in events {
        let encoded = event.encode();
        match kernel.apply_recorded(&event, &encoded, &w.exec) {
            Ok((applied, replay)) => {
                let seq = kernel.seq();
                entries.push(Entry {
                    seq,
                    chain: kernel.chain_hash(),
                    event: encoded,
                    epoch,
                });
                done.push((event, replay));
                results.push((reply, Ok(Committed { seq, applied })));
            }
            Err(e) => results.push((reply, Err(NodeError::Kernel(e)))),
        }
    }
    if !entries.is_empty() {
        wait_at_gate(shared);
        if let Err(e) = shared.store.append(&entries) {
            let why = format!(
                "appending events {}..={}: {e}",
                entries[0].seq,
                entries[entries.len() - 1].seq
            );
            latch(shared, w, Failure::Storage(why.clone()));
            for (reply, r) in results {
                let _ = reply.send(r.and(Err(NodeError::Storage(why.clone()))));
            }
            return;
        }
        shared.metrics.events_committed.inc_by(entries.len() as u64);
        let encoded: Vec<&[u8]> = entries.iter().map(|e| e.event.as_slice()).collect();
        let (old, fresh) = w.swap(shared);
        shared
            .metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        // Answer first: the replay on the replaced copy is the writer's business.
        for (reply, r) in results {
            let _ = reply.send(r);
        }
        w.back = reclaim(shared, old, &fresh, &done, &encoded);
        return;
    }
    for (reply, r) in results {
        let _ = reply.send(r);
    }
}

fn admin(shared: &Shared, w: &mut Writer, job: Job) {
    match job {
        Job::Event(..) => unreachable!("events are grouped by the writer loop"),
        #[cfg(test)]
        Job::Panic => panic!("a test asked the writer to panic"),
        Job::Replicate(entries, reply) => {
            let _ = reply.send(replicate(shared, w, entries));
        }
        Job::Snapshot(reply) => {
            let r = match shared.failed.lock().expect("failed lock").clone() {
                Some(why) => Err(NodeError::Failed(why)),
                None => take_snapshot(shared, &w.back),
            };
            let _ = reply.send(r);
        }
        Job::Restore(kernel, path, force, reply) => {
            let _ = reply.send(restore(shared, w, *kernel, &path, force));
        }
        Job::SetRole(want, reply) => {
            let _ = reply.send(set_role(shared, want));
        }
    }
}

fn maybe_snapshot(shared: &Shared, w: &Writer) {
    let every = shared.config.snapshot_every;
    if every == 0 || shared.failed.lock().expect("failed lock").is_some() {
        return;
    }
    let seq = w.back.seq();
    let last = shared
        .store
        .snapshots()
        .ok()
        .and_then(|s| s.last().map(|f| f.seq))
        .unwrap_or(0);
    if seq / every > last / every {
        if let Err(e) = take_snapshot(shared, &w.back) {
            tracing::warn!(error = %e, "scheduled snapshot failed");
        }
    }
}

/// Writes a snapshot of the writer's copy (equal to the published one between commits; the
/// writer is here, so it is stable). It streams from the state into the file: never held in
/// memory whole, and readers are not held up.
fn take_snapshot(shared: &Shared, kernel: &Kernel) -> Result<SnapshotFile, NodeError> {
    let seq = kernel.seq();
    let written = shared.store.write_snapshot_with(seq, |sink| {
        kernel.write_snapshot(sink);
    });
    let file = written.map_err(|e| {
        let why = format!("writing snapshot {seq}: {e}");
        NodeError::Storage(why)
    })?;
    shared.metrics.snapshots.inc();
    tracing::info!(seq, bytes = file.bytes, "snapshot written");
    apply_retention(shared);
    Ok(file)
}

/// Keeps the newest `snapshot_keep` snapshots and, when `prune_log` is set, deletes log entries
/// up to the oldest kept one.
fn apply_retention(shared: &Shared) {
    let Ok(snaps) = shared.store.snapshots() else {
        return;
    };
    let keep = shared.config.snapshot_keep.max(1);
    if snaps.len() > keep {
        for old in &snaps[..snaps.len() - keep] {
            if let Err(e) = shared.store.remove_snapshot(old) {
                tracing::warn!(error = %e, "removing old snapshot");
            }
        }
    }
    if !shared.config.prune_log {
        return;
    }
    let oldest_kept = snaps[snaps.len().saturating_sub(keep)].seq;
    if let Err(e) = shared.store.prune_through(oldest_kept) {
        tracing::warn!(error = %e, "pruning the log");
    }
}

/// Where a decided, unfinished restore is recorded: the sequence number of its snapshot (8
/// bytes, little-endian). Written after the restored snapshot is staged, removed when the
/// restore is complete: a crash before it leaves the old state (the staged file is removed at
/// open), a crash after it is finished at open.
const RESTORE_KEY: &str = "restore";

/// A test hook ([`EngineConfig::crash_at`]): the process dies here, as in a power cut.
fn crash_point(config: &EngineConfig, step: &str) {
    if config.crash_at.as_deref() == Some(step) {
        tracing::warn!(step, "crashing on purpose (test hook)");
        std::process::abort();
    }
}

/// Finishes a restore whose marker is durable: clears the log, removes every other snapshot,
/// moves the staged snapshot into place, bumps the history generation (followers re-check
/// theirs) and removes the marker. Every step can be repeated, so a crash anywhere is finished
/// by the next open. Without a marker a staged file is the trace of a restore that was never
/// decided: removed. Returns the installed snapshot and the new role when one was finished.
fn finish_restore(
    store: &Store,
    config: &EngineConfig,
) -> Result<Option<(SnapshotFile, RoleState)>, String> {
    let staged = store.staged_path();
    let marker = store
        .get_meta(RESTORE_KEY)
        .map_err(|e| format!("reading the restore marker: {e}"))?;
    let Some(marker) = marker else {
        if staged.exists() {
            tracing::warn!(path = %staged.display(), "removing a restore that was not decided");
            std::fs::remove_file(&staged)
                .map_err(|e| format!("removing {}: {e}", staged.display()))?;
        }
        return Ok(None);
    };
    let seq = <[u8; 8]>::try_from(&marker[..])
        .map(u64::from_le_bytes)
        .map_err(|_| "the restore marker is malformed".to_string())?;
    let has_staged = staged.exists();
    store
        .clear_log()
        .map_err(|e| format!("clearing the log: {e}"))?;
    crash_point(config, "restore-log-cleared");
    for s in store
        .snapshots()
        .map_err(|e| format!("listing snapshots: {e}"))?
    {
        // The snapshot at the restored sequence number is the restored one once renamed.
        if has_staged || s.seq != seq {
            store
                .remove_snapshot(&s)
                .map_err(|e| format!("removing snapshot {}: {e}", s.path.display()))?;
        }
    }
    crash_point(config, "restore-old-removed");
    let file = if has_staged {
        store
            .adopt_snapshot(seq, &staged)
            .map_err(|e| format!("installing the restored snapshot: {e}"))?
    } else {
        store
            .snapshots()
            .map_err(|e| format!("listing snapshots: {e}"))?
            .into_iter()
            .find(|s| s.seq == seq)
            .ok_or_else(|| {
                format!("a restore to sequence number {seq} was decided but its snapshot is gone")
            })?
    };
    crash_point(config, "restore-installed");
    let mut role = match store
        .get_meta(ROLE_KEY)
        .map_err(|e| format!("reading the role: {e}"))?
    {
        Some(bytes) => RoleState::decode(&bytes)?,
        None => RoleState::initial(config.follow.clone()),
    };
    // A new history: followers re-check theirs against it. (Bumped twice if a crash comes
    // before the marker goes: harmless, it only has to change.)
    role.history += 1;
    store
        .put_meta(ROLE_KEY, &role.encode())
        .map_err(|e| format!("persisting the history generation: {e}"))?;
    crash_point(config, "restore-history-bumped");
    store
        .delete_meta(RESTORE_KEY)
        .map_err(|e| format!("removing the restore marker: {e}"))?;
    Ok(Some((file, role)))
}

/// Replaces the state with `kernel`, restored and verified from the synced snapshot file at
/// `path`: staged, decided (the marker), finished ([`finish_restore`]), then published.
fn restore(
    shared: &Shared,
    w: &mut Writer,
    kernel: Kernel,
    path: &Path,
    force: bool,
) -> Result<SnapshotFile, NodeError> {
    if let Some(why) = shared.failed.lock().expect("failed lock").clone() {
        if !force {
            return Err(NodeError::Failed(why));
        }
    }
    let store = &shared.store;
    let config = &shared.config;
    store
        .stage_snapshot(path)
        .map_err(|e| NodeError::Storage(format!("staging the snapshot: {e}")))?;
    crash_point(config, "restore-staged");
    if let Err(e) = store.put_meta(RESTORE_KEY, &kernel.seq().to_le_bytes()) {
        let _ = std::fs::remove_file(store.staged_path());
        return Err(NodeError::Storage(format!("recording the restore: {e}")));
    }
    crash_point(config, "restore-decided");
    let (file, role) = match finish_restore(store, config) {
        Ok(Some(done)) => done,
        Ok(None) => unreachable!("the marker was just written"),
        Err(why) => {
            // Decided but not finished: the next open finishes it; until then, no writes.
            let why = format!("{why} (restarting the node finishes the restore)");
            fail(shared, Failure::Storage(why.clone()));
            return Err(NodeError::Storage(why));
        }
    };
    tracing::info!(seq = kernel.seq(), "state restored from snapshot");
    w.install(shared, kernel);
    if force {
        *shared.failed.lock().expect("failed lock") = None;
        shared
            .readable
            .store(true, std::sync::atomic::Ordering::Release);
        shared.metrics.failed.set(0);
    }
    set_role_metrics(&shared.metrics, &role);
    *shared.role.lock().expect("role lock") = role.clone();
    shared.role_tx.send_replace(role);
    Ok(file)
}

/// Applies a role request in the writer: decided, made durable, then in effect.
fn set_role(shared: &Shared, want: Assignment) -> Result<RoleState, NodeError> {
    let mut role = shared.role.lock().expect("role lock");
    if role.decide(&want)? == Change::Unchanged {
        return Ok(role.clone());
    }
    let next = role.apply(want);
    shared
        .store
        .put_meta(ROLE_KEY, &next.encode())
        .map_err(|e| NodeError::Storage(format!("persisting the role: {e}")))?;
    tracing::info!(
        role = next.assignment.role.name(),
        epoch = next.assignment.epoch,
        leader = next.assignment.leader_url.as_deref().unwrap_or(""),
        "role changed"
    );
    set_role_metrics(&shared.metrics, &next);
    *role = next.clone();
    drop(role);
    shared.role_tx.send_replace(next.clone());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(engine: &Engine, n: usize, seed: i32) {
        let records = (0..n)
            .map(|i| valori_kernel::NewRecord {
                vector: (0..8)
                    .map(|j| valori_kernel::Fixed(((i as i32 * 7 + j * 13 + seed) % 50) << 16))
                    .collect(),
                tag: 0,
                metadata: None,
            })
            .collect();
        engine
            .submit_blocking(Event::Insert {
                collection: "default".into(),
                records,
            })
            .unwrap();
    }

    /// The writer's two copies stay equal to what the log replays to, whether the replaced
    /// copy is brought up to date by replaying (no reader holds it) or, when a reader holds it
    /// past the wait, by copying; a reader's copy never changes under it.
    #[test]
    fn both_copies_follow_the_log_whether_replayed_or_copied() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(EngineConfig::new(dir.path()), Arc::clone(&metrics)).unwrap();
        for round in 0..4 {
            insert(&engine, 150, round);
        }
        assert_eq!(metrics.state_copies.get(), 0, "nobody held a replaced copy");
        let held = engine.read().unwrap();
        let held_hash = held.state_hash();
        insert(&engine, 100, 9);
        // The write is answered before the replaced copy is reclaimed: wait for the writer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.state_copies.get() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            metrics.state_copies.get(),
            1,
            "the held copy was copied, not waited for"
        );
        assert_eq!(
            held.state_hash(),
            held_hash,
            "a reader's copy never changes"
        );
        assert_eq!(held.seq() + 1, engine.seq().unwrap());
        drop(held);
        for round in 0..3 {
            insert(&engine, 70, round + 20);
        }
        let live = engine.read().unwrap();
        let durable = recover(&engine.shared.store, &engine.shared.config).unwrap();
        assert_eq!(*live, durable);
        // The back copy too: a snapshot is written from it.
        let file = engine.snapshot_blocking().unwrap();
        let bytes = std::fs::read(&file.path).unwrap();
        assert_eq!(Kernel::restore(&bytes).unwrap(), durable);
    }

    /// The whole state is hashed once per published state however many ask (the operator asks
    /// every pod each interval), and again once a commit publishes a new state.
    #[test]
    fn the_state_hash_is_computed_once_per_published_state() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(EngineConfig::new(dir.path()), Arc::clone(&metrics)).unwrap();
        let hashed = || metrics.state_hash_seconds.get_sample_count();
        insert(&engine, 20, 0);
        let first = engine.state().unwrap();
        for _ in 0..3 {
            assert_eq!(engine.state().unwrap().state_hash, first.state_hash);
        }
        assert_eq!(first.state_hash, engine.read().unwrap().state_hash());
        assert_eq!(hashed(), 1);
        insert(&engine, 20, 1);
        let second = engine.state().unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_ne!(second.state_hash, first.state_hash);
        assert_eq!(second.state_hash, engine.read().unwrap().state_hash());
        assert_eq!(engine.state().unwrap().state_hash, second.state_hash);
        assert_eq!(hashed(), 2);
        // The cache's weak reference does not keep the writer from reusing the replaced copy
        // (the next commit is answered after the writer has brought that copy up to date).
        insert(&engine, 20, 2);
        assert_eq!(metrics.state_copies.get(), 0);
    }

    /// A group commit stops taking events once they reach the byte cap: ten queued events of
    /// about 1 KB under a 2.5 KB cap commit in four groups (3, 3, 3, 1), not one.
    #[test]
    fn group_commits_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        let mut config = EngineConfig::new(dir.path().join("data"));
        config.max_group_bytes = 2500;
        config.commit_gate = Some(gate.clone());
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(config, Arc::clone(&metrics)).unwrap();
        let event = |i: u64| Event::CreateNode {
            kind: "k".into(),
            record: None,
            properties: Some(vec![i as u8; 1000]),
        };
        assert!((1000..1100).contains(&encoded_len(&event(0))));
        // The first write waits at the gate; ten more queue behind it.
        std::fs::write(&gate, b"").unwrap();
        let mut waiting = gate.clone().into_os_string();
        waiting.push(".waiting");
        let writers: Vec<_> = (0..11)
            .map(|i| {
                let engine = engine.clone();
                let w = std::path::PathBuf::from(&waiting);
                std::thread::spawn(move || {
                    if i > 0 {
                        while !w.exists() {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    engine.submit_blocking(event(i)).unwrap()
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine
            .shared
            .queued
            .load(std::sync::atomic::Ordering::Acquire)
            < 10
        {
            assert!(Instant::now() < deadline, "ten writes never queued");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::remove_file(&gate).unwrap();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(engine.seq().unwrap(), 11);
        assert_eq!(
            metrics.commit_seconds.get_sample_count(),
            5,
            "1 + 4 group commits"
        );
    }

    #[test]
    fn a_dead_writer_makes_the_node_unready_and_writes_fail_fast() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(engine.not_ready(), None);
        engine.send(Job::Panic).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while engine.not_ready().is_none() {
            assert!(std::time::Instant::now() < deadline, "still ready");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let why = engine.not_ready().unwrap();
        assert!(why.contains("writer thread stopped"), "{why}");
        let err = engine.send(Job::Panic).unwrap_err();
        assert_eq!(err.code(), "internal_error");
    }
}
