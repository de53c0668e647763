//! The operations of the API, independent of the wire: HTTP ([`crate::http`]) and gRPC
//! ([`crate::grpc`]) both translate their requests into these calls, so the two give identical
//! results and errors for the same operation.

use std::sync::Arc;

use valori_api as api;
use valori_kernel::{
    Applied, CollectionSpec, Direction, Event, Fixed, Hash, HnswParams, IndexSpec, Metric,
    NewRecord, RecordRef, SearchParams, SearchScratch,
};

use crate::engine::Engine;
use crate::error::NodeError;
use crate::limits::{MAX_LOG_PAGE, MAX_LOG_WAIT_MS, MAX_SNAPSHOT_UPLOAD_BYTES};
use crate::replication::Followers;
use crate::store::{Entry, SnapshotFile};

/// What a request's API key allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Reads only (the read-only key).
    Read,
    /// Reads and writes (the read-write key, or any request when no key is configured).
    Write,
}

/// The API keys a node accepts, shared by HTTP and gRPC. They are held as blake3 digests and
/// compared with blake3's constant-time equality, so how long a check takes does not reveal how
/// much of a presented key was right, nor the keys' lengths.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    write: Option<blake3::Hash>,
    read: Option<blake3::Hash>,
}

impl Keys {
    /// The read-write and the read-only key; `None` for one not configured.
    pub fn new(write: Option<&str>, read: Option<&str>) -> Self {
        let digest = |k: &str| blake3::hash(k.as_bytes());
        Keys {
            write: write.map(digest),
            read: read.map(digest),
        }
    }

    /// What a request may do, given a lookup of its headers (or gRPC metadata) by lower-case
    /// name: the key is read by [`api::presented_key`], the one parser of every API.
    pub fn check_headers<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Access, NodeError> {
        self.check(api::presented_key(header))
    }

    /// What a request presenting `key` may do: without configured keys anything; otherwise
    /// the presented key must be one of them.
    pub fn check(&self, key: Option<&str>) -> Result<Access, NodeError> {
        if self.write.is_none() && self.read.is_none() {
            return Ok(Access::Write);
        }
        let presented = blake3::hash(key.ok_or(NodeError::Unauthorized)?.as_bytes());
        // Both comparisons run whatever the first one found.
        let write = self.write.is_some_and(|k| k == presented);
        let read = self.read.is_some_and(|k| k == presented);
        match (write, read) {
            (true, _) => Ok(Access::Write),
            (false, true) => Ok(Access::Read),
            (false, false) => Err(NodeError::Unauthorized),
        }
    }
}

/// The API's view of a node: its engine and the request limits.
#[derive(Clone)]
pub struct Service {
    /// The engine.
    pub engine: Engine,
    /// Most records in one batch insert.
    pub max_batch: usize,
    /// Largest response a search, a neighbour list or a traversal may build, in bytes.
    pub max_response_bytes: usize,
    /// Most event bytes in one log page (a page always holds at least one entry).
    pub max_log_page_bytes: usize,
    /// The followers that read this node's log.
    pub followers: Arc<Followers>,
    /// Synchronous replication: how many followers must hold a write before it is answered.
    pub sync: SyncPolicy,
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

/// What a follower says of itself when it reads the log.
#[derive(Clone, Debug, Default)]
pub struct FollowerHello {
    /// Its name.
    pub name: String,
    /// The highest epoch it has seen.
    pub epoch: Option<u64>,
    /// Its chain hash (hex) at the sequence number before the first one it asks for.
    pub chain: Option<String>,
}

/// A page of the retained log.
pub struct LogPageOut {
    /// Entries from the first asked for on, in order.
    pub entries: Vec<Entry>,
    /// The first sequence number still retained, if the log holds any.
    pub first_retained: Option<u64>,
    /// The node's sequence number.
    pub head: u64,
    /// The epoch of the node's role.
    pub epoch: u64,
    /// The node's history generation.
    pub history: u64,
}

/// A record as a client sends it.
pub struct RecordIn {
    /// Components, converted exactly to Q16.16.
    pub vector: Vec<f64>,
    /// Tag.
    pub tag: u64,
    /// Metadata bytes.
    pub metadata: Option<Vec<u8>>,
}

/// A stored record as a client sees it.
pub struct RecordOut {
    /// Id.
    pub id: u64,
    /// Components (exact: every Q16.16 value is an f64).
    pub vector: Vec<f64>,
    /// Tag.
    pub tag: u64,
    /// Metadata bytes.
    pub metadata: Option<Vec<u8>>,
    /// Sequence number of the state read.
    pub seq: u64,
}

/// One search result.
pub struct HitOut {
    /// Record id.
    pub id: u64,
    /// Exact integer distance.
    pub distance: i128,
    /// Record tag.
    pub tag: u64,
    /// Metadata, when asked for (`Some(None)`: asked, the record has none).
    pub metadata: Option<Option<Vec<u8>>>,
}

/// Search results and the sequence number of the state searched.
pub struct Hits {
    /// Nearest first, ties by id.
    pub hits: Vec<HitOut>,
    /// The results are a function of this sequence number.
    pub seq: u64,
}

/// Sequence number and hashes, at the current state or a past sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateAt {
    /// The sequence number.
    pub seq: u64,
    /// Chain hash at `seq`.
    pub chain_hash: Hash,
    /// State hash: only for the current state.
    pub state_hash: Option<Hash>,
    /// The epoch of the node's role.
    pub epoch: u64,
}

