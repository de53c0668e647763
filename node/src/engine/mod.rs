//! The engine: one kernel, its durable log, and the single writer thread that changes both.
//!
//! Two copies of the state ([`copies`]): the **published** one, immutable, which every reader
//! shares (an `Arc` taken in an instant, never a lock held across a commit), and the writer's
//! private **back** copy, equal to it between commits.
//!
//! Write path ([`writer`]): a request's event goes to the writer thread over a channel. The
//! writer takes every request waiting (group commit) and applies each event in order to the
//! back copy, recording how to repeat it cheaply ([`Kernel::apply_recorded`]: an insert's index
//! build is recorded as the lists it wrote); refused events change nothing. It appends the
//! accepted events to the log in one synced RocksDB write, then publishes the back copy in
//! place of the old one and answers. The old copy, once its last reader lets go, replays the
//! group's records ([`Kernel::replay`]: no distance is computed) and is the next back copy; if
//! a reader holds it longer than [`crate::limits::RECLAIM_WAIT`], the writer copies the
//! published state instead. Readers therefore never wait for validation, index builds or the
//! sync, and never see an event that is not durable. The price is memory: two copies, but of the
//! full-precision vectors, the largest part, one (`copies.rs`).
//!
//! If the append fails, the back copy is ahead of the disk: the engine latches into a failed
//! state ([`health`]) that refuses every later write, rebuilds the state from what is durable
//! (the same [`recover`]y as at start), and keeps serving reads from that: read-only until
//! restarted. If even that rebuild fails, reads are refused too.
//!
//! The other files: [`config`] (settings and test hooks), [`role`] (the role's persistence and
//! its one publication path), [`snapshots`] (and retention), [`restore`] (the crash-atomic
//! restore protocol).

mod config;
mod copies;
mod health;
mod recover;
mod restore;
mod role;
mod snapshots;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};
use valori_kernel::rows::ChunkStore;
use valori_kernel::{Applied, Event, Hash, Kernel, GENESIS_CHAIN};

pub use config::{EngineConfig, RestoreStep};
pub(crate) use recover::apply_entry;
pub use restore::InstallMode;

use crate::error::{Doing, Failure, NodeError, OpenError, StorageError};
use crate::metrics::Metrics;
use crate::role::{Assignment, RoleState};
use crate::store::{Entry, SnapshotFile, Store};
use copies::Published;
use health::Health;
use role::Roles;
use writer::{Job, Reply};

/// The directory, under the data directory, of the files that hold the full-precision vectors
/// with `--vectors-on-disk` (`valori_alloc::files`).
pub const VECTOR_DIR: &str = "vectors";

/// A committed write.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// What the writer thread and every handle share.
struct Shared {
    /// Client writes queued for the writer and not yet taken by it.
    queued: std::sync::atomic::AtomicUsize,
    /// The state readers see.
    published: Published,
    /// The state hash of a published state, computed once however many ask (cross-checks ask
    /// every pod each interval). Keyed by the published `Arc`'s allocation, which the `Weak`
    /// keeps from being reused while it is cached; every publication is a new allocation.
    state_hash: Mutex<Option<(std::sync::Weak<Kernel>, Hash)>>,
    store: Store,
    health: Mutex<Health>,
    metrics: Arc<Metrics>,
    config: EngineConfig,
    /// Where the full-precision vectors live when not on the heap (`--vectors-on-disk`).
    vectors: Option<Arc<dyn ChunkStore>>,
    /// The role; changed by the writer (assignments, restores) or by
    /// [`Engine::observe_epoch`].
    roles: Roles,
}

impl Shared {
    fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }

    /// Latches the failed state (writes refused) with a reason.
    fn fail(&self, why: Failure) {
        tracing::error!(error = %why, "the node refuses writes until healed or restarted");
        self.metrics.failed.set(1);
        self.health.lock().expect("health lock").fail(why);
    }
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

    /// Why writes cannot be served, if the writer thread ended while the node still runs (it
    /// panicked: a bug). The node is then not ready and refuses writes; a restart recovers
    /// from the durable log.
    fn stopped(&self) -> Option<String> {
        let running = self.tx.lock().expect("sender lock").is_some();
        let finished = self
            .thread
            .lock()
            .expect("writer lock")
            .as_ref()
            .is_some_and(|h| h.is_finished());
        (running && finished)
            .then(|| "the writer thread stopped unexpectedly: restart the node".to_string())
    }

    fn shutting_down(&self) -> bool {
        self.tx.lock().expect("sender lock").is_none()
    }
}

