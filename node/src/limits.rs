//! Every limit and default the node enforces, in one place. The kernel's hard limits
//! (dimension, metadata, k, ef, HNSW parameters, traversal depth) are
//! [`valori_kernel::limits`]; the API's defaults and page sizes are [`valori_api::limits`],
//! re-exported here so that the node's code names one module.

use std::time::Duration;

pub use valori_api::limits::{
    DEFAULT_K, DEFAULT_LOG_PAGE, MAX_FILTER_KINDS, MAX_LOG_PAGE, MAX_LOG_WAIT_MS,
};

/// Default largest request body, in bytes (`--max-body-bytes`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default largest response a search, a neighbour list or a traversal may build, in bytes
/// (`--max-response-bytes`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Default most event bytes in one page of `GET /v1/log` (`--max-log-page-bytes`); a page
/// always holds at least one entry, however large.
pub const DEFAULT_MAX_LOG_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default most events a search of a past state (`at_seq`) may replay from the nearest
/// snapshot (`--max-replay-events`).
pub const DEFAULT_MAX_REPLAY_EVENTS: u64 = 100_000;
/// Default most records in one batch insert (`--max-batch`).
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Largest snapshot upload to `POST /v1/snapshots/restore`, in bytes.
pub const MAX_SNAPSHOT_UPLOAD_BYTES: usize = 8 * 1024 * 1024 * 1024;
/// Most events one group commit takes.
pub const MAX_GROUP_EVENTS: usize = 256;
/// A group commit takes no further event once its events reach this many bytes (one event
/// larger than this is committed alone).
pub const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Default most open client connections, HTTP and gRPC together (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default most HTTP requests in progress at once (`--max-concurrent-requests`); health,
/// readiness and metrics are not counted. Also each gRPC connection's most concurrent calls.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
/// Default time a client has to send a request's headers over HTTP/1.1, and to finish a TLS
/// handshake (`--header-timeout-ms`).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Interval of HTTP/2 keep-alive pings on gRPC connections; a peer that does not answer one
/// within the same time is disconnected.
pub const GRPC_KEEPALIVE: Duration = Duration::from_secs(30);
/// gRPC connections that finished their handshake and preface, waiting for the server to take
/// them.
pub const GRPC_PENDING_CONNECTIONS: usize = 64;
/// How long the gRPC acceptor waits after a failed accept (out of file descriptors, say)
/// before it tries again.
pub const GRPC_ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Log entries a gRPC log stream's reading task may run ahead of its client.
pub const GRPC_LOG_STREAM_BUFFER: usize = 256;
/// Bytes read from a snapshot file per chunk of a download (HTTP body or gRPC message).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long a stopping node lets in-flight HTTP requests finish.
pub const HTTP_DRAIN: Duration = Duration::from_secs(30);
/// Default niceness of the writer thread and the index threads (`--index-nice`): above the
/// request handlers' 0, so a read gets a core at once while a batch is indexed.
pub const DEFAULT_INDEX_NICE: i32 = 10;
/// How long the writer waits for the last reader of the copy it has just replaced before it
/// copies the published state instead (a long reader then costs a copy, never a wait of the
/// writes behind it).
pub const RECLAIM_WAIT: Duration = Duration::from_millis(50);
/// Default most client writes waiting for the writer (`--max-queued-writes`).
pub const DEFAULT_MAX_QUEUED_WRITES: usize = 10_000;

/// Log entries a follower asks its leader for per request.
pub const REPLICATION_PAGE: u32 = 1000;
/// How long a caught-up follower's log request waits at its leader for the next write (a
/// long poll: the write reaches the follower as it commits, not at a next poll).
pub const REPLICATION_LONG_POLL: Duration = Duration::from_secs(1);
/// How often a caught-up follower compares full state hashes with its leader.
pub const FULL_CHECK_EVERY: Duration = Duration::from_secs(30);
/// A follower's first pause after an error (doubled after each further one).
pub const REPLICATION_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A follower's longest pause between retries after an error.
pub const REPLICATION_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a follower waits to connect to its leader.
pub const LEADER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower waits for the next bytes from its leader (each read, not the whole
/// transfer: a snapshot download takes as long as it takes while bytes keep coming). Longer
/// than the long poll.
pub const LEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A follower a leader has not heard from for this long is dropped from its table: its
/// confirmations no longer count for synchronous writes (a follower that replicates asks at
/// least every long poll).
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(30);
/// Default of `--min-replicas-max-lag-ms`: a follower that confirmed within this long counts
/// as in touch (it asks at least once a long poll when it is caught up).
pub const DEFAULT_MIN_REPLICAS_MAX_LAG_MS: u64 = 10_000;
/// Most followers a leader keeps track of (and exports a metric series for).
pub const MAX_FOLLOWERS: usize = 64;
/// Longest follower name, in bytes.
pub const MAX_FOLLOWER_NAME_BYTES: usize = 128;

/// How long a stopping node waits for the backup task's last round (shipping what was written
/// before the stop).
pub const BACKUP_LAST_ROUND: std::time::Duration = std::time::Duration::from_secs(30);
