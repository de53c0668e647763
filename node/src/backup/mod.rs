//! Backups to object storage: snapshots uploaded on request or as the node takes them, the log
//! shipped continuously in segments, retention by count and age, and restores of a new data
//! directory to the newest state or to any sequence number the backup covers.
//!
//! Only a writable node (a leader) backs up; a follower's backup task waits. The destination
//! layout is in [`dest`], the segment format in [`segment`], restores in [`restore`].
//!
//! Invariants:
//! - A snapshot counts once its manifest is written, after the whole file; restores ignore a
//!   snapshot without one, and retention removes it.
//! - Segments hold consecutive durable log entries; their names give the first and last
//!   sequence numbers and the chain hash after the last, so a restore sees gaps by listing.
//! - The node never prunes log entries it has not shipped (`EngineConfig::log_hold`).
//! - Before shipping into a destination that already holds a history, the node checks that
//!   the history is its own (its chain hash at the highest sequence number the destination
//!   reaches); otherwise it ships nothing and says so.

pub mod dest;
pub mod restore;
pub mod segment;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

pub use dest::{Destination, Listing, SnapshotManifest};
pub use restore::{restore_into, RestoreReport, RestoreTarget};

use crate::engine::Engine;
use crate::error::NodeError;
use crate::store::SnapshotFile;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination or a setting is unusable as given.
    #[error("{0}")]
    Config(String),
    /// The object store refused or failed a request (unreachable, credentials refused, ...).
    #[error("{doing}: {source}")]
    Store {
        /// What was being done, and where.
        doing: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An object in the destination is damaged or not what its name says.
    #[error("the backup is damaged: {0}")]
    Corrupt(String),
    /// The backup does not hold what is asked (a missing segment, a sequence number beyond it).
    #[error("{0}")]
    Missing(String),
    /// The destination's history is not this node's.
    #[error("the destination holds another history: {0}")]
    Diverged(String),
    /// The local disk failed.
    #[error("{0}")]
    Local(String),
    /// The node refused (a snapshot, a read of the log).
    #[error("{0}")]
    Node(#[from] NodeError),
}

impl From<BackupError> for NodeError {
    fn from(e: BackupError) -> NodeError {
        match e {
            BackupError::Node(e) => e,
            BackupError::Config(m) => NodeError::BadRequest(m),
            other => NodeError::Backup(other.to_string()),
        }
    }
}

/// How a node backs up.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// Ship the log every this often (`None`: no log shipping; only snapshots are backed up).
    pub ship_interval: Option<Duration>,
    /// Upload every snapshot the node takes (`--snapshot-every`), besides those asked for.
    pub upload_snapshots: bool,
    /// Snapshots to keep in the destination (at least 1).
    pub retain_count: usize,
    /// Remove snapshots older than this (the newest is always kept).
    pub retain_age: Option<Duration>,
    /// How long an on-demand backup waits for the synchronous followers to hold its snapshot's
    /// sequence number before it is refused (the node's `--sync-timeout-ms`).
    pub confirm_wait: Duration,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            ship_interval: Some(Duration::from_secs(10)),
            upload_snapshots: true,
            retain_count: 7,
            confirm_wait: Duration::from_secs(5),
            retain_age: None,
        }
    }
}

/// What the backup task last did, for status and metrics.
#[derive(Clone, Debug, Default)]
pub struct BackupStatus {
    /// The last snapshot backed up since the node started.
    pub last_backup: Option<SnapshotManifest>,
    /// Why the last snapshot backup failed, if it did (cleared by a success).
    pub backup_error: Option<String>,
    /// The sequence number up to which the log is shipped, once known.
    pub shipped_through: Option<u64>,
    /// When the last shipping round that reached the node's head finished.
    pub shipped_at: Option<SystemTime>,
    /// Why the last shipping round failed, if it did (cleared by a success).
    pub ship_error: Option<String>,
}

