//! Recovery: the newest snapshot that verifies, then every log entry after it, each decoded,
//! applied and its chain hash compared with the stored one. A gap, an undecodable entry or a
//! chain mismatch stops the node with an error naming the sequence number.

use std::sync::Arc;

use valori_kernel::exec::Threads;
use valori_kernel::rows::ChunkStore;
use valori_kernel::{Event, Kernel};

use super::EngineConfig;
use crate::error::{Doing, OpenError};
use crate::store::{Entry, Store};

/// The state the store holds: what a start recovers, and what a failed append is rebuilt from.
/// Its full-precision vectors live in `vectors` when given (`--vectors-on-disk`).
pub(super) fn recover(
    store: &Store,
    config: &EngineConfig,
    vectors: Option<&Arc<dyn ChunkStore>>,
) -> Result<Kernel, OpenError> {
    let exec = Threads::new(config.index_threads);
    let mut kernel = Kernel::new();
    let mut unusable = Vec::new();
    for snap in store
        .snapshots()
        .doing(|| "listing snapshots")?
        .iter()
        .rev()
    {
        let bytes = crate::store::map_snapshot(&snap.path)
            .doing(|| format!("reading snapshot {}", snap.path.display()))?;
        match Kernel::restore_placed(&bytes, vectors.cloned()) {
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
    let first_seq = || store.first_seq().doing(|| "reading the log's first entry");
    // No snapshot to start from: only a log that begins at 1 holds the whole state.
    if kernel.seq() == 0 && !unusable.is_empty() && first_seq()? != Some(1) {
        return Err(OpenError::NoUsableSnapshot {
            files: unusable.join(", "),
        });
    }
    // A snapshot's vectors were decoded there; the log's events append there too.
    kernel.place_vectors(vectors.cloned());
    // The snapshot must agree with the log where they overlap.
    if kernel.seq() > 0 {
        let at = kernel.seq();
        if let Some(e) = store
            .entry(at)
            .doing(|| format!("reading log entry {at}"))?
        {
            if e.chain != kernel.chain_hash() {
                return Err(OpenError::CorruptLog {
                    seq: e.seq,
                    why: "the snapshot's chain hash differs from the log's".into(),
                });
            }
        }
    }
    for entry in store.entries_from(kernel.seq() + 1) {
        let expected = kernel.seq() + 1;
        let entry = entry.doing(|| format!("reading log entry {expected}"))?;
        if entry.seq != expected {
            return Err(OpenError::Gap {
                expected,
                found: entry.seq,
            });
        }
        apply_entry(&mut kernel, &entry, &exec).map_err(|why| OpenError::CorruptLog {
            seq: entry.seq,
            why,
        })?;
    }
    if kernel.seq() == 0 {
        if let Some(first) = first_seq()? {
            return Err(OpenError::Gap {
                expected: 1,
                found: first,
            });
        }
    }
    Ok(kernel)
}

/// Applies a stored log entry (a recovery's, a restore's from a backup): decodes its event,
/// applies it and compares the chain hash with the stored one. `Err` says why it is refused.
pub(crate) fn apply_entry(
    kernel: &mut Kernel,
    entry: &Entry,
    exec: &Threads,
) -> Result<(), String> {
    let event = Event::decode(&entry.event).map_err(|e| format!("does not decode: {e}"))?;
    kernel
        .apply_with(&event, &entry.event, exec)
        .map_err(|e| format!("does not apply: {e}"))?;
    if kernel.chain_hash() != entry.chain {
        return Err(format!(
            "chain hash mismatch: stored {}, recomputed {}",
            hex::encode(entry.chain),
            hex::encode(kernel.chain_hash())
        ));
    }
    Ok(())
}
