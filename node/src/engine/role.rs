//! The node's role as the engine holds it: persisted in the store's `meta` column family before
//! it takes effect, and published by one path ([`Roles::publish`]) that updates the metrics and
//! tells the replication supervisor.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;
use valori_api::Role;

use crate::error::{Doing, NodeError, StorageError};
use crate::metrics::Metrics;
use crate::role::RoleState;
use crate::store::Store;

/// Where the role is persisted.
const ROLE_KEY: &str = "role";

/// The persisted role, or the one the flags give (`follow`) when none is.
pub(super) fn load(store: &Store, follow: Option<String>) -> Result<RoleState, StorageError> {
    match store.get_meta(ROLE_KEY).doing(|| "reading the role")? {
        Some(bytes) => RoleState::decode(&bytes)
            .map_err(|why| StorageError::malformed("reading the role", why)),
        None => Ok(RoleState::initial(follow)),
    }
}

/// Makes `role` durable.
pub(super) fn persist(store: &Store, role: &RoleState) -> Result<(), StorageError> {
    store
        .put_meta(ROLE_KEY, &role.encode())
        .doing(|| "persisting the role")
}

/// The role in effect and its watchers.
pub(super) struct Roles {
    state: Mutex<RoleState>,
    /// Announces role changes (the replication supervisor follows them).
    tx: watch::Sender<RoleState>,
}

impl Roles {
    pub(super) fn new(role: RoleState, metrics: &Metrics) -> Roles {
        set_metrics(metrics, &role);
        let (tx, _) = watch::channel(role.clone());
        Roles {
            state: Mutex::new(role),
            tx,
        }
    }

    /// The role in effect, locked: a change is decided and published under this lock.
    pub(super) fn lock(&self) -> MutexGuard<'_, RoleState> {
        self.state.lock().expect("role lock")
    }

    /// A copy of the role in effect.
    pub(super) fn get(&self) -> RoleState {
        self.lock().clone()
    }

    pub(super) fn watch(&self) -> watch::Receiver<RoleState> {
        self.tx.subscribe()
    }

    /// Puts `next` in effect (it must be durable already): the metrics, the role readers see,
    /// then the watchers.
    pub(super) fn publish(
        &self,
        metrics: &Metrics,
        mut current: MutexGuard<'_, RoleState>,
        next: RoleState,
    ) {
        debug_assert!(
            next.seen_epoch >= current.seen_epoch,
            "the highest epoch seen never goes down: {current:?} -> {next:?}"
        );
        debug_assert!(next.seen_epoch >= next.assignment.epoch);
        set_metrics(metrics, &next);
        *current = next.clone();
        drop(current);
        self.tx.send_replace(next);
    }

    /// Persists `next`, then publishes it.
    pub(super) fn persist_and_publish(
        &self,
        store: &Store,
        metrics: &Metrics,
        current: MutexGuard<'_, RoleState>,
        next: RoleState,
    ) -> Result<(), NodeError> {
        persist(store, &next)?;
        self.publish(metrics, current, next);
        Ok(())
    }
}

fn set_metrics(metrics: &Metrics, role: &RoleState) {
    metrics
        .role_leader
        .set(i64::from(role.assignment.role == Role::Leader));
    metrics.epoch.set(role.assignment.epoch as i64);
    metrics.fenced.set(i64::from(role.fenced()));
}

/// Why a node with this role refuses a client write, if it does.
pub(super) fn not_writable(role: &RoleState) -> Option<NodeError> {
    match role.assignment.role {
        Role::Follower => Some(NodeError::ReadOnlyFollower {
            leader: role.assignment.leader_url.clone().unwrap_or_default(),
        }),
        Role::Leader if role.fenced() => Some(NodeError::Fenced {
            epoch: role.assignment.epoch,
            seen: role.seen_epoch,
        }),
        Role::Leader => None,
    }
}
