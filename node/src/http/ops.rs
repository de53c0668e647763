//! Operations: liveness, readiness, metrics and the API's description.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppRef;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): State<AppRef>) -> Response {
    match app.service.not_ready() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(why) => {
            let body = valori_api::ErrorBody {
                code: "not_ready".into(),
                message: format!("not ready: {why}"),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

pub async fn metrics(State(app): State<AppRef>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.service.metrics_text(),
    )
        .into_response()
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(valori_api::openapi::document(env!("CARGO_PKG_VERSION")))
}
