//! The operations of the API, independent of the wire: HTTP ([`crate::http`]) and gRPC
//! ([`crate::grpc`]) both translate their requests into these calls, so the two give identical
//! results and errors for the same operation.

use valori_kernel::{
    Applied, CollectionSpec, Direction, Event, Fixed, HnswParams, IndexSpec, Metric, NewRecord,
    RecordRef, SearchParams, SearchScratch,
};

use crate::engine::Engine;
use crate::error::NodeError;

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
    /// The leader's URL when this node is a follower (writes are refused).
    pub follower_of: Option<String>,
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

/// Index choice of a new collection.
pub enum IndexIn {
    /// Exact scan.
    Flat,
    /// HNSW with optional parameters (defaults otherwise).
    Hnsw {
        /// Links per node.
        m: Option<u16>,
        /// Build candidate list.
        ef_construction: Option<u16>,
        /// Default search candidate list.
        ef_search: Option<u16>,
    },
}

/// A traversal's (node, depth) pairs, whether it was cut short, and the sequence number read.
pub type Visits = (Vec<(u64, u32)>, bool, u64);

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

/// Parses a metric name (`l2` when absent).
pub fn parse_metric(m: Option<&str>) -> Result<Metric, NodeError> {
    match m {
        None | Some("") => Ok(Metric::L2),
        Some(m) => Metric::parse(m).ok_or_else(|| {
            NodeError::BadRequest(format!("unknown metric {m:?}: use l2, ip or cosine"))
        }),
    }
}

