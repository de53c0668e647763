//! State, the log, replication status and snapshots.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use valori_api as api;

use super::convert::{b64, snapshot, state as state_json};
use super::extract::{ApiPath, ApiQuery, CanRead, CanWrite};
use super::{ApiResult, AppRef};
use crate::error::NodeError;
use crate::service::blocking;

pub async fn state(
    State(app): State<AppRef>,
    _: CanRead,
    ApiQuery(q): ApiQuery<api::StateQuery>,
) -> ApiResult<api::State> {
    let service = app.service.clone();
    let s = blocking(move || service.state_at(q.seq)).await?;
    Ok(Json(state_json(s)))
}

pub async fn log(
    State(app): State<AppRef>,
    _: CanRead,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<api::LogQuery>,
) -> ApiResult<api::LogPage> {
    let follower = headers
        .get(api::FOLLOWER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let service = app.service.clone();
    let page = blocking(move || service.log_page(q.from, q.limit, follower.as_deref())).await?;
    let entries: Vec<api::LogEntry> = page
        .entries
        .into_iter()
        .map(|e| api::LogEntry {
            seq: e.seq,
            chain_hash: hex::encode(e.chain),
            event: b64(&e.event),
        })
        .collect();
    Ok(Json(api::LogPage {
        next: entries.last().map(|e| e.seq + 1),
        entries,
        first_retained: page.first_retained,
        head: page.head,
    }))
}

pub async fn replication(
    State(app): State<AppRef>,
    _: CanRead,
) -> ApiResult<api::ReplicationStatus> {
    Ok(Json(app.service.replication_status()?))
}

pub async fn create_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
) -> Result<(StatusCode, Json<api::SnapshotInfo>), NodeError> {
    let f = app.engine.snapshot().await?;
    Ok((StatusCode::CREATED, Json(snapshot(f))))
}

pub async fn list_snapshots(State(app): State<AppRef>, _: CanRead) -> ApiResult<api::SnapshotList> {
    let snapshots = app.engine.snapshots()?.into_iter().map(snapshot).collect();
    Ok(Json(api::SnapshotList { snapshots }))
}

pub async fn download_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, NodeError> {
    // Streamed from the file: a large snapshot is never held in memory whole. The open file
    // stays readable even if retention removes its name meanwhile.
    let (file, len) = app.service.open_snapshot(id).await?;
    let body =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

pub async fn restore_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
    body: axum::body::Body,
) -> ApiResult<api::Restored> {
    use futures_util::TryStreamExt as _;
    let stream = body
        .into_data_stream()
        .map_err(|e| NodeError::BadRequest(format!("reading the body: {e}")));
    let f = app.service.restore(stream).await?;
    let s = app.engine.state()?;
    Ok(Json(api::Restored {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: hex::encode(s.state_hash),
        snapshot: snapshot(f),
    }))
}