/// Converts client floats exactly to Q16.16, naming the first bad component.
pub fn to_fixed(v: &[f64]) -> Result<Vec<Fixed>, NodeError> {
    v.iter()
        .enumerate()
        .map(|(index, &x)| Fixed::from_f64(x).map_err(|error| NodeError::Value { index, error }))
        .collect()
}

/// Converts client records to kernel records (exact Q16.16), naming the first bad component
/// and, when `batch`, its record.
pub fn to_new_records(records: Vec<RecordIn>, batch: bool) -> Result<Vec<NewRecord>, NodeError> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(NewRecord {
                vector: record_vector(i, &r.vector, batch)?,
                tag: r.tag,
                metadata: r.metadata,
            })
        })
        .collect()
}

/// Converts record `i`'s vector, reporting a bad component with the record's position when
/// `batch`.
pub fn record_vector(i: usize, vector: &[f64], batch: bool) -> Result<Vec<Fixed>, NodeError> {
    to_fixed(vector).map_err(|e| match e {
        NodeError::Value { index, error } if batch => {
            NodeError::BadRequest(format!("record {i}: vector component {index}: {error}"))
        }
        other => other,
    })
}

/// A search distance in float units (distance / 2^32): squared L2 for `l2` and `cosine`, the
/// negated inner product for `ip`. Output only; ordering uses the exact integer.
#[allow(clippy::float_arithmetic)]
pub fn score(distance: i128) -> f64 {
    distance as f64 / 4_294_967_296.0
}

/// Parses a metric name (`l2` when empty), for clients that name it in a string.
pub fn parse_metric(m: &str) -> Result<api::Metric, NodeError> {
    match m {
        "" => Ok(api::Metric::L2),
        m => Metric::parse(m).map(metric_to_wire).ok_or_else(|| {
            NodeError::BadRequest(format!("unknown metric {m:?}: use l2, ip or cosine"))
        }),
    }
}

/// Parses a traversal direction (`out` when empty), for clients that name it in a string.
pub fn parse_direction(d: &str) -> Result<api::Direction, NodeError> {
    match d {
        "out" | "" => Ok(api::Direction::Out),
        "in" => Ok(api::Direction::In),
        "both" => Ok(api::Direction::Both),
        other => Err(NodeError::BadRequest(format!(
            "unknown direction {other:?}: use out, in or both"
        ))),
    }
}

/// The kernel's metric as the API names it.
pub fn metric_to_wire(m: Metric) -> api::Metric {
    match m {
        Metric::L2 => api::Metric::L2,
        Metric::InnerProduct => api::Metric::Ip,
        Metric::Cosine => api::Metric::Cosine,
    }
}

fn metric_from_wire(m: api::Metric) -> Metric {
    match m {
        api::Metric::L2 => Metric::L2,
        api::Metric::Ip => Metric::InnerProduct,
        api::Metric::Cosine => Metric::Cosine,
    }
}

fn direction_from_wire(d: api::Direction) -> Direction {
    match d {
        api::Direction::Out => Direction::Out,
        api::Direction::In => Direction::In,
        api::Direction::Both => Direction::Both,
    }
}

