//! What both modes offer: the operations, their results and their errors. The embedded engine
//! ([`crate::embedded`]) and the HTTP client ([`crate::remote`]) implement [`Api`]; the Python
//! class in `lib.rs` only converts arguments and results.

use std::path::Path;

use valori_api as wire;
use valori_node::service::{HitOut, RecordIn, RecordOut};
use valori_node::NodeError;

/// Which Python exception an error becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `InvalidInputError`: the caller's input was refused (bad vector, unknown metric...).
    InvalidInput,
    /// `NotFoundError`: an unknown collection, record, node, edge or snapshot.
    NotFound,
    /// `UnauthorizedError`: no API key, or a wrong one (401).
    Unauthorized,
    /// `ForbiddenError`: a read-only key used for a write or admin operation (403).
    Forbidden,
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

/// Writes a file at `dest` so that a failure leaves what was there before: into a temporary
/// file beside it, synced, then renamed over `dest` (and the directory synced).
pub fn write_atomically(dest: &Path, write: impl FnOnce(&mut std::fs::File) -> Res<()>) -> Res<()> {
    let what = || format!("cannot write the snapshot to {}", dest.display());
    let name = dest
        .file_name()
        .ok_or_else(|| ApiError::invalid(format!("{} names no file", dest.display())))?;
    let tmp = dest.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(|e| ApiError::io(what(), &e))?;
        write(&mut file)?;
        file.sync_all().map_err(|e| ApiError::io(what(), &e))?;
        std::fs::rename(&tmp, dest).map_err(|e| ApiError::io(what(), &e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ApiError::io(what(), &e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl ApiError {
    /// Classifies an error as the node reports it over HTTP, so that both modes raise the same
    /// exception for the same failure.
    pub fn from_status(status: u16, code: String, message: String) -> ApiError {
        let kind = match (status, code.as_str()) {
            (401, _) => Kind::Unauthorized,
            (403, "forbidden") => Kind::Forbidden,
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

/// A graph node.
pub struct GraphNode {
    pub id: u64,
    pub kind: String,
    /// Its link: by id, or by key with the id of the record that holds the key now.
    pub record: Option<wire::RecordRef>,
    pub properties: Option<Vec<u8>>,
}

/// The operations both modes implement, with the same results and errors.
pub trait Api: Send + Sync {
    fn create_collection(&self, spec: wire::CreateCollection) -> Res<()>;
    fn drop_collection(&self, name: String) -> Res<()>;
    fn collections(&self) -> Res<Vec<wire::CollectionInfo>>;
    fn collection(&self, name: &str) -> Res<wire::CollectionInfo>;
    /// Inserts atomically; `batch` selects how a bad vector is reported (with its position).
    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>>;
    fn get(&self, collection: &str, id: u64) -> Res<RecordOut>;
    fn delete(&self, collection: String, id: u64) -> Res<()>;
    fn search(&self, collection: String, query: wire::SearchRequest) -> Res<Vec<HitOut>>;
    fn upsert(&self, collection: String, req: wire::Upsert) -> Res<wire::Upserted>;
    fn get_records(&self, collection: String, req: wire::GetRecords) -> Res<wire::Records>;
    fn scroll(&self, collection: String, req: wire::Scroll) -> Res<wire::ScrollPage>;
    fn count(&self, collection: String, req: wire::Count) -> Res<wire::Counted>;
    fn delete_records(&self, collection: String, req: wire::DeleteRecords) -> Res<wire::Deleted>;
    fn set_payload(&self, collection: String, req: wire::SetPayload) -> Res<wire::Updated>;
    fn delete_payload_keys(
        &self,
        collection: String,
        req: wire::DeletePayloadKeys,
    ) -> Res<wire::Updated>;
    /// Each search's hits, and the one sequence number they all read.
    fn search_batch(
        &self,
        collection: String,
        req: wire::SearchBatch,
    ) -> Res<(Vec<Vec<HitOut>>, u64)>;
    fn payload_indexes(&self, collection: String) -> Res<wire::PayloadIndexes>;
    fn create_payload_index(&self, collection: String, req: wire::PayloadIndex) -> Res<()>;
    fn drop_payload_index(&self, collection: String, field: String) -> Res<()>;
    fn create_node(
        &self,
        kind: String,
        record: Option<wire::RecordRef>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64>;
    fn get_node(&self, id: u64) -> Res<GraphNode>;
    fn delete_node(&self, id: u64) -> Res<()>;
    fn create_edge(&self, edge: wire::CreateEdge) -> Res<u64>;
    fn get_edge(&self, id: u64) -> Res<wire::GraphEdge>;
    fn delete_edge(&self, id: u64) -> Res<()>;
    fn neighbors(
        &self,
        id: u64,
        direction: wire::Direction,
        kinds: &[String],
    ) -> Res<Vec<wire::Neighbor>>;
    fn traverse(&self, query: wire::TraverseRequest) -> Res<wire::Traversal>;
    /// Takes a snapshot; copies it to `copy_to` when given. Returns the path of the copy, or
    /// else of the snapshot (on the server, in remote mode).
    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String>;
    /// Replaces the whole state with the snapshot file at `path`'s.
    fn restore(&self, path: &Path) -> Res<wire::State>;
    fn state(&self) -> Res<wire::State>;
    /// Releases the resources (the database, for the embedded engine).
    fn close(&self);
}
