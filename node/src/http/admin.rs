//! State, the log, roles, replication status and snapshots.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use valori_api as api;

use super::convert::{log_page, restored, snapshot, state as state_json};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiResult, AppRef};
use crate::error::NodeError;
use crate::limits::SNAPSHOT_CHUNK_BYTES;
use crate::service::{Access, Heard};

/// The follower headers of a request.
fn heard(headers: &HeaderMap) -> Result<Heard, NodeError> {
    Heard::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
}

pub async fn state(
    State(app): State<AppRef>,
    ApiQuery(q): ApiQuery<api::StateQuery>,
) -> ApiResult<api::State> {
    Ok(Json(state_json(
        app.service.state_with(q.seq, q.state_hash).await?,
    )))
}

pub async fn log(
    State(app): State<AppRef>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<api::LogQuery>,
) -> ApiResult<api::LogPage> {
    let page = app.service.read_log(access, heard(&headers)?, q).await?;
    Ok(Json(log_page(page)))
}

pub async fn get_role(
    State(app): State<AppRef>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> ApiResult<api::RoleInfo> {
    Ok(Json(app.service.role(access, heard(&headers)?).await?))
}

pub async fn set_role(
    State(app): State<AppRef>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<api::SetRole>,
) -> ApiResult<api::RoleInfo> {
    Ok(Json(app.service.set_role(body, heard(&headers)?).await?))
}

pub async fn replication(State(app): State<AppRef>) -> ApiResult<api::ReplicationStatus> {
    Ok(Json(app.service.replication_status()?))
}

pub async fn create_snapshot(
    State(app): State<AppRef>,
) -> Result<(StatusCode, Json<api::SnapshotInfo>), NodeError> {
    let f = app.service.create_snapshot().await?;
    Ok((StatusCode::CREATED, Json(snapshot(f))))
}

pub async fn create_backup(
    State(app): State<AppRef>,
) -> Result<(StatusCode, Json<api::BackupInfo>), NodeError> {
    Ok((
        StatusCode::CREATED,
        Json(app.service.create_backup().await?),
    ))
}

pub async fn list_backups(State(app): State<AppRef>) -> ApiResult<api::BackupList> {
    Ok(Json(app.service.backups().await?))
}

pub async fn list_snapshots(State(app): State<AppRef>) -> ApiResult<api::SnapshotList> {
    let snapshots = app.service.snapshots()?.into_iter().map(snapshot).collect();
    Ok(Json(api::SnapshotList { snapshots }))
}

pub async fn download_snapshot(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, NodeError> {
    // Streamed from the file: a large snapshot is never held in memory whole.
    let (file, len) = app.service.open_snapshot(id).await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        SNAPSHOT_CHUNK_BYTES,
    ));
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
    body: axum::body::Body,
) -> ApiResult<api::Restored> {
    use futures_util::TryStreamExt as _;
    let stream = body
        .into_data_stream()
        .map_err(|e| NodeError::BadRequest(format!("reading the body: {e}")));
    Ok(Json(restored(app.service.restore(stream).await?)))
}