impl Drop for WriterHandle {
    /// The last clone waits for the writer: the database closes before the caller goes on (a
    /// process that exits meanwhile would tear down the storage engine under the writer).
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for the writer's reply to a job.
async fn answer<T>(rx: oneshot::Receiver<Result<T, NodeError>>) -> Result<T, NodeError> {
    rx.await.map_err(|_| NodeError::ShuttingDown)?
}

/// [`answer`] for callers outside an async runtime.
fn answer_blocking<T>(rx: oneshot::Receiver<Result<T, NodeError>>) -> Result<T, NodeError> {
    rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
}

impl Engine {
    /// Opens the data directory, recovers the state, and starts the writer.
    pub fn open(config: EngineConfig, metrics: Arc<Metrics>) -> Result<Engine, OpenError> {
        std::fs::create_dir_all(&config.data_dir)
            .doing(|| format!("creating {}", config.data_dir.display()))?;
        let store = Store::open(&config.data_dir)?;
        if crate::backup::restore::interrupted(&store)? {
            return Err(OpenError::InterruptedBackupRestore);
        }
        if let Some((file, _)) = restore::finish_restore(&store, &config)? {
            tracing::warn!(path = %file.path.display(), "finished a restore a crash interrupted");
        }
        let vectors = match config.vectors_on_disk {
            true => {
                let dir = config.data_dir.join(VECTOR_DIR);
                let gauge = metrics.vectors_mapped.clone();
                let on_mapped = Arc::new(move |bytes: i64| gauge.add(bytes));
                Some(
                    valori_alloc::files::VectorFiles::open(&dir, on_mapped)
                        .doing(|| format!("mapping files for vectors in {}", dir.display()))?,
                )
            }
            false => None,
        };
        let kernel = recover::recover(&store, &config, vectors.as_ref())?;
        metrics.seq.set(kernel.seq() as i64);
        // A persisted role wins over the flags: it came from the arbiter or from a fencing.
        let role = role::load(&store, config.follow.clone())?;
        tracing::info!(
            seq = kernel.seq(),
            chain = %hex::encode(kernel.chain_hash()),
            "recovered state"
        );
        let shared = Arc::new(Shared {
            queued: std::sync::atomic::AtomicUsize::new(0),
            published: Published::new(kernel.clone()),
            state_hash: Mutex::new(None),
            store,
            health: Mutex::new(Health::Serving),
            roles: Roles::new(role, &metrics),
            metrics,
            config,
            vectors,
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("valori-writer".into())
            .spawn(move || writer::run(&writer_shared, kernel, rx))
            .doing(|| "starting the writer thread")?;
        Ok(Engine {
            shared,
            writer: Arc::new(WriterHandle {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(writer)),
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), NodeError> {
        if let Some(why) = self.writer.stopped() {
            return Err(NodeError::Internal(why));
        }
        let tx = self.writer.tx.lock().expect("sender lock");
        tx.as_ref()
            .ok_or(NodeError::ShuttingDown)?
            .send(job)
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Sends a job built around a reply channel, returning the channel's receiving end.
    fn ask<T>(
        &self,
        job: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, NodeError>>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(job(reply))?;
        Ok(rx)
    }

    /// Submits an event; resolves once it is durable and applied (or refused).
    pub async fn submit(&self, event: Event) -> Result<Committed, NodeError> {
        answer(self.enqueue(event)?).await
    }

    /// [`Engine::submit`] for callers outside an async runtime.
    pub fn submit_blocking(&self, event: Event) -> Result<Committed, NodeError> {
        answer_blocking(self.enqueue(event)?)
    }

    /// Queues a client write for the writer, unless [`EngineConfig::max_queued_writes`] are
    /// already waiting (the queue is bounded; role changes and snapshots are not counted).
    fn enqueue(
        &self,
        event: Event,
    ) -> Result<oneshot::Receiver<Result<Committed, NodeError>>, NodeError> {
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
        self.ask(|reply| Job::Event(event, reply)).inspect_err(|_| {
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
        answer(self.ask(|reply| Job::Replicate(entries, reply))?).await
    }

    /// The current sequence number (cheap: no hashing).
    pub fn seq(&self) -> Result<u64, NodeError> {
        Ok(self.read()?.seq())
    }

    /// Takes a snapshot now (ordered with writes).
    pub async fn snapshot(&self) -> Result<SnapshotFile, NodeError> {
        answer(self.ask(Job::Snapshot)?).await
    }

    /// [`Engine::snapshot`] for callers outside an async runtime.
    pub fn snapshot_blocking(&self) -> Result<SnapshotFile, NodeError> {
        answer_blocking(self.ask(Job::Snapshot)?)
    }

    /// Replaces the whole state with the snapshot file at `path`, verified first: the log
    /// restarts after the snapshot's sequence number and other snapshots are removed. With
    /// [`InstallMode::Heal`], also over a failed (diverged) state, clearing the failure.
    ///
    /// The file must be complete, in the snapshot directory ([`Engine::download_path`],
    /// [`Engine::upload_path`]), and not written again. It is mapped, not read into the heap,
    /// and becomes the installed snapshot file by a rename instead of being copied; when the
    /// install fails it is removed. Either way it is gone afterwards.
    ///
    /// `written_at`: the epoch of the leader whose history the snapshot is (a follower's
    /// bootstrap knows it), recorded as the epoch of its last entry; `None` when unknown (a
    /// user's file).
    pub async fn install_file(
        &self,
        path: &Path,
        mode: InstallMode,
        written_at: Option<u64>,
    ) -> Result<SnapshotFile, NodeError> {
        let installed = self.install_in_place(path, mode, written_at).await;
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
            let what = format!("cannot read snapshot {}", from.display());
            return Err(if e.kind() == std::io::ErrorKind::NotFound {
                NodeError::NotFound(format!("{what}: {e}"))
            } else {
                StorageError::new(what, e).into()
            });
        }
        self.install_file(&upload, InstallMode::Normal, None).await
    }

    async fn install_in_place(
        &self,
        path: &Path,
        mode: InstallMode,
        written_at: Option<u64>,
    ) -> Result<SnapshotFile, NodeError> {
        // Decoded and synced before the writer sees the job (it only renames and records).
        let kernel = restore::decode(path, self.shared.vectors.clone()).await?;
        let job = |reply| {
            Job::Restore(
                Box::new(kernel),
                path.to_path_buf(),
                mode,
                written_at,
                reply,
            )
        };
        answer(self.ask(job)?).await
    }

    /// The node's role state.
    pub fn role(&self) -> RoleState {
        self.shared.roles.get()
    }

    /// Follows role changes.
    pub fn role_watch(&self) -> watch::Receiver<RoleState> {
        self.shared.roles.watch()
    }

    /// Follows the sequence number (it moves after each commit, replication or restore).
    pub fn seq_watch(&self) -> watch::Receiver<u64> {
        self.shared.published.seq_watch()
    }

    /// Gives the node a role (see [`RoleState::decide`]): made durable, then in effect. Ordered
    /// with writes by the writer thread: a write submitted before either commits first or
    /// fails, and every write after a demotion is refused.
    /// `arbiter`: the arbiter that asks, when it named itself (see [`RoleState::claimant`]).
    pub async fn set_role(
        &self,
        want: Assignment,
        arbiter: Option<String>,
    ) -> Result<RoleState, NodeError> {
        answer(self.ask(|reply| Job::SetRole(want, arbiter, reply))?).await
    }

    /// Records an epoch heard of (from a follower's request, a node checking this one, or a
    /// leader's log page). When it is higher than any seen, it is persisted and, on a leader,
    /// fences it: writes are refused from here on. Returns whether it was new.
    ///
    /// A new epoch takes effect as a job of the writer thread, ordered with commits: a group
    /// that passed its role check before commits whole first, and the answer comes after it,
    /// so the sequence number read after this returns is the fenced leader's last. None commits
    /// after it. (An epoch already seen costs no job: a follower names one with every poll.)
    ///
    /// An arbiter that names itself also claims the epoch on this node, and is refused one
    /// another arbiter claimed (409 `epoch_claimed`).
    pub async fn observe_epoch(
        &self,
        epoch: u64,
        arbiter: Option<String>,
    ) -> Result<bool, NodeError> {
        {
            let role = self.shared.roles.lock();
            if role.heard(epoch, arbiter.as_deref()).is_none() {
                role.check_claim(epoch, arbiter.as_deref())?;
                return Ok(false);
            }
        }
        answer(self.ask(|reply| Job::ObserveEpoch(epoch, arbiter, reply))?).await
    }

    /// Refuses writes unless this node is a leader no newer epoch has fenced.
    pub fn check_writable(&self) -> Result<(), NodeError> {
        role::not_writable(&self.shared.roles.lock()).map_or(Ok(()), Err)
    }

    /// Latches the failed state (read-only) with a reason, e.g. a divergence found by
    /// comparing chain hashes with the leader.
    pub fn mark_failed(&self, why: Failure) {
        self.shared.fail(why);
    }

    /// The published state: immutable, durable, never behind a commit in progress (taking it
    /// waits for no writer). After a storage failure it is what is durable; reads are refused
    /// only if that could not be re-established.
    pub fn read(&self) -> Result<Arc<Kernel>, NodeError> {
        self.shared
            .health
            .lock()
            .expect("health lock")
            .check_readable()?;
        Ok(self.shared.published.get())
    }

    /// Why the engine is not ready, if it is not: failed, shutting down, its writer gone, or
    /// fenced.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(f) = self.failure() {
            return Some(format!("node is in a failed state: {f}"));
        }
        if self.writer.shutting_down() {
            return Some("shutting down".into());
        }
        if let Some(why) = self.writer.stopped() {
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

    /// The epoch of the leader that wrote the last entry of this node's history (0 when
    /// unknown): with the sequence number, what ranks candidates for promotion (the one whose
    /// history ends in the newest leader's writes wins, as Raft's last log term does).
    pub fn last_epoch(&self) -> Result<u64, NodeError> {
        Ok(self.shared.store.epoch_of(self.seq()?))
    }

    /// Why the engine failed, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.shared.health().failure().cloned()
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
        let store = &self.shared.store;
        if let Some(e) = store
            .entry(seq)
            .doing(|| format!("reading log entry {seq}"))?
        {
            return Ok(e.chain);
        }
        for s in self.snapshots()? {
            if s.seq == seq {
                let bytes = crate::store::map_snapshot(&s.path)
                    .doing(|| format!("reading snapshot {}", s.path.display()))?;
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

    /// Log entries (for replication and audits): at most `limit` entries from `from` on, and
    /// no more than `max_bytes` of events (but always the first, however large).
    pub fn entries(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0usize;
        for e in self.shared.store.entries_from(from).take(limit) {
            let e = e.doing(|| format!("reading the log from {from}"))?;
            bytes = bytes.saturating_add(e.event.len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            debug_assert!(
                out.last().is_none_or(|p| p.seq + 1 == e.seq),
                "the log has no gaps"
            );
            out.push(e);
        }
        Ok(out)
    }

    /// The first sequence number still in the log, if any.
    pub fn first_retained(&self) -> Result<Option<u64>, NodeError> {
        Ok(self
            .shared
            .store
            .first_seq()
            .doing(|| "reading the log's first entry")?)
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
        Ok(self
            .shared
            .store
            .snapshots()
            .doing(|| "listing snapshots")?)
    }

    /// Approximate bytes on disk (log and snapshots).
    pub fn storage_bytes(&self) -> u64 {
        self.shared.store.disk_bytes()
            + self
                .snapshots()
                .map(|s| s.iter().map(|f| f.bytes).sum::<u64>())
                .unwrap_or(0)
    }

    /// The position the log is not pruned past ([`EngineConfig::log_hold`]), if set.
    pub fn log_hold(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.shared.config.log_hold.clone()
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

#[cfg(test)]
mod tests;
