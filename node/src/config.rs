//! Configuration: command-line flags, each also readable from a `VALORI_*` environment variable.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::limits;

/// How to run a node.
#[derive(Parser, Clone, Debug)]
#[command(name = "valori-node", version, about = "The Valori server")]
pub struct Config {
    /// Address to listen on for HTTP.
    #[arg(long, env = "VALORI_HTTP_ADDR", default_value = "0.0.0.0")]
    pub http_addr: IpAddr,
    /// HTTP port (0 picks a free one; the node prints the address it bound).
    #[arg(long, env = "VALORI_HTTP_PORT", default_value_t = 3000)]
    pub http_port: u16,
    /// gRPC port (0 picks a free one; the node prints the address it bound). Default: 50051
    /// with the default HTTP port 3000, and as far from 50051 as the HTTP port is from 3000
    /// otherwise (3001 gives 50052), so that nodes started side by side on consecutive HTTP
    /// ports do not clash.
    #[arg(long, env = "VALORI_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Also serve `/healthz`, `/readyz` and `/metrics` on this port, in plain HTTP and outside
    /// `--max-connections`: probes that a storm of client connections cannot starve.
    #[arg(long, env = "VALORI_HEALTH_PORT")]
    pub health_port: Option<u16>,
    /// Do not serve gRPC.
    #[arg(long, env = "VALORI_NO_GRPC")]
    pub no_grpc: bool,
    /// Directory for the event log and snapshots. Default: `./valori_data` with the default
    /// HTTP port 3000, `./valori_data_<port>` with another, so that two nodes started in one
    /// directory never share one.
    #[arg(long, env = "VALORI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Take a snapshot every this many events (0: only on request).
    #[arg(long, env = "VALORI_SNAPSHOT_EVERY", default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// Snapshots to keep.
    #[arg(long, env = "VALORI_SNAPSHOT_KEEP", default_value_t = 2)]
    pub snapshot_keep: usize,
    /// Delete log entries up to the oldest kept snapshot (`false` keeps the whole log, for
    /// audits that replay from the first event).
    #[arg(long, env = "VALORI_PRUNE_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub prune_log: bool,
    /// Start an empty data directory from this snapshot file.
    #[arg(long, env = "VALORI_RESTORE_FROM")]
    pub restore_from: Option<PathBuf>,
    /// Back up to this destination: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `file:///directory` (credentials from the environment, as
    /// each store documents them: `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, ...). The leader uploads
    /// snapshots and ships its log; `POST /v1/backups` backs up now.
    #[arg(long, env = "VALORI_BACKUP_TO")]
    pub backup_to: Option<String>,
    /// Ship the log to the backup destination every this many seconds (0: no log shipping,
    /// snapshots only). A restore can reach any sequence number that is shipped.
    #[arg(long, env = "VALORI_BACKUP_SHIP_INTERVAL_S", default_value_t = 10)]
    pub backup_ship_interval_s: u64,
    /// Upload every snapshot the node takes (`--snapshot-every`) to the backup destination.
    #[arg(long, env = "VALORI_BACKUP_SNAPSHOTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub backup_snapshots: bool,
    /// Snapshots to keep in the backup destination (older ones and the log segments before
    /// the oldest kept are removed).
    #[arg(long, env = "VALORI_BACKUP_RETAIN_COUNT", default_value_t = 7)]
    pub backup_retain_count: usize,
    /// Remove backed-up snapshots older than this (`30d`, `12h`; the newest is always kept).
    #[arg(long, env = "VALORI_BACKUP_RETAIN_AGE", value_parser = humantime::parse_duration)]
    pub backup_retain_age: Option<std::time::Duration>,
    /// Start an empty data directory from the backup at this destination (as `--backup-to`
    /// names one): its newest state, or `--restore-target-seq`. Ignored when the data
    /// directory already holds state.
    #[arg(
        long,
        env = "VALORI_RESTORE_FROM_BACKUP",
        conflicts_with = "restore_from"
    )]
    pub restore_from_backup: Option<String>,
    /// With `--restore-from-backup`: restore exactly this sequence number.
    #[arg(
        long,
        env = "VALORI_RESTORE_TARGET_SEQ",
        requires = "restore_from_backup"
    )]
    pub restore_target_seq: Option<u64>,
    /// With `--restore-from-backup`: restore the newest sequence number the backup held at this
    /// time (RFC 3339), within one shipping interval of the writes.
    #[arg(
        long,
        env = "VALORI_RESTORE_TARGET_TIME",
        requires = "restore_from_backup",
        conflicts_with = "restore_target_seq",
        value_parser = crate::backup::restore::parse_time
    )]
    pub restore_target_time: Option<i64>,
    /// PEM certificate chain: serve HTTP and gRPC over TLS (needs --tls-key).
    #[arg(long, env = "VALORI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "VALORI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// `leader` (accepts writes) or `follower` (replicates a leader, refuses writes).
    #[arg(long, env = "VALORI_REPLICATION_MODE", default_value = "leader", value_parser = ["leader", "follower"])]
    pub replication_mode: String,
    /// The leader's base URL, for a follower (e.g. http://leader:3000).
    #[arg(long, env = "VALORI_LEADER_URL")]
    pub leader_url: Option<String>,
    /// Re-bootstrap from the leader's newest snapshot when divergence is detected (otherwise
    /// the follower stops and reports it).
    #[arg(long, env = "VALORI_REPLICATION_HEAL")]
    pub replication_heal: bool,
    /// Synchronous replication: acknowledge a write only once it is durable on the leader and
    /// on at least this many followers (0: asynchronous).
    #[arg(long, env = "VALORI_SYNC_REPLICAS", default_value_t = 0)]
    pub sync_replicas: u32,
    /// How long a synchronous write waits for its followers before it is answered 503
    /// `replication_timeout` (outcome unknown: durable on the leader, may still replicate).
    #[arg(long, env = "VALORI_SYNC_TIMEOUT_MS", default_value_t = 5000)]
    pub sync_timeout_ms: u64,
    /// How a follower names itself to its leader: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`
    /// (default: its host name and HTTP port, unique per host and port).
    #[arg(long, env = "VALORI_FOLLOWER_NAME")]
    pub follower_name: Option<String>,
    /// API key a follower presents to its leader (default: `--cluster-api-key`).
    #[arg(long, env = "VALORI_LEADER_API_KEY", hide_env_values = true)]
    pub leader_api_key: Option<String>,
    /// A read-write key of the cluster itself, accepted beside `--api-key`: followers present
    /// it to their leader and an operator to every node, so that the users' keys can be
    /// rotated without cutting replication or the operator off.
    #[arg(long, env = "VALORI_CLUSTER_API_KEY", hide_env_values = true)]
    pub cluster_api_key: Option<String>,
    /// PEM bundle of CA certificates a follower trusts for its leader's TLS certificate,
    /// besides the system's roots (a private CA, as cert-manager's `ca.crt`).
    #[arg(long, env = "VALORI_LEADER_CA_FILE")]
    pub leader_ca_file: Option<PathBuf>,
    /// Read-write API key. When any key is set, every /v1 route needs one.
    #[arg(long, env = "VALORI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the read-write API key.
    #[arg(long, env = "VALORI_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Read-only API key (reads and searches only).
    #[arg(long, env = "VALORI_READ_API_KEY", hide_env_values = true)]
    pub read_api_key: Option<String>,
    /// File holding the read-only API key.
    #[arg(long, env = "VALORI_READ_API_KEY_FILE")]
    pub read_api_key_file: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "VALORI_MAX_BODY_BYTES", default_value_t = limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Most records in one batch insert.
    #[arg(long, env = "VALORI_MAX_BATCH", default_value_t = limits::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Largest response a search, a neighbour list or a traversal may build, in bytes (larger
    /// ones are refused with 400 `limit_exceeded`: ask for fewer results or no metadata).
    #[arg(long, env = "VALORI_MAX_RESPONSE_BYTES", default_value_t = limits::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// Most event bytes in one page of the log (`GET /v1/log`, gRPC `ReadLog`); a page always
    /// holds at least one entry, however large.
    #[arg(long, env = "VALORI_MAX_LOG_PAGE_BYTES", default_value_t = limits::DEFAULT_MAX_LOG_PAGE_BYTES)]
    pub max_log_page_bytes: usize,
    /// Most events a search of a past state (`at_seq`) may replay from the nearest snapshot
    /// at or before it (more are refused with 400 `limit_exceeded`). A replay runs on one
    /// thread, one at a time; snapshots taken more often make more of the past answerable.
    #[arg(long, env = "VALORI_MAX_REPLAY_EVENTS", default_value_t = limits::DEFAULT_MAX_REPLAY_EVENTS)]
    pub max_replay_events: u64,
    /// Most client writes waiting for the disk at once; more are refused with 503 `busy` (a
    /// client should retry after a pause).
    #[arg(long, env = "VALORI_MAX_QUEUED_WRITES", default_value_t = limits::DEFAULT_MAX_QUEUED_WRITES)]
    pub max_queued_writes: usize,
    /// Most open client connections, HTTP and gRPC together; a connection beyond it is closed
    /// as soon as it is accepted.
    #[arg(long, env = "VALORI_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most HTTP requests in progress at once; more are refused with 503 `busy` (`/healthz`,
    /// `/readyz` and `/metrics` are always answered). Also each gRPC connection's most
    /// concurrent calls (more wait).
    #[arg(long, env = "VALORI_MAX_CONCURRENT_REQUESTS", default_value_t = limits::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Milliseconds a client has to send a request's headers (HTTP/1.1) and to finish a TLS
    /// handshake; a slower connection is closed.
    #[arg(long, env = "VALORI_HEADER_TIMEOUT_MS", default_value_t = limits::DEFAULT_HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Create the default collection with this dimension at start (otherwise its first insert
    /// fixes it).
    #[arg(long, env = "VALORI_DEFAULT_DIMENSION")]
    pub default_dimension: Option<u32>,
    /// Niceness of the writer and index threads (0 to 19; 0: as the request handlers). Above 0,
    /// a read gets a core at once while a batch is indexed, and writes take what reads leave.
    #[arg(long, env = "VALORI_INDEX_NICE", default_value_t = limits::DEFAULT_INDEX_NICE)]
    pub index_nice: i32,
    /// No effect (a warning at start when set; see `--share-graph-lists`). Accepted so that
    /// existing settings still start.
    #[arg(
        long,
        env = "VALORI_GRAPH_SHARE_IDLE_MS",
        default_value_t = 0,
        hide = true
    )]
    pub graph_share_idle_ms: u64,
    /// Keep the full-precision vectors in memory-mapped files under the data directory's
    /// `vectors/` instead of in memory. Searches walk the compact copy and the graph, which stay
    /// in memory, and read full vectors only to rerank their candidates: the vectors' pages
    /// are then cache the system drops under memory pressure (a container's limit included)
    /// and reads back when needed. Results and hashes are unchanged. Costs: disk writes of
    /// the vectors, and reranks that wait on the disk for pages not in memory.
    #[arg(long, env = "VALORI_VECTORS_ON_DISK")]
    pub vectors_on_disk: bool,
    /// The node's two copies of the state share the graph's neighbour lists too, each holding
    /// apart only the lists it changed lately (otherwise they hold the lists twice). Less
    /// memory (at 1M x 128: 1.16x the state's size after ingest instead of 1.29x), slower
    /// ingest (about 12% fewer vectors a second there). Results and hashes are unchanged.
    #[arg(long, env = "VALORI_SHARE_GRAPH_LISTS")]
    pub share_graph_lists: bool,
    /// Threads for index construction (default: all cores).
    #[arg(long, env = "VALORI_INDEX_THREADS")]
    pub index_threads: Option<usize>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `valori_node=debug`.
    #[arg(long, env = "VALORI_LOG", default_value = "info")]
    pub log: String,
    /// Refuse writes (503 `not_enough_replicas`) unless at least this many followers
    /// confirmed within `--min-replicas-max-lag-ms` (0: never). Bounds what an isolated leader
    /// can acknowledge, and so what asynchronous replication can lose at a failover.
    #[arg(long, env = "VALORI_MIN_REPLICAS_TO_WRITE", default_value_t = 0)]
    pub min_replicas_to_write: u32,
    /// How recently a follower must have confirmed to count for `--min-replicas-to-write`.
    #[arg(long, env = "VALORI_MIN_REPLICAS_MAX_LAG_MS", default_value_t = limits::DEFAULT_MIN_REPLICAS_MAX_LAG_MS)]
    pub min_replicas_max_lag_ms: u64,
    /// Test hook (never set in production): while this file exists, each commit waits after
    /// applying its events and before making them durable.
    #[arg(long, env = "VALORI_TEST_COMMIT_GATE", hide = true)]
    pub test_commit_gate: Option<PathBuf>,
    /// Test hook (never set in production): the step of a restore at which the process
    /// aborts.
    #[arg(long, env = "VALORI_TEST_CRASH_AT", hide = true, value_parser = crate::engine::RestoreStep::parse)]
    pub test_crash_at: Option<crate::engine::RestoreStep>,
}

