//! Reads of a past state: a search as the state stood at a sequence number (`at_seq`),
//! replayed in memory from this node's own snapshots and log and checked on the way exactly as
//! `valori verify` checks a history ([`crate::audit::state_at`]).

use valori_kernel::Kernel;

use super::Service;
use crate::audit::{self, History, Unreachable};
use crate::error::NodeError;

/// Replays run on one thread: a past state's bytes do not depend on it, and a replay leaves
/// the other core to the live traffic.
const REPLAY_THREADS: usize = 1;

impl Service {
    /// The state as it stood at `seq`, replayed in memory from the nearest snapshot at or
    /// before it, at most `--max-replay-events` events (refused with `limit_exceeded` above
    /// it). A seq in the future, or one whose events are no longer retained, is not found.
    /// One replay runs at a time; others wait for it.
    pub fn state_at(&self, seq: u64) -> Result<Kernel, NodeError> {
        let now = self.engine.seq()?;
        if seq > now {
            return Err(NodeError::NotFound(format!(
                "sequence number {seq} is in the future (current is {now})"
            )));
        }
        let _one = self
            .replays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A snapshot or entries pruned while the replay read them fail it; the second attempt
        // starts from what is retained then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match audit::state_at(
                &mut self.own_history()?,
                seq,
                REPLAY_THREADS,
                self.settings.max_replay_events,
            ) {
                Ok(kernel) => return Ok(kernel),
                Err(Unreachable::Bad(_)) if attempt == 1 => continue,
                Err(Unreachable::Bad(p)) => {
                    return Err(NodeError::Internal(format!(
                        "this node's history does not replay to seq {seq}: {p}"
                    )))
                }
                Err(Unreachable::Future { head }) => {
                    return Err(NodeError::NotFound(format!(
                        "sequence number {seq} is in the future (the log ends at {head})"
                    )))
                }
                Err(Unreachable::Pruned { oldest }) => {
                    return Err(NodeError::NotFound(format!(
                        "the events before sequence number {seq} are no longer retained: the \
                         oldest state this node can answer is at seq {oldest}"
                    )))
                }
                Err(Unreachable::TooLong { events, max }) => {
                    return Err(NodeError::Limit {
                        what: "events to replay for at_seq (--max-replay-events; ask for a seq \
                               nearer a snapshot)",
                        value: events,
                        max,
                    })
                }
            }
        }
    }

    /// This node's snapshots and retained log as a history to replay.
    fn own_history(&self) -> Result<History, NodeError> {
        let engine = self.engine.clone();
        Ok(History::paged(
            "this node".into(),
            self.engine.snapshots()?,
            self.engine.first_retained()?,
            move |from| {
                engine
                    .entries(from, audit::AUDIT_PAGE, usize::MAX)
                    .map_err(|e| audit::plain(e.to_string()))
            },
        ))
    }
}
