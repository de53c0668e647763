//! Restores are crash-atomic. The verified snapshot is renamed to the staged name; a marker in
//! the `meta` column family (the snapshot's sequence number) decides the restore; then the log
//! is cleared, every other snapshot removed, the staged file renamed to its snapshot name, the
//! history generation bumped and the marker removed ([`RestoreStep`]). Each step can be
//! repeated. At open, a marker means the restore is finished from wherever it stopped; a
//! staged file without one means it was never decided, and the file is removed.

use std::path::Path;
use std::sync::Arc;

use valori_kernel::rows::ChunkStore;
use valori_kernel::Kernel;

use super::config::{crash_point, RestoreStep};
use super::copies::Copies;
use super::health::Health;
use super::{role, EngineConfig, Shared};
use crate::error::{Doing, Failure, NodeError, StorageError};
use crate::role::RoleState;
use crate::store::{SnapshotFile, Store};

/// Whether an install may replace a failed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallMode {
    /// Only over a healthy state: a failed node refuses it.
    Normal,
    /// Also over a failed (diverged) state, clearing the failure: how a follower heals by
    /// re-bootstrapping from its leader.
    Heal,
}

/// Where a decided, unfinished restore is recorded: the sequence number of its snapshot (8
/// bytes, little-endian). Written after the restored snapshot is staged, removed when the
/// restore is complete: a crash before it leaves the old state (the staged file is removed at
/// open), a crash after it is finished at open.
const RESTORE_KEY: &str = "restore";

/// Decodes and verifies the snapshot file at `path` (synced first) on a thread of its own: a
/// large state takes long to decode, and the writer must not wait for it. Not the runtime's
/// blocking pool: embedded callers have none.
/// Its full-precision vectors are decoded into `vectors` when given (`--vectors-on-disk`).
pub(super) async fn decode(
    path: &Path,
    vectors: Option<Arc<dyn ChunkStore>>,
) -> Result<Kernel, NodeError> {
    let file = path.to_path_buf();
    let (done, decoded) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("valori-restore".into())
        .spawn(move || {
            let reading = || format!("reading snapshot {}", file.display());
            let kernel = (|| {
                std::fs::File::open(&file)
                    .and_then(|f| f.sync_all())
                    .doing(reading)?;
                let map = crate::store::map_snapshot(&file).doing(reading)?;
                Ok::<_, NodeError>(Kernel::restore_placed(&map, vectors)?)
            })();
            let _ = done.send(kernel);
        })
        .map_err(|e| NodeError::Internal(format!("starting the restore thread: {e}")))?;
    decoded
        .await
        .map_err(|_| NodeError::Internal("the restore thread failed".into()))?
}

/// Finishes a restore whose marker is durable: clears the log, removes every other snapshot,
/// moves the staged snapshot into place, bumps the history generation (followers re-check
/// theirs) and removes the marker. Every step can be repeated, so a crash anywhere is finished
/// by the next open. Without a marker a staged file is the trace of a restore that was never
/// decided: removed. Returns the installed snapshot and the new role when one was finished.
pub(super) fn finish_restore(
    store: &Store,
    config: &EngineConfig,
) -> Result<Option<(SnapshotFile, RoleState)>, StorageError> {
    let staged = store.staged_path();
    let marker = store
        .get_meta(RESTORE_KEY)
        .doing(|| "reading the restore marker")?;
    let Some(marker) = marker else {
        if staged.exists() {
            tracing::warn!(path = %staged.display(), "removing a restore that was not decided");
            std::fs::remove_file(&staged).doing(|| format!("removing {}", staged.display()))?;
        }
        return Ok(None);
    };
    let seq = <[u8; 8]>::try_from(&marker[..])
        .map(u64::from_le_bytes)
        .map_err(|_| StorageError::malformed("reading the restore marker", "not 8 bytes long"))?;
    let has_staged = staged.exists();
    store.clear_log().doing(|| "clearing the log")?;
    crash_point(config, RestoreStep::LogCleared);
    for s in store.snapshots().doing(|| "listing snapshots")? {
        // The snapshot at the restored sequence number is the restored one once renamed.
        if has_staged || s.seq != seq {
            store
                .remove_snapshot(&s)
                .doing(|| format!("removing snapshot {}", s.path.display()))?;
        }
    }
    crash_point(config, RestoreStep::OldRemoved);
    let file = if has_staged {
        store
            .adopt_snapshot(seq, &staged)
            .doing(|| "installing the restored snapshot")?
    } else {
        store
            .snapshots()
            .doing(|| "listing snapshots")?
            .into_iter()
            .find(|s| s.seq == seq)
            .ok_or_else(|| {
                StorageError::malformed(
                    "finishing a restore",
                    format!(
                        "a restore to sequence number {seq} was decided but its snapshot is gone"
                    ),
                )
            })?
    };
    crash_point(config, RestoreStep::Installed);
    let mut next = role::load(store, config.follow.clone())?;
    // A new history: followers re-check theirs against it. (Bumped twice if a crash comes
    // before the marker goes: harmless, it only has to change.)
    next.history += 1;
    role::persist(store, &next)?;
    crash_point(config, RestoreStep::HistoryBumped);
    store
        .delete_meta(RESTORE_KEY)
        .doing(|| "removing the restore marker")?;
    Ok(Some((file, next)))
}

/// Replaces the state with `kernel`, restored and verified from the synced snapshot file at
/// `path`: staged, decided (the marker), finished ([`finish_restore`]), then published.
pub(super) fn restore(
    shared: &Shared,
    copies: &mut Copies,
    kernel: Kernel,
    path: &Path,
    mode: InstallMode,
) -> Result<SnapshotFile, NodeError> {
    if mode == InstallMode::Normal {
        shared.health().check()?;
    }
    let store = &shared.store;
    let config = &shared.config;
    store
        .stage_snapshot(path)
        .doing(|| "staging the snapshot")?;
    crash_point(config, RestoreStep::Staged);
    if let Err(e) = store.put_meta(RESTORE_KEY, &kernel.seq().to_le_bytes()) {
        let _ = std::fs::remove_file(store.staged_path());
        return Err(StorageError::new("recording the restore", e).into());
    }
    crash_point(config, RestoreStep::Decided);
    let (file, next) = match finish_restore(store, config) {
        Ok(Some(done)) => done,
        Ok(None) => unreachable!("the marker was just written"),
        Err(e) => {
            // Decided but not finished: the next open finishes it; until then, no writes.
            shared.fail(Failure::Storage(format!(
                "{e} (restarting the node finishes the restore)"
            )));
            return Err(e.into());
        }
    };
    debug_assert_eq!(file.seq, kernel.seq());
    tracing::info!(seq = kernel.seq(), "state restored from snapshot");
    copies.install(&shared.published, &shared.metrics, kernel);
    if mode == InstallMode::Heal {
        *shared.health.lock().expect("health lock") = Health::Serving;
        shared.metrics.failed.set(0);
    }
    // Persisted by `finish_restore`, as a step of the restore.
    shared
        .roles
        .publish(&shared.metrics, shared.roles.lock(), next);
    Ok(file)
}