impl Config {
    /// The leader's URL when this node is a follower.
    pub fn follower_of(&self) -> Option<&str> {
        (self.replication_mode == "follower").then(|| self.leader_url.as_deref().unwrap_or(""))
    }

    /// Parses flags and environment for a node with `data_dir`, for tests and embedding.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut c = Config::parse_from(["valori-node"]);
        c.data_dir = Some(data_dir.into());
        c
    }

    /// The data directory: as given, or the default for the HTTP port.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| default_data_dir(self.http_port))
    }

    /// The gRPC port: as given, or the default for the HTTP port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
            .unwrap_or_else(|| default_grpc_port(self.http_port))
    }

    /// The read-write and read-only keys, read from flags, environment or files.
    pub fn keys(&self) -> std::io::Result<(Option<String>, Option<String>)> {
        let read =
            |direct: &Option<String>, file: &Option<PathBuf>| -> std::io::Result<Option<String>> {
                match (direct, file) {
                    (Some(k), _) => Ok(Some(k.clone())),
                    (None, Some(f)) => Ok(Some(std::fs::read_to_string(f)?.trim().to_string())),
                    (None, None) => Ok(None),
                }
            };
        Ok((
            read(&self.api_key, &self.api_key_file)?.filter(|k| !k.is_empty()),
            read(&self.read_api_key, &self.read_api_key_file)?.filter(|k| !k.is_empty()),
        ))
    }
}

