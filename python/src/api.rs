//! What both modes offer: the operations, their results and their errors. The embedded engine
//! ([`crate::embedded`]) and the HTTP client ([`crate::remote`]) implement [`Api`]; the Python
//! class in `lib.rs` only converts arguments and results.

use std::path::Path;

use valori_node::service::{IndexIn, RecordIn};
use valori_node::NodeError;

/// Which Python exception an error becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `InvalidInputError`: the caller's input was refused (bad vector, unknown metric...).
    InvalidInput,
    /// `NotFoundError`: an unknown collection, record, node, edge or snapshot.
    NotFound,
    /// `UnauthorizedError`: no API key, a wrong one, or a read-only key used for a write.
    Unauthorized,
    /// `ConnectionError`: the server could not be reached or did not answer.
    Connection,
    /// `ValoriError`: anything else (a failed node, a follower refusing writes, a closed handle).
    Other,
}

/// An error with the node's stable code and message.
#[derive(Debug)]
pub struct ApiError {
    /// Which exception class.
    pub kind: Kind,
    /// The node's machine-readable code (`dimension_mismatch`, `not_found`...).
    pub code: String,
    /// The node's message.
    pub message: String,
}

impl ApiError {
    /// Classifies an error as the node reports it over HTTP, so that both modes raise the same
    /// exception for the same failure.
    pub fn from_status(status: u16, code: String, message: String) -> ApiError {
        let kind = match (status, code.as_str()) {
            (401, _) | (403, "forbidden") => Kind::Unauthorized,
            (404, _) => Kind::NotFound,
            (400 | 409 | 413 | 422, _) => Kind::InvalidInput,
            _ => Kind::Other,
        };
        ApiError {
            kind,
            code,
            message,
        }
    }

    /// An error raised by the client itself.
    pub fn new(kind: Kind, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A local file that could not be read or written (`NotFoundError` when it is missing).
    pub fn io(what: String, e: &std::io::Error) -> ApiError {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            Kind::NotFound
        } else {
            Kind::Other
        };
        ApiError::new(kind, "io_error", format!("{what}: {e}"))
    }

    /// A bad argument.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::InvalidInput, "bad_request", message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        ApiError::from_status(e.status(), e.code().to_string(), e.to_string())
    }
}

/// Result of an operation.
pub type Res<T> = Result<T, ApiError>;

/// A collection's description.
pub struct CollectionInfo {
    pub name: String,
    pub dimension: u32,
    pub metric: String,
    /// `hnsw` or `flat`.
    pub index: String,
    pub records: u64,
    pub next_id: u64,
}

/// A stored record.
pub struct Record {
    pub id: u64,
    pub vector: Vec<f64>,
    pub tag: u64,
    pub metadata: Option<Vec<u8>>,
}

/// One search result.
pub struct Hit {
    pub id: u64,
    /// Exact integer distance.
    pub distance: i128,
    pub tag: u64,
    /// Present when asked for; `Some(None)` when the record has none.
    pub metadata: Option<Option<Vec<u8>>>,
}

/// A graph node.
pub struct GraphNode {
    pub id: u64,
    pub kind: String,
    pub record: Option<(String, u64)>,
    pub properties: Option<Vec<u8>>,
}

/// A graph edge.
pub struct Edge {
    pub id: u64,
    pub from: u64,
    pub to: u64,
    pub kind: String,
}

/// A neighbour of a node.
pub struct Neighbor {
    pub node: u64,
    pub edge: u64,
    pub kind: String,
    /// `out` or `in`.
    pub direction: String,
}

/// A breadth-first traversal.
pub struct Traversal {
    pub nodes: Vec<(u64, u32)>,
    pub truncated: bool,
}

/// Sequence number and hashes (hex).
pub struct State {
    pub seq: u64,
    pub chain_hash: String,
    pub state_hash: String,
}

/// A search request.
pub struct Query {
    pub collection: String,
    pub vector: Vec<f64>,
    pub k: u32,
    pub tag: Option<u64>,
    pub ef: Option<u32>,
    pub with_metadata: bool,
}

/// The operations both modes implement, with the same results and errors.
pub trait Api: Send + Sync {
    fn create_collection(
        &self,
        name: String,
        dimension: u32,
        metric: &str,
        index: IndexIn,
    ) -> Res<()>;
    fn drop_collection(&self, name: String) -> Res<()>;
    fn collections(&self) -> Res<Vec<CollectionInfo>>;
    fn collection(&self, name: &str) -> Res<CollectionInfo>;
    /// Inserts atomically; `batch` selects how a bad vector is reported (with its position).
    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>>;
    fn get(&self, collection: &str, id: u64) -> Res<Record>;
    fn delete(&self, collection: String, id: u64) -> Res<()>;
    fn search(&self, query: Query) -> Res<Vec<Hit>>;
    fn create_node(
        &self,
        kind: String,
        record: Option<(String, u64)>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64>;
    fn get_node(&self, id: u64) -> Res<GraphNode>;
    fn delete_node(&self, id: u64) -> Res<()>;
    fn create_edge(&self, from: u64, to: u64, kind: String) -> Res<u64>;
    fn get_edge(&self, id: u64) -> Res<Edge>;
    fn delete_edge(&self, id: u64) -> Res<()>;
    fn neighbors(&self, id: u64, direction: &str, kinds: &[String]) -> Res<Vec<Neighbor>>;
    fn traverse(
        &self,
        start: u64,
        max_depth: u32,
        kinds: Vec<String>,
        direction: &str,
    ) -> Res<Traversal>;
    /// Takes a snapshot; copies it to `copy_to` when given. Returns the path of the copy, or
    /// else of the snapshot (on the server, in remote mode).
    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String>;
    /// Replaces the whole state with the snapshot file at `path`'s.
    fn restore(&self, path: &Path) -> Res<State>;
    fn state(&self) -> Res<State>;
    /// Releases the resources (the database, for the embedded engine).
    fn close(&self);
}
