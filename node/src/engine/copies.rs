//! The two copies of the state. Readers share the **published** one, an immutable
//! `Arc<Kernel>`; the writer owns the **back** copy, equal to it between commits. After a
//! durable commit the back copy is published in place of the old one ([`Copies::swap`]), and
//! the replaced copy is brought up to date for the next group ([`reclaim`]): by replaying the
//! group's recorded events once its last reader has let go, or by copying the published state
//! if a reader holds it past [`RECLAIM_WAIT`].
//!
//! The two copies hold their full-precision vectors, their walk copies and their per-slot
//! tags, live flags, graph levels and upper-layer offsets, the largest parts of a state, in the
//! same memory: the replayed copy adopts the published copy's chunks
//! ([`Kernel::share_storage`], [`Share::Appended`]), a copied one shares them from the start,
//! and the writer's next group copies only the last chunks it appends to (copy on write). The
//! graphs' layer-0 neighbour lists, which every group rewrites all over the graph, are held
//! twice by default. With `share_graph_lists` ([`Share::Lists`]) they are shared chunk by
//! chunk: a list written over a shared chunk is held apart, in that copy's edits of the chunk,
//! until the chunk's edits are many enough to be folded into a copy of it, which the other copy
//! adopts after the group (`kernel/src/lists.rs`); each copy then holds the lists of the last
//! few groups apart and the chunks once, for slower writes (reads of lists held apart, chunks
//! copied). The rest (layer-0 counts, upper graph layers' blocks, norms, postings, maps) is
//! held twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use valori_kernel::exec::Threads;
use valori_kernel::{Event, Kernel, Replay, Share};

use super::Shared;
use crate::limits::RECLAIM_WAIT;
use crate::metrics::Metrics;

/// Events applied to the back copy and what repeats them on the other copy.
pub(super) type Recorded = Vec<(Event, Replay)>;

/// The published copy, shared by readers and the writer.
pub(super) struct Published {
    /// Readers clone the `Arc` (the lock is held for that alone); the writer replaces it after
    /// each durable commit.
    state: Mutex<Arc<Kernel>>,
    /// Announces the sequence number after each publication (long-polling log readers wait
    /// on it).
    seq_tx: watch::Sender<u64>,
}

impl Published {
    pub(super) fn new(state: Kernel) -> Published {
        let (seq_tx, _) = watch::channel(state.seq());
        Published {
            state: Mutex::new(Arc::new(state)),
            seq_tx,
        }
    }

    /// The published state: taking it waits for no writer.
    pub(super) fn get(&self) -> Arc<Kernel> {
        Arc::clone(&self.state.lock().expect("published lock"))
    }

    pub(super) fn seq_watch(&self) -> watch::Receiver<u64> {
        self.seq_tx.subscribe()
    }

    /// Publishes `fresh` in place of the current state; returns the replaced one.
    fn replace(&self, metrics: &Metrics, fresh: Arc<Kernel>) -> Arc<Kernel> {
        let seq = fresh.seq();
        let old = std::mem::replace(&mut *self.state.lock().expect("published lock"), fresh);
        metrics.seq.set(seq as i64);
        self.seq_tx.send_replace(seq);
        old
    }
}

/// The writer's side of the state: its private back copy and the threads it indexes with.
pub(super) struct Copies {
    /// Equal to the published copy between commits; only the writer thread touches it.
    pub(super) back: Kernel,
    pub(super) exec: Threads,
}

impl Copies {
    /// Publishes the back copy (its events must be durable); returns the replaced copy and the
    /// published one, for [`reclaim`].
    pub(super) fn swap(
        &mut self,
        published: &Published,
        metrics: &Metrics,
    ) -> (Arc<Kernel>, Arc<Kernel>) {
        let fresh = Arc::new(std::mem::take(&mut self.back));
        let old = published.replace(metrics, Arc::clone(&fresh));
        debug_assert!(
            fresh.seq() > old.seq(),
            "a publication moves the sequence number forward"
        );
        (old, fresh)
    }

    /// Replaces both copies with `state` (a restore or a rebuild from the disk).
    pub(super) fn install(&mut self, published: &Published, metrics: &Metrics, state: Kernel) {
        published.replace(metrics, Arc::new(state.clone()));
        self.back = state;
    }
}

/// The copy `old` brought up to `fresh`'s state: `done` replayed on it once its last reader has
/// let go (within [`RECLAIM_WAIT`]), else a copy of `fresh`.
pub(super) fn reclaim(
    shared: &Shared,
    mut old: Arc<Kernel>,
    fresh: &Arc<Kernel>,
    done: &Recorded,
    encoded: &[&[u8]],
) -> Kernel {
    debug_assert_eq!(done.len(), encoded.len());
    let deadline = Instant::now() + RECLAIM_WAIT;
    let mut kernel = loop {
        match Arc::try_unwrap(old) {
            Ok(k) => break Some(k),
            Err(still_shared) if Instant::now() < deadline => {
                old = still_shared;
                std::thread::sleep(RECLAIM_POLL);
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
        Some(mut k) if k.seq() == fresh.seq() && k.chain_hash() == fresh.chain_hash() => {
            // The replay appended its own copy of the group's vectors and wrote its own lists;
            // from here on the two copies hold every vector once, in the published copy's
            // chunks, and with `share_graph_lists` every chunk of lists the published copy
            // holds whole.
            let parts = if shared.config.share_graph_lists {
                Share::Lists
            } else {
                Share::Appended
            };
            k.share_storage(fresh, parts);
            k
        }
        _ => {
            // Copies all but the vectors and the walk copy, which are shared.
            shared.metrics.state_copies.inc();
            (**fresh).clone()
        }
    }
}

/// How often the writer looks whether the last reader of a replaced copy has let go.
const RECLAIM_POLL: Duration = Duration::from_micros(50);
