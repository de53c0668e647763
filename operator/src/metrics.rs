//! The operator's Prometheus metrics and its HTTP endpoint (`/metrics`, `/healthz`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
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
        Arc::new(Metrics {
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
