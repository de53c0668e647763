//! Snapshots of the writer's copy and their retention.

use valori_kernel::Kernel;

use super::Shared;
use crate::error::{Doing, NodeError};
use crate::store::SnapshotFile;

/// Takes a snapshot when the writer's copy crossed a multiple of `snapshot_every`.
pub(super) fn maybe_snapshot(shared: &Shared, back: &Kernel) {
    let every = shared.config.snapshot_every;
    if every == 0 || shared.health().failure().is_some() {
        return;
    }
    let seq = back.seq();
    let last = shared
        .store
        .snapshots()
        .ok()
        .and_then(|s| s.last().map(|f| f.seq))
        .unwrap_or(0);
    if seq / every > last / every {
        if let Err(e) = take_snapshot(shared, back) {
            tracing::warn!(error = %e, "scheduled snapshot failed");
        }
    }
}

/// Writes a snapshot of the writer's copy (equal to the published one between commits; the
/// writer is here, so it is stable). It streams from the state into the file: never held in
/// memory whole, and readers are not held up.
pub(super) fn take_snapshot(shared: &Shared, kernel: &Kernel) -> Result<SnapshotFile, NodeError> {
    let seq = kernel.seq();
    let file = shared
        .store
        .write_snapshot_with(seq, |sink| {
            kernel.write_snapshot(sink);
        })
        .doing(|| format!("writing snapshot {seq}"))?;
    debug_assert_eq!(file.seq, seq);
    shared.metrics.snapshots.inc();
    tracing::info!(seq, bytes = file.bytes, "snapshot written");
    apply_retention(shared);
    Ok(file)
}

/// Keeps the newest `snapshot_keep` snapshots and, when `prune_log` is set, deletes log entries
/// up to the oldest kept one (but none that backups have yet to ship: `log_hold`).
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
    let mut oldest_kept = snaps[snaps.len().saturating_sub(keep)].seq;
    if let Some(hold) = &shared.config.log_hold {
        oldest_kept = oldest_kept.min(hold.load(std::sync::atomic::Ordering::Acquire));
    }
    if oldest_kept == 0 {
        return;
    }
    if let Err(e) = shared.store.prune_through(oldest_kept) {
        tracing::warn!(error = %e, "pruning the log");
    }
}
