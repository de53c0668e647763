//! The HTTP/JSON API (axum): a translation of [`valori_api::ROUTES`] onto the [`Service`].
//! Bodies are the wire types of `valori-api`; `/openapi.json` is generated from the same table.
//!
//! Files by topic: [`extract`] (bodies, paths, queries, keys), [`convert`] (service results to
//! wire types), [`collections`] (collections, records, search), [`graph`], [`admin`] (state,
//! log, replication, snapshots), [`ops`] (health, readiness, metrics, the description).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::engine::Engine;
use crate::error::NodeError;
use crate::service::{Keys, Service};

mod admin;
mod collections;
mod convert;
mod extract;
mod graph;
mod ops;

/// Shared state of the HTTP server.
pub struct App {
    /// The operations.
    pub service: Service,
    /// The engine (health, metrics, state, snapshots).
    pub engine: Engine,
    /// The API keys.
    pub keys: Keys,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Permits for requests in progress (`--max-concurrent-requests`).
    pub requests: Arc<tokio::sync::Semaphore>,
}

type AppRef = Arc<App>;

type ApiResult<T> = Result<Json<T>, NodeError>;

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = valori_api::ErrorBody {
            code: self.code().into(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let NodeError::PayloadTooLarge { .. } = self {
            // The rest of the body is never read, so the connection cannot carry another
            // request; say so, or a pooling client reuses it and its next request fails.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

async fn track(State(app): State<AppRef>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // A fixed set of labels: a client inventing methods must not grow the metrics.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let span = tracing::info_span!("http.request", http.route = %route, http.method = %method);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    let m = app.engine.metrics();
    m.http_seconds
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

/// Refuses a request with 503 `busy` when `--max-concurrent-requests` are in progress; the
/// probes and metrics are always answered (a busy node is alive, and says so).
async fn limit(State(app): State<AppRef>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    match Arc::clone(&app.requests).try_acquire_owned() {
        Ok(_permit) => {
            // Counted until the request ends or its client goes away (the future is dropped).
            let _counted = InProgress::new(&app.engine.metrics().requests_in_progress);
            next.run(req).await
        }
        Err(_) => {
            app.engine.metrics().requests_refused_busy.inc();
            NodeError::Busy("too many requests are in progress on this node; retry shortly".into())
                .into_response()
        }
    }
}

/// Counts a request in progress for as long as it lives.
struct InProgress(prometheus::IntGauge);

impl InProgress {
    fn new(gauge: &prometheus::IntGauge) -> InProgress {
        gauge.inc();
        InProgress(gauge.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn not_found() -> NodeError {
    NodeError::NotFound("no such route".into())
}

/// The router of a node: one handler per entry of [`valori_api::ROUTES`] (a test walks the
/// table against a running node).
pub fn router(app: App) -> Router {
    use admin::*;
    use collections::*;
    use graph::*;
    use ops::*;
    let body_limit = app.max_body_bytes;
    let app = Arc::new(app);
    Router::new()
        .route(
            "/v1/collections",
            post(create_collection).get(list_collections),
        )
        .route(
            "/v1/collections/{name}",
            get(get_collection).delete(drop_collection),
        )
        .route("/v1/collections/{name}/records", post(insert))
        .route("/v1/collections/{name}/records/batch", post(batch))
        .route(
            "/v1/collections/{name}/records/{id}",
            get(get_record).delete(delete_record),
        )
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/records", post(insert_default))
        .route("/v1/records/batch", post(batch_default))
        .route(
            "/v1/records/{id}",
            get(get_record_default).delete(delete_record_default),
        )
        .route("/v1/search", post(search_default))
        .route("/v1/graph/nodes", post(create_node))
        .route("/v1/graph/nodes/{id}", get(get_node).delete(delete_node))
        .route("/v1/graph/nodes/{id}/neighbors", get(neighbors))
        .route("/v1/graph/edges", post(create_edge))
        .route("/v1/graph/edges/{id}", get(get_edge).delete(delete_edge))
        .route("/v1/graph/traverse", post(traverse))
        .route("/v1/state", get(state))
        .route("/v1/log", get(log))
        .route("/v1/replication", get(replication))
        .route("/v1/role", get(get_role).put(set_role))
        .route("/v1/snapshots", post(create_snapshot).get(list_snapshots))
        .route("/v1/snapshots/{id}", get(download_snapshot))
        // The body streams to a file; `Service::restore` enforces its own limit.
        .route("/v1/snapshots/restore", post(restore_snapshot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}