/// A node's backups: the destination, the engine it backs up, and the shipping position.
pub struct Backup {
    dest: Destination,
    engine: Engine,
    settings: BackupSettings,
    /// The log is not pruned past this (shared with the engine's retention).
    hold: Arc<AtomicU64>,
    /// One backup operation at a time (a request, a shipping round, retention); holds what is
    /// known of the destination.
    cursor: tokio::sync::Mutex<Cursor>,
    status: Mutex<BackupStatus>,
    /// What the destination holds, as this node last listed it and changed it since: while it
    /// is the destination's writer (the leader), `GET /v1/backups` answers from it instead of
    /// listing the store each time. `None` until the first round's listing, and again when the
    /// node stops leading; each retention pass lists the store afresh.
    known: Mutex<Option<Listing>>,
    /// Through which sequence number writes are confirmed as the replication mode promises
    /// (with synchronous replication, held by the required followers); nothing beyond is
    /// backed up, since a failover may lose it.
    confirmed: Option<Confirmed>,
}

/// Through which sequence number writes are confirmed ([`Backup::with_confirmation`]).
pub type Confirmed = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the node knows of the destination, once listed.
#[derive(Default)]
struct Cursor {
    /// Listed and checked against this node's history.
    known: bool,
    /// Shipped (or covered by an uploaded snapshot) through this sequence number.
    shipped: u64,
    /// The newest snapshot uploaded.
    newest_snapshot: u64,
}

