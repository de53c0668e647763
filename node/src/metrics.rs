//! Prometheus metrics of a node, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// `valori_events_committed_total`: events made durable.
    pub events_committed: IntCounter,
    /// `valori_batch_commit_duration_seconds`: one group commit (apply and synced append).
    pub commit_seconds: Histogram,
    /// `valori_state_hash_duration_seconds`: hashing the whole published state (once per
    /// published state, however many ask).
    pub state_hash_seconds: Histogram,
    /// `valori_sequence_number`: the current sequence number.
    pub seq: IntGauge,
    /// `valori_storage_bytes`: bytes of log and snapshots on disk (set at scrape).
    pub storage_bytes: IntGauge,
    /// `valori_snapshots_total`: snapshots written.
    pub snapshots: IntCounter,
    /// `valori_vectors_mapped_bytes`: bytes of files mapped for full-precision vectors
    /// (`--vectors-on-disk`; 0 without it).
    pub vectors_mapped: IntGauge,
    /// `valori_state_copies_total`: times the writer copied the whole state because a reader
    /// still held the copy it had just replaced (see ARCHITECTURE.md, "Write path").
    pub state_copies: IntCounter,
    /// `valori_failed`: 1 once a storage error latched the node into its failed state.
    pub failed: IntGauge,
    /// `valori_replication_lag`: seconds a follower is behind its leader (0 when caught up).
    pub replication_lag_seconds: prometheus::Gauge,
    /// `valori_replication_lag_events`: events a follower is behind its leader; -1 while it
    /// has diverged (it holds events its leader lacks, which is not lag).
    pub replication_lag_events: IntGauge,
    /// `valori_replication_bootstraps_total`: snapshot bootstraps of a follower.
    pub bootstraps: IntCounter,
    /// `valori_replication_divergences_total`: chain-hash mismatches detected.
    pub divergences: IntCounter,
    /// `valori_follower_sequence_number{follower}` (on a leader): the sequence number each
    /// follower has confirmed, i.e. one less than the next entry it asked for.
    pub follower_seq: prometheus::IntGaugeVec,
    /// `valori_role_leader`: 1 on a leader, 0 on a follower.
    pub role_leader: IntGauge,
    /// `valori_epoch`: the epoch of the node's role assignment.
    pub epoch: IntGauge,
    /// `valori_fenced`: 1 on a leader that a newer epoch has fenced (it refuses writes).
    pub fenced: IntGauge,
    /// `valori_sync_wait_seconds`: how long synchronous writes waited for their followers.
    pub sync_wait_seconds: Histogram,
    /// `valori_sync_timeouts_total`: synchronous writes answered `replication_timeout`.
    pub sync_timeouts: IntCounter,
    /// `valori_writes_refused_busy_total`: writes refused because the write queue was full.
    pub writes_refused_busy: IntCounter,
    /// `valori_writes_refused_replicas_total`: writes refused because too few followers were
    /// in touch (`--min-replicas-to-write`).
    pub writes_refused_replicas: IntCounter,
    /// `valori_connections_refused_total`: connections closed at once because
    /// `--max-connections` were open.
    pub connections_refused: IntCounter,
    /// `valori_requests_refused_busy_total`: HTTP requests refused with 503 `busy` because
    /// `--max-concurrent-requests` were in progress.
    pub requests_refused_busy: IntCounter,
    /// `valori_http_requests_in_progress`: HTTP requests being served that count against
    /// `--max-concurrent-requests` (every route but the probes and metrics).
    pub requests_in_progress: IntGauge,
    /// `valori_replication_discarded_events_total`: events a follower dropped when it
    /// re-bootstrapped because its history went past its leader's.
    pub discarded_events: IntCounter,
    /// `valori_backup_last_success_timestamp_seconds`: when the last snapshot backup to the
    /// destination finished (Unix time; 0: none since the node started).
    pub backup_last_success: IntGauge,
    /// `valori_backup_failures_total`: snapshot backups that failed.
    pub backup_failures: IntCounter,
    /// `valori_backup_shipped_sequence_number`: the sequence number up to which the log is
    /// shipped to the destination.
    pub backup_shipped_seq: IntGauge,
    /// `valori_backup_ship_lag_events`: events durable here and not yet shipped.
    pub backup_ship_lag_events: IntGauge,
    /// `valori_backup_ship_failures_total`: log-shipping rounds that failed.
    pub backup_ship_failures: IntCounter,
    /// `valori_backup_list_requests_total`: listings of the backup destination (each one or
    /// more LIST requests to the object store).
    pub backup_lists: IntCounter,
    /// `valori_http_requests_total{route,method,status}`.
    pub http_requests: IntCounterVec,
    /// `valori_http_request_duration_seconds{route,method}`.
    pub http_seconds: HistogramVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 10.0,
        ];
        let events_committed = IntCounter::new(
            "valori_events_committed_total",
            "Events persisted to the log",
        )
        .unwrap();
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "valori_batch_commit_duration_seconds",
                "Latency of one group commit: apply and synced append",
            )
            .buckets(latency_buckets.clone()),
        )
        .unwrap();
        let state_hash_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "valori_state_hash_duration_seconds",
                "Time to hash the whole state, once per published state",
            )
            .buckets(latency_buckets.clone()),
        )
        .unwrap();
        let seq = IntGauge::new("valori_sequence_number", "Current sequence number").unwrap();
        let storage_bytes =
            IntGauge::new("valori_storage_bytes", "Bytes of log and snapshots on disk").unwrap();
        let snapshots = IntCounter::new("valori_snapshots_total", "Snapshots written").unwrap();
        let state_copies = IntCounter::new(
            "valori_state_copies_total",
            "Whole-state copies made because a reader held the replaced copy too long",
        )
        .unwrap();
        let vectors_mapped = IntGauge::new(
            "valori_vectors_mapped_bytes",
            "Bytes of files mapped for full-precision vectors (--vectors-on-disk)",
        )
        .unwrap();
        let failed = IntGauge::new(
            "valori_failed",
            "1 when a storage error put the node in its failed state",
        )
        .unwrap();
        let replication_lag_seconds = prometheus::Gauge::new(
            "valori_replication_lag",
            "Seconds this follower is behind its leader",
        )
        .unwrap();
        let replication_lag_events = IntGauge::new(
            "valori_replication_lag_events",
            "Events this follower is behind its leader",
        )
        .unwrap();
        let bootstraps = IntCounter::new(
            "valori_replication_bootstraps_total",
            "Snapshot bootstraps of this follower",
        )
        .unwrap();
        let divergences = IntCounter::new(
            "valori_replication_divergences_total",
            "Chain hash mismatches detected while replicating",
        )
        .unwrap();
        let follower_seq = prometheus::IntGaugeVec::new(
            Opts::new(
                "valori_follower_sequence_number",
                "Sequence number each follower has confirmed (on a leader)",
            ),
            &["follower"],
        )
        .unwrap();
        let role_leader =
            IntGauge::new("valori_role_leader", "1 on a leader, 0 on a follower").unwrap();
        let epoch = IntGauge::new("valori_epoch", "Epoch of the node's role assignment").unwrap();
        let fenced = IntGauge::new(
            "valori_fenced",
            "1 on a leader that a newer epoch has fenced (it refuses writes)",
        )
        .unwrap();
        let sync_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "valori_sync_wait_seconds",
                "Time synchronous writes waited for their followers",
            )
            .buckets(latency_buckets.clone()),
        )
        .unwrap();
        let sync_timeouts = IntCounter::new(
            "valori_sync_timeouts_total",
            "Synchronous writes answered replication_timeout",
        )
        .unwrap();
        let connections_refused = IntCounter::new(
            "valori_connections_refused_total",
            "Connections closed at once because the connection limit was reached",
        )
        .unwrap();
        let requests_refused_busy = IntCounter::new(
            "valori_requests_refused_busy_total",
            "HTTP requests refused because the concurrent request limit was reached",
        )
        .unwrap();
        let requests_in_progress = IntGauge::new(
            "valori_http_requests_in_progress",
            "HTTP requests in progress that count against the concurrent request limit",
        )
        .unwrap();
        let writes_refused_busy = IntCounter::new(
            "valori_writes_refused_busy_total",
            "Writes refused with 503 busy because the write queue was full",
        )
        .unwrap();
        let writes_refused_replicas = IntCounter::new(
            "valori_writes_refused_replicas_total",
            "Writes refused with 503 not_enough_replicas because too few followers were in touch",
        )
        .unwrap();
        let discarded_events = IntCounter::new(
            "valori_replication_discarded_events_total",
            "Events dropped by a re-bootstrap because this node's history went past its leader's",
        )
        .unwrap();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "valori_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "method", "status"],
        )
        .unwrap();
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "valori_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(latency_buckets),
            &["route", "method"],
        )
        .unwrap();
        let backup_last_success = IntGauge::new(
            "valori_backup_last_success_timestamp_seconds",
            "Unix time the last snapshot backup finished (0: none since start)",
        )
        .unwrap();
        let backup_failures = IntCounter::new(
            "valori_backup_failures_total",
            "Snapshot backups that failed",
        )
        .unwrap();
        let backup_shipped_seq = IntGauge::new(
            "valori_backup_shipped_sequence_number",
            "Sequence number up to which the log is shipped to the backup destination",
        )
        .unwrap();
        let backup_ship_lag_events = IntGauge::new(
            "valori_backup_ship_lag_events",
            "Events durable on the node and not yet shipped to the backup destination",
        )
        .unwrap();
        let backup_ship_failures = IntCounter::new(
            "valori_backup_ship_failures_total",
            "Log-shipping rounds that failed",
        )
        .unwrap();
        let backup_lists = IntCounter::new(
            "valori_backup_list_requests_total",
            "Listings of the backup destination",
        )
        .unwrap();
        for c in [
            Box::new(events_committed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(commit_seconds.clone()),
            Box::new(state_hash_seconds.clone()),
            Box::new(seq.clone()),
            Box::new(storage_bytes.clone()),
            Box::new(snapshots.clone()),
            Box::new(state_copies.clone()),
            Box::new(vectors_mapped.clone()),
            Box::new(failed.clone()),
            Box::new(replication_lag_seconds.clone()),
            Box::new(replication_lag_events.clone()),
            Box::new(bootstraps.clone()),
            Box::new(divergences.clone()),
            Box::new(follower_seq.clone()),
            Box::new(role_leader.clone()),
            Box::new(epoch.clone()),
            Box::new(fenced.clone()),
            Box::new(sync_wait_seconds.clone()),
            Box::new(sync_timeouts.clone()),
            Box::new(writes_refused_busy.clone()),
            Box::new(writes_refused_replicas.clone()),
            Box::new(connections_refused.clone()),
            Box::new(requests_refused_busy.clone()),
            Box::new(requests_in_progress.clone()),
            Box::new(discarded_events.clone()),
            Box::new(backup_last_success.clone()),
            Box::new(backup_failures.clone()),
            Box::new(backup_shipped_seq.clone()),
            Box::new(backup_ship_lag_events.clone()),
            Box::new(backup_ship_failures.clone()),
            Box::new(backup_lists.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            events_committed,
            commit_seconds,
            state_hash_seconds,
            seq,
            storage_bytes,
            snapshots,
            state_copies,
            vectors_mapped,
            failed,
            replication_lag_seconds,
            replication_lag_events,
            bootstraps,
            divergences,
            follower_seq,
            role_leader,
            epoch,
            fenced,
            sync_wait_seconds,
            sync_timeouts,
            writes_refused_busy,
            writes_refused_replicas,
            connections_refused,
            requests_refused_busy,
            requests_in_progress,
            discarded_events,
            backup_last_success,
            backup_failures,
            backup_shipped_seq,
            backup_ship_lag_events,
            backup_ship_failures,
            backup_lists,
            http_requests,
            http_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
