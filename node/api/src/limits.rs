//! The API's own limits and defaults, in one place. The kernel's hard limits (dimension,
//! metadata, k, ef, HNSW parameters, traversal depth) are `valori_kernel::limits`; the node's
//! configurable ones (body size, batch size) are the node's `limits` module.

/// Results a search returns when the request names no `k`.
pub const DEFAULT_K: u32 = 10;
/// Log entries a `GET /v1/log` page holds when the request names no `limit`.
pub const DEFAULT_LOG_PAGE: u32 = 1000;
/// Most log entries one `GET /v1/log` page may hold.
pub const MAX_LOG_PAGE: u32 = 10_000;
/// Longest a `GET /v1/log` long poll may wait, in milliseconds.
pub const MAX_LOG_WAIT_MS: u32 = 30_000;
/// Most distinct edge kinds a neighbour query or a traversal may filter by.
pub const MAX_FILTER_KINDS: usize = 64;
/// Most searches one `POST .../search/batch` may hold.
pub const MAX_SEARCH_BATCH: usize = 256;
/// Records a scroll page holds when the request names no `limit`.
pub const DEFAULT_SCROLL_PAGE: u32 = 100;
/// Most records one scroll page may hold.
pub const MAX_SCROLL_PAGE: u32 = 10_000;
/// Most keys or ids one get may name.
pub const MAX_GET_ITEMS: usize = 10_000;
