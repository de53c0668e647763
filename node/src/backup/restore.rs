//! Restores from a backup into a new data directory: the newest snapshot at or before the
//! target, then every shipped entry after it up to the target, each event replayed and its
//! chain hash compared with the recorded one. Nothing is written to the data directory's log
//! before the snapshot verifies, and a failure part-way removes what was written: the
//! directory is left empty, never half restored.
//!
//! A marker in the store's metadata (`backup-restore`) is written first and removed last; a
//! restore that a crash interrupted is started again from an empty directory.

use std::path::Path;

use valori_kernel::exec::Threads;
use valori_kernel::{Kernel, GENESIS_CHAIN};

use super::dest::Destination;
use super::segment::{self, SegmentName};
use super::BackupError;
use crate::store::Store;

/// The state a restore reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The newest state the backup holds.
    Latest,
    /// Exactly this sequence number.
    Seq(u64),
    /// The newest sequence number the backup held at this time (milliseconds since the Unix
    /// epoch): what had been shipped or uploaded by then, so within one shipping interval of
    /// the writes.
    Time(i64),
}

impl RestoreTarget {
    /// The target the flags give: `--target-seq`, `--target-time` (at most one), or the newest.
    pub fn from_flags(seq: Option<u64>, time_ms: Option<i64>) -> RestoreTarget {
        match (seq, time_ms) {
            (Some(n), _) => RestoreTarget::Seq(n),
            (None, Some(t)) => RestoreTarget::Time(t),
            (None, None) => RestoreTarget::Latest,
        }
    }
}

/// Parses a target time, RFC 3339 (`2026-12-07T03:00:00Z`), into milliseconds since the Unix
/// epoch (a clap value parser).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2026-12-07T03:00:00Z): {e}"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The sequence number restored.
    pub seq: u64,
    /// Chain hash at `seq`.
    pub chain_hash: valori_kernel::Hash,
    /// State hash at `seq`.
    pub state_hash: valori_kernel::Hash,
    /// The snapshot it started from (0: the empty state).
    pub snapshot_seq: u64,
    /// Events replayed from segments.
    pub replayed: u64,
    /// Segments read.
    pub segments: usize,
}

/// The metadata key of a restore in progress.
const MARKER: &str = "backup-restore";

/// Whether a restore from a backup into this store was interrupted (its marker is there).
pub fn interrupted(store: &Store) -> Result<bool, crate::error::StorageError> {
    use crate::error::Doing;
    Ok(store
        .get_meta(MARKER)
        .doing(|| "reading the backup-restore marker")?
        .is_some())
}

/// Whether the data directory holds state (a snapshot or a log entry) not left by an
/// interrupted restore.
pub fn has_state(store: &Store) -> Result<bool, BackupError> {
    let local = |e: String| BackupError::Local(e);
    if store
        .get_meta(MARKER)
        .map_err(|e| local(format!("reading the restore marker: {e}")))?
        .is_some()
    {
        return Ok(false);
    }
    let snaps = store
        .snapshots()
        .map_err(|e| local(format!("listing snapshots: {e}")))?;
    let first = store
        .first_seq()
        .map_err(|e| local(format!("reading the log: {e}")))?;
    Ok(!snaps.is_empty() || first.is_some())
}

/// Restores the backup at `dest` into the data directory `dir`, which must hold no state. The
/// node then opens `dir` as usual (its recovery checks everything once more).
pub async fn restore_into(
    dest: &Destination,
    dir: &Path,
    target: RestoreTarget,
    index_threads: usize,
) -> Result<RestoreReport, BackupError> {
    let local = |what: &str, e: rocksdb::Error| BackupError::Local(format!("{what}: {e}"));
    let store = Store::open(dir).map_err(|e| BackupError::Local(e.to_string()))?;
    if has_state(&store)? {
        return Err(BackupError::Config(format!(
            "{} already holds state: a backup restores only into an empty data directory",
            dir.display()
        )));
    }
    clear(&store)?;
    store
        .put_meta(MARKER, b"1")
        .map_err(|e| local("recording the restore", e))?;
    let result = restore_steps(dest, &store, target, index_threads).await;
    match result {
        Ok(report) => {
            store
                .delete_meta(MARKER)
                .map_err(|e| local("removing the restore marker", e))?;
            tracing::info!(
                seq = report.seq,
                snapshot = report.snapshot_seq,
                replayed = report.replayed,
                destination = dest.url(),
                "restored from backup"
            );
            Ok(report)
        }
        Err(e) => {
            // Leave the directory empty (the marker goes last: a crash meanwhile clears again).
            clear(&store)?;
            let _ = store.delete_meta(MARKER);
            Err(e)
        }
    }
}

/// Removes every snapshot, the log and any download.
fn clear(store: &Store) -> Result<(), BackupError> {
    let local = |e: std::io::Error| BackupError::Local(format!("clearing the data directory: {e}"));
    for s in store.snapshots().map_err(local)? {
        store.remove_snapshot(&s).map_err(local)?;
    }
    let _ = std::fs::remove_file(store.download_path());
    store
        .clear_log()
        .map_err(|e| BackupError::Local(format!("clearing the log: {e}")))?;
    Ok(())
}

