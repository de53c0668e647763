//! Every limit the kernel enforces, named in one place.
//!
//! The node may impose tighter limits at its API (request bodies, batch sizes); these are the
//! hard bounds of the state machine itself, and decoders refuse anything beyond them before
//! allocating.

/// Largest vector dimension a collection may have.
pub const MAX_DIMENSION: u32 = 4096;
/// Largest metadata blob per record, and largest property blob per graph node (64 KiB).
pub const MAX_METADATA_BYTES: u32 = 64 * 1024;
/// Longest collection name, in bytes.
pub const MAX_NAME_BYTES: u32 = 128;
/// Longest graph node or edge kind label, in bytes.
pub const MAX_KIND_BYTES: u32 = 128;
/// Fewest links per node an HNSW index may ask for (`m`).
pub const MIN_HNSW_M: u16 = 2;
/// Most links per node an HNSW index may ask for (`m`).
pub const MAX_HNSW_M: u16 = 128;
/// Largest candidate list (`ef_construction`, `ef_search`, and a search's `ef`).
pub const MAX_EF: u16 = 4096;
/// Most records in one insert event.
pub const MAX_BATCH_RECORDS: u32 = 100_000;
/// Largest `k` a search may ask for.
pub const MAX_K: u32 = 10_000;
/// Most nodes one graph traversal returns; a traversal that would visit more stops and says so.
pub const MAX_TRAVERSAL_NODES: u32 = 100_000;
/// Deepest graph traversal.
pub const MAX_TRAVERSAL_DEPTH: u32 = 64;
/// Name of the collection that the single-space API (insert/search without a collection) uses.
pub const DEFAULT_COLLECTION: &str = "default";
/// Longest record key, in bytes (keys are 1 to this many bytes of UTF-8).
pub const MAX_KEY_BYTES: u32 = 512;
/// Largest payload, encoded (64 KiB).
pub const MAX_PAYLOAD_BYTES: u32 = 64 * 1024;
/// Deepest nesting of arrays and objects in a payload (the payload object itself is level 1).
pub const MAX_PAYLOAD_DEPTH: u32 = 16;
/// Largest document text per record (64 KiB).
pub const MAX_DOCUMENT_BYTES: u32 = 64 * 1024;
/// Deepest nesting of filters (the outer filter is level 1).
pub const MAX_FILTER_DEPTH: u32 = 8;
/// Most conditions in one filter, nested ones included.
pub const MAX_FILTER_CONDITIONS: u32 = 64;
/// Most values in one list of a filter (`any`, `except`, `has_id`, `has_key`, `tag`).
pub const MAX_FILTER_VALUES: u32 = 1024;
/// Longest payload path in a filter or an index, in bytes.
pub const MAX_FILTER_KEY_BYTES: u32 = 512;
/// Longest string a filter compares with, in bytes.
pub const MAX_FILTER_STRING_BYTES: u32 = 4096;
/// Most payload indexes per collection.
pub const MAX_PAYLOAD_INDEXES: u32 = 32;
/// Most keys or ids a write by target may name.
pub const MAX_TARGET_ITEMS: u32 = 100_000;
