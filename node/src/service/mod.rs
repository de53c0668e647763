//! The operations of the API, independent of the wire. HTTP ([`crate::http`]), gRPC
//! ([`crate::grpc`]) and the embedded Python mode are translations onto these calls and nothing
//! else: a transport turns its request into plain types and the answer back into its own, and
//! the service decides everything in between, the key check included, so every way in gives
//! the same result and the same error for the same operation.
//!
//! Files by topic: [`records`] (collections, records, search), [`graph`], [`admin`] (state,
//! log, role, replication, snapshots, restore), [`memory`] (records by key, payloads, filters,
//! get, scroll, count, writes by target, batch search, payload indexes), [`convert`] (client
//! values to the kernel's).

mod admin;
mod convert;
mod graph;
mod memory;
mod past;
mod records;

use std::sync::Arc;

use valori_api as api;
use valori_kernel::Event;

pub use admin::{Heard, LogPageOut, Restored, StateAt};
pub use convert::{
    b64, collection_info, metric_to_wire, parse_direction, parse_metric, record_vector, score,
    similarity, to_fixed, to_new_records, unb64, ResponseSize,
};
pub use graph::NodeOut;
pub use memory::{count_state, filter_of, records_state, Parts};
pub use records::{
    hit_from_wire, hit_to_wire, search_numbers, search_state, BatchHits, HitOut, Hits, RecordIn,
    RecordOut,
};

use crate::engine::{Committed, Engine};
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::replication::leader::{Followers, Generation};

/// What a request's API key allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Reads only (the read-only key).
    Read,
    /// Reads and writes (the read-write key, or any request when no key is configured).
    Write,
}

/// The API keys a node accepts. They are held as blake3 digests and compared with blake3's
/// constant-time equality, so how long a check takes does not reveal how much of a presented
/// key was right, nor the keys' lengths.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    write: Option<blake3::Hash>,
    read: Option<blake3::Hash>,
    cluster: Option<blake3::Hash>,
}

impl Keys {
    /// The read-write and the read-only key; `None` for one not configured.
    pub fn new(write: Option<&str>, read: Option<&str>) -> Self {
        let digest = |k: &str| blake3::hash(k.as_bytes());
        Keys {
            write: write.map(digest),
            read: read.map(digest),
            cluster: None,
        }
    }

    /// Also accepts `key` as a read-write key: the cluster's own key, which its followers and
    /// operator present, so that the users' key can be rotated without cutting them off.
    pub fn with_cluster_key(mut self, key: Option<&str>) -> Self {
        self.cluster = key.map(|k| blake3::hash(k.as_bytes()));
        self
    }

    /// What a request presenting `key` may do: without configured keys anything; otherwise
    /// the presented key must be one of them.
    pub fn check(&self, key: Option<&str>) -> Result<Access, NodeError> {
        if self.write.is_none() && self.read.is_none() && self.cluster.is_none() {
            return Ok(Access::Write);
        }
        let presented = blake3::hash(key.ok_or(NodeError::Unauthorized)?.as_bytes());
        // Every comparison runs whatever the others found.
        let user = self.write.is_some_and(|k| k == presented);
        let cluster = self.cluster.is_some_and(|k| k == presented);
        let write = user | cluster;
        let read = self.read.is_some_and(|k| k == presented);
        match (write, read) {
            (true, _) => Ok(Access::Write),
            (false, true) => Ok(Access::Read),
            (false, false) => Err(NodeError::Unauthorized),
        }
    }
}

/// How many followers must hold a write durably before the leader answers it, and how long it
/// waits for them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncPolicy {
    /// Followers required (0: asynchronous, answered once durable on the leader).
    pub replicas: u32,
    /// Longest wait; then the write is answered `replication_timeout` (outcome unknown).
    pub timeout: std::time::Duration,
}

/// When a leader refuses writes for want of followers (Redis's `min-replicas-to-write` and
/// `min-replicas-max-lag`): with `count` above 0, a write is refused (503
/// `not_enough_replicas`, retryable) unless at least `count` followers confirmed within
/// `max_lag`. An isolated leader then acknowledges writes for at most `max_lag` after it lost
/// its followers, which bounds what asynchronous replication can lose at a failover.
#[derive(Clone, Copy, Debug, Default)]
pub struct MinReplicas {
    /// Followers required (0: never refuse).
    pub count: u32,
    /// How recently each must have confirmed.
    pub max_lag: std::time::Duration,
}

