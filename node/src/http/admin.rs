//! State, the log, replication status and snapshots.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use valori_api as api;

use super::convert::{b64, snapshot, state as state_json};
use super::extract::{ApiJson, ApiPath, ApiQuery, CanRead, CanWrite};
use super::{ApiResult, AppRef};
use crate::error::NodeError;
use crate::service::{blocking, Access, FollowerHello};

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
    CanRead(access): CanRead,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<api::LogQuery>,
) -> ApiResult<api::LogPage> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(name) = header(api::FOLLOWER_HEADER) {
        // Only a request that may write can fence this node: a read-only key must not be
        // able to stop its writes by naming a high epoch.
        let epoch = header(api::EPOCH_HEADER)
            .filter(|_| access == Access::Write)
            .map(|e| {
                e.parse::<u64>().map_err(|_| {
                    NodeError::BadRequest(format!("{} must be a number", api::EPOCH_HEADER))
                })
            })
            .transpose()?;
        let hello = FollowerHello {
            name: name.to_string(),
            epoch,
            chain: header(api::CHAIN_HEADER).map(String::from),
        };
        app.service.hello(q.from, hello).await?;
    }
    app.service.wait_for_entries(q.from, q.wait_ms).await;
    let service = app.service.clone();
    let page = blocking(move || service.log_page(q.from, q.limit)).await?;
    let entries: Vec<api::LogEntry> = page
        .entries
        .into_iter()
        .map(|e| api::LogEntry {
            seq: e.seq,
            chain_hash: hex::encode(e.chain),
            event: b64(&e.event),
            epoch: e.epoch,
        })
        .collect();
    Ok(Json(api::LogPage {
        next: entries.last().map(|e| e.seq + 1),
        entries,
        first_retained: page.first_retained,
        head: page.head,
        epoch: page.epoch,
        history: page.history,
    }))
}

pub async fn get_role(
    State(app): State<AppRef>,
    CanRead(access): CanRead,
    headers: HeaderMap,
) -> ApiResult<api::RoleInfo> {
    // A follower checking this node before it follows says which epoch it has seen (heeded
    // from a request that may write only, as on the log route).
    if let Some(epoch) = headers
        .get(api::EPOCH_HEADER)
        .filter(|_| access == Access::Write)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        app.engine.observe_epoch(epoch)?;
    }
    Ok(Json(app.service.role_info()?))
}

pub async fn set_role(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<api::SetRole>,
) -> ApiResult<api::RoleInfo> {
    Ok(Json(app.service.set_role(body).await?))
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
    _: CanRead,
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
