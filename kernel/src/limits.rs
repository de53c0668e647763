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