/// The request limits and replication policy of a service.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Most records in one batch insert.
    pub max_batch: usize,
    /// Largest response a search, a neighbour list or a traversal may build, in bytes.
    pub max_response_bytes: usize,
    /// Most event bytes in one log page (a page always holds at least one entry).
    pub max_log_page_bytes: usize,
    /// Synchronous replication.
    pub sync: SyncPolicy,
    /// Writes refused while too few followers are in touch.
    pub min_replicas: MinReplicas,
    /// Most events a read of a past state (`at_seq`) may replay from the nearest snapshot.
    pub max_replay_events: u64,
}

impl Settings {
    /// An embedded engine's: the kernel's own batch limit (there is no request body to bound),
    /// no response limit (results are handed over in memory), asynchronous.
    pub fn embedded() -> Settings {
        Settings {
            max_batch: valori_kernel::limits::MAX_BATCH_RECORDS as usize,
            max_response_bytes: usize::MAX,
            max_log_page_bytes: crate::limits::DEFAULT_MAX_LOG_PAGE_BYTES,
            sync: SyncPolicy::default(),
            min_replicas: MinReplicas::default(),
            max_replay_events: u64::MAX,
        }
    }
}

/// The API's view of a node: its engine, the keys it accepts and the request limits.
#[derive(Clone)]
pub struct Service {
    engine: Engine,
    keys: Keys,
    settings: Settings,
    /// The followers that read this node's log (the leader's side of replication).
    followers: Arc<Followers>,
    /// Held while a past state is replayed: one replay at a time.
    replays: Arc<std::sync::Mutex<()>>,
    /// Backups, when the node has a destination (`--backup-to`).
    backup: Option<Arc<crate::backup::Backup>>,
}

pub use crate::blocking;

impl Service {
    /// The service of `engine`, accepting `keys`.
    pub fn new(engine: Engine, keys: Keys, settings: Settings) -> Service {
        Service {
            engine,
            keys,
            settings,
            followers: Default::default(),
            replays: Default::default(),
            backup: None,
        }
    }

    /// This service with backups to a destination (`POST /v1/backups`, `GET /v1/backups`).
    pub fn with_backup(mut self, backup: Arc<crate::backup::Backup>) -> Service {
        self.backup = Some(backup);
        self
    }

    /// The service of an engine embedded in a process: no keys, [`Settings::embedded`].
    pub fn embedded(engine: Engine) -> Service {
        Service::new(engine, Keys::default(), Settings::embedded())
    }

    /// Decides what a request may do: `needs` is its route's declared access
    /// ([`valori_api::Route::access`]), `key` the key it presents ([`api::presented_key`]).
    /// A public route needs no key; a read route any configured key; a write route the
    /// read-write key (a read-only key gets `forbidden`).
    pub fn authorize(&self, needs: api::Access, key: Option<&str>) -> Result<Access, NodeError> {
        match needs {
            api::Access::Public => Ok(self.keys.check(key).unwrap_or(Access::Read)),
            api::Access::Read => self.keys.check(key),
            api::Access::Write => match self.keys.check(key)? {
                Access::Write => Ok(Access::Write),
                Access::Read => Err(NodeError::Forbidden),
            },
        }
    }

    /// The metrics the node exports.
    pub fn metrics(&self) -> &Metrics {
        self.engine.metrics()
    }

    /// The metrics in Prometheus' text format, with the storage gauge brought up to date.
    pub fn metrics_text(&self) -> String {
        let m = self.engine.metrics();
        m.storage_bytes.set(self.engine.storage_bytes() as i64);
        m.render()
    }

    /// Why the node is not ready, if it is not (failed, fenced, shutting down, its writer
    /// gone).
    pub fn not_ready(&self) -> Option<String> {
        self.engine.not_ready()
    }

    /// Stops the engine's writer (an embedded handle closing its directory).
    pub fn shutdown(&self) {
        self.engine.shutdown();
    }