async fn restore_steps(
    dest: &Destination,
    store: &Store,
    target: RestoreTarget,
    index_threads: usize,
) -> Result<RestoreReport, BackupError> {
    let listing = dest.list().await?;
    let reaches = listing.reaches();
    let want = match target {
        RestoreTarget::Latest => reaches,
        RestoreTarget::Seq(n) => n,
        RestoreTarget::Time(ms) => match listing.reached_at(ms) {
            Some(n) => n,
            None => {
                return Err(BackupError::Missing(format!(
                    "{} held nothing at {}: its first object was written later",
                    dest.url(),
                    format_ms(ms)
                )))
            }
        },
    };
    if reaches == 0 {
        return Err(BackupError::Missing(format!(
            "{} holds no backup (no complete snapshot, no log segment)",
            dest.url()
        )));
    }
    if want > reaches {
        return Err(BackupError::Missing(format!(
            "sequence number {want} is beyond the backup, which reaches {reaches}"
        )));
    }
    // The newest complete snapshot at or before the target; without one, the empty state,
    // when the segments start at the first event.
    let base = listing.snapshots.iter().rev().find(|s| s.seq <= want);
    let mut kernel = match base {
        Some(m) => {
            let path = store.download_path();
            dest.get_snapshot(m.seq, &path).await?;
            let name = format!("snapshots/{:020}.vsnap", m.seq);
            let kernel = tokio::task::spawn_blocking(move || {
                let map = crate::store::map_snapshot(&path)
                    .map_err(|e| BackupError::Local(format!("reading {}: {e}", path.display())))?;
                Kernel::restore(&map).map_err(|e| BackupError::Corrupt(format!("{name}: {e}")))
            })
            .await
            .map_err(|e| BackupError::Local(format!("decoding the snapshot: {e}")))??;
            if kernel.seq() != m.seq
                || hex::encode(kernel.chain_hash()) != m.chain_hash
                || hex::encode(kernel.state_hash()) != m.state_hash
            {
                return Err(BackupError::Corrupt(format!(
                    "snapshots/{:020}.vsnap does not match its manifest (sequence number, chain \
                     or state hash)",
                    m.seq
                )));
            }
            kernel
        }
        None => Kernel::new(),
    };
    let snapshot_seq = kernel.seq();
    debug_assert!(snapshot_seq > 0 || kernel.chain_hash() == GENESIS_CHAIN);
    let exec = Threads::new(index_threads.max(1));
    let mut replayed = 0u64;
    let mut segments = 0usize;
    // The segments after the base, in order; each must begin where the last ended.
    let mut candidates: Vec<&SegmentName> = listing
        .segments
        .iter()
        .filter(|s| s.last > snapshot_seq)
        .collect();
    candidates.sort();
    let mut iter = candidates.into_iter().peekable();
    while kernel.seq() < want {
        let next = kernel.seq() + 1;
        // Overlapping segments (shipped twice after a retry) are fine: take one holding `next`.
        let seg = loop {
            match iter.next() {
                Some(s) if s.last < next => continue,
                other => break other,
            }
        };
        let Some(seg) = seg.filter(|s| s.first <= next) else {
            let found = iter.peek().map(|s| s.first);
            let found = seg.map(|s| s.first).or(found);
            return Err(BackupError::Missing(match found {
                Some(f) => format!(
                    "the backup's log has a gap: sequence number {next} is in no segment (the next \
                     segment starts at {f})"
                ),
                None => format!(
                    "the backup's log ends at sequence number {}, before {want}",
                    next - 1
                ),
            }));
        };
        let object = format!("log/{}", seg.file_name());
        let bytes = dest.get_segment(seg).await?;
        let entries = segment::decode(seg, &bytes)
            .map_err(|e| BackupError::Corrupt(format!("{object}: {e}")))?;
        segments += 1;
        let mut batch = Vec::new();
        for entry in entries
            .into_iter()
            .filter(|e| e.seq >= next && e.seq <= want)
        {
            crate::engine::apply_entry(&mut kernel, &entry, &exec).map_err(|why| {
                BackupError::Corrupt(format!("{object}, sequence number {}: {why}", entry.seq))
            })?;
            replayed += 1;
            batch.push(entry);
        }
        store
            .append(&batch)
            .map_err(|e| BackupError::Local(format!("writing the log: {e}")))?;
    }
    if snapshot_seq > 0 {
        store
            .adopt_snapshot(snapshot_seq, &store.download_path())
            .map_err(|e| BackupError::Local(format!("installing the snapshot: {e}")))?;
    }
    Ok(RestoreReport {
        seq: kernel.seq(),
        chain_hash: kernel.chain_hash(),
        state_hash: kernel.state_hash(),
        snapshot_seq,
        replayed,
        segments,
    })
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC).
fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