/// Unix seconds.
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 3339, UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The largest segment: entries are read and uploaded in pages of this many event bytes (a
/// single larger event goes alone).
const SEGMENT_BYTES: usize = 8 << 20;
/// And of at most this many entries.
const SEGMENT_ENTRIES: usize = 100_000;

impl Backup {
    /// The backups of `engine` to `dest`. `hold` must be the engine's `log_hold`: it starts at
    /// 0 (nothing may be pruned) and follows the shipping position.
    pub fn new(
        dest: Destination,
        engine: Engine,
        settings: BackupSettings,
        hold: Arc<AtomicU64>,
    ) -> Backup {
        if settings.ship_interval.is_none() {
            // Nothing is shipped: nothing to hold back.
            hold.store(u64::MAX, Ordering::Release);
        }
        Backup {
            dest,
            engine,
            settings,
            hold,
            cursor: Default::default(),
            status: Default::default(),
            known: Mutex::new(None),
            confirmed: None,
        }
    }

    /// Backs up only what `confirmed` says is confirmed (the service's
    /// `confirmed_through`): with synchronous replication, a write the followers do not hold
    /// yet is neither shipped nor in an uploaded snapshot.
    pub fn with_confirmation(mut self, confirmed: Confirmed) -> Backup {
        self.confirmed = Some(confirmed);
        self
    }

    /// The highest sequence number that may be backed up now.
    fn limit(&self) -> u64 {
        self.confirmed.as_ref().map_or(u64::MAX, |f| f())
    }

    /// Waits until `seq` is confirmed, for at most the settings' `confirm_wait`.
    async fn confirmed_up_to(&self, seq: u64) -> Result<(), BackupError> {
        let deadline = tokio::time::Instant::now() + self.settings.confirm_wait;
        while self.limit() < seq {
            if tokio::time::Instant::now() >= deadline {
                return Err(BackupError::Local(format!(
                    "the synchronous followers do not hold sequence number {seq} yet (they hold \
                     {}): a backup holds only what a failover keeps; retry once they caught up",
                    self.limit()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The destination.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The settings.
    pub fn settings(&self) -> &BackupSettings {
        &self.settings
    }

    /// What the backup task last did.
    pub fn status(&self) -> BackupStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// What the destination holds: as this node knows it while it writes there, else listed.
    pub async fn list(&self) -> Result<Listing, BackupError> {
        if let Some(l) = self.known.lock().expect("listing lock").clone() {
            return Ok(l);
        }
        self.list_store().await
    }

    /// Lists the destination (counted: each listing costs the store LIST requests).
    async fn list_store(&self) -> Result<Listing, BackupError> {
        self.engine.metrics().backup_lists.inc();
        self.dest.list().await
    }

    /// Changes what this node knows of the destination, if it knows it.
    fn note(&self, change: impl FnOnce(&mut Listing)) {
        if let Some(l) = self.known.lock().expect("listing lock").as_mut() {
            change(l);
        }
    }

    /// Takes a snapshot now and uploads it, then applies retention. Refused on a follower
    /// (its leader's backup is the cluster's).
    pub async fn backup_now(&self) -> Result<SnapshotManifest, NodeError> {
        self.engine.check_writable()?;
        let mut cursor = self.cursor.lock().await;
        let result = async {
            let file = self.engine.snapshot().await?;
            self.confirmed_up_to(file.seq).await?;
            self.upload(&mut cursor, &file).await
        }
        .await;
        self.record_backup(&result);
        Ok(result?)
    }

    fn record_backup(&self, result: &Result<SnapshotManifest, BackupError>) {
        let metrics = self.engine.metrics();
        let mut status = self.status.lock().expect("status lock");
        match result {
            Ok(m) => {
                metrics
                    .backup_last_success
                    .set(unix(SystemTime::now()) as i64);
                status.last_backup = Some(m.clone());
                status.backup_error = None;
            }
            Err(e) => {
                metrics.backup_failures.inc();
                tracing::warn!(error = %e, destination = self.dest.url(), "snapshot backup failed");
                status.backup_error = Some(e.to_string());
            }
        }
    }

    /// Uploads a local snapshot file (verified first: a damaged file is never uploaded), then
    /// applies retention.
    async fn upload(
        &self,
        cursor: &mut Cursor,
        file: &SnapshotFile,
    ) -> Result<SnapshotManifest, BackupError> {
        let started = SystemTime::now();
        // Opened before anything else: local retention may unlink the file meanwhile, and an
        // open file stays readable.
        let path = file.path.clone();
        let (map, info) = tokio::task::spawn_blocking(move || {
            let map = crate::store::map_snapshot(&path)
                .map_err(|e| BackupError::Local(format!("reading {}: {e}", path.display())))?;
            let (info, _) = valori_kernel::snapshot::verify(&map).map_err(|e| {
                BackupError::Local(format!("snapshot {} does not verify: {e}", path.display()))
            })?;
            Ok::<_, BackupError>((map, info))
        })
        .await
        .map_err(|e| BackupError::Local(format!("verifying the snapshot: {e}")))??;
        let mut manifest = SnapshotManifest {
            seq: info.seq,
            chain_hash: hex::encode(info.chain_hash),
            state_hash: hex::encode(info.state_hash),
            bytes: map.len() as u64,
            started: rfc3339(started),
            finished: String::new(),
        };
        self.dest.put_snapshot(&map, &mut manifest).await?;
        self.note(|l| {
            l.unfinished.retain(|&u| u != manifest.seq);
            l.snapshots.retain(|m| m.seq != manifest.seq);
            l.snapshots.push(manifest.clone());
            l.snapshots.sort_by_key(|m| m.seq);
        });
        tracing::info!(
            seq = manifest.seq,
            bytes = manifest.bytes,
            destination = self.dest.url(),
            "snapshot backed up"
        );
        cursor.newest_snapshot = cursor.newest_snapshot.max(manifest.seq);
        if let Err(e) = self.retain().await {
            tracing::warn!(error = %e, "applying backup retention");
        }
        Ok(manifest)
    }

    /// Removes snapshots beyond the retention count or age (never the newest) and snapshots
    /// whose upload never finished; once a snapshot goes, so do the segments that only lead up
    /// to the oldest snapshot kept.
    async fn retain(&self) -> Result<(), BackupError> {
        let mut listing = self.list_store().await?;
        let result = self.retain_from(&mut listing).await;
        // What is there now (what could not be removed stays listed).
        if let Some(known) = self.known.lock().expect("listing lock").as_mut() {
            *known = listing;
        }
        result
    }

    /// Retention over `listing`, removing from it what it deletes.
    async fn retain_from(&self, listing: &mut Listing) -> Result<(), BackupError> {
        let Some(newest) = listing.snapshots.last().map(|m| m.seq) else {
            return Ok(());
        };
        let now = SystemTime::now();
        let keep = self.settings.retain_count.max(1);
        let by_count = listing.snapshots.len().saturating_sub(keep);
        let gone: Vec<u64> = listing
            .snapshots
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                let too_old = self.settings.retain_age.is_some_and(|age| {
                    humantime::parse_rfc3339(&s.finished)
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|d| d > age)
                });
                s.seq != newest && (*i < by_count || too_old)
            })
            .map(|(_, s)| s.seq)
            .collect();
        for &seq in &gone {
            self.dest.delete_snapshot(seq).await?;
            listing.snapshots.retain(|m| m.seq != seq);
        }
        for seq in listing.unfinished.clone() {
            if seq < newest {
                self.dest.delete_snapshot(seq).await?;
                listing.unfinished.retain(|&u| u != seq);
            }
        }
        // While no snapshot has gone, every restore point stays, those before the first
        // snapshot included (replayed from the first event).
        if gone.is_empty() {
            return Ok(());
        }
        let oldest_kept = listing.snapshots.first().map_or(newest, |m| m.seq);
        for seg in listing.segments.clone() {
            if seg.last <= oldest_kept {
                self.dest.delete_segment(&seg).await?;
                listing.segments.retain(|s| *s != seg);
                listing.shipped_ms.remove(&seg);
            }
        }
        Ok(())
    }

    /// Lists the destination and checks that what it holds is this node's history: the
    /// node's chain hash at the highest sequence number the destination reaches must be the one
    /// recorded there.
    async fn learn(&self, cursor: &mut Cursor) -> Result<(), BackupError> {
        let listing = self.list_store().await?;
        // The newest backup there is the last success this node can report, also after a
        // restart (until it takes one itself).
        if let Some(newest) = listing.snapshots.last() {
            let mut status = self.status.lock().expect("status lock");
            if status.last_backup.is_none() {
                if let Ok(t) = humantime::parse_rfc3339_weak(&newest.finished) {
                    self.engine
                        .metrics()
                        .backup_last_success
                        .set(unix(t) as i64);
                }
                status.last_backup = Some(newest.clone());
            }
        }
        let reaches = listing.reaches();
        if reaches > 0 {
            let recorded = listing
                .segments
                .iter()
                .filter(|s| s.last == reaches)
                .map(|s| hex::encode(s.chain))
                .chain(
                    listing
                        .snapshots
                        .iter()
                        .filter(|s| s.seq == reaches)
                        .map(|s| s.chain_hash.clone()),
                )
                .next()
                .expect("the highest sequence number is a segment's or a snapshot's");
            let head = self.engine.seq()?;
            if reaches > head {
                return Err(BackupError::Diverged(format!(
                    "it reaches sequence number {reaches}, beyond this node's {head}; back up \
                     another cluster to another prefix"
                )));
            }
            match self.engine.chain_at(reaches) {
                Ok(mine) if hex::encode(mine) == recorded => {}
                Ok(mine) => {
                    return Err(BackupError::Diverged(format!(
                        "at sequence number {reaches} its chain hash is {recorded}, this node's \
                         is {}",
                        hex::encode(mine)
                    )))
                }
                // Pruned here: the history cannot be compared. Shipping starts again from a
                // new snapshot (restores to the sequence numbers between are not possible).
                Err(NodeError::NotFound(_)) => {
                    tracing::warn!(
                        reaches,
                        "the destination's last sequence number is no longer retained here: \
                         continuing from a new snapshot"
                    );
                    cursor.shipped = 0;
                    cursor.newest_snapshot = listing.snapshots.last().map_or(0, |s| s.seq);
                    cursor.known = true;
                    *self.known.lock().expect("listing lock") = Some(listing);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        cursor.shipped = reaches;
        cursor.newest_snapshot = listing.snapshots.last().map_or(0, |s| s.seq);
        cursor.known = true;
        *self.known.lock().expect("listing lock") = Some(listing);
        Ok(())
    }

    /// One round of the backup task: uploads a snapshot the node took since the last one (when
    /// `upload_snapshots`), then ships the log up to the node's head (when shipping is on).
    pub async fn round(&self) -> Result<(), BackupError> {
        let mut cursor = self.cursor.lock().await;
        if !self.engine.role().writable() {
            // The leader ships; this node prunes as it would without backups, and lists the
            // destination again if it becomes the leader.
            cursor.known = false;
            *self.known.lock().expect("listing lock") = None;
            self.hold.store(u64::MAX, Ordering::Release);
            return Ok(());
        }
        if !cursor.known {
            self.learn(&mut cursor).await?;
            if self.settings.ship_interval.is_some() {
                self.hold.store(cursor.shipped, Ordering::Release);
            }
        }
        if self.settings.upload_snapshots {
            let newest = self.engine.snapshots()?.into_iter().next_back();
            let limit = self.limit();
            // A snapshot beyond what is confirmed waits for a later round.
            if let Some(file) = newest.filter(|f| f.seq > cursor.newest_snapshot && f.seq <= limit)
            {
                let result = self.upload(&mut cursor, &file).await;
                self.record_backup(&result);
                result?;
            }
        }
        if self.settings.ship_interval.is_some() {
            self.ship(&mut cursor).await?;
        }
        Ok(())
    }

    /// Ships every durable log entry after the cursor, in segments.
    async fn ship(&self, cursor: &mut Cursor) -> Result<(), BackupError> {
        let metrics = self.engine.metrics();
        let head = self.engine.seq()?;
        let first = self.engine.first_retained()?;
        // Entries the destination lacks and this node no longer holds (a backup begun on a
        // pruned node, or after a gap): a snapshot the log here continues from is the new
        // base, taken now unless one was uploaded.
        let needs_base = match first {
            Some(f) => f > cursor.shipped + 1,
            None => head > cursor.shipped,
        };
        let limit = self.limit();
        if needs_base {
            let base = cursor.newest_snapshot;
            let usable = base > cursor.shipped && first.map_or(head == base, |f| f <= base + 1);
            if !usable && head > limit {
                // A new base would hold writes not yet confirmed: later.
                return Ok(());
            }
            if !usable {
                let file = self.engine.snapshot().await?;
                let result = self.upload(cursor, &file).await;
                self.record_backup(&result);
                result?;
            }
            cursor.shipped = cursor.newest_snapshot;
        }
        loop {
            let from = cursor.shipped + 1;
            if from > limit {
                break;
            }
            let mut entries = self.engine.entries(from, SEGMENT_ENTRIES, SEGMENT_BYTES)?;
            entries.retain(|e| e.seq <= limit);
            let Some(first) = entries.first() else { break };
            if first.seq != from {
                return Err(BackupError::Missing(format!(
                    "the log here starts at sequence number {} but {from} is not yet shipped",
                    first.seq
                )));
            }
            let (name, bytes) = segment::encode(&entries);
            self.dest.put_segment(&name, bytes).await?;
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.note(|l| {
                l.segments.push(name);
                l.segments.sort();
                l.shipped_ms.insert(name, at);
            });
            cursor.shipped = name.last;
            self.hold.store(cursor.shipped, Ordering::Release);
            metrics.backup_shipped_seq.set(cursor.shipped as i64);
        }
        let head = self.engine.seq()?;
        metrics
            .backup_ship_lag_events
            .set(head.saturating_sub(cursor.shipped) as i64);
        self.hold.store(cursor.shipped, Ordering::Release);
        let mut status = self.status.lock().expect("status lock");
        status.shipped_through = Some(cursor.shipped);
        status.shipped_at = Some(SystemTime::now());
        Ok(())
    }

    /// The backup task: a round every interval until `stop`, and a last round then (what was
    /// written before the stop is shipped).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = self
            .settings
            .ship_interval
            .unwrap_or(Duration::from_secs(10));
        loop {
            let stopping = *stop.borrow();
            let result = self.round().await;
            if let Err(e) = &result {
                self.engine.metrics().backup_ship_failures.inc();
                tracing::warn!(error = %e, destination = self.dest.url(), "backup round failed");
            }
            self.status.lock().expect("status lock").ship_error =
                result.err().map(|e| e.to_string());
            if stopping {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }
}