/// A collection's description, the one every API gives.
pub fn collection_info(c: &valori_kernel::Collection) -> api::CollectionInfo {
    let s = c.spec();
    api::CollectionInfo {
        name: s.name.clone(),
        dimension: s.dimension,
        metric: metric_to_wire(s.metric),
        index: match s.index {
            IndexSpec::Flat => api::IndexInfo::Flat,
            IndexSpec::Hnsw(p) => api::IndexInfo::Hnsw {
                m: p.m,
                ef_construction: p.ef_construction,
                ef_search: p.ef_search,
            },
        },
        records: c.len(),
        next_id: c.next_id(),
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<SearchScratch> = std::cell::RefCell::new(SearchScratch::new());
}

/// Runs CPU-bound kernel work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("worker task failed: {e}")))?
}

impl Service {
    /// Refuses writes on a follower (naming its leader) and on a fenced leader.
    pub fn writable(&self) -> Result<(), NodeError> {
        self.engine.check_writable()
    }

    /// With synchronous replication, waits until enough followers hold the write at `seq`;
    /// answers `replication_timeout` (outcome unknown: the write is durable here) otherwise.
    async fn confirmed(&self, seq: u64) -> Result<(), NodeError> {
        if self.sync.replicas == 0 {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let waited = self
            .followers
            .wait_for(seq, self.sync.replicas, self.sync.timeout)
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
                needed: self.sync.replicas,
                timeout_ms: self.sync.timeout.as_millis() as u64,
            }
        })
    }

    /// Submits a client write: refused unless writable, answered once durable (and, with
    /// synchronous replication, held by enough followers).
    async fn write(&self, event: Event) -> Result<crate::engine::Committed, NodeError> {
        self.writable()?;
        let committed = self.engine.submit(event).await?;
        self.confirmed(committed.seq).await?;
        Ok(committed)
    }

    /// The node's role.
    pub fn role_info(&self) -> Result<api::RoleInfo, NodeError> {
        let role = self.engine.role();
        Ok(api::RoleInfo {
            role: role.assignment.role,
            epoch: role.assignment.epoch,
            leader_url: role.assignment.leader_url.clone(),
            seq: self.engine.seq()?,
            seen_epoch: role.seen_epoch,
            writable: role.writable(),
        })
    }

    /// Gives the node a role (see [`crate::role::RoleState::decide`]).
    pub async fn set_role(&self, req: api::SetRole) -> Result<api::RoleInfo, NodeError> {
        self.engine
            .set_role(crate::role::Assignment {
                role: req.role,
                epoch: req.epoch,
                leader_url: req.leader_url.map(|u| u.trim_end_matches('/').to_string()),
            })
            .await?;
        self.role_info()
    }

    /// A follower reading the log says who it is: its confirmation is recorded (proven when
    /// its chain hash matches ours there), and a higher epoch than this node has seen fences
    /// it when it leads.
    pub async fn hello(&self, from: u64, hello: FollowerHello) -> Result<(), NodeError> {
        if !crate::replication::valid_follower_name(&hello.name) {
            return Err(NodeError::BadRequest(format!(
                "{} must be 1 to {} characters of A-Z a-z 0-9 . _ : -",
                api::FOLLOWER_HEADER,
                crate::limits::MAX_FOLLOWER_NAME_BYTES
            )));
        }
        if let Some(epoch) = hello.epoch {
            self.engine.observe_epoch(epoch)?;
        }
        let before = from.saturating_sub(1);
        let proven = match hello.chain {
            None => None,
            Some(theirs) => {
                let engine = self.engine.clone();
                Some(
                    blocking(move || {
                        Ok(engine.chain_at(before).ok().map(hex::encode) == Some(theirs))
                    })
                    .await?,
                )
            }
        };
        self.followers
            .asked(&hello.name, from, proven, self.engine.metrics());
        Ok(())
    }

    /// Waits up to `wait_ms` for the node's sequence number to reach `from` (a long poll).
    pub async fn wait_for_entries(&self, from: u64, wait_ms: u32) {
        if wait_ms == 0 {
            return;
        }
        let mut seq = self.engine.seq_watch();
        let wait = std::time::Duration::from_millis(u64::from(wait_ms.min(MAX_LOG_WAIT_MS)));
        let _ = tokio::time::timeout(wait, seq.wait_for(|&s| s >= from)).await;
    }

    /// Creates a collection; returns the sequence number.
    pub async fn create_collection(&self, req: api::CreateCollection) -> Result<u64, NodeError> {
        let d = HnswParams::default();
        let index = match req.index {
            Some(api::IndexConfig::Flat) => IndexSpec::Flat,
            Some(api::IndexConfig::Hnsw {
                m,
                ef_construction,
                ef_search,
            }) => IndexSpec::Hnsw(HnswParams {
                m: m.unwrap_or(d.m),
                ef_construction: ef_construction.unwrap_or(d.ef_construction),
                ef_search: ef_search.unwrap_or(d.ef_search),
            }),
            None => IndexSpec::Hnsw(d),
        };
        let c = self
            .write(Event::CreateCollection(CollectionSpec {
                name: req.name,
                dimension: req.dimension,
                metric: metric_from_wire(req.metric.unwrap_or_default()),
                index,
            }))
            .await?;
        Ok(c.seq)
    }

    /// Drops a collection.
    pub async fn drop_collection(&self, name: String) -> Result<u64, NodeError> {
        Ok(self.write(Event::DropCollection { name }).await?.seq)
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

    /// Every collection, by name.
    pub async fn collections(&self) -> Result<api::CollectionList, NodeError> {
        self.off_thread(|s| s.collections_now()).await
    }

    /// [`Service::collections`] on the caller's thread (embedded callers).
    pub fn collections_now(&self) -> Result<api::CollectionList, NodeError> {
        let kernel = self.engine.read()?;
        Ok(api::CollectionList {
            collections: kernel.collections().map(collection_info).collect(),
            seq: kernel.seq(),
        })
    }

    /// One collection, or `CollectionNotFound`.
    pub async fn collection(&self, name: String) -> Result<api::CollectionInfo, NodeError> {
        self.off_thread(move |s| s.collection_now(&name)).await
    }

    /// [`Service::collection`] on the caller's thread (embedded callers).
    pub fn collection_now(&self, name: &str) -> Result<api::CollectionInfo, NodeError> {
        let kernel = self.engine.read()?;
        let c = kernel
            .collection(name)
            .ok_or_else(|| valori_kernel::Error::CollectionNotFound { name: name.into() })?;
        Ok(collection_info(c))
    }

    /// Inserts records atomically; returns their ids and the sequence number. A bad component
    /// is reported with its record's position when `batch` (the batch routes), and as a plain
    /// [`NodeError::Value`] otherwise (the single-record routes).
    pub async fn insert(
        &self,
        collection: String,
        records: Vec<RecordIn>,
        batch: bool,
    ) -> Result<api::BatchInserted, NodeError> {
        self.writable()?;
        if records.len() > self.max_batch {
            return Err(NodeError::Limit {
                what: "records in a batch",
                value: records.len() as u64,
                max: self.max_batch as u64,
            });
        }
        let records = to_new_records(records, batch)?;
        let c = self
            .write(Event::Insert {
                collection,
                records,
            })
            .await?;
        match c.applied {
            Applied::Inserted { first, count } => Ok(api::BatchInserted {
                ids: (first..first + u64::from(count)).collect(),
                seq: c.seq,
            }),
            other => Err(NodeError::Internal(format!(
                "an insert applied as {other:?}"
            ))),
        }
    }

    /// Deletes a record.
    pub async fn delete(&self, collection: String, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::Delete { collection, id }).await?.seq)
    }

    /// Reads a record.
    pub async fn get(&self, collection: String, id: u64) -> Result<RecordOut, NodeError> {
        self.off_thread(move |s| s.get_now(&collection, id)).await
    }

    /// [`Service::get`] on the caller's thread (embedded callers).
    pub fn get_now(&self, collection: &str, id: u64) -> Result<RecordOut, NodeError> {
        let kernel = self.engine.read()?;
        let r = kernel.get(collection, id)?;
        Ok(RecordOut {
            id,
            vector: r.vector.iter().map(|&x| Fixed(x).to_f64()).collect(),
            tag: r.tag,
            metadata: r.metadata.map(<[u8]>::to_vec),
            seq: kernel.seq(),
        })
    }

    /// Searches; results are a function of the sequence number returned with them (the index
    /// changes only with events). Runs on the caller's thread; see [`Service::search`].
    pub fn search_now(
        &self,
        collection: &str,
        req: &api::SearchRequest,
    ) -> Result<Hits, NodeError> {
        let query = to_fixed(&req.vector)?;
        let params = SearchParams {
            k: req.k,
            tag: req.tag,
            ef: req.ef,
        };
        let kernel = self.engine.read()?;
        let found = SCRATCH
            .with(|s| kernel.search_with(collection, &query, &params, &mut s.borrow_mut()))?;
        let mut size = ResponseSize::new(self.max_response_bytes);
        let mut hits = Vec::with_capacity(found.len());
        for h in found.iter() {
            let r = kernel.get(collection, h.id).ok();
            let metadata = req
                .with_metadata
                .then(|| r.as_ref().and_then(|r| r.metadata.map(<[u8]>::to_vec)));
            size.add(
                HIT_BYTES
                    + metadata
                        .as_ref()
                        .map_or(0, |m| base64_len(m.as_ref().map_or(0, Vec::len))),
            )?;
            hits.push(HitOut {
                id: h.id,
                distance: h.distance,
                tag: r.as_ref().map_or(0, |r| r.tag),
                metadata,
            });
        }
        Ok(Hits {
            hits,
            seq: kernel.seq(),
        })
    }

    /// [`Service::search_now`] off the async threads.
    pub async fn search(
        &self,
        collection: String,
        req: api::SearchRequest,
    ) -> Result<Hits, NodeError> {
        // Refuse a bad vector before taking a worker thread.
        to_fixed(&req.vector)?;
        let service = self.clone();
        blocking(move || service.search_now(&collection, &req)).await
    }

    /// Creates a graph node; returns its id and the sequence number.
    pub async fn create_node(
        &self,
        kind: String,
        record: Option<api::RecordRef>,
        properties: Option<Vec<u8>>,
    ) -> Result<api::Created, NodeError> {
        let c = self
            .write(Event::CreateNode {
                kind,
                record: record.map(|r| RecordRef {
                    collection: r.collection,
                    id: r.id,
                }),
                properties,
            })
            .await?;
        match c.applied {
            Applied::Node(id) => Ok(api::Created { id, seq: c.seq }),
            other => Err(NodeError::Internal(format!(
                "a node creation applied as {other:?}"
            ))),
        }
    }

    /// Creates an edge; returns its id and the sequence number.
    pub async fn create_edge(&self, req: api::CreateEdge) -> Result<api::Created, NodeError> {
        let c = self
            .write(Event::CreateEdge {
                from: req.from,
                to: req.to,
                kind: req.kind,
            })
            .await?;
        match c.applied {
            Applied::Edge(id) => Ok(api::Created { id, seq: c.seq }),
            other => Err(NodeError::Internal(format!(
                "an edge creation applied as {other:?}"
            ))),
        }
    }

    /// Deletes a node and its edges.
    pub async fn delete_node(&self, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::DeleteNode { id }).await?.seq)
    }

    /// Deletes an edge.
    pub async fn delete_edge(&self, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::DeleteEdge { id }).await?.seq)
    }

    /// A graph node, or `NodeNotFound`.
    pub async fn node(&self, id: u64) -> Result<valori_kernel::graph::Node, NodeError> {
        self.off_thread(move |s| s.node_now(id)).await
    }

    /// [`Service::node`] on the caller's thread (embedded callers).
    pub fn node_now(&self, id: u64) -> Result<valori_kernel::graph::Node, NodeError> {
        let kernel = self.engine.read()?;
        let node = kernel.graph().node(id).cloned();
        Ok(node.ok_or(valori_kernel::Error::NodeNotFound { id })?)
    }

    /// A graph edge, or `EdgeNotFound`.
    pub async fn edge(&self, id: u64) -> Result<valori_kernel::graph::Edge, NodeError> {
        self.off_thread(move |s| s.edge_now(id)).await
    }

    /// [`Service::edge`] on the caller's thread (embedded callers).
    pub fn edge_now(&self, id: u64) -> Result<valori_kernel::graph::Edge, NodeError> {
        let kernel = self.engine.read()?;
        let edge = kernel.graph().edge(id).cloned();
        Ok(edge.ok_or(valori_kernel::Error::EdgeNotFound { id })?)
    }

    /// Neighbours of a node, and the sequence number.
    pub async fn neighbors(
        &self,
        id: u64,
        direction: api::Direction,
        kinds: Vec<String>,
    ) -> Result<api::Neighbors, NodeError> {
        self.off_thread(move |s| s.neighbors_now(id, direction, &kinds))
            .await
    }

    /// [`Service::neighbors`] on the caller's thread (embedded callers).
    pub fn neighbors_now(
        &self,
        id: u64,
        direction: api::Direction,
        kinds: &[String],
    ) -> Result<api::Neighbors, NodeError> {
        let kinds = filter_kinds(kinds)?;
        let kernel = self.engine.read()?;
        let mut size = ResponseSize::new(self.max_response_bytes);
        let mut neighbors = Vec::new();
        for n in kernel.neighbors(id, direction_from_wire(direction), &kinds)? {
            size.add(NEIGHBOR_BYTES + n.kind.len())?;
            neighbors.push(api::Neighbor {
                node: n.node,
                edge: n.edge,
                kind: n.kind,
                direction: if n.outgoing {
                    api::EdgeDirection::Out
                } else {
                    api::EdgeDirection::In
                },
            });
        }
        Ok(api::Neighbors {
            neighbors,
            seq: kernel.seq(),
        })
    }

    /// Breadth-first traversal. Runs on the caller's thread; see [`Service::traverse`].
    pub fn traverse_now(&self, req: &api::TraverseRequest) -> Result<api::Traversal, NodeError> {
        let kinds = filter_kinds(&req.kinds)?;
        let kernel = self.engine.read()?;
        let t = kernel.traverse(
            req.start,
            req.max_depth,
            direction_from_wire(req.direction.unwrap_or_default()),
            &kinds,
        )?;
        Ok(api::Traversal {
            nodes: t
                .nodes
                .into_iter()
                .map(|(node, depth)| api::Visit { node, depth })
                .collect(),
            truncated: t.truncated,
            seq: kernel.seq(),
        })
    }

    /// [`Service::traverse_now`] off the async threads.
    pub async fn traverse(&self, req: api::TraverseRequest) -> Result<api::Traversal, NodeError> {
        let service = self.clone();
        blocking(move || service.traverse_now(&req)).await
    }

    /// At most `limit` retained log entries from `from` on, with the node's head, epoch and
    /// history generation. Reads storage: run it off the async threads.
    pub fn log_page(&self, from: u64, limit: u32) -> Result<LogPageOut, NodeError> {
        if limit == 0 {
            return Err(NodeError::BadRequest("limit must be at least 1".into()));
        }
        if limit > MAX_LOG_PAGE {
            return Err(NodeError::Limit {
                what: "log entries in a page",
                value: limit.into(),
                max: MAX_LOG_PAGE.into(),
            });
        }
        let role = self.engine.role();
        Ok(LogPageOut {
            first_retained: self.engine.first_retained()?,
            entries: self
                .engine
                .entries(from, limit as usize, self.max_log_page_bytes)?,
            head: self.engine.seq()?,
            epoch: role.assignment.epoch,
            history: role.history,
        })
    }

    /// Each follower's confirmed sequence number and lag (on a leader).
    pub fn replication_status(&self) -> Result<api::ReplicationStatus, NodeError> {
        Ok(self.followers.status(self.engine.seq()?))
    }

    /// Opens snapshot `id` for streaming, with its length. The open file stays readable even
    /// if retention removes its name meanwhile.
    pub async fn open_snapshot(&self, id: u64) -> Result<(tokio::fs::File, u64), NodeError> {
        let file = self
            .engine
            .snapshots()?
            .into_iter()
            .find(|s| s.seq == id)
            .ok_or_else(|| NodeError::NotFound(format!("no snapshot {id}")))?;
        let storage = |e: std::io::Error| NodeError::Storage(format!("reading snapshot {id}: {e}"));
        let f = tokio::fs::File::open(&file.path).await.map_err(storage)?;
        let len = f.metadata().await.map_err(storage)?.len();
        Ok((f, len))
    }

    /// Replaces the whole state with a snapshot that arrives as a stream of chunks (an HTTP
    /// body, a gRPC client stream). The chunks go to a file in the snapshot directory, which
    /// is then mapped, verified and renamed into place: the upload is never held in the heap,
    /// only the state decoded from it. More than [`MAX_SNAPSHOT_UPLOAD_BYTES`] is refused, and
    /// a refused or failed upload leaves nothing behind.
    pub async fn restore<B: AsRef<[u8]>>(
        &self,
        chunks: impl futures_util::Stream<Item = Result<B, NodeError>>,
    ) -> Result<SnapshotFile, NodeError> {
        self.writable()?;
        // One upload at a time: each may be 8 GiB on the disk before it is verified.
        let _one = UPLOADS.try_acquire().map_err(|_| {
            NodeError::Busy("another snapshot upload is in progress; retry when it is done".into())
        })?;
        // Removed however this ends: refused, failed, or dropped with a client that went away
        // (after a successful install the file has been renamed into place).
        let upload = RemoveOnDrop(self.engine.upload_path());
        receive(chunks, &upload.0).await?;
        self.engine.install_file(&upload.0, false).await
    }

    /// The sequence number and chain hash at `seq` (the current one when `None`), and the
    /// state hash when that is the current state. A past sequence number is answered from the
    /// retained log or a snapshot taken there; a future one is not found. Computing the state
    /// hash reads the whole state: run it off the async threads.
    pub fn state_at(&self, seq: Option<u64>) -> Result<StateAt, NodeError> {
        let epoch = self.engine.role().assignment.epoch;
        // A past sequence number needs only its chain hash: the whole state is not hashed.
        if let Some(seq) = seq {
            let head = self.engine.seq()?;
            if seq < head {
                return Ok(StateAt {
                    seq,
                    chain_hash: self.engine.chain_at(seq)?,
                    state_hash: None,
                    epoch,
                });
            }
        }
        let now = self.engine.state()?;
        match seq {
            None => Ok(StateAt {
                seq: now.seq,
                chain_hash: now.chain_hash,
                state_hash: Some(now.state_hash),
                epoch,
            }),
            Some(seq) if seq > now.seq => Err(NodeError::NotFound(format!(
                "sequence number {seq} is in the future (current is {})",
                now.seq
            ))),
            Some(seq) if seq == now.seq => Ok(StateAt {
                seq,
                chain_hash: now.chain_hash,
                state_hash: Some(now.state_hash),
                epoch,
            }),
            Some(seq) => Ok(StateAt {
                seq,
                chain_hash: self.engine.chain_at(seq)?,
                state_hash: None,
                epoch,
            }),
        }
    }
}

