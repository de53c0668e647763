//! The HTTP/JSON API (axum): a translation of [`valori_api::ROUTES`] onto the [`Service`].
//! Bodies are the wire types of `valori-api`; `/openapi.json` is generated from the same table.
//! The key a request needs is the one its route declares in `ROUTES`: a middleware asks the
//! service to authorize it before any handler runs, so no handler checks a key itself.
//!
//! Files by topic: [`extract`] (bodies, paths, queries), [`convert`] (service results to wire
//! types), [`collections`] (collections, records, search), [`memory`] (records by key,
//! payloads, filters, get, scroll, count, batch search, payload indexes), [`graph`], [`admin`] (state, log,
//! roles, replication, snapshots), [`ops`] (health, readiness, metrics, the description).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::error::NodeError;
use crate::service::Service;

mod admin;
mod collections;
mod convert;
mod extract;
mod graph;
mod memory;
mod ops;

/// Shared state of the HTTP server.
pub struct App {
    /// The operations.
    service: Service,
    /// Largest request body.
    max_body_bytes: usize,
    /// Permits for requests in progress (`--max-concurrent-requests`).
    requests: Arc<tokio::sync::Semaphore>,
    /// The access each route declares, by method and path template.
    access: BTreeMap<(&'static str, &'static str), valori_api::Access>,
}

impl App {
    /// The HTTP server of `service`: bodies up to `max_body_bytes`, at most
    /// `max_concurrent_requests` in progress.
    pub fn new(service: Service, max_body_bytes: usize, max_concurrent_requests: usize) -> App {
        App {
            service,
            max_body_bytes,
            requests: Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests.max(1))),
            access: valori_api::ROUTES
                .iter()
                .map(|r| ((r.method.name(), r.path), r.access))
                .collect(),
        }
    }
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
    let m = app.service.metrics();
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
            let _counted = InProgress::new(&app.service.metrics().requests_in_progress);
            next.run(req).await
        }
        Err(_) => {
            app.service.metrics().requests_refused_busy.inc();
            NodeError::Busy("too many requests are in progress on this node; retry shortly".into())
                .into_response()
        }
    }
}

/// Asks the service whether the request may go on: its route's declared access against the key
/// it presents. What the key allows is handed to the handler as an extension (the log and role
/// routes heed a follower's epoch only from a key that may write). A request that matched no
/// route (404) or no method of its route (405) goes on to be answered so.
async fn authorize(State(app): State<AppRef>, mut req: Request, next: Next) -> Response {
    let needs = req.extensions().get::<MatchedPath>().and_then(|p| {
        let method = req.method().as_str().to_ascii_lowercase();
        app.access.get(&(method.as_str(), p.as_str())).copied()
    });
    let Some(needs) = needs else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let key = valori_api::presented_key(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    match app.service.authorize(needs, key) {
        Ok(access) => {
            req.extensions_mut().insert(access);
            next.run(req).await
        }
        Err(e) => e.into_response(),
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

/// The router of the health port (`--health-port`): the probes and the metrics alone, without
/// keys or the request limit, for kubelets and scrapers that a storm of client connections
/// must not starve.
pub fn health_router(app: App) -> Router {
    use ops::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(app))
}

/// The router of a node: one handler per entry of [`valori_api::ROUTES`] (a test walks the
/// table against a running node).
pub fn router(app: App) -> Router {
    use admin::*;
    use collections::*;
    use graph::*;
    use memory::*;
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
        .route("/v1/collections/{name}/records/upsert", post(upsert))
        .route("/v1/collections/{name}/records/get", post(get_records))
        .route("/v1/collections/{name}/records/scroll", post(scroll))
        .route("/v1/collections/{name}/records/count", post(count))
        .route(
            "/v1/collections/{name}/records/delete",
            post(delete_records),
        )
        .route("/v1/collections/{name}/records/payload", post(set_payload))
        .route(
            "/v1/collections/{name}/records/payload/delete",
            post(delete_payload_keys),
        )
        .route("/v1/collections/{name}/search/batch", post(search_batch))
        .route(
            "/v1/collections/{name}/indexes",
            get(list_payload_indexes).post(create_payload_index),
        )
        .route(
            "/v1/collections/{name}/indexes/{field}",
            axum::routing::delete(drop_payload_index),
        )
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
        .route("/v1/backups", post(create_backup).get(list_backups))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), authorize))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}