/// Parses a traversal direction (`out` when absent).
pub fn parse_direction(d: Option<&str>) -> Result<Direction, NodeError> {
    match d.unwrap_or("out") {
        "out" | "" => Ok(Direction::Out),
        "in" => Ok(Direction::In),
        "both" => Ok(Direction::Both),
        other => Err(NodeError::BadRequest(format!(
            "unknown direction {other:?}: use out, in or both"
        ))),
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
        .map_err(|e| NodeError::Storage(format!("worker task failed: {e}")))?
}

impl Service {
    /// Refuses writes on a follower, naming its leader.
    pub fn writable(&self) -> Result<(), NodeError> {
        match &self.follower_of {
            Some(leader) => Err(NodeError::ReadOnlyFollower {
                leader: leader.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Creates a collection; returns the sequence number.
    pub async fn create_collection(
        &self,
        name: String,
        dimension: u32,
        metric: Option<&str>,
        index: IndexIn,
    ) -> Result<u64, NodeError> {
        self.writable()?;
        let metric = parse_metric(metric)?;
        let d = HnswParams::default();
        let index = match index {
            IndexIn::Flat => IndexSpec::Flat,
            IndexIn::Hnsw {
                m,
                ef_construction,
                ef_search,
            } => IndexSpec::Hnsw(HnswParams {
                m: m.unwrap_or(d.m),
                ef_construction: ef_construction.unwrap_or(d.ef_construction),
                ef_search: ef_search.unwrap_or(d.ef_search),
            }),
        };
        let c = self
            .engine
            .submit(Event::CreateCollection(CollectionSpec {
                name,
                dimension,
                metric,
                index,
            }))
            .await?;
        Ok(c.seq)
    }

    /// Drops a collection.
    pub async fn drop_collection(&self, name: String) -> Result<u64, NodeError> {
        self.writable()?;
        Ok(self
            .engine
            .submit(Event::DropCollection { name })
            .await?
            .seq)
    }

    /// Inserts records atomically; returns their ids and the sequence number. A bad component
    /// is reported with its record's position when `batch` (the batch routes), and as a plain
    /// [`NodeError::Value`] otherwise (the single-record routes).
    pub async fn insert(
        &self,
        collection: String,
        records: Vec<RecordIn>,
        batch: bool,
    ) -> Result<(Vec<u64>, u64), NodeError> {
        self.writable()?;
        if records.len() > self.max_batch {
            return Err(NodeError::BadRequest(format!(
                "batch has {} records, the limit is {}",
                records.len(),
                self.max_batch
            )));
        }
        let records = to_new_records(records, batch)?;
        let c = self
            .engine
            .submit(Event::Insert {
                collection,
                records,
            })
            .await?;
        let ids = match c.applied {
            Applied::Inserted { first, count } => (first..first + u64::from(count)).collect(),
            _ => Vec::new(),
        };
        Ok((ids, c.seq))
    }

    /// Deletes a record.
    pub async fn delete(&self, collection: String, id: u64) -> Result<u64, NodeError> {
        self.writable()?;
        Ok(self
            .engine
            .submit(Event::Delete { collection, id })
            .await?
            .seq)
    }

    /// Reads a record.
    pub fn get(&self, collection: &str, id: u64) -> Result<RecordOut, NodeError> {
        let k = self.engine.read()?;
        let r = k.get(collection, id)?;
        Ok(RecordOut {
            id,
            vector: r.vector.iter().map(|&x| Fixed(x).to_f64()).collect(),
            tag: r.tag,
            metadata: r.metadata.map(<[u8]>::to_vec),
            seq: k.seq(),
        })
    }

    /// Searches; results are a function of the sequence number returned with them (the index
    /// changes only with events). Runs on the caller's thread; see [`Service::search`].
    pub fn search_now(
        &self,
        collection: &str,
        vector: &[f64],
        params: &SearchParams,
        with_metadata: bool,
    ) -> Result<(Vec<HitOut>, u64), NodeError> {
        let query = to_fixed(vector)?;
        let kernel = self.engine.read()?;
        let hits = SCRATCH
            .with(|s| kernel.search_with(collection, &query, params, &mut s.borrow_mut()))?;
        let out = hits
            .iter()
            .map(|h| {
                let r = kernel.get(collection, h.id).ok();
                HitOut {
                    id: h.id,
                    distance: h.distance,
                    tag: r.as_ref().map_or(0, |r| r.tag),
                    metadata: with_metadata.then(|| r.and_then(|r| r.metadata.map(<[u8]>::to_vec))),
                }
            })
            .collect();
        Ok((out, kernel.seq()))
    }

    /// [`Service::search_now`] off the async threads.
    pub async fn search(
        &self,
        collection: String,
        vector: Vec<f64>,
        k: u32,
        tag: Option<u64>,
        ef: Option<u32>,
        with_metadata: bool,
    ) -> Result<(Vec<HitOut>, u64), NodeError> {
        // Refuse a bad vector before taking a worker thread.
        to_fixed(&vector)?;
        let service = self.clone();
        blocking(move || {
            service.search_now(
                &collection,
                &vector,
                &SearchParams { k, tag, ef },
                with_metadata,
            )
        })
        .await
    }

    /// Creates a graph node; returns its id and the sequence number.
    pub async fn create_node(
        &self,
        kind: String,
        record: Option<(String, u64)>,
        properties: Option<Vec<u8>>,
    ) -> Result<(u64, u64), NodeError> {
        self.writable()?;
        let c = self
            .engine
            .submit(Event::CreateNode {
                kind,
                record: record.map(|(collection, id)| RecordRef { collection, id }),
                properties,
            })
            .await?;
        match c.applied {
            Applied::Node(id) => Ok((id, c.seq)),
            _ => Err(NodeError::Storage("node creation produced no id".into())),
        }
    }

    /// Creates an edge; returns its id and the sequence number.
    pub async fn create_edge(
        &self,
        from: u64,
        to: u64,
        kind: String,
    ) -> Result<(u64, u64), NodeError> {
        self.writable()?;
        let c = self
            .engine
            .submit(Event::CreateEdge { from, to, kind })
            .await?;
        match c.applied {
            Applied::Edge(id) => Ok((id, c.seq)),
            _ => Err(NodeError::Storage("edge creation produced no id".into())),
        }
    }

    /// Deletes a node and its edges.
    pub async fn delete_node(&self, id: u64) -> Result<u64, NodeError> {
        self.writable()?;
        Ok(self.engine.submit(Event::DeleteNode { id }).await?.seq)
    }

    /// Deletes an edge.
    pub async fn delete_edge(&self, id: u64) -> Result<u64, NodeError> {
        self.writable()?;
        Ok(self.engine.submit(Event::DeleteEdge { id }).await?.seq)
    }

    /// A graph node, or `NodeNotFound`.
    pub fn node(&self, id: u64) -> Result<valori_kernel::graph::Node, NodeError> {
        let k = self.engine.read()?;
        let node = k.graph().node(id).cloned();
        Ok(node.ok_or(valori_kernel::Error::NodeNotFound { id })?)
    }

    /// A graph edge, or `EdgeNotFound`.
    pub fn edge(&self, id: u64) -> Result<valori_kernel::graph::Edge, NodeError> {
        let k = self.engine.read()?;
        let edge = k.graph().edge(id).cloned();
        Ok(edge.ok_or(valori_kernel::Error::EdgeNotFound { id })?)
    }

    /// Neighbours of a node: (node, edge, kind, outgoing), and the sequence number.
    #[allow(clippy::type_complexity)]
    pub fn neighbors(
        &self,
        id: u64,
        direction: Option<&str>,
        kinds: &[String],
    ) -> Result<(Vec<(u64, u64, String, bool)>, u64), NodeError> {
        let direction = parse_direction(direction)?;
        let k = self.engine.read()?;
        let list = k
            .neighbors(id, direction, kinds)?
            .into_iter()
            .map(|n| (n.node, n.edge, n.kind, n.outgoing))
            .collect();
        Ok((list, k.seq()))
    }

    /// Breadth-first traversal: (node, depth) pairs, whether it was cut short, sequence number.
    /// Runs on the caller's thread; see [`Service::traverse`].
    pub fn traverse_now(
        &self,
        start: u64,
        max_depth: u32,
        kinds: &[String],
        direction: Direction,
    ) -> Result<Visits, NodeError> {
        let k = self.engine.read()?;
        let t = k.traverse(start, max_depth, direction, kinds)?;
        Ok((t.nodes, t.truncated, k.seq()))
    }

    /// [`Service::traverse_now`] off the async threads.
    pub async fn traverse(
        &self,
        start: u64,
        max_depth: u32,
        kinds: Vec<String>,
        direction: Option<&str>,
    ) -> Result<Visits, NodeError> {
        let direction = parse_direction(direction)?;
        let service = self.clone();
        blocking(move || service.traverse_now(start, max_depth, &kinds, direction)).await
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
