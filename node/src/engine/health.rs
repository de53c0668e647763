//! Whether the engine serves: one state, so that "failed" and "readable" can never disagree.

use crate::error::{Failure, NodeError};

/// What the engine can serve.
///
/// ```text
/// Serving --fail--> Failed --rebuild failed--> Unreadable
///    ^                 |  ^                        |
///    +------heal-------+  +-------rebuilt----------+
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Health {
    /// Reads and writes.
    Serving,
    /// Writes are refused for this reason; reads serve what is durable.
    Failed(Failure),
    /// Writes and reads are refused: memory may hold events the disk does not (an append
    /// failed and the state could not be rebuilt from the disk).
    Unreadable(Failure),
}

impl Health {
    /// Why writes are refused, if they are.
    pub(super) fn failure(&self) -> Option<&Failure> {
        match self {
            Health::Serving => None,
            Health::Failed(why) | Health::Unreadable(why) => Some(why),
        }
    }

    /// Refuses writes (and replication, snapshots, restores) while failed.
    pub(super) fn check(&self) -> Result<(), NodeError> {
        self.failure()
            .map_or(Ok(()), |why| Err(NodeError::Failed(why.clone())))
    }

    /// Refuses reads while memory cannot be trusted.
    pub(super) fn check_readable(&self) -> Result<(), NodeError> {
        match self {
            Health::Unreadable(why) => Err(NodeError::Failed(why.clone())),
            _ => Ok(()),
        }
    }

    /// Failed for `why` (a newer reason replaces an older one); reads stay as they were.
    pub(super) fn fail(&mut self, why: Failure) {
        *self = match self {
            Health::Unreadable(_) => Health::Unreadable(why),
            _ => Health::Failed(why),
        };
    }

    /// Memory may be ahead of the disk: reads are refused until [`Health::rebuilt`].
    pub(super) fn distrust_memory(&mut self, why: Failure) {
        *self = Health::Unreadable(why);
    }

    /// The state was rebuilt from the disk: reads serve it again; writes stay refused.
    pub(super) fn rebuilt(&mut self) {
        if let Health::Unreadable(why) = self {
            *self = Health::Failed(why.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Failure {
        Failure::Storage(s.into())
    }

    #[test]
    fn reads_are_refused_only_while_memory_is_untrusted() {
        let mut h = Health::Serving;
        assert!(h.check().is_ok() && h.check_readable().is_ok());
        h.fail(why("a"));
        assert!(h.check().is_err() && h.check_readable().is_ok());
        h.distrust_memory(why("b"));
        assert!(h.check().is_err() && h.check_readable().is_err());
        // A divergence reported meanwhile does not make memory trusted again.
        h.fail(why("c"));
        assert_eq!(h, Health::Unreadable(why("c")));
        h.rebuilt();
        assert_eq!(h, Health::Failed(why("c")));
        assert!(h.check_readable().is_ok());
        h.rebuilt();
        assert_eq!(
            h,
            Health::Failed(why("c")),
            "rebuilding never clears a failure"
        );
    }
}
