//! Replication. The follower's side ([`follower`]): bootstrap from the leader's snapshot,
//! stream its log, check every chain hash, heal. The leader's side ([`leader`]): its table of
//! followers, which synchronous writes wait on. [`supervise`] runs the follower loop whenever
//! the node is a follower.

pub mod follower;
pub mod leader;

use tokio::sync::watch;
use valori_api as api;

use crate::engine::Engine;
pub use follower::{default_follower_name, Follower};
pub use leader::{valid_follower_name, Followers};

/// How a node replicates when it is a follower.
#[derive(Clone, Debug)]
pub struct FollowerSettings {
    /// The key it presents to its leader.
    pub key: Option<String>,
    /// CA certificates (PEM) it trusts for its leader besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Re-bootstrap on divergence even when the role came from flags.
    pub heal: bool,
    /// How it names itself to its leader.
    pub name: String,
}

/// Runs the follower loop whenever the node is a follower, restarting it towards the new
/// leader when the role changes and stopping it on promotion, until `stop` turns true.
pub async fn supervise(engine: Engine, settings: FollowerSettings, stop: watch::Receiver<bool>) {
    let mut roles = engine.role_watch();
    loop {
        if *stop.borrow() {
            return;
        }
        let assignment = roles.borrow_and_update().assignment.clone();
        // Only a new assignment restarts the loop: the role state also changes when the node
        // learns an epoch or installs a snapshot, and the loop must go on through those.
        let reassigned = async {
            loop {
                if roles.changed().await.is_err() {
                    return;
                }
                if roles.borrow_and_update().assignment != assignment {
                    return;
                }
            }
        };
        let mut stopped = stop.clone();
        let follower = match (assignment.role, assignment.leader_url.clone()) {
            (api::Role::Follower, Some(leader)) => {
                match Follower::new(engine.clone(), &leader, &settings) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        // A URL the role API accepted cannot be refused here; if it were, the
                        // node waits for a new assignment rather than spin.
                        tracing::error!(%leader, error = %e, "cannot follow this leader");
                        None
                    }
                }
            }
            _ => None,
        };
        match follower {
            Some(follower) => {
                tokio::select! {
                    _ = follower.run(stop.clone()) => return,
                    _ = reassigned => {}
                }
            }
            None => {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = reassigned => {}
                }
            }
        }
    }
}
