//! The operator process's own endpoints: `/metrics` with the reconcile figures and `/healthz`.

use std::time::Duration;

use valori_operator::metrics::{self, Metrics};

#[tokio::test]
async fn metrics_and_health_are_served() {
    let m = Metrics::new();
    m.observe_reconcile(Duration::from_millis(30), None);
    m.observe_reconcile(
        Duration::from_millis(10),
        Some(&valori_operator::Error::Invalid("x".into())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(metrics::serve(m.clone(), listener));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "valori_operator_reconciles_total 2",
        "valori_operator_reconcile_failures_total{kind=\"invalid\"} 1",
        "valori_operator_reconcile_duration_seconds_count 2",
        "valori_operator_failovers_total 0",
        "valori_operator_leading 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    m.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
}
