//! The kernel's error type: every way an event or a query can be refused.

use alloc::string::String;
use core::fmt;

use crate::limits::{MAX_KIND_BYTES, MAX_NAME_BYTES};

/// Why an event was rejected or a query refused. A rejected event changes nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A collection name that is empty, too long, or uses characters outside `[A-Za-z0-9_.-]`.
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A dimension outside 1..=[`crate::limits::MAX_DIMENSION`].
    InvalidDimension {
        /// The dimension given.
        dimension: u32,
        /// The largest allowed.
        max: u32,
    },
    /// An HNSW parameter outside its range.
    InvalidIndexParams {
        /// Which parameter (`m`, `ef_construction`, `ef_search`).
        param: &'static str,
        /// The value given.
        value: u32,
        /// The smallest allowed.
        min: u32,
        /// The largest allowed.
        max: u32,
    },
    /// Creating a collection whose name is taken.
    CollectionExists {
        /// The name.
        name: String,
    },
    /// Naming a collection that does not exist.
    CollectionNotFound {
        /// The name.
        name: String,
    },
    /// A vector whose length is not the collection's dimension.
    DimensionMismatch {
        /// The collection's dimension.
        expected: u32,
        /// The vector's length.
        got: u32,
        /// Position of the offending record in its batch (0 for single inserts and queries).
        position: u32,
    },
    /// Metadata or node properties above the 64 KiB limit.
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An insert with no records.
    EmptyBatch,
    /// A zero vector in a cosine collection (it has no direction).
    ZeroVector {
        /// Position of the offending record in its batch (0 for queries).
        position: u32,
    },
    /// A record id that is not live in the collection.
    RecordNotFound {
        /// The collection.
        collection: String,
        /// The id.
        id: u64,
    },
    /// A node or edge kind label that is empty or longer than [`MAX_KIND_BYTES`].
    InvalidKind {
        /// Its length in bytes.
        len: u32,
    },
    /// A graph node id that does not exist.
    NodeNotFound {
        /// The id.
        id: u64,
    },
    /// A graph edge id that does not exist.
    EdgeNotFound {
        /// The id.
        id: u64,
    },
    /// A search `k` or `ef` outside its range.
    InvalidSearch {
        /// Which parameter (`k`, `ef`).
        param: &'static str,
        /// The value given.
        value: u32,
        /// The smallest allowed.
        min: u32,
        /// The largest allowed.
        max: u32,
    },
    /// A traversal depth above the limit.
    InvalidTraversal {
        /// The depth asked for.
        max_depth: u32,
        /// The deepest allowed.
        max: u32,
    },
    /// An id counter would overflow.
    IdsExhausted,
}

impl Error {
    /// A stable machine-readable code, used by the APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidDimension { .. } => "invalid_dimension",
            Error::InvalidIndexParams { .. } => "invalid_index_params",
            Error::CollectionExists { .. } => "collection_exists",
            Error::CollectionNotFound { .. } => "collection_not_found",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::TooLarge { .. } => "too_large",
            Error::EmptyBatch => "empty_batch",
            Error::ZeroVector { .. } => "zero_vector",
            Error::RecordNotFound { .. } => "record_not_found",
            Error::InvalidKind { .. } => "invalid_kind",
            Error::NodeNotFound { .. } => "node_not_found",
            Error::EdgeNotFound { .. } => "edge_not_found",
            Error::InvalidSearch { .. } => "invalid_search",
            Error::InvalidTraversal { .. } => "invalid_traversal",
            Error::IdsExhausted => "ids_exhausted",
        }
    }

    /// Whether the error means "the thing named does not exist" (as opposed to bad input).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::CollectionNotFound { .. }
                | Error::RecordNotFound { .. }
                | Error::NodeNotFound { .. }
                | Error::EdgeNotFound { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name } => write!(
                f,
                "invalid collection name {name:?}: use 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 _ . -"
            ),
            Error::InvalidDimension { dimension, max } => {
                write!(f, "invalid dimension {dimension}: must be 1 to {max}")
            }
            Error::InvalidIndexParams {
                param,
                value,
                min,
                max,
            } => write!(
                f,
                "invalid index parameters: {param} is {value}, it must be {min} to {max}"
            ),
            Error::CollectionExists { name } => write!(f, "collection {name:?} already exists"),
            Error::CollectionNotFound { name } => write!(f, "collection {name:?} does not exist"),
            Error::DimensionMismatch {
                expected,
                got,
                position,
            } => write!(
                f,
                "vector at position {position} has dimension {got}, the collection needs {expected}"
            ),
            Error::TooLarge { what, len, max } => {
                write!(f, "{what} is {len} bytes, the limit is {max}")
            }
            Error::EmptyBatch => f.write_str("an insert needs at least one record"),
            Error::ZeroVector { position } => write!(
                f,
                "vector at position {position} is zero, which has no direction under the cosine metric"
            ),
            Error::RecordNotFound { collection, id } => {
                write!(f, "record {id} does not exist in collection {collection:?}")
            }
            Error::InvalidKind { .. } => {
                write!(f, "kind labels must be 1 to {MAX_KIND_BYTES} bytes")
            }
            Error::NodeNotFound { id } => write!(f, "graph node {id} does not exist"),
            Error::EdgeNotFound { id } => write!(f, "graph edge {id} does not exist"),
            Error::InvalidSearch {
                param,
                value,
                min,
                max,
            } => write!(
                f,
                "invalid search: {param} is {value}, it must be {min} to {max}"
            ),
            Error::InvalidTraversal { max_depth, max } => write!(
                f,
                "invalid traversal: max_depth is {max_depth}, it must be at most {max}"
            ),
            Error::IdsExhausted => f.write_str("the id space is exhausted"),
        }
    }
}

impl core::error::Error for Error {}
