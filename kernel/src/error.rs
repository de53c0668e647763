//! The kernel's error type: every way an event or a query can be refused.

use alloc::string::String;
use core::fmt;

use crate::limits::{MAX_KEY_BYTES, MAX_KIND_BYTES, MAX_NAME_BYTES};

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
    /// A record key that is empty or longer than [`crate::limits::MAX_KEY_BYTES`].
    InvalidKey {
        /// Its length in bytes.
        len: u64,
    },
    /// The same key twice in one upsert.
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// An `insert_only` upsert of a key that exists.
    KeyExists {
        /// The key.
        key: String,
    },
    /// An `update_only` upsert of a key that does not exist.
    KeyNotFound {
        /// The key.
        key: String,
    },
    /// A payload too large or too deep (or one that a merge would make so).
    InvalidPayload {
        /// Which record or part.
        at: String,
        /// Why.
        reason: String,
    },
    /// A filter out of bounds or of the wrong shape.
    InvalidFilter {
        /// Which part, as a path (`filter.must[2]`).
        at: String,
        /// Why.
        reason: String,
    },
    /// A write by target that would affect more records than its `max_affected`.
    TooManyAffected {
        /// How many records it matches.
        matched: u64,
        /// The most it may affect.
        max: u64,
    },
    /// Declaring a payload index on a field that has one.
    PayloadIndexExists {
        /// The field.
        field: String,
    },
    /// Dropping a payload index that does not exist.
    PayloadIndexNotFound {
        /// The field.
        field: String,
    },
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
            Error::InvalidKey { .. } => "invalid_key",
            Error::DuplicateKey { .. } => "duplicate_key",
            Error::KeyExists { .. } => "key_exists",
            Error::KeyNotFound { .. } => "key_not_found",
            Error::InvalidPayload { .. } => "invalid_payload",
            Error::InvalidFilter { .. } => "invalid_filter",
            Error::TooManyAffected { .. } => "too_many_affected",
            Error::PayloadIndexExists { .. } => "payload_index_exists",
            Error::PayloadIndexNotFound { .. } => "payload_index_not_found",
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
                | Error::KeyNotFound { .. }
                | Error::PayloadIndexNotFound { .. }
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
            Error::InvalidKey { len } => write!(
                f,
                "a record key is {len} bytes: keys must be 1 to {MAX_KEY_BYTES} bytes"
            ),
            Error::DuplicateKey { key } => {
                write!(f, "key {key:?} appears more than once in the batch")
            }
            Error::KeyExists { key } => write!(f, "a record with key {key:?} already exists"),
            Error::KeyNotFound { key } => write!(f, "no record has key {key:?}"),
            Error::InvalidPayload { at, reason } => write!(f, "invalid payload at {at}: {reason}"),
            Error::InvalidFilter { at, reason } => write!(f, "invalid filter at {at}: {reason}"),
            Error::TooManyAffected { matched, max } => write!(
                f,
                "the write would affect {matched} records, more than max_affected ({max}); nothing was changed"
            ),
            Error::PayloadIndexExists { field } => {
                write!(f, "field {field:?} already has a payload index")
            }
            Error::PayloadIndexNotFound { field } => {
                write!(f, "field {field:?} has no payload index")
            }
        }
    }
}

impl core::error::Error for Error {}
