//! The operator's Prometheus metrics and its HTTP endpoint (`/metrics`, `/healthz`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The operator's metrics.
pub struct Metrics {
    /// Their registry.
    pub registry: Registry,
    /// Reconciles run.
    pub reconciles: IntCounter,
    /// Reconciles failed, by error kind.
    pub failures: IntCounterVec,
    /// How long reconciles take.
    pub duration: Histogram,
    /// Failovers carried out.
    pub failovers: IntCounter,
    /// Pods found diverged by a cross-check.
    pub divergences: IntCounter,
    /// Diverged followers re-bootstrapped.
    pub heals: IntCounter,
    /// 1 while this replica holds the leader-election Lease and runs the controller.
    pub leading: IntGauge,
    /// On-demand backups (`ValoriBackup`) that ended, by result (`completed`, `failed`).
    pub on_demand: IntCounterVec,
    /// Restores of clusters bootstrapped from a backup that ended, by result.
    pub restores: IntCounterVec,
    /// Per cluster (`namespace`, `cluster`): when its newest backed-up snapshot finished
    /// uploading (Unix seconds).
    pub backup_last_success: IntGaugeVec,
    /// Per cluster: the sequence number a restore from its backup reaches.
    pub backup_reaches: IntGaugeVec,
    /// Per cluster: events its leader has not shipped yet.
    pub backup_ship_lag: IntGaugeVec,
    /// Per cluster: 1 while backing up fails (the `BackedUp` condition is False).
    pub backup_failing: IntGaugeVec,
    /// Whether the process is serving (for `/healthz`).
    pub healthy: AtomicBool,
}

impl Metrics {
    /// New metrics in their own registry.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registers once");
            c
        };
        let failures = IntCounterVec::new(
            Opts::new(
                "valori_operator_reconcile_failures_total",
                "Reconciles that failed, by error kind",
            ),
            &["kind"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(failures.clone()))
            .expect("registers once");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "valori_operator_reconcile_duration_seconds",
                "How long a reconcile takes",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("a valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("registers once");
        let leading = IntGauge::new(
            "valori_operator_leading",
            "1 while this replica holds the leader-election Lease",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(leading.clone()))
            .expect("registers once");
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registers once");
            c
        };
        let per_cluster = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["namespace", "cluster"])
                .expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registers once");
            g
        };
        Arc::new(Metrics {
            on_demand: counter_vec(
                "valori_operator_backups_total",
                "On-demand backups (ValoriBackup) that ended, by result",
                "result",
            ),
            restores: counter_vec(
                "valori_operator_restores_total",
                "Restores of clusters bootstrapped from a backup that ended, by result",
                "result",
            ),
            backup_last_success: per_cluster(
                "valori_operator_backup_last_success_timestamp_seconds",
                "When the cluster's newest backed-up snapshot finished uploading",
            ),
            backup_reaches: per_cluster(
                "valori_operator_backup_reaches_sequence_number",
                "The sequence number a restore from the cluster's backup reaches",
            ),
            backup_ship_lag: per_cluster(
                "valori_operator_backup_ship_lag_events",
                "Events the cluster's leader has not shipped to its backup yet",
            ),
            backup_failing: per_cluster(
                "valori_operator_backup_failing",
                "1 while the cluster's backups fail (its BackedUp condition is False)",
            ),
            reconciles: counter("valori_operator_reconciles_total", "Reconciles run"),
            failovers: counter("valori_operator_failovers_total", "Failovers carried out"),
            divergences: counter(
                "valori_operator_divergences_total",
                "Pods a cross-check found diverged from their leader",
            ),
            heals: counter(
                "valori_operator_heals_total",
                "Diverged followers re-bootstrapped",
            ),
            failures,
            duration,
            leading,
            registry,
            healthy: AtomicBool::new(true),
        })
    }

    /// Records one reconcile.
    pub fn observe_reconcile(&self, took: Duration, err: Option<&crate::Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = err {
            self.failures.with_label_values(&[e.kind()]).inc();
        }
    }

    /// Records a cluster's backups as the leader reported them.
    pub fn observe_backup(&self, ns: &str, cluster: &str, st: &crate::crd::BackupStatus, ok: bool) {
        let l = [ns, cluster];
        if let Some(t) = st
            .last_backup_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            self.backup_last_success
                .with_label_values(&l)
                .set(t.as_second());
        }
        self.backup_reaches
            .with_label_values(&l)
            .set(st.reaches as i64);
        if let Some(lag) = st.ship_lag_events {
            self.backup_ship_lag.with_label_values(&l).set(lag as i64);
        }
        self.backup_failing
            .with_label_values(&l)
            .set(i64::from(!ok));
    }

    /// Forgets a cluster's backup series (its `spec.backup` was removed).
    pub fn forget_backup(&self, ns: &str, cluster: &str) {
        let l = [ns, cluster];
        for g in [
            &self.backup_last_success,
            &self.backup_reaches,
            &self.backup_ship_lag,
            &self.backup_failing,
        ] {
            let _ = g.remove_label_values(&l);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the process ends.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    use axum::routing::get;
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { m.render() }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let healthy = metrics.healthy.load(Ordering::Relaxed);
                async move {
                    if healthy {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stopping")
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