    /// Runs a read of the state on a blocking thread: no kernel read runs on the async
    /// workers, so a large answer never holds up other requests (health checks among them).
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Service) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let service = self.clone();
        blocking(move || f(&service)).await
    }

    /// The node's role and history now: the generation the followers' confirmations belong
    /// to.
    fn generation(&self) -> Generation {
        let role = self.engine.role();
        Generation {
            epoch: role.assignment.epoch,
            history: role.history,
        }
    }

    /// Through which sequence number writes are as durable as the replication mode promises:
    /// with synchronous replication, what the required followers hold (a write beyond it may
    /// still be lost by a failover); otherwise everything (`u64::MAX`).
    pub fn confirmed_through(&self) -> u64 {
        let needed = self.settings.sync.replicas;
        if needed == 0 {
            return u64::MAX;
        }
        self.followers
            .held_by(needed, self.generation(), self.engine.metrics())
    }

    /// With synchronous replication, waits until enough followers hold the write at `seq`;
    /// answers `replication_timeout` (outcome unknown: the write is durable here) otherwise.
    /// Only confirmations of the generation the write committed in count.
    async fn confirmed(&self, seq: u64) -> Result<(), NodeError> {
        let sync = self.settings.sync;
        if sync.replicas == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let waited = self
            .followers
            .wait_for(
                seq,
                sync.replicas,
                sync.timeout,
                self.generation(),
                self.engine.metrics(),
            )
            .await;
        let metrics = self.engine.metrics();
        metrics
            .sync_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        waited.map_err(|confirmed| {
            metrics.sync_timeouts.inc();
            NodeError::ReplicationTimeout {
                seq,
                confirmed,
                needed: sync.replicas,
                timeout_ms: sync.timeout.as_millis() as u64,
            }
        })
    }

    /// Refuses a client write on a follower (naming its leader), on a fenced leader, and on a
    /// leader too few of whose followers are in touch ([`MinReplicas`]).
    fn writable(&self) -> Result<(), NodeError> {
        self.engine.check_writable()?;
        let min = self.settings.min_replicas;
        if min.count == 0 {
            return Ok(());
        }
        let recent = self
            .followers
            .recent(min.max_lag, self.generation(), self.engine.metrics());
        if recent < min.count {
            self.engine.metrics().writes_refused_replicas.inc();
            return Err(NodeError::NotEnoughReplicas {
                confirmed: recent,
                needed: min.count,
                max_lag_ms: min.max_lag.as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Submits a client write: refused unless writable (a follower names its leader, a fenced
    /// leader says so), answered once durable (and, with synchronous replication, held by
    /// enough followers).
    async fn write(&self, event: Event) -> Result<Committed, NodeError> {
        self.writable()?;
        let committed = self.engine.submit(event).await?;
        self.confirmed(committed.seq).await?;
        Ok(committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_grant_by_exact_match_only() {
        let none = Keys::new(None, None);
        assert_eq!(none.check(None).unwrap(), Access::Write);
        assert_eq!(none.check(Some("anything")).unwrap(), Access::Write);

        let keys = Keys::new(Some("write-secret"), Some("read-secret"));
        assert_eq!(keys.check(Some("write-secret")).unwrap(), Access::Write);
        assert_eq!(keys.check(Some("read-secret")).unwrap(), Access::Read);
        for wrong in [
            None,
            Some(""),
            Some("write-secre"),
            Some("write-secret "),
            Some("WRITE-SECRET"),
        ] {
            assert!(
                matches!(keys.check(wrong), Err(NodeError::Unauthorized)),
                "{wrong:?}"
            );
        }

        let read_only = Keys::new(None, Some("r"));
        assert_eq!(read_only.check(Some("r")).unwrap(), Access::Read);
        assert!(read_only.check(None).is_err());
    }

    #[test]
    fn the_cluster_key_writes_beside_the_users_keys() {
        let keys = Keys::new(Some("w"), Some("r")).with_cluster_key(Some("c"));
        assert_eq!(keys.check(Some("c")).unwrap(), Access::Write);
        assert_eq!(keys.check(Some("w")).unwrap(), Access::Write);
        assert_eq!(keys.check(Some("r")).unwrap(), Access::Read);
        assert!(keys.check(Some("x")).is_err() && keys.check(None).is_err());
        // Alone, it still closes the node to requests without it.
        let only = Keys::new(None, None).with_cluster_key(Some("c"));
        assert_eq!(only.check(Some("c")).unwrap(), Access::Write);
        assert!(only.check(None).is_err());
    }
}