/// The default data directory for a node on HTTP port `http`.
pub fn default_data_dir(http: u16) -> PathBuf {
    match http {
        3000 => PathBuf::from("./valori_data"),
        p => PathBuf::from(format!("./valori_data_{p}")),
    }
}

/// The default gRPC port for a node on HTTP port `http`: 50051 for 3000, shifted by the HTTP
/// port's distance from 3000 otherwise, wrapped into 1024-65535; 0 (any) for 0.
pub fn default_grpc_port(http: u16) -> u16 {
    if http == 0 {
        return 0;
    }
    let shifted = 50051 + i64::from(http) - 3000;
    let span = 65536 - 1024;
    (1024 + (shifted - 1024).rem_euclid(span)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_side_by_side_get_their_own_ports_and_directories() {
        assert_eq!(default_grpc_port(3000), 50051);
        assert_eq!(default_grpc_port(3001), 50052);
        assert_eq!(default_grpc_port(3002), 50053);
        assert_eq!(default_grpc_port(0), 0);
        for p in [1, 80, 1023, 8080, 18484, 18485, 40000, 65535] {
            let g = default_grpc_port(p);
            assert!(g >= 1024 && g != p, "{p} -> {g}");
        }
        assert_eq!(default_data_dir(3000), PathBuf::from("./valori_data"));
        assert_eq!(default_data_dir(3001), PathBuf::from("./valori_data_3001"));
        let c = Config::parse_from(["valori-node", "--http-port", "3001"]);
        assert_eq!(
            (c.grpc_port(), c.data_dir()),
            (50052, PathBuf::from("./valori_data_3001"))
        );
        let c = Config::parse_from(["valori-node", "--grpc-port", "7", "--data-dir", "/x"]);
        assert_eq!((c.grpc_port(), c.data_dir()), (7, PathBuf::from("/x")));
    }
}