/// Snapshot uploads in progress in this process (one at a time).
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A temporary file removed when this is dropped (if it still exists).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a stream of chunks to a new file at `path`, refusing more than
/// [`MAX_SNAPSHOT_UPLOAD_BYTES`].
async fn receive<B: AsRef<[u8]>>(
    chunks: impl futures_util::Stream<Item = Result<B, NodeError>>,
    path: &std::path::Path,
) -> Result<(), NodeError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let failed = |e: &dyn std::fmt::Display| NodeError::Storage(format!("receiving snapshot: {e}"));
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| failed(&e))?;
    let mut total = 0usize;
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let data = chunk.as_ref();
        total += data.len();
        if total > MAX_SNAPSHOT_UPLOAD_BYTES {
            return Err(NodeError::PayloadTooLarge {
                limit: MAX_SNAPSHOT_UPLOAD_BYTES,
            });
        }
        file.write_all(data).await.map_err(|e| failed(&e))?;
    }
    file.flush().await.map_err(|e| failed(&e))
}

/// The distinct kinds of an edge filter (each edge is compared with every one of them), at
/// most [`MAX_FILTER_KINDS`].
fn filter_kinds(kinds: &[String]) -> Result<Vec<String>, NodeError> {
    let mut distinct = kinds.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > crate::limits::MAX_FILTER_KINDS {
        return Err(NodeError::Limit {
            what: "distinct edge kinds in a filter",
            value: distinct.len() as u64,
            max: crate::limits::MAX_FILTER_KINDS as u64,
        });
    }
    Ok(distinct)
}

/// Bytes a search hit takes in JSON besides its metadata (id, distance, tag, punctuation).
const HIT_BYTES: usize = 80;
/// Bytes a neighbour takes in JSON besides its kind.
const NEIGHBOR_BYTES: usize = 80;

/// The length of `n` bytes in base64.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Counts the bytes of a response as it is built, and refuses it past the limit before it is
/// built whole.
struct ResponseSize {
    bytes: usize,
    max: usize,
}

impl ResponseSize {
    fn new(max: usize) -> ResponseSize {
        ResponseSize { bytes: 0, max }
    }

    fn add(&mut self, n: usize) -> Result<(), NodeError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max {
            return Err(NodeError::Limit {
                what: "the response's size in bytes (--max-response-bytes; ask for fewer results or without metadata)",
                value: self.bytes as u64,
                max: self.max as u64,
            });
        }
        Ok(())
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
}
