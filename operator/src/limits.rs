//! Every timeout, interval and bound of the operator, in one place.

use std::time::Duration;

/// How long a call to a node may take (`--node-timeout-seconds`).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a switchover waits for the chosen follower to catch up with the fenced leader
/// before it gives the leadership back.
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a switchover asks the chosen follower how far it has come.
pub const SWITCHOVER_POLL: Duration = Duration::from_millis(100);
/// A cluster in motion (a rollout, a failover waiting, no leader yet) is reconciled again
/// after this; a settled one at its next cross-check.
pub const REQUEUE_IN_MOTION: Duration = Duration::from_secs(2);
/// A reconcile that failed on the Kubernetes API or a node is retried after this.
pub const REQUEUE_AFTER_ERROR: Duration = Duration::from_secs(5);
/// A reconcile that failed on the spec itself (a missing Secret, a bad CA) is retried after
/// this: it needs someone to change something.
pub const REQUEUE_INVALID: Duration = Duration::from_secs(60);
/// A `ValoriBackup` waiting for its cluster or the cluster's leader looks again after this.
pub const PENDING_RETRY: Duration = Duration::from_secs(5);
/// A follower this many events or fewer behind the leader counts as caught up for a rollout.
pub const CAUGHT_UP_EVENTS: u64 = 1000;
/// Default lifetime of the leader-election Lease without renewal (`--lease-seconds`).
pub const LEASE_SECONDS: u64 = 15;
